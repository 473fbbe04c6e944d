"""Running an authors' repository without mmcv, mmengine or mmsegmentation, for the parity scripts.

`install_stubs()` puts into sys.modules the few names an SCLIP-layout segmentor imports
(`BaseSegmentor`, `SegDataPreProcessor`, `PixelData`, `MODELS`), each doing only what those
segmentors use of it: none of them reaches the training loop, the data pipeline or the metric.
`checkout(git_dir, commit)` unpacks the repository at that commit into a temporary folder (the
reference code is run from there, never copied into this tree) and puts it first on sys.path.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

CODE_SUFFIXES = (".py", ".txt", ".gz", ".json", ".yaml", ".yml")


class BaseSegmentor(nn.Module):
    """mmseg.models.segmentors.BaseSegmentor as the references use it: an nn.Module built with a preprocessor."""

    def __init__(self, data_preprocessor: Any = None, init_cfg: Any = None) -> None:
        super().__init__()
        self.data_preprocessor = data_preprocessor


class SegDataPreProcessor:
    def __init__(self, mean: Any = None, std: Any = None, rgb_to_bgr: bool = False, **_: Any) -> None:
        self.mean, self.std, self.rgb_to_bgr = mean, std, rgb_to_bgr


class PixelData:
    def __init__(self, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(self, key, value)


class SegDataSample:
    """mmseg's data sample as `predict` reads it (metainfo) and fills it (set_data)."""

    def __init__(self, metainfo: dict[str, Any]) -> None:
        self.metainfo = metainfo

    def set_data(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            setattr(self, key, value)


class _Registry:
    def register_module(self, *args: Any, **kwargs: Any):
        if args and isinstance(args[0], type):
            return args[0]
        return lambda cls: cls


def install_stubs() -> None:
    """mmseg/mmengine names the segmentors import, and `pkg_resources.packaging` (gone from setuptools 81 on),
    which OpenAI's clip/clip.py imports for a version check."""
    import packaging.version

    modules = {
        "pkg_resources": {"packaging": packaging},
        "mmseg": {}, "mmseg.models": {}, "mmseg.models.segmentors": {"BaseSegmentor": BaseSegmentor},
        "mmseg.models.data_preprocessor": {"SegDataPreProcessor": SegDataPreProcessor},
        "mmseg.registry": {"MODELS": _Registry()}, "mmengine": {},
        "mmengine.structures": {"PixelData": PixelData},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module


def checkout(git_dir: Path, commit: str, suffixes: tuple[str, ...] = CODE_SUFFIXES) -> Path:
    """The repository's code files at `commit` in a new temporary folder, first on sys.path.

    Only files with `suffixes` are written (snapshots may lack images and other large blobs)."""
    git = ["git", "--git-dir", str(git_dir)]
    listing = subprocess.run([*git, "ls-tree", "-r", "-z", commit], check=True, capture_output=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="parity-reference-"))
    for entry in listing.decode().split("\0"):
        if not entry:
            continue
        info, path = entry.split("\t", 1)
        _, kind, blob = info.split()
        if kind != "blob" or not path.endswith(suffixes):
            continue
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run([*git, "cat-file", "blob", blob], check=True, capture_output=True).stdout)
    sys.path.insert(0, str(folder))
    return folder


def sample(ori_shape: tuple[int, int]) -> SegDataSample:
    """A data sample whose metainfo says the original image size (what postprocessing resizes to)."""
    return SegDataSample({"ori_shape": ori_shape, "img_shape": ori_shape, "pad_shape": ori_shape,
                          "padding_size": [0, 0, 0, 0]})


torch.set_grad_enabled(False)
