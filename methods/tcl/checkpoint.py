"""TCL checkpoints in the layout of the released ``tcl.pth`` (kakaobrain/tcl v1.0.0).

The release is a pickle holding ``{"model": state_dict}`` with the masker's learned parameters
only; frozen CLIP weights come from the CLIP weights file. Its names follow the reference modules
(models/tcl/tcl.py TCL.masker -> masker.py Masker -> MaskerImageFeatureEncoder(backbone, decoder)):

    masker.image_encoder.backbone.transformer.resblocks.<L-1>.*     the copy of CLIP's last block
    masker.image_encoder.decoder.decoder.net.<i>.{conv,conv2}.{norm.*,conv.*,gate.gate}
    masker.image_encoder.decoder.image_proj.{ln.weight,ln.bias,proj}
    masker.sim2mask.{w,b}

Checkpoints written by ``train_tcl`` use the same names, plus a ``tcl`` entry describing the run.
Loading is strict: a missing, unexpected or mis-shaped entry fails naming it. Entries that the
reference's own loader whitelists (utils/checkpoint.py: frozen CLIP copies ``clip_*_encoder.*``
and the InfoNCE temperatures ``*_loss.*``, present when a whole training state was saved) are
not used at inference and are skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from benchmark.atomic import save_torch_atomically
from benchmark.errors import CheckpointError
from benchmark.safe_load import load_weights_only
from methods.tcl.model import TCLMasker

FORMAT = 1
META_KEY = "tcl"
RELEASE_URL = "https://github.com/kakaobrain/tcl/releases/download/v1.0.0/tcl.pth"
_MASKER = "masker.image_encoder"
_DECODER = f"{_MASKER}.decoder.decoder.net"
# (pattern on our parameter names, released name); {last} is the index of CLIP's last block.
_RENAMES = (
    (r"block\.(.+)", _MASKER + ".backbone.transformer.resblocks.{last}.\\1"),
    (r"decoder\.stages\.(\d+)\.conv1\.gate", _DECODER + ".\\1.conv.gate.gate"),
    (r"decoder\.stages\.(\d+)\.conv2\.gate", _DECODER + ".\\1.conv2.gate.gate"),
    (r"decoder\.stages\.(\d+)\.conv1\.(.+)", _DECODER + ".\\1.conv.\\2"),
    (r"decoder\.stages\.(\d+)\.conv2\.(.+)", _DECODER + ".\\1.conv2.\\2"),
    (r"image_proj\.(.+)", _MASKER + ".decoder.image_proj.\\1"),
    (r"sim2mask\.(w|b)", "masker.sim2mask.\\1"),
)
_UNUSED_AT_INFERENCE = (re.compile(r"clip_.+_encoder\..+"), re.compile(r".+_loss\..+"))


def released_name(name: str, last_block: int) -> str:
    for pattern, target in _RENAMES:
        match = re.fullmatch(pattern, name)
        if match:
            return match.expand(target.replace("{last}", str(last_block)))
    raise KeyError(f"masker parameter {name!r} has no name in the released layout")


def released_names(masker: TCLMasker, last_block: int) -> dict[str, str]:
    """Our parameter name -> the released name, for every entry of the masker's state dict."""
    return {name: released_name(name, last_block) for name in masker.state_dict()}


def to_released(masker: TCLMasker, last_block: int) -> dict[str, Tensor]:
    names = released_names(masker, last_block)
    return {names[key]: value.detach().cpu() for key, value in masker.state_dict().items()}


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The learned parameters (released names) and the run description, if any, of a TCL checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"TCL checkpoint {str(path)!r} not found. The released weights are {RELEASE_URL} "
            "(save them as tcl.pth under the weights root, or pass the file with --checkpoint)"
        )
    loaded = load_weights_only(path, "a TCL checkpoint")
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        state, meta = loaded["model"], loaded.get(META_KEY) or {}
    elif isinstance(loaded, dict) and loaded and all(isinstance(v, Tensor) for v in loaded.values()):
        state, meta = loaded, {}
    else:
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict (as the released tcl.pth)")
    bad = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entry {bad[0]!r} of 'model' is not a tensor")
    return state, meta


def load_masker_state(masker: TCLMasker, state: dict[str, Tensor], last_block: int, source: str) -> None:
    """Loads released-layout weights into the masker; any mismatch is one error naming the entries."""
    names = released_names(masker, last_block)
    expected = {names[key]: value for key, value in masker.state_dict().items()}
    used = {key: value for key, value in state.items() if not any(p.fullmatch(key) for p in _UNUSED_AT_INFERENCE)}
    missing = [key for key in expected if key not in used]
    unexpected = sorted(key for key in used if key not in expected)
    shapes = [
        f"{key} has shape {tuple(used[key].shape)}, expected {tuple(value.shape)}"
        for key, value in expected.items()
        if key in used and used[key].shape != value.shape
    ]
    problems = [f"missing {key}" for key in missing] + [f"unexpected {key}" for key in unexpected] + shapes
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else "")
        raise CheckpointError(
            f"{source} does not fit TCL's masker for a {last_block + 1}-block CLIP: {shown}. "
            f"Expected the {len(expected)} entries of the released tcl.pth layout (methods/tcl/checkpoint.py)"
        )
    masker.load_state_dict({key: used[names[key]].float() for key in names})


def save_checkpoint(path: str | os.PathLike, masker: TCLMasker, last_block: int, meta: dict[str, Any]) -> None:
    """Writes {"model": released-layout state, "tcl": meta} atomically."""
    save_torch_atomically(path, {"model": to_released(masker, last_block), META_KEY: {"format": FORMAT, **meta}})
