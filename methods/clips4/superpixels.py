"""Low-level grouping for segment formation: SLIC superpixels (Achanta et al., TPAMI 2012) in torch.

Batched and dependency-free: every pixel is compared with the four seed centres nearest to it (SLIC's
2S x 2S search window), in CIELAB colour plus position scaled by ``compactness / step``. No connectivity
post-processing: a superpixel may be split in two, which is harmless here because superpixels are
only the atoms that segment formation clusters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# sRGB (D65) -> XYZ, and the D65 white point.
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE = (0.950456, 1.0, 1.088754)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """[B,3,H,W] sRGB in [0, 1] -> CIELAB [B,3,H,W] (L in [0, 100])."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    xyz = xyz / torch.tensor(_WHITE, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    lightness = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([lightness, a, b], dim=1)


def grid_shape(height: int, width: int, n_segments: int) -> tuple[int, int]:
    """The seed grid (rows, cols) for about n_segments square cells."""
    step = math.sqrt(height * width / max(n_segments, 1))
    return max(1, round(height / step)), max(1, round(width / step))


@torch.no_grad()
def slic(rgb: Tensor, n_segments: int = 64, compactness: float = 10.0, iterations: int = 8) -> Tensor:
    """Superpixel ids [B,H,W] (int64, < rows*cols of ``grid_shape``) of sRGB images [B,3,H,W] in [0, 1]."""
    batch, _, height, width = rgb.shape
    rows, cols = grid_shape(height, width, n_segments)
    step = math.sqrt(height * width / (rows * cols))
    lab = rgb_to_lab(rgb.float())
    ys = torch.arange(height, device=rgb.device, dtype=torch.float32)
    xs = torch.arange(width, device=rgb.device, dtype=torch.float32)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    position = torch.stack([grid_y, grid_x]).expand(batch, 2, height, width)
    features = torch.cat([lab, position * (compactness / step)], dim=1).flatten(2)  # [B,5,HW]

    # SLIC searches 2S x 2S around each centre: a pixel meets the two nearest seed rows and columns.
    near_y = ((ys + 0.5) * rows / height - 0.5).floor().long()
    near_x = ((xs + 0.5) * cols / width - 0.5).floor().long()
    cand_y = [(near_y + dy).clamp(0, rows - 1) for dy in (0, 1) for _ in (0, 1)]
    cand_x = [(near_x + dx).clamp(0, cols - 1) for _ in (0, 1) for dx in (0, 1)]
    cand_ids = torch.stack([cy[:, None] * cols + cx[None, :] for cy, cx in zip(cand_y, cand_x, strict=True)])
    home_y = (ys * rows / height).long().clamp_max(rows - 1)
    home_x = (xs * cols / width).long().clamp_max(cols - 1)

    n_cells = rows * cols
    labels = (home_y[:, None] * cols + home_x[None, :]).flatten().expand(batch, -1)
    centres = _cell_means(features, labels, n_cells, None)
    for _ in range(iterations):
        grid = centres.reshape(batch, -1, rows, cols)
        distance = torch.stack([
            ((features.view(batch, -1, height, width) - grid[:, :, cy][:, :, :, cx]) ** 2).sum(dim=1)
            for cy, cx in zip(cand_y, cand_x, strict=True)
        ], dim=1)  # [B,4,H,W]
        best = distance.argmin(dim=1)
        labels = torch.gather(cand_ids.flatten(1).expand(batch, -1, -1), 1, best.flatten(1)[:, None]).squeeze(1)
        centres = _cell_means(features, labels, n_cells, centres)
    return labels.reshape(batch, height, width)


def _cell_means(features: Tensor, labels: Tensor, n_cells: int, previous: Tensor | None) -> Tensor:
    """[B,C,n_cells] mean feature per label; cells without pixels keep ``previous``."""
    batch, channels, _ = features.shape
    sums = features.new_zeros(batch, channels, n_cells).scatter_add_(
        2, labels[:, None].expand(-1, channels, -1), features
    )
    counts = features.new_zeros(batch, 1, n_cells).scatter_add_(
        2, labels[:, None], torch.ones_like(features[:, :1])
    )
    means = sums / counts.clamp_min(1)
    if previous is not None:
        means = torch.where(counts > 0, means, previous)
    return means


def resample_labels(labels: Tensor, grid: Tensor) -> Tensor:
    """Nearest-neighbour sampling of an id map [B,H,W] at normalised coordinates grid [B,h,w,2]."""
    sampled = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    return sampled[:, 0].round().long()
