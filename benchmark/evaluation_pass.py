"""One pass over a benchmark's images: the loop that feeds the predictor and the metrics, and saves progress.

The loop (this module) and the metric (`benchmark.metrics`) are different rooms, as detectron2's
`inference_on_dataset` and its evaluators are: the loop streams images through the sliding-window
predictor, hands each label map to its benchmark's metric, and saves every member's progress.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from benchmark.data import BenchmarkDataset, DataError, DatasetCard, Sample, read_image, single_item
from benchmark.distributed import Shard, gather_lists, max_over_ranks
from benchmark.eval_settings import EvalSettings
from benchmark.inference import ImagePreprocessor, Prediction, PreparedImage, ScoreHead, SlidingWindowPredictor
from benchmark.metrics import ConfusionMatrix
from benchmark.protocol import Protocol
from benchmark.results import PartialState, claim_owner
from benchmark.selection import Selection
from methods.base import SegMethod


@dataclass
class PassMember:
    """One benchmark in a pass: its selected samples, its score head, its metric and its saved progress.

    `protocol` and `folder` are those its record is filed under: a pass may score one benchmark under
    several protocols that differ only on the text side (a sensitivity sweep's variants).
    """

    selection: Selection
    head: ScoreHead
    metric: ConfusionMatrix
    state: PartialState
    state_file: Path
    ignored_classes: torch.Tensor | None  # class ids whose pixels are not scored (unseen_only)
    protocol: Protocol
    folder: Path

    @property
    def name(self) -> str:
        return self.selection.spec.name

    def score(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        if self.ignored_classes is not None:
            ignored = torch.isin(label, self.ignored_classes)
            label = label.masked_fill(ignored, self.metric.ignore_index)
        self.metric.update(pred, label)


@dataclass(frozen=True)
class PassResult:
    seconds: float  # including the seconds of the runs this one resumed
    peak_host_bytes: int
    peak_device_bytes: int
    skipped_files: list[str]  # every rank's, in rank order (--skip-bad)


class _Progress:
    """Saves every member's state every `save_every_s` seconds or `save_every_images` images, and on exit."""

    def __init__(self, members: list[PassMember], settings: EvalSettings, shard: Shard) -> None:
        self.members = members
        self.settings = settings
        self.owner = claim_owner(shard.rank, shard.world)
        self.done = members[0].state.done
        self.seconds_before = members[0].state.seconds
        self.started = self.last_save = time.perf_counter()

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def advance(self, done: int) -> None:
        self.done = done
        now = time.perf_counter()
        due = self.settings.save_every_images and done % self.settings.save_every_images == 0
        if due or now - self.last_save >= self.settings.save_every_s:
            self.save()
            self.last_save = now

    def save(self) -> None:
        for member in self.members:
            member.state.seconds = self.seconds()
            member.state.done = self.done
            member.state.metric = member.metric.state_dict()
            member.state.save(member.state_file, self.owner)


def run_pass(method: SegMethod, members: list[PassMember], settings: EvalSettings, shard: Shard) -> PassResult:
    """One pass over the first member's images (every member has the same ones and the same precision),
    from its saved progress."""
    first = members[0]
    precision = first.protocol.precision
    if any(member.protocol.precision != precision for member in members):
        raise ValueError(f"one pass runs at one precision; {[m.protocol.precision for m in members]} were mixed")
    device = torch.device(settings.device)
    indices = shard.indices(len(first.selection.samples))
    progress = _Progress(members, settings, shard)
    loader = _loader(members, indices[progress.done:], settings, device, method.needs_original_image)
    first.head.activate()
    predictor = SlidingWindowPredictor(
        method, [member.head for member in members], settings.batch_size, device, precision,
        compile_model=settings.compile, score_bytes=settings.score_memory_mib << 20,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = tqdm(
        total=len(indices), initial=progress.done, desc=f"{method.name} {_pass_label(members)}",
        unit="img", disable=not (settings.progress and shard.is_main), dynamic_ncols=True,
    )
    position_of = {index: position for position, index in enumerate(indices)}
    skipped = first.state.skipped if settings.skip_bad else None
    try:
        for prediction in _stream(loader, predictor, position_of, skipped):
            _score(members, prediction, settings.save_vis if shard.is_main else 0)
            progress.advance(prediction.item.position + 1)
            bar.update(progress.done - bar.n)
    except BaseException:
        progress.save()
        raise
    finally:
        bar.close()
    return _result(progress, device, shard, first.state.skipped)


def _pass_label(members: list[PassMember]) -> str:
    """The benchmarks of a pass, and how many protocols score them where several do."""
    names = "+".join(dict.fromkeys(member.name for member in members))
    protocols = len({member.protocol.name for member in members})
    return names if protocols == 1 else f"{names} under {protocols} protocols"


def _loader(
    members: list[PassMember], indices: list[int], settings: EvalSettings, device: torch.device, keep_original: bool
) -> torch.utils.data.DataLoader:
    first = members[0].selection
    label_sources = [(member.selection.spec.dataset, member.selection.samples) for member in members[1:]]
    dataset = BenchmarkDataset(first.spec.dataset, first.samples, indices, ImagePreprocessor(first.spec.image),
                               more_labels=label_sources, keep_original=keep_original)
    return torch.utils.data.DataLoader(
        dataset, batch_size=1, collate_fn=single_item, num_workers=settings.workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )


def _score(members: list[PassMember], prediction: Prediction, save_vis: int) -> None:
    """Each member's label map into its metric; the first `save_vis` images also as pictures."""
    labels = [prediction.item.label, *prediction.item.more_labels]
    preds = [prediction.pred, *prediction.more_preds]
    for member, label, pred in zip(members, labels, preds, strict=True):
        member.score(pred, label)
    if prediction.item.position < save_vis:
        for member, label, pred in zip(members, labels, preds, strict=True):
            sample = member.selection.samples[prediction.item.index]
            _save_example(sample, label, pred, member.selection.spec.dataset, member.folder, member.name)


def _result(progress: _Progress, device: torch.device, shard: Shard, skipped: dict[int, str]) -> PassResult:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = progress.seconds()
    peak_device = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds, peak_device, peak_host = max_over_ranks([seconds, float(peak_device), float(peak_host)], device, shard)
    skipped_files = gather_lists([why for _, why in sorted(skipped.items())], shard)
    return PassResult(seconds, int(peak_host), int(peak_device), skipped_files)


def _save_example(sample: Sample, label: torch.Tensor, pred: torch.Tensor, card: DatasetCard, folder: Path,
                  benchmark: str) -> None:
    from benchmark.visualize import example_path, save_examples

    save_examples(
        read_image(sample.image), label.cpu().numpy(), pred.cpu().numpy(),
        card.classes, example_path(folder, benchmark, sample.stem), ignore_index=card.ignore_index,
    )


def _stream(
    loader: torch.utils.data.DataLoader,
    predictor: SlidingWindowPredictor,
    position_of: dict[int, int],
    skipped: dict[int, str] | None,
) -> Iterator[Prediction]:
    """Predictions in order; a bad file stops the run, or with `skipped` (--skip-bad) is listed there."""
    for batch in loader:
        position = position_of[batch["index"]]
        if "error" in batch:
            if skipped is None:
                raise DataError(batch["error"] + "; or pass --skip-bad to skip it and mark the record partial")
            skipped[position] = batch["error"]
            continue
        item = PreparedImage(batch["index"], batch["stem"], batch["image"], batch["label"], position,
                             batch["more_labels"], batch.get("original"))
        yield from predictor.push(item)
    yield from predictor.flush()
