"""ViL-Seg's three objectives, as plain functions of embeddings and assignments.

- ``cross_modal_loss``: image-caption contrasting, CLIP's symmetric InfoNCE;
- ``distillation_loss`` (with ``teacher_targets``): vision-based contrasting between a global
  view and local crops, as DINO's cross-entropy between a centred, sharpened teacher
  distribution of the global view and the student distribution of each local view;
- ``clustering_loss``: the negative mutual information between the cluster assignments of
  corresponding patches in two views (IIC): maximal, log K, when both views agree and every
  cluster is used equally.

Distributed training passes ``reduce`` (an all-reduce that keeps gradients) so that the joint
distribution of the clustering loss is the one of the whole global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Reduce = Callable[[Tensor], Tensor]
EPSILON = 1e-8


def cross_modal_loss(image: Tensor, text: Tensor, logit_scale: Tensor | float) -> Tensor:
    """CLIP's symmetric InfoNCE over unit-norm image and text embeddings [N,E]: pair i is image i, text i.

    Distributed training passes the embeddings gathered from every rank (with gradients).
    """
    logits = logit_scale * image @ text.t()
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def teacher_targets(teacher_scores: Tensor, center: Tensor, temperature: float) -> Tensor:
    """DINO's teacher distribution: centred, sharpened softmax, no gradient. [B,P] -> [B,P]."""
    return F.softmax((teacher_scores.detach() - center) / temperature, dim=-1)


def distillation_loss(student_scores: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """Cross-entropy H(targets, student) averaged over views and images. student [V,B,P], targets [B,P]."""
    log_student = F.log_softmax(student_scores / temperature, dim=-1)
    return -(targets.unsqueeze(0) * log_student).sum(dim=-1).mean()


def updated_center(center: Tensor, teacher_scores: Tensor, momentum: float, reduce: Reduce | None = None) -> Tensor:
    """EMA of the batch mean of teacher scores (DINO's centring); `reduce` averages across ranks."""
    batch_mean = teacher_scores.detach().mean(dim=0, keepdim=True)
    if reduce is not None:
        batch_mean = reduce(batch_mean)
    return center * momentum + batch_mean * (1 - momentum)


def joint_distribution(first: Tensor, second: Tensor, reduce: Reduce | None = None) -> Tensor:
    """Symmetrised joint of two soft assignments [N,K] of corresponding samples: [K,K], sums to 1."""
    joint = first.t() @ second
    if reduce is not None:
        joint = reduce(joint)
    joint = joint / joint.sum().clamp_min(EPSILON)
    return (joint + joint.t()) / 2


def mutual_information(first: Tensor, second: Tensor, reduce: Reduce | None = None) -> Tensor:
    """I(z, z') in nats for assignments [N,K] (rows sum to 1) of N corresponding patches."""
    joint = joint_distribution(first.float(), second.float(), reduce).clamp_min(EPSILON)
    row = joint.sum(dim=1, keepdim=True)
    column = joint.sum(dim=0, keepdim=True)
    return (joint * (joint.log() - row.log() - column.log())).sum()


def clustering_loss(first: Tensor, second: Tensor, reduce: Reduce | None = None) -> Tensor:
    """-I(z, z'): minimised (to -log K) when both views agree and every cluster is used equally."""
    return -mutual_information(first, second, reduce)


def max_mutual_information(num_clusters: int) -> float:
    return math.log(num_clusters)
