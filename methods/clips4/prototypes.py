"""The class prototypes of semantic consistency: known prototypes fixed by text, unknown ones learned by clustering.

Known prototypes are the CLIP text embeddings of the known class names and never change. CLIP's
image and text embeddings sit in two separate cones of the joint space (the "modality gap"), so a
centre fitted to image embeddings always beats every text embedding, and an argmax over text and
learned centres would label nearly everything unknown. Scores are therefore taken in the image
modality: known prototype k is represented by the centre of the CLIP segment embeddings whose
zero-shot label (argmax over the known text embeddings) is k, a centre its text alone decides;
unknown prototypes are spherical k-means centres of the same embeddings, competing with the known
centres. An unknown centre takes a segment only where it is `unknown_margin` closer (cosine) than
every known centre. The bank is initialised on the first batch (farthest points from the known
centres, then k-means with the known centres held) and follows the data online by exponential
moving averages.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.distributed import group_active


def _all_reduce(value: Tensor) -> Tensor:
    if group_active():
        dist.all_reduce(value)
    return value


def _all_gather(value: Tensor) -> Tensor:
    if not group_active():
        return value
    sizes = [torch.zeros(1, dtype=torch.long, device=value.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([value.shape[0]], device=value.device))
    largest = int(max(size.item() for size in sizes))
    padded = torch.zeros(largest, *value.shape[1:], dtype=value.dtype, device=value.device)
    padded[: value.shape[0]] = value
    gathered = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([chunk[: int(size.item())] for chunk, size in zip(gathered, sizes, strict=True)])


def _member_means(points: Tensor, labels: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Sums [n,D] and counts [n] of points per label, summed over ranks."""
    sums = points.new_zeros(n, points.shape[1]).index_add_(0, labels, points)
    counts = points.new_zeros(n).index_add_(0, labels, points.new_ones(len(labels)))
    return _all_reduce(sums), _all_reduce(counts)


class PrototypeBank(nn.Module):
    def __init__(
        self, known: Tensor, n_unknown: int, momentum: float = 0.99, init_iterations: int = 10,
        unknown_margin: float = 0.0,
    ) -> None:
        super().__init__()
        known = F.normalize(known.float(), dim=-1)
        self.momentum = momentum
        self.init_iterations = init_iterations
        self.unknown_margin = unknown_margin
        self.register_buffer("known_text", known)
        self.register_buffer("known", known.clone())
        self.register_buffer("known_started", torch.zeros(known.shape[0], dtype=torch.bool))
        self.register_buffer("unknown", torch.zeros(n_unknown, known.shape[1]))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def n_known(self) -> int:
        return self.known.shape[0]

    def prototypes(self) -> Tensor:
        """[n_known + n_unknown, D], known first: what CLIP's and the model's embeddings are scored against."""
        return torch.cat([self.known, self.unknown])

    @torch.no_grad()
    def text_labels(self, clip_embeddings: Tensor) -> Tensor:
        """CLIP's zero-shot label among the known classes (argmax over the known text embeddings)."""
        return (clip_embeddings.float() @ self.known_text.t()).argmax(dim=1)

    @torch.no_grad()
    def assign(self, clip_embeddings: Tensor) -> Tensor:
        """CLIP's pseudo-label [N]: argmax over all prototypes; >= n_known means an unknown prototype.

        An unknown prototype's cosine counts `unknown_margin` less: it takes a segment only where it
        is that much closer than every known centre."""
        scores = clip_embeddings.float() @ self.prototypes().t()
        scores[:, self.n_known:] -= self.unknown_margin
        return scores.argmax(dim=1)

    @torch.no_grad()
    def initialise(self, clip_embeddings: Tensor) -> None:
        """Known centres from the first batch (gathered over ranks), unknown ones by k-means around them."""
        points = F.normalize(_all_gather(clip_embeddings.float()), dim=-1)
        self._move_known(points, momentum=0.0)
        n_unknown = self.unknown.shape[0]
        if n_unknown:
            self.unknown.copy_(self._farthest(points, n_unknown))
            for _ in range(self.init_iterations):
                self._move_unknown(points, self.assign(points), momentum=0.0)
        self.initialised.fill_(True)

    def _farthest(self, points: Tensor, count: int) -> Tensor:
        """`count` points, each the least similar to the known centres and to the points already taken."""
        closest = (points @ self.known.t()).max(dim=1).values
        taken = []
        for _ in range(count):
            index = int(closest.argmin())
            taken.append(points[index])
            closest = torch.maximum(closest, points @ points[index])
        return torch.stack(taken)

    @torch.no_grad()
    def update(self, clip_embeddings: Tensor, labels: Tensor) -> None:
        """One online step: known centres follow their text's members, unknown ones the members assigned to them."""
        points = F.normalize(clip_embeddings.float(), dim=-1)
        self._move_known(points, self.momentum)
        self._move_unknown(points, labels, self.momentum)

    def _move_known(self, points: Tensor, momentum: float) -> None:
        sums, counts = _member_means(points, self.text_labels(points), self.n_known)
        present = counts > 0
        rate = torch.where(self.known_started, torch.full_like(counts, 1 - momentum), torch.ones_like(counts))
        moved = F.normalize((1 - rate[:, None]) * self.known + rate[:, None] * F.normalize(sums, dim=-1), dim=-1)
        self.known.copy_(torch.where(present[:, None], moved, self.known))
        self.known_started.logical_or_(present)

    def _move_unknown(self, points: Tensor, labels: Tensor, momentum: float) -> None:
        n_unknown = self.unknown.shape[0]
        if not n_unknown:
            return
        member = labels >= self.n_known
        sums, counts = _member_means(points[member], labels[member] - self.n_known, n_unknown)
        moved = F.normalize(momentum * self.unknown + (1 - momentum) * F.normalize(sums, dim=-1), dim=-1)
        self.unknown.copy_(torch.where(counts[:, None] > 0, moved, self.unknown))
