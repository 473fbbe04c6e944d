"""Files written by torch.save, read without running code from them.

Unpickling an arbitrary object can import and call anything (``os.system`` included), so every
checkpoint loader of the suite reads with ``torch.load(weights_only=True)``: tensors and plain
containers only. A refusal becomes one error naming the file, what it tried to import and the fix;
torch's own message advises ``weights_only=False``, which this suite never does.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import CheckpointError

RESAVE = "re-save the weights as a state dict of tensors (torch.save(model.state_dict(), path)) on a machine you trust"


def load_weights_only(
    path: str | os.PathLike, what: str = "a checkpoint", error: type[CheckpointError] = CheckpointError
) -> Any:
    """torch.load(path, weights_only=True) on the CPU; any failure is one `error` naming the file and the fix."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch says it dispatches an archive to torch.jit.load; it refuses instead
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as failure:  # noqa: BLE001 - pickle, zip, EOF and weights_only refusals alike
        raise error(describe_failure(path, what, failure)) from None


def describe_failure(path: Path, what: str, failure: Exception) -> str:
    text = str(failure)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"{path}: refused to load {what}: the file is a pickle that imports {found.group(1)}, and unpickling "
            f"it could run code. The suite reads weights only with torch.load(weights_only=True) (tensors and plain "
            f"containers); {RESAVE}"
        )
    if "TorchScript" in text:
        return (
            f"{path}: refused to load {what}: the file is a TorchScript archive, and loading one runs code from it; "
            f"torch.load(weights_only=True) reads state dicts only: {RESAVE}"
        )
    reason = next((line.strip() for line in text.splitlines() if "Unsupported" in line), None)
    if isinstance(failure, pickle.UnpicklingError) and reason:
        reason = f"not a weights-only pickle: {reason.removeprefix('WeightsUnpickler error:').strip()}"
    else:
        reason = (text.splitlines() or [""])[0].split(". ")[0].strip() or type(failure).__name__
    return (
        f"{path}: cannot read {what} with torch.load(weights_only=True) ({reason}); the file is truncated, "
        f"corrupt, or not a PyTorch checkpoint of tensors: download it again, or {RESAVE}"
    )
