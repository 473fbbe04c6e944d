"""Attention rules for the last block of CLIP's image tower, as the training-free baselines use them.

With q, k, v the per-head projections of the block's input tokens (class token first) and
s = head_dim ** -0.5:

- ``qk``           softmax(q k^T s): CLIP's own attention
- ``identity``     each token attends only to itself, the output is v (MaskCLIP)
- ``qq+kk``        softmax(q q^T s) + softmax(k k^T s): SCLIP's correlative self-attention
- ``qq``           softmax(q q^T s): ClearCLIP's self-self attention
- ``kk+gaussian``  softmax(k k^T s + G): NACLIP, G a Gaussian of the patches' grid distance,
                   zero in the class token's row and column
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_RULES = ("qk", "identity", "qq+kk", "qq", "kk+gaussian")


def project_heads(attn: nn.MultiheadAttention, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x [B, L, D] -> q, k, v [B, heads, L, head_dim] with the block's packed in-projection."""
    batch, length, dim = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.reshape(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    return q, k, v


@lru_cache(maxsize=32)
def _grid_gaussian(height: int, width: int, std: float) -> Tensor:
    rows = torch.arange(height, dtype=torch.float64)
    cols = torch.arange(width, dtype=torch.float64)
    d_rows = (rows[:, None] - rows[None, :]) ** 2  # [h, h]
    d_cols = (cols[:, None] - cols[None, :]) ** 2  # [w, w]
    squared = d_rows[:, None, :, None] + d_cols[None, :, None, :]  # [h, w, h, w]
    kernel = torch.exp(-squared / (2 * std**2)).reshape(height * width, height * width)
    return F.pad(kernel, (1, 0, 1, 0)).float()


def neighbourhood_prior(grid: tuple[int, int], std: float, like: Tensor) -> Tensor:
    """G [1 + h*w, 1 + h*w]: exp(-|p_i - p_j|^2 / (2 std^2)) between patch positions, 0 for the class token."""
    return _grid_gaussian(grid[0], grid[1], float(std)).to(device=like.device, dtype=like.dtype)


def attention_weights(q: Tensor, k: Tensor, rule: str, grid: tuple[int, int], gaussian_std: float) -> Tensor:
    scale = q.shape[-1] ** -0.5
    if rule == "qk":
        return (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    if rule == "qq":
        return (q @ q.transpose(-2, -1) * scale).softmax(dim=-1)
    if rule == "qq+kk":
        return (q @ q.transpose(-2, -1) * scale).softmax(dim=-1) + (k @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    if rule == "kk+gaussian":
        if gaussian_std <= 0:
            raise ValueError("the kk+gaussian rule needs a positive gaussian_std")
        logits = k @ k.transpose(-2, -1) * scale
        return (logits + neighbourhood_prior(grid, gaussian_std, logits)).softmax(dim=-1)
    raise ValueError(f"attention rule must be one of {ATTENTION_RULES}, got {rule!r}")


def self_attention(attn: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """CLIP's own attention (softmax(q k^T s) v) for normalised tokens x [B, L, D], out-projection included."""
    q, k, v = project_heads(attn, x)
    mixed = F.scaled_dot_product_attention(q, k, v)
    batch, heads, length, head_dim = mixed.shape
    return attn.out_proj(mixed.transpose(1, 2).reshape(batch, length, heads * head_dim))


def value_only(attn: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """MaskCLIP's identity attention: out_proj(v) for tokens x [B, L, D], without computing q and k."""
    dim = x.shape[-1]
    bias = attn.in_proj_bias[2 * dim:] if attn.in_proj_bias is not None else None
    return attn.out_proj(F.linear(x, attn.in_proj_weight[2 * dim:], bias))


def last_block_attention(
    attn: nn.MultiheadAttention, x: Tensor, rule: str, grid: tuple[int, int], gaussian_std: float = 0.0
) -> Tensor:
    """The block's attention output for normalised tokens x [B, L, D], out-projection included."""
    if rule == "identity":
        return value_only(attn, x)
    q, k, v = project_heads(attn, x)
    mixed = attention_weights(q, k, rule, grid, gaussian_std) @ v
    batch, heads, length, head_dim = mixed.shape
    return attn.out_proj(mixed.transpose(1, 2).reshape(batch, length, heads * head_dim))
