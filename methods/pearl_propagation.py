"""PEARL's text-aware Laplacian propagation (TLP) of whole-image logits (PGSmall/PEARL pearl/prop.py TLP).

On cosine logits X0 [B, C, H, W] at the original image size and the normalised image resized to it:

1. both are average-pooled by (sh, sw) = (max(1, round(H / grid)), max(1, round(W / grid))) (Python's round,
   half to even; floor pooling drops the remainder), unless both are 1;
2. p = softmax over the names of the pooled logits, confidence c = max p;
3. text trust a_k per name (TLP.bind_text): the row-normalised affinity S = (softmax(T T^T / 0.5) + 10 I) / row
   sums (+1e-6), T the unit name embeddings. The reference applies S as einsum('cc,bcij->bcij', S, p), which
   takes S's diagonal: only a_k = S_kk enters, as the agreement sum_k a_k p_k^2 and as the edge gain
   sum_k a_k p_k(x) p_k(x'); this module computes exactly that;
4. data weights Cw = max(c, 0.05)^2 (1 + clamp(agreement, 0, 1)); edge weights between horizontal and vertical
   neighbours exp(-5 g / mean g) (g the absolute difference of the luma 0.299 r + 0.587 g + 0.114 b, mean over
   the batch) times 1 + clamp(gain, 0, 1), clamped to [0, 1];
5. X solves (diag(Cw) + L) X = Cw X0 (L the weighted graph Laplacian) by 25 conjugate-gradient steps from X0
   (sums over a batch item's names and pixels; 1e-12 added to each denominator);
6. X is upsampled bilinearly (align_corners=False) back to (H, W) where it was pooled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# TLP.__init__: fixed constants of the method, none of them a constructor argument.
EPS = 1e-6
TEXT_TEMPERATURE = 0.5  # _tau_S
SELF_BOOST = 10.0  # _diag_boost
EDGE_SHARPNESS = 5.0  # _ke_img
CG_STEPS = 25  # _cg_iters
CONFIDENCE_FLOOR = 0.05  # forward: conf.clamp_min(0.05)
CG_EPS = 1e-12  # _cg_solve
LUMA = (0.299, 0.587, 0.114)  # _to_gray


def text_trust(text_embeddings: Tensor) -> Tensor:
    """[C, D] name embeddings -> [C]: the diagonal of TLP's row-normalised text affinity (all that TLP reads of it)."""
    unit = F.normalize(text_embeddings.float(), dim=-1)
    affinity = torch.softmax(unit @ unit.t() / TEXT_TEMPERATURE, dim=1)
    affinity = affinity + SELF_BOOST * torch.eye(affinity.shape[0], dtype=affinity.dtype, device=affinity.device)
    affinity = affinity / (affinity.sum(dim=1, keepdim=True) + EPS)
    return affinity.diagonal().clone()


def pooling_factors(height: int, width: int, grid: int) -> tuple[int, int]:
    """(sh, sw): the average-pooling kernel that brings (height, width) near grid x grid (TLP._auto_scale)."""
    return max(1, round(height / float(grid))), max(1, round(width / float(grid)))


def _luma(image: Tensor) -> Tensor:
    if image.shape[1] != 3:
        return image[:, :1]
    return LUMA[0] * image[:, 0:1] + LUMA[1] * image[:, 1:2] + LUMA[2] * image[:, 2:3]


def _edge_weights(luma: Tensor, probs: Tensor, trust: Tensor) -> tuple[Tensor, Tensor]:
    """Weights [B,1,H,W-1] between horizontal and [B,1,H-1,W] between vertical neighbours."""
    trusted = trust[None, :, None, None] * probs
    weights = []
    for axis in (3, 2):
        length = luma.shape[axis]
        step = torch.abs(luma.narrow(axis, 1, length - 1) - luma.narrow(axis, 0, length - 1))
        step = step / (step.mean() + EPS)
        gain = (probs.narrow(axis, 1, length - 1) * trusted.narrow(axis, 0, length - 1)).sum(dim=1, keepdim=True)
        weights.append((torch.exp(-EDGE_SHARPNESS * step) * (1.0 + gain.clamp(0.0, 1.0))).clamp(0.0, 1.0))
    return weights[0], weights[1]


def _laplacian(values: Tensor, horizontal: Tensor, vertical: Tensor) -> Tensor:
    """L X for X [B,C,H,W]: each neighbour pair's weighted difference added to one side, taken from the other."""
    flow = horizontal * (values[..., 1:] - values[..., :-1])
    out = F.pad(flow, (1, 0)) - F.pad(flow, (0, 1))
    flow = vertical * (values[..., 1:, :] - values[..., :-1, :])
    return out + F.pad(flow, (0, 0, 1, 0)) - F.pad(flow, (0, 0, 0, 1))


def _conjugate_gradient(apply: Callable[[Tensor], Tensor], target: Tensor, start: Tensor, steps: int) -> Tensor:
    solution = start.clone()
    residual = target - apply(solution)
    direction = residual.clone()
    norm = (residual * residual).sum(dim=(1, 2, 3), keepdim=True)
    for _ in range(steps):
        image = apply(direction)
        alpha = norm / ((direction * image).sum(dim=(1, 2, 3), keepdim=True) + CG_EPS)
        solution = solution + alpha * direction
        residual = residual - alpha * image
        new_norm = (residual * residual).sum(dim=(1, 2, 3), keepdim=True)
        direction = residual + (new_norm / (norm + CG_EPS)) * direction
        norm = new_norm
    return solution


@torch.no_grad()
def propagate(image: Tensor, logits: Tensor, trust: Tensor, grid: int) -> Tensor:
    """Refined logits [B, C, H, W] (logits' dtype) from image [B, 3, H, W] and cosine logits [B, C, H, W]."""
    height, width = logits.shape[-2:]
    factors = pooling_factors(height, width, grid)
    pooled = factors != (1, 1)
    small_image, small_logits = image.float(), logits.float()
    if pooled:
        small_image = F.avg_pool2d(small_image, kernel_size=factors, stride=factors, count_include_pad=False)
        small_logits = F.avg_pool2d(small_logits, kernel_size=factors, stride=factors, count_include_pad=False)
    trust = trust.to(device=logits.device, dtype=torch.float32)
    probs = torch.softmax(small_logits, dim=1)
    confidence = probs.max(dim=1, keepdim=True)[0]
    agreement = (probs * (trust[None, :, None, None] * probs)).sum(dim=1, keepdim=True).clamp(0.0, 1.0)
    data_weight = (confidence.clamp_min(CONFIDENCE_FLOOR) ** 2) * (1.0 + agreement)
    horizontal, vertical = _edge_weights(_luma(small_image), probs, trust)

    def system(values: Tensor) -> Tensor:
        return data_weight * values + _laplacian(values, horizontal, vertical)

    solution = _conjugate_gradient(system, data_weight * small_logits, small_logits, CG_STEPS)
    if pooled:
        solution = F.interpolate(solution, size=(height, width), mode="bilinear", align_corners=False)
    return solution.to(logits.dtype)
