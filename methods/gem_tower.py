"""GEM's image tower: CLIP's ViT with a parallel self-self path through its last blocks (WalBouss/GEM).

gem/gem_wrapper.py GEMWrapper.apply_gem wraps the last ``gem_depth - 1`` blocks (range(1, depth),
blocks[-i]) in gem/gem_utils.py GEMResidualBlock; modified_vit_forward runs the tower:

- patch embedding, class token, positional embedding resampled to the crop's patch grid with
  bicubic, antialias=True, size=grid (resample_abs_pos_embed) whenever the grid differs from the
  trained one, ln_pre;
- the blocks before the GEM blocks unchanged;
- each GEM block reads the CLIP path's tokens x: with a = ln_1(x),
  gem <- gem + ls_1(self_self_attention(a))  (gem starts as x at the first GEM block; with
  ``ignore_residual``, ClearCLIP's edit of gem_utils.py, gem <- ls_1(self_self_attention(a))),
  and the CLIP path goes on unchanged: x <- x + ls_1(attention(a)); x <- x + ls_2(mlp(ln_2(x)));
- ln_post and proj on the GEM path's tokens.

Crops that are not a multiple of the patch size are zero-padded around the centre and the scores
cut back, as the harness that evaluates GEM does (mc-lan/ClearCLIP clearclip_segmentor.py
forward_slide, compute_padsize); GEM's own GEMWrapper drops the remainder, which gives the same
scores on crops that are a multiple of the patch (every crop of the native protocol).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.clip_attention import project_heads
from methods.clip_dense import CropFeatures, DenseRecipe, check_supported, clip_block
from methods.gem_attention import merge_heads, self_self_attention

# The blocks before the GEM blocks run as CLIP trained them (clip_block reads only the tower overrides).
UNCHANGED_BLOCKS = DenseRecipe(attention="qk", residual=True, ffn=True, patch_rule="pad_center", position_rule="size")


@dataclass(frozen=True)
class GemRecipe:
    """GEM's settings: create_gem_model(gem_depth, ss_attn_iter, ss_attn_temp) and ClearCLIP's ignore_residual."""

    gem_depth: int = 7
    ss_attn_iter: int = 1
    ss_attn_temp: float | None = None
    ignore_residual: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.gem_depth, bool) or not isinstance(self.gem_depth, int) or self.gem_depth < 2:
            raise ValueError(f"gem_depth must be an integer >= 2 (the last gem_depth - 1 blocks): {self.gem_depth!r}")
        if isinstance(self.ss_attn_iter, bool) or not isinstance(self.ss_attn_iter, int) or self.ss_attn_iter < 0:
            raise ValueError(f"ss_attn_iter must be an integer >= 0, got {self.ss_attn_iter!r}")
        if self.ss_attn_temp is not None and not self.ss_attn_temp > 0:
            raise ValueError(f"ss_attn_temp must be null (adaptive) or positive, got {self.ss_attn_temp!r}")
        if not isinstance(self.ignore_residual, bool):
            raise ValueError(f"ignore_residual must be true or false, got {self.ignore_residual!r}")

    def gem_blocks(self, blocks: int) -> int:
        """How many of `blocks` carry the GEM path: gem_depth - 1, or every block where the tower has fewer."""
        return min(self.gem_depth - 1, blocks)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "patch_rule": "pad_center", "position_rule": "size_antialias"}


def resample_positional_embedding(
    positional: Tensor, source_grid: tuple[int, int], target_grid: tuple[int, int]
) -> Tensor:
    """[1 + S_h*S_w, D] -> [1 + h*w, D]: bicubic to size=(h, w) with antialias, unless the grid is the trained one."""
    if tuple(target_grid) == tuple(source_grid):
        return positional
    dim = positional.shape[-1]
    grid = positional[1:].reshape(1, source_grid[0], source_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=target_grid, mode="bicubic", align_corners=False, antialias=True)
    return torch.cat([positional[:1], grid.permute(0, 2, 3, 1).reshape(target_grid[0] * target_grid[1], dim)])


def embed_patches(visual: nn.Module, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Tokens [B, 1 + h*w, D] after ln_pre, and the patch grid (h, w)."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    grid = (x.shape[-2], x.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    positional = resample_positional_embedding(visual.positional_embedding, tuple(visual.grid_size), grid)
    return visual.ln_pre(x + positional.to(x.dtype)), grid


def gem_features(visual: nn.Module, images: Tensor, recipe: GemRecipe) -> Tensor:
    """[B, 3, H, W] normalised images -> the GEM path's patch features [B, h, w, embed_dim] after ln_post and proj."""
    check_supported(visual)
    x, grid = embed_patches(visual, images)
    blocks = visual.transformer.resblocks
    first_gem = len(blocks) - recipe.gem_blocks(len(blocks))
    for block in blocks[:first_gem]:
        x = clip_block(block, x, UNCHANGED_BLOCKS)
    gem = x
    for number in range(first_gem, len(blocks)):
        block = blocks[number]
        normed = block.ln_1(x)
        q, k, v = project_heads(block.attn, normed)
        path = self_self_attention(block.attn, q, k, v, normed, recipe.ss_attn_iter, recipe.ss_attn_temp)
        attended = block.ls_1(path)
        gem = attended if recipe.ignore_residual else gem + attended
        if number < len(blocks) - 1:  # the CLIP path feeds the next GEM block
            x = x + block.ls_1(merge_heads(block.attn, F.scaled_dot_product_attention(q, k, v)))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
    features = visual.ln_post(gem[:, 1:]) @ visual.proj
    return features.reshape(x.shape[0], grid[0], grid[1], -1)


def _unit_features(visual: nn.Module, images: Tensor, recipe: GemRecipe) -> Tensor:
    """Unit patch features in fp32 even under autocast (as clip_dense's): cosines of near ties need the mantissa."""
    features = gem_features(visual, images, recipe).float()
    return features / features.norm(dim=-1, keepdim=True)


def gem_crop_features(visual: nn.Module, crops: Tensor, recipe: GemRecipe) -> CropFeatures:
    """Unit GEM patch features of crops of any size; crops off the patch size are padded around the centre."""
    height, width = crops.shape[-2:]
    patch_h, patch_w = visual.patch_size
    pad_h, pad_w = -height % patch_h, -width % patch_w
    if pad_h == 0 and pad_w == 0:
        return CropFeatures(_unit_features(visual, crops, recipe), (height, width))
    left, top = pad_w // 2, pad_h // 2
    padded = F.pad(crops, (left, pad_w - left, top, pad_h - top))
    return CropFeatures(_unit_features(visual, padded, recipe), (height, width), tuple(padded.shape[-2:]), (top, left))
