"""The tiny TCL of the offline demo: TCL's training, at toy scale, on the synthetic world's captions.

The recipe is `demo_training` in methods/tcl/defaults.yaml.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from benchmark.demo_assets import DemoAssets, register_demo_options
from methods.clip_backbone import file_sha256
from methods.tcl.adapter import TCL, tcl_defaults


def tiny_tcl_options(assets: DemoAssets) -> dict[str, Any]:
    """Trains (once; cached under assets.weights_dir) and returns the adapter options to load it."""
    from methods.tcl.train import train_tcl

    training = dict(tcl_defaults()["demo_training"])
    identity = {**training, "clip": file_sha256(assets.clip_checkpoint), "seed": assets.seed}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    out = assets.weights_dir / f"tcl-tiny-{digest}.pt"
    if not out.is_file():
        print(f"[demo] training the tiny TCL -> {out}", flush=True)
        train_tcl(
            assets.captions, out, clip_model=assets.clip_model, clip_pretrained=str(assets.clip_checkpoint),
            seed=assets.seed, device=assets.device, progress=True, **training,
        )
    return {"model": assets.clip_model, "pretrained": str(assets.clip_checkpoint), "checkpoint": str(out)}


register_demo_options(TCL.name, tiny_tcl_options)
