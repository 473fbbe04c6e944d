"""The tiny TCL of the offline demo: TCL's training, at toy scale, on the synthetic world's captions.

The recipe is `demo_training` in methods/tcl/defaults.yaml.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from benchmark.atomic import write_text_atomic
from benchmark.demo_assets import DemoAssets, register_demo_options
from methods.clip_backbone import file_sha256
from methods.tcl.adapter import TCL, tcl_defaults

CHECKPOINT_NAME = "tcl.pt"  # under the demo's weights folder: --checkpoint synthetic/seed0/tcl.pt


def tiny_tcl_options(assets: DemoAssets) -> dict[str, Any]:
    """Trains (once; cached under assets.weights_dir) and returns the adapter options to load it."""
    from methods.tcl.train import train_tcl

    training = dict(tcl_defaults()["demo_training"])
    identity = {**training, "clip": file_sha256(assets.clip_checkpoint), "seed": assets.seed}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    out = assets.weights_dir / CHECKPOINT_NAME
    marker = out.with_name(out.name + ".demo")  # the demo recipe the file was trained with
    if not (out.is_file() and marker.is_file() and marker.read_text(encoding="utf-8") == digest):
        print(f"[demo] training the tiny TCL -> {out}", flush=True)
        train_tcl(
            assets.captions, out, clip_model=assets.clip_model, clip_pretrained=str(assets.clip_checkpoint),
            seed=assets.seed, device=assets.device, progress=assets.progress, resume=False, **training,
        )
        write_text_atomic(marker, digest)
    return {"checkpoint": str(out)}


register_demo_options(TCL.name, tiny_tcl_options)
