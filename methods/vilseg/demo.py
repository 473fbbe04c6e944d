"""The tiny ViL-Seg of the offline demo: trained once on the synthetic captions, cached under the demo's weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmark.demo_assets import DemoAssets, register_demo_options
from methods.vilseg.adapter import ViLSeg
from methods.vilseg.recipe import TrainRecipe

DEMO_FILE = Path(__file__).with_name("demo.yaml")
WEIGHTS_NAME = "vilseg.pt"


def demo_settings() -> tuple[int, str, TrainRecipe]:
    """Batch size, precision and recipe of the tiny ViL-Seg."""
    settings = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))
    return int(settings["batch_size"]), str(settings["precision"]), TrainRecipe.from_dict(settings["recipe"])


def tiny_vilseg_options(assets: DemoAssets) -> dict[str, Any]:
    """Trains (or reuses, when its settings match) the tiny ViL-Seg; returns the adapter's options."""
    from methods.vilseg.train import train_vilseg

    batch_size, precision, recipe = demo_settings()
    out = Path(assets.weights_dir) / WEIGHTS_NAME
    summary = train_vilseg(
        assets.captions, out, init=str(assets.clip_checkpoint), model=assets.clip_model, seed=assets.seed,
        batch_size=batch_size, device=assets.device, precision=precision, recipe=recipe, progress=assets.progress,
        resume=True, workers=0, save_every=100,
    )
    verb = "reused" if summary.get("reused") else "trained"
    print(f"[demo] tiny ViL-Seg {verb}: {out} ({summary.get('steps')} steps)", flush=True)
    return {"checkpoint": str(out)}


register_demo_options(ViLSeg.name, tiny_vilseg_options)
