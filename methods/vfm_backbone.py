"""Vision foundation models (DINO, DINOv2, SAM) beside CLIP: find the weights file, check it, build the model with the
library made for it (timm; segment-anything for SAM).

An architecture is data: ``vfm_configs/<name>.json`` names the timm model that holds it (timm's own classes, never
a copy), its keyword arguments, the input normalisation the model was trained with and how its positional
embedding is resized to another patch grid, as the authors' own code resizes it (not timm's rule):

- DINO (facebookresearch/dino vision_transformer.py interpolate_pos_encoding): bicubic with
  scale_factor = (n + 0.1) / trained grid, no antialiasing;
- DINOv2 with registers (dinov2/hub/backbones.py dinov2_vitb14_reg): bicubic to the new size, antialiased.

Both keep the trained embedding when the token count is unchanged and the input is square. SAM (family "sam")
is segment-anything's own model, built by its `_build_sam` with the config's `sam_kwargs`; its dense features are
the image encoder's output at `input_size` x `input_size` (the whole Sam is loaded: its prompt encoder and mask
decoder come with the official file). A ``.json`` path
may stand for a name (the tests' tiny random ViT). Weights are a tag pinned in ``vfm_weights.yaml``
(``official``), a file path (absolute or under the weights root), or None (random, with a warning). Files are
read with torch.load(weights_only=True); DINOv2's own layout is converted by timm's checkpoint_filter_fn.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
import yaml
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn

from benchmark import paths
from methods.clip_backbone import (
    KnownWeights,
    WeightsError,
    checked_sha256,
    is_torchscript_archive,
    load_strict,
    read_weights,
    resolve_weights_file,
)
from methods.clip_dense import resample_position_grid

CONFIG_DIR = Path(__file__).with_name("vfm_configs")
KNOWN_VFM_WEIGHTS_FILE = Path(__file__).with_name("vfm_weights.yaml")
CONFIG_KEYS = {"family", "timm_model", "timm_kwargs", "source", "input_mean", "input_std", "position_rule"}
SAM_CONFIG_KEYS = {"family", "sam_kwargs", "source", "input_mean", "input_std", "input_size"}


@lru_cache(maxsize=1)
def known_vfm_weights() -> tuple[KnownWeights, ...]:
    entries = yaml.safe_load(KNOWN_VFM_WEIGHTS_FILE.read_text(encoding="utf-8"))
    return tuple(KnownWeights(**entry) for entry in entries)


def list_vfms() -> list[str]:
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def vfm_config(name: str) -> tuple[str, dict[str, Any]]:
    """(name, config) of a shipped architecture or of a ``.json`` file."""
    path = Path(name).expanduser() if name.endswith(".json") else CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise WeightsError(f"unknown vision model {name!r}: known {list_vfms()}, or give a .json config path")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: not a readable JSON config ({error})") from None
    keys = SAM_CONFIG_KEYS if isinstance(config, dict) and config.get("family") == "sam" else CONFIG_KEYS
    wrong = sorted(set(config) ^ keys) if isinstance(config, dict) else ["(not a mapping)"]
    if wrong:
        raise WeightsError(f"{path}: keys must be {sorted(keys)}; missing or unknown: {wrong}")
    return path.stem, config


@dataclass
class VfmBackbone:
    """A loaded vision model with what identifies it, and its dense features.

    Call flow of `patch_features` (images normalised as CLIP's crops are, [B,3,H,W])::

        renormalise: CLIP mean/std -> the model's own (input_mean/std)
        patch_embed                      -> [B, h, w, C]
        prefix tokens + positions        -> [B, P + h*w, C]   (P: class and register tokens)
        blocks, norm                     -> patch tokens [B, C, h, w]
    """

    model: nn.Module  # a timm VisionTransformer, or segment-anything's Sam
    name: str
    config: dict[str, Any]
    pretrained: str | None = None
    weights_sha256: str | None = None

    @property
    def is_sam(self) -> bool:
        return self.config["family"] == "sam"

    @property
    def patch_size(self) -> tuple[int, int]:
        if self.is_sam:
            return tuple(self.model.image_encoder.patch_embed.proj.kernel_size)
        return tuple(self.model.patch_embed.patch_size)

    def describe(self) -> str:
        return self.name if not self.pretrained else f"{self.name}/{Path(self.pretrained).name}"

    def identity(self) -> dict[str, Any]:
        """What a record stores of the model: its name, its architecture config and its weights file's sha256."""
        return {"name": self.name, "config": self.config, "weights_sha256": self.weights_sha256}

    def renormalised(self, images: Tensor, clip_mean: tuple[float, ...], clip_std: tuple[float, ...]) -> Tensor:
        """CLIP-normalised images -> the model's normalisation, as ProxyCLIP's UnNormalize then Normalize:
        x * clip_std + clip_mean, then (x - mean) / std, per channel (mean/std on a 0-1 scale)."""
        def column(values: Any) -> Tensor:
            return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)

        unit = images * column(clip_std) + column(clip_mean)
        return (unit - column(self.config["input_mean"])) / column(self.config["input_std"])

    def tokens(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Tokens [B, P + h*w, C] entering the first block, and the patch grid (h, w)."""
        vit = self.model
        x = vit.patch_embed(images.to(vit.patch_embed.proj.weight.dtype))
        grid = (x.shape[1], x.shape[2])
        x = x.reshape(x.shape[0], grid[0] * grid[1], x.shape[-1])
        square = images.shape[-2] == images.shape[-1]
        positions = self.positions(grid, square).to(x.dtype)
        prefix = [token.expand(x.shape[0], -1, -1) for token in (vit.cls_token, vit.reg_token) if token is not None]
        if vit.no_embed_class:
            x = torch.cat([*prefix, x + positions], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + positions
        return vit.norm_pre(vit.pos_drop(x)), grid

    def positions(self, grid: tuple[int, int], square: bool) -> Tensor:
        """The positional embedding [1, (1 +) h*w, C] for a patch grid, resized as the authors' code resizes it."""
        vit = self.model
        embedding = vit.pos_embed
        prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        trained = tuple(vit.patch_embed.grid_size)
        if embedding.shape[1] - prefix == grid[0] * grid[1] and square:
            return embedding
        patches = embedding[:, prefix:].reshape(1, trained[0], trained[1], -1).permute(0, 3, 1, 2)
        rule = self.config["position_rule"]
        resized = resample_position_grid(patches, grid, rule["offset"], rule["antialias"])
        return torch.cat([embedding[:, :prefix], resized.flatten(2).transpose(1, 2)], dim=1)

    def patch_features(self, images: Tensor) -> Tensor:
        """[B,3,H,W] in the model's normalisation -> the last block's patch tokens after the final norm, [B,C,h,w]
        (DINO's get_intermediate_layers(x)[0][:, 1:]; prefix tokens dropped). SAM: the image encoder's output on
        the images resized bilinearly to input_size x input_size, [B, 256, 64, 64]."""
        if self.is_sam:
            side = self.config["input_size"]
            resized = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
            return self.model.image_encoder(resized)
        x, grid = self.tokens(images)
        for block in self.model.blocks:
            x = block(x)
        x = self.model.norm(x)[:, self.model.num_prefix_tokens:]
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[-1], grid[0], grid[1])


    def last_block_qkv(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
        """The last block's attention queries, keys and values of the patch tokens, each [B, heads, h*w, head_dim]
        (its qkv on norm1(x), prefix tokens dropped), and the patch grid (h, w)."""
        if self.is_sam:
            raise WeightsError(f"{self.name} is a SAM: only a ViT's last-block attention is read here "
                               "(give a DINO model)")
        x, grid = self.tokens(images)
        for block in self.model.blocks[:-1]:
            x = block(x)
        last = self.model.blocks[-1]
        heads = last.attn.num_heads
        qkv = last.attn.qkv(last.norm1(x)).reshape(x.shape[0], x.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
        prefix = self.model.num_prefix_tokens
        return qkv[0][:, :, prefix:], qkv[1][:, :, prefix:], qkv[2][:, :, prefix:], grid

    def last_block_keys(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """The last block's attention keys of the patch tokens [B, heads, h*w, head_dim] (CASS's DinoSelfAttention),
        and the patch grid (h, w)."""
        _, keys, _, grid = self.last_block_qkv(images)
        return keys, grid


def build_vfm(config: dict[str, Any]) -> nn.Module:
    if config["family"] == "sam":
        from segment_anything.build_sam import _build_sam

        return _build_sam(**config["sam_kwargs"], checkpoint=None)
    model = timm.create_model(
        config["timm_model"], pretrained=False, num_classes=0, dynamic_img_size=True, **config["timm_kwargs"]
    )
    if not isinstance(model, VisionTransformer):
        raise WeightsError(f"timm model {config['timm_model']!r} is not a VisionTransformer")
    return model


def load_vfm(
    name: str = "dino_vitb8", pretrained: str | None = "official", weights_root: str | os.PathLike | None = None
) -> VfmBackbone:
    """A vision model in eval mode on the CPU; `pretrained` is a pinned tag, a file path, or None (random)."""
    name, config = vfm_config(name)
    model = build_vfm(config)
    if pretrained is None:
        warnings.warn(f"{name}: no weights given, the vision model is randomly initialised", stacklevel=2)
        return _finish(model, name, config, None, None)
    root = paths.weights_root(weights_root)
    path, known = resolve_weights_file(name, pretrained, root, known_vfm_weights())
    sha256 = checked_sha256(path, known)
    if is_torchscript_archive(path):  # before reading: loading an archive runs code from it
        raise WeightsError(f"{path} is a TorchScript archive, and loading one runs code from it; vision model weights "
                           "load only from state dicts (torch.save(model.state_dict(), path) on a machine you trust)")
    state_dict, _ = read_weights(path)
    if known is not None and known.sha256 is None:
        warnings.warn(f"{path}: sha256 {sha256} is not pinned in {KNOWN_VFM_WEIGHTS_FILE.name} (the official "
                      f"download publishes none); compare it with a copy you trust from {known.url}", stacklevel=2)
    if config["family"] != "sam":
        state_dict = checkpoint_filter_fn({key: value for key, value in state_dict.items()
                                           if not key.startswith("head")}, model)
    load_strict(model, state_dict, str(path), name)
    return _finish(model, name, config, pretrained, sha256)


def _finish(model: nn.Module, name: str, config: dict[str, Any], pretrained: str | None,
            sha256: str | None) -> VfmBackbone:
    model = model.float().eval()
    model.requires_grad_(False)
    return VfmBackbone(model, name, config, pretrained, sha256)
