"""SFP's outlier tokens and their purification (Kimsure/SFP, SFP_ICCV/clip/model.py VisionTransformer).

An outlier is a patch token of the last intermediate block that the method distrusts; purification
replaces each outlier by the mean of its non-outlier 8-neighbours on the patch grid. Three detectors
(``pm`` in configs/base_config.py):

- ``SOM`` (forward, pm == 'SOM'): per head, the class token's attention to each patch is scaled by
  res_cls * res_scale; heads averaged; a patch is salient where that exceeds its attention to itself;
  the `count` salient patches with the highest scaled class attention are the outliers;
- ``L2`` (pm == 'L2'): the `count` patch tokens of highest L2 norm;
- ``LOF`` (pm == 'LOF', lof_pytorch from SC-CLIP): local outlier factor over the patch tokens
  (squared distances, k nearest neighbours, reach distance the larger of a neighbour's distance and
  the token's own k-distance); the tokens above the (1 - contamination) quantile of the factors.

Every detector returns a mask [B, N] over the patch tokens in row-major grid order; each crop of
a batch is treated alone, as the reference treats its batch of one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from methods.outlier_tokens import lof_outliers, replace_with_neighbour_mean

OUTLIER_DETECTORS = ("SOM", "L2", "LOF")


def _top_mask(scores: Tensor, count: int) -> Tensor:
    """[B, N] bool: the `count` highest finite scores of each row."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    count = min(count, scores.shape[-1])
    if count <= 0:
        return mask
    values, indices = scores.topk(count, dim=-1)
    mask.scatter_(-1, indices, values > float("-inf"))
    return mask


def salient_outliers(attention: Tensor, count: int, class_scale: float) -> Tensor:
    """SOM: attention [B, heads, 1 + N, 1 + N] (softmax weights of the block, class token first) -> [B, N]."""
    to_patches = (attention[:, :, 0, 1:] * class_scale).mean(dim=1)
    to_itself = attention[:, :, 1:, 1:].diagonal(dim1=-2, dim2=-1).mean(dim=1)
    salient = to_patches > to_itself
    return _top_mask(torch.where(salient, to_patches, torch.full_like(to_patches, float("-inf"))), count)


def norm_outliers(patches: Tensor, count: int) -> Tensor:
    """L2: patch tokens [B, N, D] -> [B, N], the `count` largest norms."""
    return _top_mask(patches.norm(dim=-1), count)


def local_outlier_factor_outliers(patches: Tensor, neighbours: int, contamination: float) -> Tensor:
    """LOF: patch tokens [B, N, D] -> [B, N], each crop alone; `neighbours` is capped at N - 1 on small grids."""
    return torch.stack([lof_outliers(tokens, neighbours, contamination) for tokens in patches.float()])


def purify(patches: Tensor, outliers: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch tokens [B, N, D] with each outlier replaced by the mean of its non-outlier 8-neighbours.

    mean_interpolation: an outlier without such a neighbour becomes zero; other tokens are unchanged.
    """
    return replace_with_neighbour_mean(patches, outliers, grid, isolated="zero")
