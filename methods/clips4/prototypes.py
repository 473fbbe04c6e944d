"""The class prototypes of semantic consistency: fixed known (text) and learned unknown prototypes.

Known prototypes are the CLIP text embeddings of the known class names and never change. Unknown
prototypes are learned by clustering CLIP's segment embeddings during training, so no unknown name
is needed. CLIP's image and text embeddings sit in two separate cones of the joint space (the
"modality gap"), so an image-space cluster centre would always beat every text embedding. The bank
therefore clusters image embeddings moved across the gap, ``normalise(c + text_mean - image_mean)``,
with the known centres pinned to their text embeddings: a semi-supervised spherical k-means, run once
on the first batch and then online with an exponential moving average.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def _all_reduce(value: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value)
    return value


def _all_gather(value: Tensor) -> Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    sizes = [torch.zeros(1, dtype=torch.long, device=value.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([value.shape[0]], device=value.device))
    largest = int(max(size.item() for size in sizes))
    padded = torch.zeros(largest, *value.shape[1:], dtype=value.dtype, device=value.device)
    padded[: value.shape[0]] = value
    gathered = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([chunk[: int(size.item())] for chunk, size in zip(gathered, sizes, strict=True)])


class PrototypeBank(nn.Module):
    def __init__(self, known: Tensor, n_unknown: int, momentum: float = 0.99, init_iterations: int = 10) -> None:
        super().__init__()
        known = F.normalize(known.float(), dim=-1)
        self.momentum = momentum
        self.init_iterations = init_iterations
        self.register_buffer("known", known)
        self.register_buffer("unknown", torch.zeros(n_unknown, known.shape[1]))
        self.register_buffer("text_mean", known.mean(dim=0))
        self.register_buffer("image_mean", torch.zeros(known.shape[1]))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def n_known(self) -> int:
        return self.known.shape[0]

    def prototypes(self) -> Tensor:
        """[n_known + n_unknown, D]: known first."""
        return torch.cat([self.known, self.unknown])

    def shift(self, clip_embeddings: Tensor) -> Tensor:
        """CLIP image embeddings [N,D] moved across the modality gap to the text side."""
        return F.normalize(clip_embeddings + (self.text_mean - self.image_mean), dim=-1)

    @torch.no_grad()
    def assign(self, clip_embeddings: Tensor) -> Tensor:
        """CLIP's pseudo-label [N]: argmax over the prototypes of the gap-shifted embeddings."""
        return (self.shift(clip_embeddings) @ self.prototypes().t()).argmax(dim=1)

    @torch.no_grad()
    def initialise(self, clip_embeddings: Tensor) -> None:
        """Semi-supervised spherical k-means on a first set of CLIP segment embeddings (gathered over ranks)."""
        points = _all_gather(clip_embeddings.float())
        self.image_mean.copy_(points.mean(dim=0))
        shifted = self.shift(points)
        n_unknown = self.unknown.shape[0]
        if n_unknown:
            self.unknown.copy_(self._farthest(shifted, n_unknown))
            for _ in range(self.init_iterations):
                labels = (shifted @ self.prototypes().t()).argmax(dim=1)
                self._move_unknown(shifted, labels, momentum=0.0)
        self.initialised.fill_(True)

    def _farthest(self, points: Tensor, count: int) -> Tensor:
        """`count` points, each the least similar to the known prototypes and to those already taken."""
        closest = (points @ self.known.t()).max(dim=1).values if self.n_known else points.new_full((len(points),), -1.0)
        taken = []
        for _ in range(count):
            index = int(closest.argmin())
            taken.append(points[index])
            closest = torch.maximum(closest, points @ points[index])
        return torch.stack(taken)

    @torch.no_grad()
    def update(self, clip_embeddings: Tensor, labels: Tensor) -> None:
        """One online step: EMA of the image mean and of each unknown prototype's assigned members."""
        total = _all_reduce(torch.cat([clip_embeddings.float().sum(dim=0), clip_embeddings.new_ones(1) * len(labels)]))
        if total[-1] > 0:
            mean = total[:-1] / total[-1]
            self.image_mean.mul_(self.momentum).add_((1 - self.momentum) * mean)
        self._move_unknown(self.shift(clip_embeddings.float()), labels, self.momentum)

    def _move_unknown(self, shifted: Tensor, labels: Tensor, momentum: float) -> None:
        n_unknown = self.unknown.shape[0]
        if not n_unknown:
            return
        slot = labels - self.n_known
        member = slot >= 0
        sums = shifted.new_zeros(n_unknown, shifted.shape[1]).index_add_(0, slot[member], shifted[member])
        counts = shifted.new_zeros(n_unknown).index_add_(0, slot[member], shifted.new_ones(int(member.sum())))
        sums, counts = _all_reduce(sums), _all_reduce(counts)
        moved = F.normalize(momentum * self.unknown + (1 - momentum) * F.normalize(sums, dim=-1), dim=-1)
        self.unknown.copy_(torch.where(counts[:, None] > 0, moved, self.unknown))
