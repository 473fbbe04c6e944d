"""ResCLIP's Semantic Feedback Refinement (SFR): an attention prior drawn from a first segmentation.

yvhangyang/ResCLIP@0e085f7 clip/model.py, VisionTransformer.create_patch_matrix and
generate_attention_sfr (with check_path), as `forward` runs them:

1. `patch_labels`: the first segmentation's per-pixel name index (argmax over every name, index 0
   where the top probability is below `temp_thd`) cut into patch x patch blocks from the top-left
   corner (a remainder at the bottom or right is dropped); each patch takes its most frequent index
   (torch.mode: among equally frequent indices, the smallest).
2. `feedback_prior`: for patches i, j (row-major), 1 where they carry the same index. With
   `separate_entities` (the configs' delete_same_entity=True) a same-index pair whose straight path
   leaves the index is decayed by exp(-d / D), d the Chebyshev distance of i and j, D the largest
   one on the grid. The path test is the reference's as it computes it: points
   round(p_i (1 - t) + p_j t) for t = k / D, k = 0..d (D, not d: only the stretch from i of length
   d / D of the segment is sampled, rounded half to even), each compared with i's index. Each row is
   then blurred by a 1D Gaussian (std `std`, width min(N, int(6 std + 1)) made odd, zero padding)
   along the row-major patch order, clipped at 0 and divided by its sum + 1e-8; the class token's
   row and column stay 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# start patches handled together in the path test: (rows x N x (D + 1)) points, a few hundred MB at most
PATH_CHUNK = 64


def patch_labels(pixel_labels: Tensor, patch: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """[H, W] name indices -> [h, w]: each patch's most frequent index over its pixels."""
    (height, width), (patch_h, patch_w) = grid, patch
    blocks = pixel_labels[: height * patch_h, : width * patch_w].reshape(height, patch_h, width, patch_w)
    blocks = blocks.permute(0, 2, 1, 3).reshape(height, width, patch_h * patch_w)
    return torch.mode(blocks, dim=-1).values


def _patch_coordinates(grid: tuple[int, int], device: torch.device) -> Tensor:
    """[N, 2] (row, column) of each patch in row-major order."""
    index = torch.arange(grid[0] * grid[1], device=device)
    return torch.stack((torch.div(index, grid[1], rounding_mode="floor"), index % grid[1]), dim=-1)


def _path_keeps_label(labels: Tensor, coords: Tensor, distance: Tensor, longest: int) -> Tensor:
    """[N, N] bool: the sampled points from patch i towards patch j all carry i's label (see module doc)."""
    count = coords.shape[0]
    fraction = torch.linspace(0, 1, steps=longest + 1, device=coords.device)[None, :, None]
    keeps = torch.empty((count, count), dtype=torch.bool, device=coords.device)
    for first in range(0, count, PATH_CHUNK):
        rows = slice(first, min(first + PATH_CHUNK, count))
        start = coords[rows, None, None, :].expand(-1, count, 1, 2).reshape(-1, 1, 2)
        end = coords[None, :, None, :].expand(start.shape[0] // count, count, 1, 2).reshape(-1, 1, 2)
        points = (start * (1 - fraction) + end * fraction).round().long()
        sampled = labels[points[..., 0], points[..., 1]]
        checked = torch.arange(longest + 1, device=coords.device)[None, :] <= distance[rows].reshape(-1, 1)
        same = sampled == labels[start[:, 0, 0], start[:, 0, 1]][:, None]
        keeps[rows] = (same | ~checked).all(dim=1).reshape(-1, count)
    return keeps


def _row_blur(matrix: Tensor, std: float) -> Tensor:
    """Each row convolved with a normalised 1D Gaussian of the index offset, zero padded."""
    count = matrix.shape[-1]
    width = min(count, int(6 * std + 1))
    width = width if width % 2 == 1 else width + 1
    offsets = torch.arange(width, device=matrix.device) - width // 2
    kernel = torch.exp(-(offsets**2) / (2 * std**2))
    kernel = kernel / kernel.sum()
    return F.conv1d(matrix.unsqueeze(1), kernel.view(1, 1, -1), padding=width // 2).squeeze(1)


def feedback_prior(labels: Tensor, std: float, separate_entities: bool) -> Tensor:
    """[h, w] patch labels -> [1 + N, 1 + N] float32 attention prior, N = h * w, class token first."""
    grid = (labels.shape[0], labels.shape[1])
    flat = labels.reshape(-1)
    count = flat.shape[0]
    same = (flat[:, None] == flat[None, :]).float()
    if separate_entities and count > 1:
        coords = _patch_coordinates(grid, labels.device)
        distance = (coords[:, None, :] - coords[None, :, :]).abs().max(dim=-1).values
        longest = int(distance.max().item())
        keeps = _path_keeps_label(labels, coords, distance, longest)
        same = torch.where(keeps, same, same * torch.exp(-distance / longest))
    blurred = F.relu(_row_blur(same, std))
    normalised = blurred / (blurred.sum(dim=1, keepdim=True) + 1e-8)
    return F.pad(normalised, (1, 0, 1, 0))
