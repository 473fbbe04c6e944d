"""ViL-Seg weights files: written atomically, read with ``torch.load(weights_only=True)``.

A weights file is ``{"format": 1, "kind": "vilseg", "config": ViLSegConfig.to_dict(),
"model": state_dict, "vilseg": run description}``: the whole network (CLIP with both encoders,
projection and clustering heads), so it rebuilds without the CLIP it started from. A training
state (``<out>.state.pt``) adds what resuming needs: optimizer, gradient scaler, EMA teacher,
centre, step and loss history. Anything that does not fit is one ``CheckpointError`` naming the
file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmark.atomic import save_torch_atomically
from benchmark.errors import CheckpointError
from benchmark.safe_load import load_weights_only
from methods.vilseg.config import ViLSegConfig
from methods.vilseg.model import ViLSegModel, build_model

FORMAT = 1
WEIGHTS_KIND = "vilseg"
STATE_KIND = "vilseg-train-state"


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.pt")


def cpu_state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().to("cpu") for key, value in module.state_dict().items()}


def save_weights(path: Path, model: ViLSegModel, meta: dict[str, Any]) -> None:
    content = {
        "format": FORMAT, "kind": WEIGHTS_KIND, "config": model.config.to_dict(), "model": cpu_state(model),
        "vilseg": meta,
    }
    save_torch_atomically(path, content)


def save_train_state(path: Path, content: dict[str, Any]) -> None:
    save_torch_atomically(path, {"format": FORMAT, "kind": STATE_KIND, **content})


def read_file(path: Path, kind: str) -> dict[str, Any]:
    """The checked top level of a ViL-Seg weights file (kind "vilseg") or training state."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"ViL-Seg checkpoint {str(path)!r} not found. No official ViL-Seg weights exist: train them with "
            "`zsbench train vilseg` (methods/vilseg/train.py) and pass the file with --checkpoint"
        )
    loaded = load_weights_only(path, "a ViL-Seg file")
    if not isinstance(loaded, dict):
        kind_found = type(loaded).__name__
        raise CheckpointError(f"{path}: expected a dict with keys format, kind, config, model; got {kind_found}")
    for key in ("format", "kind", "config", "model"):
        if key not in loaded:
            raise CheckpointError(f"{path}: key {key!r} is missing; not a ViL-Seg file (methods/vilseg/checkpoint.py)")
    if loaded["kind"] != kind:
        raise CheckpointError(f"{path}: key 'kind' is {loaded['kind']!r}, expected {kind!r}")
    if loaded["format"] != FORMAT:
        raise CheckpointError(f"{path}: key 'format' is {loaded['format']!r}; this version reads format {FORMAT}")
    if not isinstance(loaded["model"], dict):
        raise CheckpointError(f"{path}: key 'model' is not a state dict")
    bad = next((key for key, value in loaded["model"].items() if not isinstance(value, Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: key 'model.{bad}' is not a tensor")
    return loaded


def read_config(path: Path, loaded: dict[str, Any]) -> ViLSegConfig:
    try:
        return ViLSegConfig.from_dict(loaded["config"])
    except (KeyError, ValueError, TypeError) as error:
        message = error.args[0] if error.args else str(error)
        raise CheckpointError(f"{path}: key 'config' does not describe a ViL-Seg network: {message}") from None


def load_state_into(model: torch.nn.Module, state: dict[str, Tensor], path: Path, key: str = "model") -> None:
    """Strict load; the first missing, unexpected or mis-shaped entry is named with its key path."""
    expected = model.state_dict()
    problems = [f"key '{key}.{name}' is missing" for name in expected if name not in state]
    problems += [f"key '{key}.{name}' is unexpected" for name in state if name not in expected]
    problems += [
        f"key '{key}.{name}' has shape {tuple(state[name].shape)}, the network's is {tuple(value.shape)}"
        for name, value in expected.items()
        if name in state and state[name].shape != value.shape
    ]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise CheckpointError(f"{path} does not fit the network its config describes: {problems[0]}{more}")
    model.load_state_dict({name: value.float() if value.is_floating_point() else value
                           for name, value in state.items()})


def load_weights(path: Path) -> tuple[ViLSegModel, dict[str, Any]]:
    """The network of a ViL-Seg weights file (float32, CPU, eval mode) and its run description."""
    loaded = read_file(Path(path), WEIGHTS_KIND)
    config = read_config(Path(path), loaded)
    try:
        model = build_model(config)
    except Exception as error:  # noqa: BLE001 - open_clip raises several kinds for unknown configs
        raise CheckpointError(f"{path}: key 'config.clip' cannot be built: {error}") from error
    load_state_into(model, loaded["model"], Path(path))
    meta = loaded.get("vilseg") if isinstance(loaded.get("vilseg"), dict) else {}
    return model.eval(), meta
