"""Dense CLIP features and per-patch text scores: the helper every training-free baseline shares.

A `DenseRecipe` says what each baseline changes in an open_clip ViT: the last block's attention
rule (clip_attention.py), whether its residual and feed-forward branches stay, how crops that are
not a multiple of the patch size are handled, and how positional embeddings are resized. Two
optional whole-tower overrides serve references that rebuild CLIP's ViT in another framework
and so run the weights with another MLP activation or LayerNorm eps than CLIP was trained with
(MaskCLIP's mmseg ViT: exact GELU, eps 1e-6); left at None, the model's own modules run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.clip_attention import ATTENTION_RULES, last_block_attention, self_attention

# drop: the patch convolution drops the remainder; scores on the patch grid (SCLIP, NACLIP).
# pad_center: zero-pad the normalised crop around its centre to a multiple of the patch size,
#   upsample the scores to the padded size and cut the crop back out (ClearCLIP).
# pad_corner: zero-pad right and bottom; the padded patch grid is stretched over the crop
#   (mmseg 0.x PatchEmbed(padding="corner") + EncoderDecoder resize, as MaskCLIP runs).
PATCH_RULES = ("drop", "pad_center", "pad_corner")
# scale_factor: bicubic with scale_factor=(h + 0.1) / S (DINO's trick, SCLIP / ClearCLIP / NACLIP):
#   torch maps output to input coordinates with that factor, not with h / S.
# size: bicubic to size=(h, w) (mmseg resize_pos_embed, TCL).
POSITION_RULES = ("scale_factor", "size")
# gelu: exact (erf) GELU, torch.nn.GELU; quick_gelu: x * sigmoid(1.702 x), what OpenAI's CLIP was trained with.
ACTIVATIONS = ("gelu", "quick_gelu")
# Recipe fields that are left out of as_dict() while None, so that recipes without them keep their identity.
OPTIONAL_FIELDS = ("activation", "layer_norm_eps")


@dataclass(frozen=True)
class DenseRecipe:
    attention: str
    residual: bool
    ffn: bool
    patch_rule: str
    position_rule: str
    gaussian_std: float = 0.0
    # Whole-tower overrides (None: the model's own): the MLP activation of every block, and the eps
    # of every LayerNorm (ln_pre, each block's ln_1 / ln_2, ln_post).
    activation: str | None = None
    layer_norm_eps: float | None = None

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_RULES:
            raise ValueError(f"attention must be one of {ATTENTION_RULES}, got {self.attention!r}")
        if self.patch_rule not in PATCH_RULES:
            raise ValueError(f"patch_rule must be one of {PATCH_RULES}, got {self.patch_rule!r}")
        if self.position_rule not in POSITION_RULES:
            raise ValueError(f"position_rule must be one of {POSITION_RULES}, got {self.position_rule!r}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {self.activation!r}")
        if self.layer_norm_eps is not None and not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be None or positive, got {self.layer_norm_eps!r}")

    @property
    def overrides_tower(self) -> bool:
        return self.activation is not None or self.layer_norm_eps is not None

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: value for key, value in values.items() if key not in OPTIONAL_FIELDS or value is not None}


def resize_positional_embedding(
    positional: Tensor, source_grid: tuple[int, int], target_grid: tuple[int, int], rule: str
) -> Tensor:
    """[1 + S_h*S_w, D] -> [1 + h*w, D], bicubic, align_corners=False, no antialiasing.

    As in all four references, only the token count is compared: a grid with as many patches as
    the trained one (say 7x28 against 14x14) keeps the embedding as it is.
    """
    height, width = target_grid
    if height * width == source_grid[0] * source_grid[1]:
        return positional
    if rule not in POSITION_RULES:
        raise ValueError(f"position rule must be one of {POSITION_RULES}, got {rule!r}")
    dim = positional.shape[-1]
    grid = positional[1:].reshape(1, source_grid[0], source_grid[1], dim).permute(0, 3, 1, 2)
    grid = resample_position_grid(grid, target_grid, 0.1 if rule == "scale_factor" else 0.0)
    return torch.cat([positional[:1], grid.permute(0, 2, 3, 1).reshape(height * width, dim)])


def resample_position_grid(
    grid: Tensor, target_grid: tuple[int, int], offset: float, antialias: bool = False
) -> Tensor:
    """[1, D, S_h, S_w] -> [1, D, h, w], bicubic, align_corners=False.

    offset > 0: scale_factor=(h + offset) / S_h (DINO's trick; torch maps output to input coordinates with that
    factor, not with h / S_h); offset 0: size=(h, w).
    """
    height, width = target_grid
    if offset:
        factors = ((height + offset) / grid.shape[-2], (width + offset) / grid.shape[-1])
        grid = F.interpolate(grid, scale_factor=factors, mode="bicubic", align_corners=False, antialias=antialias)
    else:
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False, antialias=antialias)
    if tuple(grid.shape[-2:]) != (height, width):
        raise RuntimeError(f"positional embedding resized to {tuple(grid.shape[-2:])}, expected {(height, width)}")
    return grid


def check_supported(visual: nn.Module) -> None:
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    missing = [name for name in needed if not hasattr(visual, name)]
    if missing:
        raise TypeError(f"{type(visual).__name__} is not an open_clip VisionTransformer (no {missing})")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False):
        raise TypeError("dense CLIP features need ln_post on every token: attentional pooling is not supported")
    for number, block in enumerate(visual.transformer.resblocks):
        attn = getattr(block, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention):
            raise TypeError(f"block {number} ({type(block).__name__}) has no nn.MultiheadAttention")
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn or hasattr(block, "ln_1_kv"):
            raise TypeError(f"block {number}: only CLIP's packed self-attention is supported")


def layer_norm(norm: nn.Module, x: Tensor, eps: float | None = None) -> Tensor:
    """The LayerNorm module on x, with another eps if one is given (cast back to x's dtype, as open_clip does).

    A norm that is not a LayerNorm (nn.Identity where a config has no ln_pre) runs as it is."""
    if eps is None or not isinstance(norm, nn.LayerNorm):
        return norm(x)
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, eps).to(x.dtype)


def block_mlp(block: nn.Module, x: Tensor, activation: str | None = None) -> Tensor:
    """The block's feed-forward branch (before ls_2), with another activation if one is given."""
    if activation is None:
        return block.mlp(x)
    hidden = block.mlp.c_fc(x)
    hidden = F.gelu(hidden) if activation == "gelu" else hidden * torch.sigmoid(1.702 * hidden)
    return block.mlp.c_proj(hidden)


def _check_tower_overrides(visual: nn.Module, recipe: DenseRecipe) -> None:
    if recipe.activation is None:
        return
    for block in visual.transformer.resblocks:
        names = [name for name, _ in block.mlp.named_children()]
        if names != ["c_fc", "gelu", "c_proj"]:
            raise TypeError(f"an activation override needs MLPs of c_fc, gelu, c_proj; this block has {names}")


def embed_patches(
    visual: nn.Module, images: Tensor, position_rule: str, layer_norm_eps: float | None = None
) -> tuple[Tensor, tuple[int, int]]:
    """Tokens [B, 1 + h*w, D] after ln_pre (with eps `layer_norm_eps` if given), and the patch grid (h, w)."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    grid = (x.shape[-2], x.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    source_grid = tuple(visual.grid_size)
    x = x + resize_positional_embedding(visual.positional_embedding, source_grid, grid, position_rule).to(x.dtype)
    return layer_norm(visual.ln_pre, x, layer_norm_eps), grid


def clip_block(block: nn.Module, x: Tensor, recipe: DenseRecipe) -> Tensor:
    """An unchanged block (q-k attention, residual, FFN) for batch-first x, under the recipe's tower overrides.

    The arithmetic of open_clip's ResidualAttentionBlock, with the attention written out (packed
    in-projection, scaled_dot_product_attention, out-projection) on batch-first tokens: the same
    products as nn.MultiheadAttention without its transposes to sequence-first and back.
    """
    eps = recipe.layer_norm_eps
    x = x + block.ls_1(self_attention(block.attn, layer_norm(block.ln_1, x, eps)))
    return x + block.ls_2(block_mlp(block, layer_norm(block.ln_2, x, eps), recipe.activation))


def last_block(block: nn.Module, x: Tensor, recipe: DenseRecipe, grid: tuple[int, int]) -> Tensor:
    eps = recipe.layer_norm_eps
    normed = layer_norm(block.ln_1, x, eps)
    attended = last_block_attention(block.attn, normed, recipe.attention, grid, recipe.gaussian_std)
    x = x + block.ls_1(attended) if recipe.residual else block.ls_1(attended)
    if recipe.ffn:
        x = x + block.ls_2(block_mlp(block, layer_norm(block.ln_2, x, eps), recipe.activation))
    return x


def last_block_input(visual: nn.Module, images: Tensor, recipe: DenseRecipe) -> tuple[Tensor, tuple[int, int]]:
    """Tokens [B, 1 + h*w, D] entering the last block (every block before it CLIP's own, under the recipe's tower
    overrides), and the patch grid (h, w)."""
    x, grid = embed_patches(visual, images, recipe.position_rule, recipe.layer_norm_eps)
    for block in visual.transformer.resblocks[:-1]:
        x = clip_block(block, x, recipe)
    return x, grid


def dense_features(visual: nn.Module, images: Tensor, recipe: DenseRecipe) -> Tensor:
    """[B, 3, H, W] normalised images -> patch features [B, h, w, embed_dim] after ln_post and proj."""
    check_supported(visual)
    _check_tower_overrides(visual, recipe)
    x, grid = last_block_input(visual, images, recipe)
    x = last_block(visual.transformer.resblocks[-1], x, recipe, grid)
    features = layer_norm(visual.ln_post, x[:, 1:], recipe.layer_norm_eps) @ visual.proj
    return features.reshape(x.shape[0], grid[0], grid[1], -1)


def _unit_features(visual: nn.Module, images: Tensor, recipe: DenseRecipe) -> Tensor:
    """Unit patch features in fp32 even under autocast: cosines of near-tied classes need the mantissa."""
    features = dense_features(visual, images, recipe).float()
    return features / features.norm(dim=-1, keepdim=True)


def _cosines(unit_features: Tensor, text: Tensor) -> Tensor:
    text = text.to(device=unit_features.device, dtype=unit_features.dtype)
    with torch.autocast(unit_features.device.type, enabled=False):
        return (unit_features @ text.t()).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class CropFeatures:
    """Unit patch features [B, h, w, D] of a batch of crops, and where the crops sit in the padded input."""

    features: Tensor
    crop_size: tuple[int, int]
    padded_size: tuple[int, int] | None = None  # pad_center: scores go up to this size, then the crop is cut out
    offset: tuple[int, int] = (0, 0)  # (top, left) of the crop in the padded input


def crop_features(visual: nn.Module, crops: Tensor, recipe: DenseRecipe) -> CropFeatures:
    """Unit patch features of crops of any size, following recipe.patch_rule (the image side of the scores)."""
    height, width = crops.shape[-2:]
    patch_h, patch_w = visual.patch_size
    pad_h, pad_w = -height % patch_h, -width % patch_w
    if recipe.patch_rule == "drop" or (pad_h == 0 and pad_w == 0):
        return CropFeatures(_unit_features(visual, crops, recipe), (height, width))
    if recipe.patch_rule == "pad_corner":
        return CropFeatures(_unit_features(visual, F.pad(crops, (0, pad_w, 0, pad_h)), recipe), (height, width))
    left, top = pad_w // 2, pad_h // 2
    padded = F.pad(crops, (left, pad_w - left, top, pad_h - top))
    return CropFeatures(_unit_features(visual, padded, recipe), (height, width), tuple(padded.shape[-2:]), (top, left))


def feature_cosines(crops: CropFeatures, text: Tensor) -> Tensor:
    """Per-name cosines [B, n_text, h', w'] at a resolution <= the crop, from crop_features.

    Scores on a patch grid are meant to be upsampled to the crop bilinearly (align_corners=False),
    which is what every reference does to its patch-grid scores.
    """
    scores = _cosines(crops.features, text)
    if crops.padded_size is None:
        return scores
    scores = F.interpolate(scores, size=crops.padded_size, mode="bilinear", align_corners=False)
    (top, left), (height, width) = crops.offset, crops.crop_size
    return scores[..., top:top + height, left:left + width]
