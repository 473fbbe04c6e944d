"""The tiny TCL of the offline demo: TCL's training, at toy scale, on the synthetic world's captions.

The recipe is TCL's (losses, weights, optimiser, schedule shape, decoder-only phase) with what a
64-pixel CLIP and a 3-minute budget on 2 CPU cores call for: few steps, a larger learning rate,
light augmentation (the captions name colours, which colour jitter would falsify), CLIP's
normalisation (the tiny CLIP's and the synthetic protocol's), bf16 autocast.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from methods.clip_backbone import file_sha256

if TYPE_CHECKING:
    from benchmark.demo import DemoAssets

DEMO_TRAINING: dict[str, Any] = {
    "steps": 120,
    "batch_size": 32,
    "lr": 2e-3,
    "min_lr": 2e-4,
    "augment": "crop_flip",
    "normalisation": "clip",
    "precision": "bf16",
    "workers": 0,
    "max_seconds": 170.0,
}


def tiny_tcl_options(assets: DemoAssets) -> dict[str, Any]:
    """Trains (once; cached under assets.weights_dir) and returns the adapter options to load it."""
    from methods.tcl.train import train_tcl

    identity = {**DEMO_TRAINING, "clip": file_sha256(assets.clip_checkpoint), "seed": assets.seed}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    out = assets.weights_dir / f"tcl-tiny-{digest}.pt"
    if not out.is_file():
        print(f"[demo] training the tiny TCL -> {out}", flush=True)
        train_tcl(
            assets.captions, out, clip_model=assets.clip_model, clip_pretrained=str(assets.clip_checkpoint),
            seed=assets.seed, device=assets.device, progress=True, **DEMO_TRAINING,
        )
    return {"model": assets.clip_model, "pretrained": str(assets.clip_checkpoint), "checkpoint": str(out)}
