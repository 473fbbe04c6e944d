"""Confusion matrix -> IoU / mIoU / aAcc / mAcc with mmseg IoUMetric semantics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class ConfusionMatrix:
    """Rows: ground truth, columns: prediction, summed over a whole split; int64 on any device.

    With `unlabelled_row`, a last row counts the predictions on pixels whose label is neither a class nor
    `ignore_index` (a protocol's `metric.ignore_index` that is not the card's void, as mmseg's IoUMetric keeps 65535
    with its default 255): they enter the predicted class's area and union, never a label area.

    The metric owns its state, as torchmetrics' metrics do: `update` adds one prediction, `all_reduce` sums the
    state over the processes of torch.distributed (its reduction: sum), `state_dict` / `load_state_dict` save and
    resume it, `reset` empties it, `compute` turns it into scores.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu",
                 unlabelled_row: bool = False) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.unlabelled_row = unlabelled_row
        rows = num_classes + 1 if unlabelled_row else num_classes
        self.matrix = torch.zeros(rows, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred: Tensor, label: Tensor) -> None:
        """pred, label: integer tensors of one shape; label pixels equal to ignore_index are skipped."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
        label = label.to(self.matrix.device, torch.int64).reshape(-1)
        pred = pred.to(self.matrix.device, torch.int64).reshape(-1)
        keep = label != self.ignore_index
        k, rows = self.num_classes, self.matrix.shape[0]
        label = label[keep]
        if self.unlabelled_row:
            label = torch.where((label >= 0) & (label < k), label, k)
        counts = torch.bincount(label * k + pred[keep], minlength=rows * k)
        self.matrix += counts.reshape(rows, k)

    def all_reduce(self) -> None:
        """Sum over the processes of torch.distributed (no-op when it is not initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def state_dict(self) -> dict[str, list[list[int]]]:
        """The state as plain lists (JSON-ready): {"matrix": [[...], ...]}."""
        return {"matrix": self.matrix.cpu().tolist()}

    def load_state_dict(self, state: dict[str, list[list[int]]]) -> None:
        """Restores a `state_dict`; raises ValueError when it does not fit this metric's classes."""
        matrix = torch.tensor(state["matrix"], dtype=torch.int64, device=self.matrix.device)
        if matrix.shape != self.matrix.shape:
            raise ValueError(f"saved confusion matrix {tuple(matrix.shape)} does not fit {tuple(self.matrix.shape)}")
        self.matrix = matrix

    def compute(self) -> SegScores:
        return scores_from_matrix(self.matrix)


@dataclass(frozen=True)
class SegScores:
    """Fractions in [0, 1]; NaN per class where the class never appears in label or prediction."""

    iou: list[float]
    acc: list[float]
    miou: float
    macc: float
    aacc: float


def _nanmean(values: Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def scores_from_matrix(matrix: Tensor) -> SegScores:
    """Scores of a [K,K] matrix, or of a [K+1,K] one whose last row holds predictions on unlabelled pixels."""
    m = matrix.double().cpu()
    classes = m.shape[1]
    intersect = torch.diagonal(m[:classes])
    area_label = m[:classes].sum(dim=1)
    area_pred = m.sum(dim=0)
    union = area_label + area_pred - intersect
    iou = intersect / union  # 0/0 -> NaN: the class is absent from labels and predictions
    acc = intersect / area_label
    total = area_label.sum()
    aacc = float(intersect.sum() / total) if total > 0 else float("nan")
    return SegScores(iou=iou.tolist(), acc=acc.tolist(), miou=_nanmean(iou), macc=_nanmean(acc), aacc=aacc)


@dataclass(frozen=True)
class SplitScores:
    miou_seen: float
    miou_unseen: float
    hiou: float


def split_scores(iou: list[float], seen: tuple[int, ...], unseen: tuple[int, ...]) -> SplitScores:
    """mIoU over seen and over unseen classes (NaN-mean as mIoU), and their harmonic mean."""
    values = torch.tensor(iou, dtype=torch.float64)
    seen_miou = _nanmean(values[list(seen)]) if seen else float("nan")
    unseen_miou = _nanmean(values[list(unseen)]) if unseen else float("nan")
    total = seen_miou + unseen_miou
    hiou = 2 * seen_miou * unseen_miou / total if total != 0 else 0.0  # NaN (a side absent) stays NaN
    return SplitScores(seen_miou, unseen_miou, hiou)
