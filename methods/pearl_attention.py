"""PEARL's Procrustes-aligned attention for the last block of CLIP's image tower (PGSmall/PEARL pearl/attn.py pa_attn).

Per head, with q, k, v the block's projections of its input tokens (class token first) and s = head_dim ** -0.5:

1. weights w_t = |q_t| / sum_t' |q_t'| over the patch tokens (the class token has weight 0, `detach_cls`;
   1e-6 added to the sum); centroids q_mu = sum_t w_t q_t, k_mu = sum_t w_t k_t; q_c = q - q_mu, k_c = k - k_mu;
2. R, the orthogonal polar factor of M = k_c^T q_c (the rotation that best maps keys onto queries), by
   Newton-Schulz (`polar`, 5 iterations) or by SVD (R = U V^T);
3. softmax(s q (k R)^T + alpha_kk s k_c k_c^T) v, the key-key term only with `use_kk`.

The reference computes all of it in float32 whatever the model's precision and casts the output back; so does
`procrustes_attention`, with autocast off.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from methods.clip_attention import project_heads

ALIGN_SOLVERS = ("polar", "svd")
CENTROID_EPS = 1e-6  # pa_attn: w / (w.sum() + 1e-6)
POLAR_EPS = 1e-6  # _polar_unitary_newton_schulz(eps=1e-6): floor of |A|_F and the ridge added to A / |A|_F


def polar_factor(matrix: Tensor, iterations: int) -> Tensor:
    """M [..., d, d] -> M (M^T M)^(-1/2), the inverse square root by coupled Newton-Schulz on A / |A|_F + eps I.

    As _polar_unitary_newton_schulz: A = M^T M scaled by its Frobenius norm (floored at eps) plus eps I; Y_0 = that,
    Z_0 = I; T = (3I - Z Y) / 2, Y <- Y T, Z <- T Z; A^(-1/2) ~ Z / sqrt(|A|_F).
    """
    dim = matrix.shape[-1]
    eye = torch.eye(dim, device=matrix.device, dtype=matrix.dtype).expand_as(matrix)
    gram = matrix.transpose(-2, -1) @ matrix
    frobenius = gram.flatten(-2).norm(dim=-1).clamp_min(POLAR_EPS)[..., None, None]
    y = gram / frobenius + POLAR_EPS * eye
    z = eye.clone()
    for _ in range(iterations):
        step = 0.5 * (3.0 * eye - z @ y)
        y = y @ step
        z = step @ z
    return matrix @ (z / torch.sqrt(frobenius))


def svd_factor(matrix: Tensor) -> Tensor:
    """M [..., d, d] -> U V^T from M's thin SVD; the identity where the SVD does not converge (as pa_attn does)."""
    try:
        left, _, right = torch.linalg.svd(matrix, full_matrices=False)
    except torch.linalg.LinAlgError:
        return torch.eye(matrix.shape[-1], device=matrix.device, dtype=matrix.dtype).expand_as(matrix).clone()
    return left @ right


def procrustes_weights(
    q: Tensor, k: Tensor, alpha_kk: float, use_kk: bool, align_solver: str, polar_iterations: int
) -> Tensor:
    """Attention weights [..., L, L] from float32 q, k [..., L, head_dim] (token 0 the class token)."""
    if align_solver not in ALIGN_SOLVERS:
        raise ValueError(f"align_solver must be one of {ALIGN_SOLVERS}, got {align_solver!r}")
    scale = q.shape[-1] ** -0.5
    weights = q.norm(dim=-1, keepdim=True)
    weights[..., :1, :] = 0.0
    weights = weights / (weights.sum(dim=-2, keepdim=True) + CENTROID_EPS)
    q_centred = q - (weights * q).sum(dim=-2, keepdim=True)
    k_centred = k - (weights * k).sum(dim=-2, keepdim=True)
    cross = k_centred.transpose(-2, -1) @ q_centred
    rotation = polar_factor(cross, polar_iterations) if align_solver == "polar" else svd_factor(cross)
    logits = (q * scale) @ (k @ rotation).transpose(-2, -1)
    if use_kk:
        logits = logits + alpha_kk * ((k_centred @ k_centred.transpose(-2, -1)) * scale)
    return logits.softmax(dim=-1)


def procrustes_attention(
    attn: nn.MultiheadAttention, x: Tensor, alpha_kk: float, use_kk: bool = True, align_solver: str = "polar",
    polar_iterations: int = 5,
) -> Tensor:
    """The block's Procrustes-aligned attention for normalised tokens x [B, L, D], out-projection included."""
    q, k, v = project_heads(attn, x)
    with torch.autocast(x.device.type, enabled=False):
        weights = procrustes_weights(q.float(), k.float(), alpha_kk, use_kk, align_solver, polar_iterations)
        mixed = (weights @ v.float()).to(q.dtype)
    batch, heads, length, head_dim = mixed.shape
    return attn.out_proj(mixed.transpose(1, 2).reshape(batch, length, heads * head_dim))
