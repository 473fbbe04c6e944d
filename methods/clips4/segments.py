"""Segment formation: superpixels clustered in pixel-embedding space, and segment pooling.

A superpixel's embedding is the normalised mean of its pixels' embeddings over every view it
appears in; spherical k-means groups the superpixels of one image into ``k`` segments. Because
superpixels are defined on the original image and carried into each view by the view's own
transform, segment ``k`` of an image names the same region in both views: that is what makes a
segment in the other view a positive in the pixel-segment contrastive loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pool(values: Tensor, labels: Tensor, n_labels: int) -> tuple[Tensor, Tensor]:
    """Sums [B,n,D] and pixel counts [B,n] of values [B,D,H,W] per label of labels [B,H,W] (< n)."""
    batch, dim = values.shape[:2]
    flat = values.flatten(2).transpose(1, 2)  # [B,HW,D]
    index = labels.flatten(1)
    sums = flat.new_zeros(batch, n_labels, dim).scatter_add_(1, index[..., None].expand(-1, -1, dim), flat)
    counts = flat.new_zeros(batch, n_labels).scatter_add_(1, index, torch.ones_like(index, dtype=flat.dtype))
    return sums, counts


def normalised_means(sums: Tensor, counts: Tensor) -> Tensor:
    """Unit-norm means; rows without pixels stay zero."""
    return F.normalize(sums, dim=-1) * (counts[..., None] > 0)


@torch.no_grad()
def spherical_kmeans(points: Tensor, weights: Tensor, k: int, iterations: int = 10) -> Tensor:
    """Cluster ids [B,N] of unit vectors points [B,N,D] with weights [B,N] (0: absent point).

    Deterministic farthest-point initialisation: the heaviest point first, then repeatedly the present
    point least similar to every chosen centre. Absent points get id 0 and never move a centre.
    """
    batch, n_points, _ = points.shape
    k = min(k, n_points)
    present = weights > 0
    chosen = [weights.argmax(dim=1)]
    best = torch.full((batch, n_points), -2.0, device=points.device, dtype=points.dtype)
    for _ in range(1, k):
        latest = points.gather(1, chosen[-1].view(batch, 1, 1).expand(-1, 1, points.shape[-1]))
        best = torch.maximum(best, (points * latest).sum(-1))
        chosen.append(best.masked_fill(~present, 3.0).argmin(dim=1))
    index = torch.stack(chosen, dim=1)
    centres = points.gather(1, index[..., None].expand(-1, -1, points.shape[-1]))
    assign = torch.zeros(batch, n_points, dtype=torch.long, device=points.device)
    for _ in range(iterations):
        assign = torch.einsum("bnd,bkd->bnk", points, centres).argmax(dim=2)
        sums = torch.zeros_like(centres).scatter_add_(
            1, assign[..., None].expand(-1, -1, points.shape[-1]), points * weights[..., None]
        )
        mass = weights.new_zeros(batch, k).scatter_add_(1, assign, weights)
        centres = torch.where(mass[..., None] > 0, F.normalize(sums, dim=-1), centres)
    return assign.masked_fill(~present, 0)


@torch.no_grad()
def form_segments(embeddings: Tensor, superpixels: Tensor, n_superpixels: int, k: int, iterations: int = 10) -> Tensor:
    """Segment ids [V,B,h,w] in [0, k) for views' pixel embeddings [V,B,D,h,w] and superpixel ids [V,B,h,w].

    Superpixel ids must refer to the same superpixels in every view (they come from the original image).
    """
    views, batch, dim, height, width = embeddings.shape
    sums, counts = pool(
        embeddings.permute(1, 2, 0, 3, 4).reshape(batch, dim, views * height, width),
        superpixels.permute(1, 0, 2, 3).reshape(batch, views * height, width),
        n_superpixels,
    )
    assign = spherical_kmeans(normalised_means(sums, counts), counts, k, iterations)  # [B,n_superpixels]
    flat = superpixels.permute(1, 0, 2, 3).reshape(batch, -1)
    segments = assign.gather(1, flat).reshape(batch, views, height, width)
    return segments.permute(1, 0, 2, 3).contiguous()


def segment_embeddings(embeddings: Tensor, segments: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Unit-norm segment embeddings [V,B,k,D] and pixel counts [V,B,k] of each view's segments."""
    views, batch, dim, height, width = embeddings.shape
    sums, counts = pool(embeddings.reshape(views * batch, dim, height, width), segments.reshape(-1, height, width), k)
    return normalised_means(sums, counts).reshape(views, batch, k, dim), counts.reshape(views, batch, k)
