"""The tiny CLIP-S4 of the offline demo: trained once on the synthetic world, cached under the weights dir.

Class-free: only the seen classes of protocols/splits/synthetic_classfree.yaml are known while training;
the unseen ones get learned prototypes. Training images are the caption split's images, without their
captions: unlabeled images of the target world that are not the evaluation images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmark.demo_assets import DemoAssets, register_demo_options
from methods.clips4.adapter import CLIPS4
from methods.clips4.train import train_clips4

SPLIT_FILE = Path(__file__).resolve().parents[2] / "protocols" / "splits" / "synthetic_classfree.yaml"
CHECKPOINT_NAME = "clips4_classfree.pt"


def seen_classes(split_file: Path = SPLIT_FILE) -> list[str]:
    return list(yaml.safe_load(split_file.read_text(encoding="utf-8"))["seen"])


def tiny_clips4_options(assets: DemoAssets) -> dict[str, Any]:
    out = Path(assets.weights_dir) / CHECKPOINT_NAME
    summary = train_clips4(
        images=Path(assets.captions) / "images", out=out, clip_model=assets.clip_model,
        clip_pretrained=str(assets.clip_checkpoint), known_classes=seen_classes(), seed=assets.seed,
        device=assets.device, progress=assets.progress,
    )
    verb = "reused" if summary.get("cached") else "trained"
    print(f"[demo] tiny CLIP-S4 {verb}: {out} ({summary.get('steps')} steps)", flush=True)
    return {"checkpoint": str(out), "model": assets.clip_model, "pretrained": str(assets.clip_checkpoint)}


register_demo_options(CLIPS4.name, tiny_clips4_options)
