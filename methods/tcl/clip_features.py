"""What TCL reads from the frozen CLIP image tower (an open_clip VisionTransformer).

- ``encode_until_last``: tokens entering the last block (the output of block 11 of ViT-B/16),
  which feed both the frozen last block and the masker's trainable copy of it;
- ``dense_embeddings``: the frozen last block run with the MaskCLIP trick (every token attends
  only to itself, residual and MLP kept: sclip/model.py Transformer.forward with
  ignore_last_attn), then CLIP's final LayerNorm and projection on every patch token;
- ``global_embedding``: CLIP's ordinary image embedding (class token), used by the image-level
  text-grounded loss on masked images.

Positional embeddings follow sclip/model.py interpolate_pos_emb: kept when the patch grid is the
trained square grid, else resized bicubically (align_corners=False) to the grid's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.clip_dense import DenseRecipe, check_supported, last_block

# The last block as TCL runs it: identity attention, residual and MLP kept. The patch and
# position rules of the recipe are not used here (see module docstring).
MASKCLIP_LAST_BLOCK = DenseRecipe(
    attention="identity", residual=True, ffn=True, patch_rule="pad_center", position_rule="size"
)


def positional_embedding(visual: nn.Module, grid: tuple[int, int]) -> Tensor:
    positional = visual.positional_embedding
    source = tuple(visual.grid_size)
    if tuple(grid) == source:
        return positional
    dim = positional.shape[-1]
    patches = positional[1:].reshape(1, source[0], source[1], dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([positional[:1], patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], dim)])


def _run_blocks(visual: nn.Module, x: Tensor, blocks: list[nn.Module]) -> Tensor:
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in blocks:
        x = block(x)
    return x if batch_first else x.transpose(0, 1)


def encode_until_last(visual: nn.Module, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """images [B, 3, H, W] (H, W multiples of the patch) -> tokens [B, 1 + h*w, D] before the last block, (h, w)."""
    check_supported(visual)
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    grid = (x.shape[-2], x.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + positional_embedding(visual, grid).to(x.dtype)
    x = visual.ln_pre(x)
    return _run_blocks(visual, x, list(visual.transformer.resblocks[:-1])), grid


def dense_embeddings(visual: nn.Module, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Tokens before the last block -> frozen MaskCLIP-style patch embeddings [B, embed_dim, h, w]."""
    x = last_block(visual.transformer.resblocks[-1], tokens, MASKCLIP_LAST_BLOCK, grid)
    x = visual.ln_post(x[:, 1:]) @ visual.proj
    return x.transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1])


def global_embedding(visual: nn.Module, images: Tensor) -> Tensor:
    """CLIP's image embedding [B, embed_dim] (class token, ordinary attention in every block)."""
    tokens, _ = encode_until_last(visual, images)
    x = _run_blocks(visual, tokens, [visual.transformer.resblocks[-1]])
    return visual.ln_post(x[:, 0]) @ visual.proj
