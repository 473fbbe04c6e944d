"""CLIP-S4 checkpoint files: plain tensors and built-in types only, so ``torch.load(weights_only=True)`` reads them.

Weights file (what ``zsbench eval --checkpoint`` takes)::

    {"clips4": {...run description: format, network config, CLIP model/weights, known classes, ...},
     "model": PixelEmbedder state dict,
     "prototypes": PrototypeBank state dict}

The resumable training state (``<weights>.state``) holds the same plus ``optimizer``, ``scaler``,
``step`` and ``rng``. Both are written atomically (temporary file + rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from benchmark.errors import CheckpointError
from benchmark.safe_load import load_weights_only

FORMAT = 1
META_KEY = "clips4"
REQUIRED = (META_KEY, "model", "prototypes")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's content, checked for the keys every CLIP-S4 file has."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"CLIP-S4 checkpoint {str(path)!r} not found (train one with `zsbench train clips4`)")
    loaded = load_weights_only(path, "a CLIP-S4 checkpoint")
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: expected a dict with keys {list(REQUIRED)}, got {type(loaded).__name__}")
    for key in REQUIRED:
        if not isinstance(loaded.get(key), dict):
            raise CheckpointError(f"{path}: key {key!r} is missing or not a dict; not a CLIP-S4 checkpoint")
    fmt = loaded[META_KEY].get("format")
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: key '{META_KEY}.format' is {fmt!r}, this version reads format {FORMAT}")
    return loaded


def load_state(module: nn.Module, state: dict[str, Any], source: str, key: str) -> None:
    """Strict load; any missing, unexpected or mis-shaped entry is one CheckpointError naming it."""
    expected = module.state_dict()
    missing = [name for name in expected if name not in state]
    unexpected = sorted(name for name in state if name not in expected)
    bad_type = [name for name in expected if name in state and not isinstance(state[name], Tensor)]
    shapes = [
        f"{key}.{name} has shape {tuple(state[name].shape)}, expected {tuple(value.shape)}"
        for name, value in expected.items()
        if name in state and isinstance(state[name], Tensor) and state[name].shape != value.shape
    ]
    problems = (
        [f"missing {key}.{name}" for name in missing]
        + [f"unexpected {key}.{name}" for name in unexpected]
        + [f"{key}.{name} is not a tensor" for name in bad_type]
        + shapes
    )
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more" if len(problems) > 6 else "")
        raise CheckpointError(f"{source} does not fit this CLIP-S4 network: {shown}")
    module.load_state_dict({name: state[name].to(value.dtype) for name, value in expected.items()})


def weights_content(meta: dict[str, Any], network: nn.Module, bank: nn.Module) -> dict[str, Any]:
    """What a weights file holds: the run description and both state dicts on the CPU."""
    return {
        META_KEY: {"format": FORMAT, **meta},
        "model": {key: value.detach().cpu() for key, value in network.state_dict().items()},
        "prototypes": {key: value.detach().cpu() for key, value in bank.state_dict().items()},
    }
