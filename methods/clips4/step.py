"""One CLIP-S4 training step: views, segments, the three losses."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.clips4.losses import (
    embedding_consistency,
    embedding_pull,
    pixel_segment_contrastive,
    semantic_consistency,
    split_semantic_consistency,
)
from methods.clips4.prototypes import PrototypeBank
from methods.clips4.segments import form_segments, segment_embeddings
from methods.clips4.superpixels import grid_shape, resample_labels, slic
from methods.clips4.teacher import MaskClipTeacher
from methods.clips4.views import ViewSettings, colour_jitter, sample_transforms, view_grid, warp

N_VIEWS = 2


@dataclass(frozen=True)
class StepSettings:
    view_size: int
    views: ViewSettings
    n_superpixels: int
    compactness: float
    slic_iterations: int
    segments_per_image: int
    kmeans_iterations: int
    kappa: float
    contrast_pixels: int
    weights: dict[str, float]
    embedding_loss: str
    semantic_targets: str
    semantic_logit_scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def normalise(rgb: Tensor, settings: StepSettings) -> Tensor:
    mean = torch.tensor(settings.mean, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(settings.std, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb - mean) / std


def training_step(
    images: Tensor,
    network: nn.Module,
    teacher: MaskClipTeacher,
    bank: PrototypeBank,
    settings: StepSettings,
    generator: torch.Generator,
    autocast: AbstractContextManager | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """images uint8 [B,3,S,S] -> (weighted total loss, each loss as a float). Updates the prototype bank."""
    autocast = autocast or nullcontext()
    device = images.device
    rgb = images.float() / 255
    batch, _, height, width = rgb.shape
    superpixels = slic(rgb, settings.n_superpixels, settings.compactness, settings.slic_iterations)
    n_superpixels = math.prod(grid_shape(height, width, settings.n_superpixels))
    with autocast:
        clip_map = teacher(normalise(rgb, settings))
    clip_map = clip_map.float()

    thetas = torch.stack([sample_transforms(batch, settings.views, generator) for _ in range(N_VIEWS)]).to(device)
    size = settings.view_size
    view_rgb = torch.cat([warp(rgb, view_grid(theta, size, size)) for theta in thetas])
    view_rgb = colour_jitter(view_rgb, settings.views, generator)
    with autocast:
        pixels = network(normalise(view_rgb, settings))
    pixels = pixels.float()  # unit vectors already
    dim, out_h, out_w = pixels.shape[1:]
    pixels = pixels.reshape(N_VIEWS, batch, dim, out_h, out_w)

    grids = [view_grid(theta, out_h, out_w) for theta in thetas]
    view_superpixels = torch.stack([resample_labels(superpixels, grid) for grid in grids])
    view_clip = torch.stack([F.normalize(warp(clip_map, grid), dim=1) for grid in grids])

    k = settings.segments_per_image
    segments = form_segments(pixels.detach(), view_superpixels, n_superpixels, k, settings.kmeans_iterations)
    model_segments, counts = segment_embeddings(pixels, segments, k)
    clip_segments, _ = segment_embeddings(view_clip, segments, k)
    valid = counts > 0
    regions = torch.arange(batch, device=device).view(1, batch, 1) * k + torch.arange(k, device=device).view(1, 1, k)
    regions = regions.expand(N_VIEWS, -1, -1)

    flat_pixels = pixels.permute(0, 1, 3, 4, 2).reshape(-1, dim)
    pixel_regions = (torch.arange(batch, device=device).view(1, batch, 1, 1) * k + segments).reshape(-1)
    pick = torch.randperm(flat_pixels.shape[0], generator=generator)[: settings.contrast_pixels].to(device)
    loss_pixel = pixel_segment_contrastive(
        flat_pixels[pick], pixel_regions[pick], model_segments[valid], regions[valid], settings.kappa
    )
    if settings.embedding_loss == "cosine":
        loss_embedding = embedding_pull(model_segments[valid], clip_segments[valid])
    else:
        loss_embedding = embedding_consistency(model_segments[valid], clip_segments[valid], settings.kappa)

    if not bool(bank.initialised):
        bank.initialise(clip_segments[valid])
    segment_labels = torch.zeros(N_VIEWS, batch, k, dtype=torch.long, device=device)
    segment_labels[valid] = bank.assign(clip_segments[valid])
    pixel_labels = segment_labels.gather(2, segments.flatten(2)).reshape(-1)
    if settings.semantic_targets == "text":
        text_labels = torch.zeros_like(segment_labels)
        text_labels[valid] = bank.text_labels(clip_segments[valid])
        pixel_text = text_labels.gather(2, segments.flatten(2)).reshape(-1)
        unknown = bank.unknown.clone().to(flat_pixels.dtype)  # the bank moves in place below, before backward
        loss_semantic = split_semantic_consistency(
            flat_pixels, bank.known_text.to(flat_pixels.dtype), unknown, pixel_labels, pixel_text,
            settings.semantic_logit_scale,
        )
    else:
        loss_semantic = semantic_consistency(
            flat_pixels, bank.prototypes().to(flat_pixels.dtype), pixel_labels, settings.semantic_logit_scale
        )
    bank.update(clip_segments[valid], segment_labels[valid])

    losses = {"pixel_segment": loss_pixel, "embedding": loss_embedding, "semantic": loss_semantic}
    total = sum(settings.weights[name] * value for name, value in losses.items())
    stats = {name: float(value.detach()) for name, value in losses.items()}
    stats["unknown_share"] = float((segment_labels[valid] >= bank.n_known).float().mean())
    return total, stats
