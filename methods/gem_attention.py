"""GEM's self-self attention (Bousselham et al., CVPR 2024): WalBouss/GEM gem/gem_utils.py SelfSelfAttention.

With q, k, v the per-head projections of a block's normalised input tokens (class token first), each
of v, k and q is clustered on its own and the three clusterings mix the values:

    t <- softmax(N(t) N(t)^T tau) N(t)          `iterations` times (N: L2 normalisation per token)
    out_t = softmax(N(t) N(t)^T tau) v
    out   = out_proj((out_v + out_k + out_q) / 3)

tau, the inverse temperature, is given (``ss_attn_temp``) or adaptive: the mean over the crop's
tokens of their norms (the block's normalised input) times head_dim ** -0.5, one value per crop.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def adaptive_inverse_temperature(x: Tensor, scale: float) -> Tensor:
    """[B, 1, 1, 1]: the mean token norm of each crop's tokens x [B, L, D], times `scale`."""
    return x.norm(dim=-1).mean(dim=-1).reshape(-1, 1, 1, 1) * scale


def self_self_mixing(tokens: Tensor, values: Tensor, inverse_temperature: Tensor | float, iterations: int) -> Tensor:
    """Values [B, heads, L, head_dim] mixed by the self-similarity of `tokens` after `iterations` clustering steps."""
    for _ in range(iterations):
        tokens = F.normalize(tokens, dim=-1)
        tokens = ((tokens @ tokens.transpose(-2, -1)) * inverse_temperature).softmax(dim=-1) @ tokens
    tokens = F.normalize(tokens, dim=-1)
    return ((tokens @ tokens.transpose(-2, -1)) * inverse_temperature).softmax(dim=-1) @ values


def merge_heads(attn: nn.MultiheadAttention, mixed: Tensor) -> Tensor:
    """[B, heads, L, head_dim] -> [B, L, D] through the block's out-projection."""
    batch, heads, length, head_dim = mixed.shape
    return attn.out_proj(mixed.transpose(1, 2).reshape(batch, length, heads * head_dim))


def self_self_attention(
    attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, x: Tensor, iterations: int,
    temperature: float | None,
) -> Tensor:
    """GEM's path output [B, L, D] for the per-head q, k, v of the normalised tokens x [B, L, D]."""
    if temperature is None:
        inverse_temperature: Tensor | float = adaptive_inverse_temperature(x, q.shape[-1] ** -0.5)
    else:
        inverse_temperature = float(temperature)
    mixed = (
        self_self_mixing(v, v, inverse_temperature, iterations)
        + self_self_mixing(k, v, inverse_temperature, iterations)
        + self_self_mixing(q, v, inverse_temperature, iterations)
    ) / 3
    return merge_heads(attn, mixed)
