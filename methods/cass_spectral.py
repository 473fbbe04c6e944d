"""CASS's last CLIP block: spectral distillation of DINO's key graphs into CLIP's key-key attention.

Per crop (MICV-yonsei/CASS@228ecdd clip/model.py custom_attn with attn_strategy 'spectral'):

    CLIP keys k [H, N, d] (class token dropped)      DINO keys of its last block [H, d, n_dino] (after norm1)
                                                       bilinear to CLIP's grid, min-max to k's range -> K
    A = k k^T / sqrt(d)                               A_dino = K K^T / sqrt(d)             [H, N, N]
    top-20 eigenvalues per head (float64), L2 then L1 normalised; cost[i, j] = 1 - W1(dino_i, clip_j) (float32)
    Hungarian assignment (row i -> col pi(i)) on cost
    head h: rank-10 svd_lowrank of A_dino[pi(h)] (float64), singular values rescaled (`eigenscaling`), diagonal
            zeroed, min-max to A[h]'s range -> D; mixed = (w D + A[h]) / (w + 1), w = 10 (1 - cost[h, pi(h)])
    softmax(mixed + Gaussian prior of the patch grid) @ v, out-projection

The indices are the reference's: output head h mixes CLIP head h with DINO head pi(h) and weighs the pair
(DINO h, CLIP pi(h)). `torch.svd_lowrank` draws random numbers; the caller seeds them per crop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from methods.clip_attention import neighbourhood_prior, project_heads

K_EIGEN = 20  # clip/model.py custom_attn config k_eigen
MIX_WEIGHT = 10.0  # config scale_factor
LOW_RANK = 10  # optimal_q(initial_q=10): its energy test always passes at the first rank tried


def spectrum(graphs: Tensor, count: int = K_EIGEN) -> Tensor:
    """Top eigenvalues [H, count] of symmetric graphs [H, N, N] (float64, descending), L2-normalised per head."""
    values = torch.stack([torch.sort(torch.linalg.eigvalsh(graph), descending=True)[0][:count]
                          for graph in graphs.double()])
    return F.normalize(values, p=2, dim=1)


def head_costs(dino_values: Tensor, clip_values: Tensor) -> Tensor:
    """cost[i, j] = 1 - sum |sort(u_i) - sort(v_j)|, u and v the L1-normalised spectra (float32, as stored)."""
    dino = F.normalize(dino_values, p=1, dim=-1)
    clip = F.normalize(clip_values, p=1, dim=-1)
    heads = dino.shape[0]
    costs = torch.zeros(heads, heads, dtype=torch.float32, device=dino.device)
    for i in range(heads):
        for j in range(heads):
            distance = torch.sum(torch.abs(torch.sort(dino[i])[0] - torch.sort(clip[j])[0]))
            costs[i, j] = 1 - distance
    return costs


def rescaled_singular_values(values: Tensor) -> Tensor:
    """Dynamic eigenscaling: s_min -> s_min / 2, s_max -> 1.5 s_max, linearly between."""
    low, high = values.min(), values.max()
    return (values - low) / (high - low) * (1.5 * high - 0.5 * low) + 0.5 * low


def range_matched(source: Tensor, target: Tensor) -> Tensor:
    low, high = source.min(), source.max()
    return (source - low) / (high - low) * (target.max() - target.min()) + target.min()


def spectral_attention(k: Tensor, dino_keys: Tensor, grid: tuple[int, int], gaussian_std: float,
                       eigenscaling: bool) -> Tensor:
    """Attention weights [H, N, N] of one crop.

    Args:
        k: CLIP's keys of the last block [H, N, d], class token dropped.
        dino_keys: DINO's keys resized to CLIP's grid and range [H, N, d].
        grid: CLIP's patch grid (h, w), N = h * w.
        eigenscaling: rescale the low-rank DINO graph's singular values (every dataset but voc20 and cityscapes).
    Returns:
        softmax over keys of the mixed graphs plus the Gaussian prior.
    """
    scale = k.shape[-1] ** -0.5
    clip_graphs = torch.bmm(k, k.transpose(1, 2)) * scale
    dino_graphs = torch.bmm(dino_keys, dino_keys.transpose(1, 2)) * scale
    costs = head_costs(spectrum(dino_graphs), spectrum(clip_graphs))
    rows, cols = linear_sum_assignment(costs.cpu().numpy())
    mixed = torch.zeros_like(clip_graphs)
    for head in range(k.shape[0]):
        i, j = int(rows[head]), int(cols[head])
        weight = 1 - costs[i, j]
        u, s, v = torch.svd_lowrank(dino_graphs[j].double(), q=LOW_RANK)
        s = rescaled_singular_values(s) if eigenscaling else s
        low_rank = u @ torch.diag(s) @ v.T
        low_rank.fill_diagonal_(0)
        target = clip_graphs[i]
        mixed[head] = (weight * MIX_WEIGHT * range_matched(low_rank, target) + target) / (weight * MIX_WEIGHT + 1)
    prior = neighbourhood_prior(grid, gaussian_std, mixed)[1:, 1:]
    return (mixed + prior).softmax(dim=-1)


def dino_keys_on_grid(dino_keys: Tensor, dino_grid: tuple[int, int], k: Tensor, grid: tuple[int, int]) -> Tensor:
    """DINO's keys [H, n_dino, d] -> [H, N, d]: bilinear to CLIP's grid, then min-max to the range of CLIP's keys
    (global scalars over heads, tokens and channels)."""
    heads, _, dim = dino_keys.shape
    planes = dino_keys.permute(0, 2, 1).reshape(heads, dim, *dino_grid)
    planes = F.interpolate(planes, size=grid, mode="bilinear", align_corners=False)
    keys = planes.reshape(heads, dim, grid[0] * grid[1]).permute(0, 2, 1)
    return range_matched(keys, k)


def spectral_last_block(block: nn.Module, x: Tensor, grid: tuple[int, int], dino_keys: Tensor,
                        dino_grid: tuple[int, int], gaussian_std: float, eigenscaling: bool) -> Tensor:
    """The last block's output for one crop: attention alone (no residual, no FFN), [N, D] on CLIP's grid.

    Args:
        block: CLIP's last ResidualAttentionBlock.
        x: tokens entering it [1 + N, D].
        dino_keys: DINO's last-block keys [H, n_dino, d] of the crop (class token dropped).
    """
    q, k, v = project_heads(block.attn, block.ln_1(x[None]))
    k, v = k[0, :, 1:], v[0, :, 1:]
    if dino_keys.shape[0] != k.shape[0] or dino_keys.shape[-1] != k.shape[-1]:
        raise ValueError(f"CASS pairs DINO's heads with CLIP's: DINO has {dino_keys.shape[0]} heads of "
                         f"{dino_keys.shape[-1]}, CLIP {k.shape[0]} of {k.shape[-1]}")
    keys = dino_keys_on_grid(dino_keys, dino_grid, k, grid)
    weights = spectral_attention(k, keys, grid, gaussian_std, eigenscaling)
    mixed = torch.bmm(weights, v)
    return block.ls_1(block.attn.out_proj(mixed.transpose(0, 1).reshape(mixed.shape[1], -1)))
