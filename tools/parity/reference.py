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
from functools import partial
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


def dino_factory(dino_source: Path, weights: dict[str, torch.Tensor], model: str, config: dict[str, Any]):
    """torch.hub.load's stand-in for facebookresearch/dino `model` (e.g. dino_vitb8): DINO's own VisionTransformer
    from the checkout at `dino_source`, with the patch size of the model's name and the width, depth and heads of
    `config["timm_kwargs"]`, loaded strictly with `weights`."""
    sys.path.insert(0, str(dino_source))
    import vision_transformer as dino_vits  # DINO's, from its checkout

    def load(repo: str, name: str, *args: Any, **kwargs: Any) -> nn.Module:
        if (repo, name) != ("facebookresearch/dino:main", model):
            raise RuntimeError(f"unexpected torch.hub.load({repo!r}, {name!r})")
        shape = config["timm_kwargs"]
        vit = dino_vits.VisionTransformer(patch_size=int(model.rsplit("b", 1)[1]), embed_dim=shape["embed_dim"],
                                          depth=shape["depth"], num_heads=shape["num_heads"], mlp_ratio=4,
                                          qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0)
        vit.load_state_dict(weights, strict=True)
        return vit.eval()

    return load


def sam_factory(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, Any]:
    """sam_model_registry's stand-in ({'vit_b': build}): `_build_sam` of whichever segment_anything comes first on
    sys.path (the pip package, or a reference's own copy) at the config's encoder size, loaded strictly."""
    from segment_anything.build_sam import _build_sam

    def build(checkpoint: Any = None) -> nn.Module:
        sam = _build_sam(**config["sam_kwargs"], checkpoint=None)
        sam.load_state_dict(weights, strict=True)
        return sam.eval()

    return {"vit_b": build}


def own_open_clip(source: Path) -> Any:
    """The repository's own open_clip copy (any other imported before is dropped first), checked to come from it."""
    for name in [name for name in sys.modules if name == "open_clip" or name.startswith("open_clip.")]:
        del sys.modules[name]
    import open_clip

    if not Path(open_clip.__file__).resolve().is_relative_to(source.resolve()):
        raise RuntimeError(f"open_clip imported from {open_clip.__file__}, not from the checkout {source}")
    return open_clip


def float32_halves() -> None:
    """Make `.half()` a no-op (integer tensors become float32, as .half() makes them floating): the reference runs
    float32 on the CPU, as the adapter does."""
    torch.Tensor.half = lambda self, *_, **__: self if self.is_floating_point() else self.float()
    nn.Module.half = lambda self: self


def sample(ori_shape: tuple[int, int]) -> SegDataSample:
    """A data sample whose metainfo says the original image size (what postprocessing resizes to)."""
    return SegDataSample({"ori_shape": ori_shape, "img_shape": ori_shape, "pad_shape": ori_shape,
                          "padding_size": [0, 0, 0, 0]})


torch.set_grad_enabled(False)
