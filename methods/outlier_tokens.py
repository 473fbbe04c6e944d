"""Outlier patch tokens of CLIP's late blocks and their replacement by their grid neighbours.

SC-CLIP (SuleBai/SC-CLIP clip/model.py lof_pytorch, mean_interpolation) finds them by a local outlier
factor; SFP (Kimsure/SFP SFP_ICCV/clip/model.py, pm == 'LOF') takes the same code from SC-CLIP. Both then
replace each outlier by the mean of its non-outlier 8-neighbours on the patch grid; they differ only for an
outlier with no such neighbour (SC-CLIP keeps it, SFP zeroes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Rows of the pairwise-distance tensor computed at once (bounds the search's memory on large grids).
DISTANCE_CHUNK_ELEMENTS = 1 << 26


def squared_distances(tokens: Tensor) -> Tensor:
    """[N, D] -> [N, N] squared Euclidean distances, as lof_pytorch takes them (norm of differences, squared),
    a block of rows at a time."""
    count, dim = tokens.shape
    rows = max(1, DISTANCE_CHUNK_ELEMENTS // max(1, count * dim))
    blocks = [
        torch.norm(tokens[start:start + rows, None] - tokens[None, :], dim=2, p=2) ** 2
        for start in range(0, count, rows)
    ]
    return torch.cat(blocks)


def local_outlier_factors(tokens: Tensor, neighbours: int) -> Tensor:
    """[N, D] -> LOF score per token [N] (lof_pytorch): the mean ratio of the neighbours' local reachability
    density to the token's own, over its `neighbours` nearest tokens (the nearest, itself, left out)."""
    distances, indices = torch.topk(squared_distances(tokens), k=neighbours + 1, largest=False)
    distances, indices = distances[:, 1:], indices[:, 1:]
    reach = torch.max(distances, distances[:, -1:].expand_as(distances))
    density = neighbours / torch.nan_to_num(reach.mean(dim=1), nan=1e-6)
    return (density[indices] / density.unsqueeze(1)).mean(dim=1)


def lof_outliers(tokens: Tensor, neighbours: int, contamination: float) -> Tensor:
    """[N, D] -> bool [N]: LOF above its (1 - contamination) quantile.

    With fewer than neighbours + 1 tokens (a small crop), the neighbours are all other tokens, as
    scikit-learn's LocalOutlierFactor (SC-CLIP's earlier outlier search) clamps them; the torch port raises.
    """
    count = tokens.shape[0]
    neighbours = min(neighbours, count - 1)
    if neighbours < 1:
        return torch.zeros(count, dtype=torch.bool, device=tokens.device)
    scores = local_outlier_factors(tokens, neighbours)
    return scores > torch.quantile(scores.to(torch.float32), 1 - contamination)


def replace_with_neighbour_mean(tokens: Tensor, outliers: Tensor, grid: tuple[int, int], isolated: str) -> Tensor:
    """Patch tokens [B, N, D] (row-major on `grid`) with each outlier (bool [B, N]) replaced by the mean of its
    non-outlier 3x3 neighbours; an outlier without one is kept (`isolated="keep"`) or zeroed ("zero")."""
    if isolated not in ("keep", "zero"):
        raise ValueError(f"isolated must be 'keep' or 'zero', got {isolated!r}")
    batch, count, dim = tokens.shape
    height, width = grid
    features = tokens.transpose(1, 2).reshape(batch, dim, height, width)
    normal = (~outliers).to(features.dtype).reshape(batch, 1, height, width)
    kernel = torch.ones(dim, 1, 3, 3, device=features.device, dtype=features.dtype)
    kernel[:, 0, 1, 1] = 0
    neighbour_sum = F.conv2d(F.pad(features * normal, (1, 1, 1, 1)), kernel, groups=dim)
    normal_neighbours = F.conv2d(F.pad(normal, (1, 1, 1, 1)), kernel[:1])
    mean = neighbour_sum / normal_neighbours.clamp(min=1)
    replace = outliers.reshape(batch, 1, height, width)
    if isolated == "keep":
        replace = replace & (normal_neighbours > 0)
    return torch.where(replace, mean, features).reshape(batch, dim, count).transpose(1, 2)
