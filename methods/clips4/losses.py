"""The three CLIP-S4 losses. All embeddings are unit vectors; ``kappa`` is a vMF concentration."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pixel_segment_contrastive(
    pixels: Tensor, pixel_region: Tensor, segments: Tensor, segment_region: Tensor, kappa: float
) -> Tensor:
    """Pixel-to-segment contrastive loss (SegSort / SPML form, as CLIP-S4 uses it).

    pixels [N,D] with the region id [N] of the segment each belongs to; segments [S,D] (every valid
    segment of every view and image) with their region ids [S]. Positives of a pixel are the segments
    with its region id (its own segment and the same region in the other view), all others are
    negatives. Loss per pixel: -log(sum_pos exp(kappa z.mu) / sum_all exp(kappa z.mu)), averaged.
    """
    logits = kappa * pixels @ segments.t()
    positive = pixel_region[:, None] == segment_region[None, :]
    if not bool(positive.any(dim=1).all()):
        raise ValueError("every pixel needs at least one positive segment")
    log_all = torch.logsumexp(logits, dim=1)
    log_positive = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    return (log_all - log_positive).mean()


def embedding_consistency(model_segments: Tensor, clip_segments: Tensor, kappa: float) -> Tensor:
    """Segment embeddings [S,D] pulled toward the CLIP embeddings [S,D] of the same segments.

    Contrastive over the segments of the batch: the CLIP embedding of a segment is its positive and
    those of the other segments are negatives, -log(exp(kappa m_s.c_s) / sum_t exp(kappa m_s.c_t)).
    """
    logits = kappa * model_segments @ clip_segments.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target)


def embedding_pull(model_segments: Tensor, clip_segments: Tensor) -> Tensor:
    """Segment embeddings [S,D] pulled toward the CLIP embeddings [S,D] of the same segments: mean 1 - cos."""
    return (1 - (model_segments * clip_segments).sum(dim=-1)).mean()


def pseudo_labels(clip_embeddings: Tensor, prototypes: Tensor) -> Tensor:
    """CLIP's argmax over the class prototypes [P,D] for embeddings [...,D]."""
    return (clip_embeddings @ prototypes.t()).argmax(dim=-1)


def semantic_consistency(model_pixels: Tensor, prototypes: Tensor, targets: Tensor, logit_scale: float) -> Tensor:
    """Cross-entropy of the model's prediction softmax(logit_scale z.p) [N,P] against CLIP's pseudo-labels [N]."""
    return F.cross_entropy(logit_scale * model_pixels @ prototypes.t(), targets)


def split_semantic_consistency(
    model_pixels: Tensor, known_text: Tensor, unknown: Tensor, targets: Tensor, text_targets: Tensor,
    logit_scale: float,
) -> Tensor:
    """Semantic consistency scored in the space each prototype lives in.

    A pixel whose pseudo-label (targets [N], over known + unknown prototypes) is known takes CLIP's
    zero-shot label among the known classes (text_targets [N]) as target of a softmax over the known
    text embeddings [K,D], the scores the model is evaluated with; a pixel labelled unknown takes its
    prototype as target of a softmax over the unknown prototypes [U,D]. Mean over all pixels.
    """
    n_known = known_text.shape[0]
    is_known = targets < n_known
    total = model_pixels.new_zeros(())
    if bool(is_known.any()):
        logits = logit_scale * model_pixels[is_known] @ known_text.t()
        total = total + F.cross_entropy(logits, text_targets[is_known], reduction="sum")
    if bool((~is_known).any()):
        logits = logit_scale * model_pixels[~is_known] @ unknown.t()
        total = total + F.cross_entropy(logits, targets[~is_known] - n_known, reduction="sum")
    return total / targets.numel()
