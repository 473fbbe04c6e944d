"""Resize, normalise, batched sliding window, stitching, background rule, argmax."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.errors import NumericalError
from benchmark.eval_settings import SCORE_MEMORY_MIB
from benchmark.numerics import precision_mode
from benchmark.protocol import BackgroundSpec, BenchmarkSpec, ImageSpec, InferenceSpec
from methods.base import SegMethod

Window = tuple[int, int, int, int]  # y1, y2, x1, x2
SCORE_BYTES = SCORE_MEMORY_MIB << 20  # float32 scores of one image beyond which classes are stitched in chunks


def rescale_size(width: int, height: int, short: int, long_max: int) -> tuple[int, int]:
    """mmcv `rescale_size` with scale (long_max, short), keep ratio: the new (width, height)."""
    factor = min(max(long_max, short) / max(height, width), min(long_max, short) / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def resize_image(image: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """OpenCV bilinear on the decoded uint8 image, as mmcv `imrescale` does."""
    if spec.resize_short is None:
        return image
    height, width = image.shape[:2]
    size = rescale_size(width, height, spec.resize_short, spec.resize_long_max or spec.resize_short)
    if size == (width, height):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def normalize(image: np.ndarray, spec: ImageSpec) -> Tensor:
    """uint8 HxWx3 RGB -> float32 [3,H,W], (x - mean) / std in float32 as mmcv does."""
    array = image.astype(np.float32)
    array = (array - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class ImagePreprocessor:
    """Decoded RGB uint8 -> resized, normalised tensor; picklable for DataLoader workers."""

    def __init__(self, spec: ImageSpec) -> None:
        self.spec = spec

    def __call__(self, image: np.ndarray) -> Tensor:
        return normalize(resize_image(image, self.spec), self.spec)


def slide_windows(height: int, width: int, crop: int, stride: int) -> list[Window]:
    """mmseg `slide_inference` window positions, row by row."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride + crop, height)
            x2 = min(col * stride + crop, width)
            windows.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return windows


def windows_for(spec: InferenceSpec, height: int, width: int) -> list[Window]:
    if spec.mode == "whole":
        return [(0, height, 0, width)]
    return slide_windows(height, width, spec.crop, spec.stride)


def class_scores(name_scores: Tensor, spec: BenchmarkSpec, score_kind: str) -> Tensor:
    """[n_names,H,W] -> [n_prompted_classes,H,W]: softmax over all names (logits), max over synonyms."""
    if score_kind == "logits":
        probs = name_scores.softmax(dim=0)
    elif score_kind == "probs":
        probs = name_scores
    else:
        raise ValueError(f"score_kind must be 'logits' or 'probs', got {score_kind!r}")
    return synonyms_max(probs, name_bounds(spec))


def synonyms_max(scores: Tensor, bounds: np.ndarray) -> Tensor:
    """Names' scores [n,H,W] -> classes' [len(bounds) - 1,H,W]: the max over names bounds[k]:bounds[k+1] of class k."""
    if len(bounds) - 1 == scores.shape[0]:
        return scores
    return torch.stack([scores[a:b].amax(dim=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def first_max(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Max over dim 0 and its index, the first on ties as argmax; max(dim=0) runs ~1.5-4x faster than argmax on CPU."""
    best, index = probs.max(dim=0)
    return best, index


def apply_background(probs: Tensor, background: BackgroundSpec, value: float | None) -> Tensor:
    """Class probabilities [C',H,W] -> label map [H,W] under the background rule."""
    return labels_and_probabilities(probs, background, value)[0]


def labels_and_probabilities(probs: Tensor, background: BackgroundSpec, value: float | None) -> tuple[Tensor, Tensor]:
    """Class probabilities [C',H,W] -> (label map [H,W], the probabilities [K,H,W] it is the argmax of: channel k
    is label k, the `threshold` rule's constant channel in front) under the background rule."""
    if background.rule == "threshold":
        constant = torch.full_like(probs[:1], float(value))
        probs = torch.cat([constant, probs], dim=0)
    if background.area_thd is not None:
        probs = _suppress_small_classes(probs, background.area_thd)
    best, pred = first_max(probs)
    if background.rule == "prob_thd":
        pred[best < value] = 0
    return pred, probs


def restrict_to_classes(
    probs: Tensor, spec: BenchmarkSpec, allowed: tuple[int, ...], background_value: float | None
) -> Tensor:
    """Argmax over the allowed card classes only (zero-shot `unseen_only` setting)."""
    return restricted_labels_and_probabilities(probs, spec, allowed, background_value)[0]


def restricted_labels_and_probabilities(
    probs: Tensor, spec: BenchmarkSpec, allowed: tuple[int, ...], background_value: float | None
) -> tuple[Tensor, Tensor]:
    """`restrict_to_classes`'s label map and the probabilities [K,H,W] it is the argmax of, 0 outside `allowed`."""
    if spec.background.rule == "threshold":
        probs = torch.cat([torch.full_like(probs[:1], float(background_value)), probs], dim=0)
    keep = torch.zeros(probs.shape[0], dtype=torch.bool, device=probs.device)
    keep[list(allowed)] = True
    pred = first_max(probs.masked_fill(~keep[:, None, None], float("-inf")))[1]
    return pred, probs.masked_fill(~keep[:, None, None], 0.0)


def upsamples_once(method: SegMethod, spec: BenchmarkSpec) -> bool:
    """Whether a whole-image crop's scores go straight from the method's grid to the label size (one bilinear step,
    `SegMethod.single_upsample`) rather than to the image and then to the label size (mmseg's EncoderDecoder)."""
    return method.single_upsample and spec.inference.mode == "whole"


def label_map(method: SegMethod, spec: BenchmarkSpec, background_value: float | None, image: Tensor, scores: Tensor,
              context: Any = None) -> Tensor:
    """Scores [n_names,H,W] at label size -> label map [H,W]: the method's `refine`, synonyms max, the background
    rule (or the zero-shot restriction), argmax, then the method's `refine_labels`."""
    scores = method.refine(image, scores)
    probs = class_scores(scores, spec, method.score_kind)
    split = spec.split
    if split is not None and split.setting == "unseen_only":
        pred, probs = restricted_labels_and_probabilities(probs, spec, split.unseen, background_value)
    else:
        pred, probs = labels_and_probabilities(probs, spec.background, background_value)
    if method.refines_labels():
        pred = method.refine_labels(probs, pred, context)
    return pred


def _suppress_small_classes(probs: Tensor, area_thd: float) -> Tensor:
    """SCLIP: zero a non-background class whose argmax area is below area_thd of all non-background area."""
    num_classes = probs.shape[0]
    areas = torch.bincount(first_max(probs)[1].reshape(-1), minlength=num_classes)[1:]
    keep = (areas > area_thd * areas.sum()).to(probs.dtype)
    probs = probs.clone()
    probs[1:] *= keep[:, None, None]
    return probs


@dataclass
class PreparedImage:
    index: int
    stem: str
    image: Tensor  # [3,h,w] resized and normalised
    label: Tensor  # [H,W] int64 at the original size
    position: int = 0  # place in the evaluating process's shard
    more_labels: list[Tensor] = field(default_factory=list)  # the image's labels in the other heads' benchmarks
    original: Tensor | None = None  # [H,W,3] uint8 as decoded, for a method with `needs_original_image`


@dataclass(frozen=True)
class ScoreHead:
    """One class set scored from the crops: a benchmark's spec, text bank and background value.

    `activate` (the method's setup for this benchmark) runs before this head's scoring and
    refinement, where several heads share one method.
    """

    spec: BenchmarkSpec
    bank: Any
    background_value: float | None
    activate: Callable[[], None] | None = None


@dataclass
class _Job:
    item: PreparedImage
    remaining: int
    count: Tensor
    scores: list[Tensor | None] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    context: Any = None  # the method's encode_image of this image, where it has that hook
    # per head: True where the names' scores at image or label size would exceed the engine's score memory, so
    # the crops' scores are kept as the method returned them and stitched a few classes at a time (`crops`)
    chunked: list[bool] = field(default_factory=list)
    crops: list[list[tuple[Window, Tensor]]] = field(default_factory=list)


@dataclass
class Prediction:
    item: PreparedImage
    pred: Tensor  # [H,W] int64 class ids on the engine's device
    more_preds: list[Tensor] = field(default_factory=list)  # one per extra head, in order


class SlidingWindowPredictor:
    """Streams images in, batches crops across images, stitches, and yields label maps in order.

    Only the images whose windows are still in flight are held, so memory does not grow with the
    split; results do not depend on the batch size. With several `heads` (benchmarks that share the
    images and their geometry), the method's image side runs once per crop (`encode_crops`) and
    each head is scored from it (`score`): the label maps are those of separate runs.
    """

    def __init__(
        self,
        method: SegMethod,
        heads: Sequence[ScoreHead],
        batch_size: int = 16,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        compile_model: bool = False,
        score_bytes: int = SCORE_BYTES,
    ) -> None:
        if not heads:
            raise ValueError("SlidingWindowPredictor needs at least one head")
        self.method = method
        self.heads = list(heads)
        shared = len(self.heads) > 1
        # torch.compile of the method's forward (fuses ops; changes fp32 rounding at the 1e-5 level)
        wrap = torch.compile if compile_model else (lambda function: function)
        self._predict_masks = wrap(method.predict_masks)
        self._encode_crops = wrap(method.encode_crops) if shared else None
        if shared and not method.scores_from_features():
            raise ValueError(f"method {method.name!r} has no encode_crops/score hooks: one head per run")
        if shared and any(head.activate is None for head in self.heads):
            raise ValueError("several heads share the method: each needs its `activate` (the method's setup)")
        spec = self.heads[0].spec
        for head in self.heads[1:]:
            if head.spec.image != spec.image or head.spec.inference != spec.inference:
                raise ValueError(
                    f"benchmarks {spec.name!r} and {head.spec.name!r} resize or window their images differently"
                )
        self.spec = spec
        self.batch_size = max(1, batch_size)
        self.device = torch.device(device)
        self.precision = precision
        self._pending: deque[tuple[_Job, Window]] = deque()
        self._jobs: deque[_Job] = deque()
        self._uses_context = method.uses_image_context()
        self._upsample_once = upsamples_once(method, spec)
        self.score_bytes = score_bytes  # the float32 scores of one image and head beyond which classes are chunked

    def push(self, item: PreparedImage) -> Iterator[Prediction]:
        image = item.image.to(self.device, non_blocking=True)
        item = PreparedImage(item.index, item.stem, image, item.label, item.position, item.more_labels, item.original)
        height, width = image.shape[-2:]
        windows = windows_for(self.spec.inference, height, width)
        job = _Job(item, len(windows), torch.zeros(height, width, device=self.device),
                   scores=[None] * len(self.heads), windows=windows,
                   chunked=[self._chunks_classes(head, (height, width), label) for head, label
                            in zip(self.heads, [item.label, *item.more_labels], strict=True)],
                   crops=[[] for _ in self.heads])
        if self._uses_context:
            original = {"original": item.original, "stem": item.stem} if self.method.needs_original_image else {}
            with torch.no_grad(), precision_mode(self.precision, self.device):
                job.context = self.method.encode_image(image, **original)
        self._jobs.append(job)
        self._pending.extend((job, window) for window in windows)
        while len(self._pending) >= self.batch_size:
            self._run_batch()
            yield from self._finished()

    def flush(self) -> Iterator[Prediction]:
        while self._pending:
            self._run_batch()
            yield from self._finished()

    def _run_batch(self) -> None:
        first_job, (y1, y2, x1, x2) = self._pending[0]
        shape = (y2 - y1, x2 - x1)
        batch: list[tuple[_Job, Window]] = []
        while self._pending and len(batch) < self.batch_size:
            job, window = self._pending[0]
            if (window[1] - window[0], window[3] - window[2]) != shape:
                break
            batch.append(self._pending.popleft())
        crops = torch.stack([job.item.image[:, a:b, c:d] for job, (a, b, c, d) in batch])
        context: dict[str, Any] = {"contexts": [job.context for job, _ in batch]} if self._uses_context else {}
        if self.method.needs_windows:
            context["windows"] = [window for _, window in batch]
        with torch.no_grad(), precision_mode(self.precision, self.device):
            if len(self.heads) == 1:
                head_scores = [self._predict_masks(crops, self.heads[0].bank, **context)]
            else:
                features = self._encode_crops(crops, **context)
                head_scores = []
                for head in self.heads:
                    head.activate()
                    head_scores.append(self.method.score(features, head.bank))
        for number, (head, scores) in enumerate(zip(self.heads, head_scores, strict=True)):
            scores = self._checked(scores, batch, shape, head.spec)
            for (job, window), crop_scores in zip(batch, scores, strict=True):
                if job.chunked[number]:  # stitched class chunk by class chunk when the image is done
                    job.crops[number].append((window, crop_scores.clone()))
                elif self._upsample_once:  # one whole-image crop: kept on the method's grid
                    job.scores[number] = crop_scores
                else:
                    if job.scores[number] is None:
                        job.scores[number] = torch.zeros(len(head.spec.flat_names), *job.count.shape,
                                                         device=self.device)
                    a, b, c, d = window
                    job.scores[number][:, a:b, c:d] += self._to_crop_size(crop_scores, shape)
        for job, (a, b, c, d) in batch:
            job.count[a:b, c:d] += 1
            job.remaining -= 1

    def _checked(
        self, scores: Tensor, batch: list[tuple[_Job, Window]], shape: tuple[int, int], spec: BenchmarkSpec
    ) -> Tensor:
        method = self.method.name
        expected = (len(batch), len(spec.flat_names))
        if scores.ndim != 4 or tuple(scores.shape[:2]) != expected:
            raise ValueError(
                f"method {method!r} returned scores of shape {tuple(scores.shape)}; expected "
                f"[{expected[0]}, {expected[1]}, h, w] for {expected[0]} crops and {expected[1]} names"
            )
        if not self._upsample_once and (scores.shape[-2] > shape[0] or scores.shape[-1] > shape[1]):
            raise ValueError(f"method {method!r} returned scores larger than the crop {shape}")
        if not torch.isfinite(scores).all():
            stems = sorted({job.item.stem for job, _ in batch})
            raise NumericalError(
                f"method {method!r} produced NaN/Inf scores on benchmark {spec.name!r}, image(s) {stems}; "
                "the run was stopped so that no number is computed from them"
            )
        return scores.float()

    def _to_crop_size(self, crop_scores: Tensor, shape: tuple[int, int]) -> Tensor:
        """One crop's scores [n,h',w'] -> [n,h,w] at the crop's size (bilinear; each channel of each crop is
        interpolated alone, so this equals interpolating the whole batch at once)."""
        if tuple(crop_scores.shape[-2:]) == shape:
            return crop_scores
        return F.interpolate(crop_scores[None], size=shape, mode="bilinear", align_corners=False)[0]

    def _chunks_classes(self, head: ScoreHead, image_size: tuple[int, int], label: Tensor) -> bool:
        """Whether this head's scores of an image are stitched in class chunks: their float32 size at image or label
        size exceeds `score_bytes`, and the label step allows it (`chunkable`)."""
        area = max(image_size[0] * image_size[1], label.shape[-2] * label.shape[-1])
        too_large = 4 * len(head.spec.flat_names) * area > self.score_bytes
        return too_large and chunkable(self.method, head.spec)

    def _finished(self) -> Iterator[Prediction]:
        while self._jobs and self._jobs[0].remaining == 0:
            job = self._jobs.popleft()
            labels = [job.item.label, *job.item.more_labels]
            preds = []
            for number, (head, scores, label) in enumerate(zip(self.heads, job.scores, labels, strict=True)):
                if len(self.heads) > 1:
                    head.activate()
                if job.chunked[number]:
                    preds.append(self._finalize_in_chunks(job, number, head, tuple(label.shape[-2:])))
                else:
                    preds.append(self._finalize(job, head, scores, tuple(label.shape[-2:])))
            job.scores, job.crops = [], []
            yield Prediction(job.item, preds[0], preds[1:])

    def _finalize(self, job: _Job, head: ScoreHead, scores: Tensor, label_size: tuple[int, int]) -> Tensor:
        if not self._upsample_once:
            scores = scores / job.count
        if tuple(scores.shape[-2:]) != label_size:
            scores = F.interpolate(scores[None], size=label_size, mode="bilinear", align_corners=False)[0]
        return label_map(self.method, head.spec, head.background_value, job.item.image, scores, job.context)

    def _finalize_in_chunks(self, job: _Job, number: int, head: ScoreHead, label_size: tuple[int, int]) -> Tensor:
        """The label map of `_finalize`, with the names' scores stitched, upsampled and refined a few classes at a
        time: each chunk's scores equal those channels of `_finalize`'s, and `StreamingLabels` reduces them."""
        spec = head.spec
        bounds = name_bounds(spec)
        area = max(job.count.numel(), label_size[0] * label_size[1])
        per_chunk = max(1, self.score_bytes // (4 * 4 * area))  # names per chunk: a quarter of the score memory
        reduction = StreamingLabels(self.method.score_kind, label_size, self.device)
        first = 0
        while first < len(spec.class_names):
            last = first + 1
            while last < len(spec.class_names) and bounds[last + 1] - bounds[first] <= per_chunk:
                last += 1
            scores = self._stitched(job, number, bounds[first], bounds[last])
            if tuple(scores.shape[-2:]) != label_size:
                scores = F.interpolate(scores[None], size=label_size, mode="bilinear", align_corners=False)[0]
            scores = self.method.refine(job.item.image, scores)
            reduction.add(scores, bounds[first:last + 1] - bounds[first], first)
            first = last
        return reduction.labels(spec.background, head.background_value)

    def _stitched(self, job: _Job, number: int, start: int, stop: int) -> Tensor:
        """Names [start, stop) of one head's stitched scores: on the method's grid for a single-upsample whole crop,
        else at image size, summed over the windows in their order and divided by the window count."""
        crops = job.crops[number]
        if self._upsample_once:
            return crops[0][1][start:stop]
        stitched = torch.zeros(stop - start, *job.count.shape, device=self.device)
        for (a, b, c, d), crop_scores in crops:
            stitched[:, a:b, c:d] += self._to_crop_size(crop_scores[start:stop], (b - a, d - c))
        return stitched / job.count


def name_bounds(spec: BenchmarkSpec) -> np.ndarray:
    """Where each prompted class's names start in `flat_names`, and their total at the end: [n_classes + 1]."""
    return np.cumsum([0] + [len(names) for names in spec.class_names])


def chunkable(method: SegMethod, spec: BenchmarkSpec) -> bool:
    """Whether the label step can see the classes a chunk at a time: the method refines each name's scores alone
    (`SegMethod.refine_per_class`) and refines no labels, the background rule has no area threshold and no zero-shot
    restriction applies (each of those needs every class's scores at once)."""
    restricted = spec.split is not None and spec.split.setting == "unseen_only"
    return (method.refine_per_class and not method.refines_labels() and spec.background.area_thd is None
            and not restricted)


class StreamingLabels:
    """The label map of `label_map` from the classes' scores seen a chunk at a time, for large vocabularies.

    Keeps per pixel the best class so far and its score (max over its names), and for `logits` the running max of
    all names' logits with the sum of their exponentials (an online softmax), so that the best class's probability
    is exp(best - max) / sum. The argmax is taken on the class scores (for logits: before the softmax, which is
    monotonic); it equals `label_map`'s except where float rounding makes two different logits' probabilities
    equal. Ties go to the first class, as `first_max` does.
    """

    def __init__(self, score_kind: str, size: tuple[int, int], device: torch.device) -> None:
        if score_kind not in ("logits", "probs"):
            raise ValueError(f"score_kind must be 'logits' or 'probs', got {score_kind!r}")
        self.score_kind = score_kind
        self.best = torch.full(size, float("-inf"), device=device)
        self.index = torch.zeros(size, dtype=torch.int64, device=device)
        self.max_logit = torch.full(size, float("-inf"), device=device)
        self.exp_sum = torch.zeros(size, device=device)

    def add(self, name_scores: Tensor, bounds: np.ndarray, first_class: int) -> None:
        """name_scores [n, H, W]: the names of classes first_class.. (bounds: their starts within the chunk, and n)."""
        if self.score_kind == "logits":
            chunk_max = torch.maximum(self.max_logit, name_scores.amax(dim=0))
            self.exp_sum = self.exp_sum * torch.exp(self.max_logit - chunk_max) + torch.exp(
                name_scores - chunk_max).sum(dim=0)
            self.max_logit = chunk_max
        best, index = first_max(synonyms_max(name_scores, bounds))
        better = best > self.best
        self.best = torch.where(better, best, self.best)
        self.index = torch.where(better, index + first_class, self.index)

    def labels(self, background: BackgroundSpec, value: float | None) -> Tensor:
        """The label map [H,W] under the background rule (`labels_and_probabilities`)."""
        logits = self.score_kind == "logits"
        best = torch.exp(self.best - self.max_logit) / self.exp_sum if logits else self.best
        if background.rule == "threshold":
            return torch.where(best > float(value), self.index + 1, torch.zeros_like(self.index))
        pred = self.index.clone()
        if background.rule == "prob_thd":
            pred[best < value] = 0
        return pred
