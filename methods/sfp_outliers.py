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
import torch.nn.functional as F
from torch import Tensor

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
    """LOF: patch tokens [B, N, D] -> [B, N]; `neighbours` is capped at N - 1 on small grids."""
    masks = []
    for tokens in patches.float():
        k = min(neighbours, tokens.shape[0] - 1)
        if k < 1:
            masks.append(torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device))
            continue
        distances = torch.norm(tokens[:, None] - tokens[None, :], dim=2, p=2) ** 2
        knn_distances, knn_indices = torch.topk(distances, k=k + 1, largest=False)
        knn_distances, knn_indices = knn_distances[:, 1:], knn_indices[:, 1:]
        reach = torch.max(knn_distances, knn_distances[:, -1:].expand_as(knn_distances))
        density = k / torch.nan_to_num(reach.mean(dim=1), nan=1e-6)
        factors = (density[knn_indices] / density[:, None]).mean(dim=1)
        masks.append(factors > torch.quantile(factors, 1 - contamination))
    return torch.stack(masks)


def purify(patches: Tensor, outliers: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch tokens [B, N, D] with each outlier replaced by the mean of its non-outlier 8-neighbours.

    mean_interpolation: an outlier without such a neighbour becomes zero; other tokens are unchanged.
    """
    batch, _, dim = patches.shape
    height, width = grid
    fmap = patches.transpose(1, 2).reshape(batch, dim, height, width)
    keep = (~outliers).to(fmap.dtype).reshape(batch, 1, height, width)
    kernel = torch.ones((dim, 1, 3, 3), device=fmap.device, dtype=fmap.dtype)
    kernel[:, :, 1, 1] = 0
    neighbour_sum = F.conv2d(F.pad(fmap * keep, (1, 1, 1, 1)), kernel, groups=dim)
    neighbour_count = F.conv2d(F.pad(keep, (1, 1, 1, 1)), kernel[:1])
    neighbour_mean = neighbour_sum / neighbour_count.masked_fill(neighbour_count == 0, 1)
    replaced = 1 - keep
    fmap = fmap * keep + neighbour_mean * replaced
    return fmap.reshape(batch, dim, height * width).transpose(1, 2)
