"""Augmented views: random resized crop + flip (geometric) and colour jitter (photometric).

A view is an affine map from view coordinates to the original image's normalised coordinates, so
anything defined on the original image (superpixels, CLIP's dense map) is carried into the view by
sampling it on the same grid: the CLIP map goes through the same augmentation as the view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ViewSettings:
    min_area: float = 0.35  # random resized crop: area fraction of the original in [min_area, 1]
    max_log_aspect: float = math.log(4 / 3)
    flip: float = 0.5
    brightness: float = 0.3  # multiplicative factors drawn from [1 - x, 1 + x]
    contrast: float = 0.3
    saturation: float = 0.3


def sample_transforms(batch: int, settings: ViewSettings, generator: torch.Generator) -> Tensor:
    """Affine matrices [B,2,3] (view -> original, normalised coordinates) of random resized crops."""
    area = settings.min_area + (1 - settings.min_area) * torch.rand(batch, generator=generator)
    log_ratio = (torch.rand(batch, generator=generator) * 2 - 1) * settings.max_log_aspect
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1)
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1)
    centre_x = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(batch, generator=generator) < settings.flip, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    return theta


def view_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """Sampling grid [B,h,w,2] of a view at resolution (h, w)."""
    return F.affine_grid(theta, [theta.shape[0], 1, height, width], align_corners=False)


def warp(values: Tensor, grid: Tensor) -> Tensor:
    """Bilinear sampling of a float map [B,C,H,W] on a view grid."""
    return F.grid_sample(values, grid.to(values.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(rgb: Tensor, settings: ViewSettings, generator: torch.Generator) -> Tensor:
    """Random brightness, contrast and saturation of sRGB images [B,3,H,W] in [0, 1]."""
    batch = rgb.shape[0]

    def factor(strength: float) -> Tensor:
        draw = 1 + (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * strength
        return draw.to(rgb.device, rgb.dtype)

    rgb = rgb * factor(settings.brightness)
    mean = _grey(rgb).mean(dim=(2, 3), keepdim=True)
    rgb = (rgb - mean) * factor(settings.contrast) + mean
    grey = _grey(rgb)
    rgb = (rgb - grey) * factor(settings.saturation) + grey
    return rgb.clamp(0, 1)


def _grey(rgb: Tensor) -> Tensor:
    return 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
