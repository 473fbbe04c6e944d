"""The views of a training batch, made on the device in one batched resampling each.

Every image gives one global view (a random resized crop, optionally flipped) and V local views,
each a random resized crop *of the global view* with its own colour jitter. Each local view
keeps the affine map from its pixels to the global view's, so the global view's per-patch
cluster assignments can be resampled onto the local view's patch grid: corresponding patches
are known exactly, as IIC requires, and a clustering that only encodes patch position cannot
agree across views. The global view itself carries no colour jitter, since captions name colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ViewSettings:
    global_size: int = 224
    local_size: int = 96
    local_views: int = 4
    global_scale: tuple[float, float] = (0.4, 1.0)  # fraction of the image's area
    local_scale: tuple[float, float] = (0.1, 0.4)  # fraction of the global view's area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.4  # brightness, contrast and saturation factors in [1 - jitter, 1 + jitter]
    grayscale: float = 0.2  # probability that a local view is made grey

    def __post_init__(self) -> None:
        for key in ("global_scale", "local_scale", "ratio"):
            low, high = getattr(self, key)
            if not 0 < low <= high:
                raise ValueError(f"{key} must be 0 < low <= high, got {(low, high)}")
        if self.global_scale[1] > 1 or self.local_scale[1] > 1:
            raise ValueError("crop scales are fractions of an area: at most 1")
        if self.local_views < 1 or self.global_size < 1 or self.local_size < 1:
            raise ValueError("global_size, local_size and local_views must be >= 1")


@dataclass
class Views:
    global_images: Tensor  # [B,3,S,S] normalised
    local_images: Tensor  # [V,B,3,s,s] normalised
    local_theta: Tensor  # [V,B,2,3]: local view coordinates -> global view coordinates (normalised)


def random_theta(count: int, scale: tuple[float, float], ratio: tuple[float, float], flip: bool,
                 generator: torch.Generator) -> Tensor:
    """Affine maps [count,2,3] of random resized crops (area fraction in `scale`), in [-1,1] coordinates."""
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(count, generator=generator)
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(count, generator=generator)
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1)
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1)
    centre_x = (torch.rand(count, generator=generator) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(count, generator=generator) * 2 - 1) * (1 - height)
    mirror = torch.rand(count, generator=generator) < 0.5 if flip else torch.zeros(count, dtype=torch.bool)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = torch.where(mirror, -width, width)
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    return theta


def resample(images: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
    """grid_sample of [N,C,H,W] through affine maps [N,2,3] to [N,C,*size] (bilinear, border)."""
    grid = F.affine_grid(theta.to(images), [images.shape[0], images.shape[1], *size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(images: Tensor, strength: float, grayscale: float, generator: torch.Generator) -> Tensor:
    """Per-image brightness, contrast, saturation and random greying of [N,3,H,W] in [0,1]."""
    count = images.shape[0]

    def factors() -> Tensor:
        values = 1 + (torch.rand(count, generator=generator) * 2 - 1) * strength
        return values.to(images).view(count, 1, 1, 1)

    weights = torch.tensor([0.299, 0.587, 0.114]).to(images).view(1, 3, 1, 1)
    images = images * factors()
    grey = (images * weights).sum(dim=1, keepdim=True)
    images = (images - grey.mean(dim=(2, 3), keepdim=True)) * factors() + grey.mean(dim=(2, 3), keepdim=True)
    grey = (images * weights).sum(dim=1, keepdim=True)
    images = grey + (images - grey) * factors()
    make_grey = (torch.rand(count, generator=generator) < grayscale).to(images.device).view(count, 1, 1, 1)
    images = torch.where(make_grey, (images * weights).sum(dim=1, keepdim=True).expand_as(images), images)
    return images.clamp(0, 1)


def normalise(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """[0,1] RGB -> (x - mean) / std."""
    mean_t = torch.tensor(mean).to(images).view(1, 3, 1, 1)
    std_t = torch.tensor(std).to(images).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def make_views(images: Tensor, settings: ViewSettings, mean: tuple[float, ...], std: tuple[float, ...],
               generator: torch.Generator) -> Views:
    """uint8 images [B,3,H,W] (on the training device) -> the batch's global and local views."""
    batch = images.shape[0]
    source = images.float() / 255
    global_theta = random_theta(batch, settings.global_scale, settings.ratio, settings.flip, generator)
    global_views = resample(source, global_theta, (settings.global_size, settings.global_size))
    count = settings.local_views * batch
    local_theta = random_theta(count, settings.local_scale, settings.ratio, settings.flip, generator)
    repeated = global_views.repeat(settings.local_views, 1, 1, 1)
    local_views = resample(repeated, local_theta, (settings.local_size, settings.local_size))
    local_views = colour_jitter(local_views, settings.jitter, settings.grayscale, generator)
    return Views(
        global_images=normalise(global_views, mean, std),
        local_images=normalise(local_views, mean, std).unflatten(0, (settings.local_views, batch)),
        local_theta=local_theta.to(images.device).unflatten(0, (settings.local_views, batch)),
    )


def align_to_local(global_maps: Tensor, local_theta: Tensor, size: tuple[int, int]) -> Tensor:
    """Global views' maps [B,K,h,w] resampled onto each local view's grid: [V,B,K,*size]."""
    views, batch = local_theta.shape[:2]
    repeated = global_maps.repeat(views, 1, 1, 1)
    aligned = resample(repeated, local_theta.flatten(0, 1), size)
    return aligned.unflatten(0, (views, batch))
