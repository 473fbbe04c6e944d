"""The image encoder's outputs ViL-Seg uses: every token of an open_clip ViT after its final LayerNorm.

Patch tokens (width D of the ViT) are the "patch embeddings" the clustering head groups; the
joint image-text space is reached with the ViT's own output projection, so pooling tokens then
projecting equals projecting then pooling, at training (whole image) and inference (one group).
Positional embeddings are resized bicubically to the crop's patch grid (``size`` rule of
methods/clip_dense.py), so local crops and inference crops of any size work.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from methods.clip_dense import check_supported, embed_patches

POSITION_RULE = "size"


def check_encoder(visual: nn.Module) -> None:
    """Raises TypeError unless `visual` is an open_clip VisionTransformer with LayerNorm on every token."""
    check_supported(visual)


def encode_tokens(visual: nn.Module, images: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """[B,3,H,W] -> class token [B,D], patch tokens [B,h*w,D] (after ln_post) and the grid (h, w)."""
    tokens, grid = embed_patches(visual, images, POSITION_RULE)
    tokens = visual.ln_post(visual.transformer(tokens))
    return tokens[:, 0], tokens[:, 1:], grid


def pool(cls_token: Tensor, patches: Tensor, pooling: str) -> Tensor:
    """The image's token [B,D]: mean of its patch tokens, or its class token."""
    return patches.mean(dim=1) if pooling == "mean" else cls_token


def project(visual: nn.Module, tokens: Tensor, normalize: bool = True) -> Tensor:
    """Tokens [..., D] -> the joint image-text space [..., E] through the ViT's output projection."""
    if getattr(visual, "proj", None) is not None:
        tokens = tokens @ visual.proj.to(tokens.dtype)
    return F.normalize(tokens, dim=-1) if normalize else tokens
