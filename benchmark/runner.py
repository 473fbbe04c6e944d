"""(method x benchmarks of a protocol) -> one record per benchmark: sharded, resumable, atomic."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from benchmark import paths
from benchmark.data import (
    BenchmarkDataset,
    DataError,
    DatasetCard,
    Sample,
    check_dataset,
    list_samples,
    read_image,
    single_item,
)
from benchmark.errors import ConfigError
from benchmark.inference import ImagePreprocessor, Prediction, PreparedImage, ScoreHead, SlidingWindowPredictor
from benchmark.metrics import ConfusionMatrix, split_scores
from benchmark.protocol import BenchmarkSpec, Protocol
from benchmark.results import (
    RECORD_SCHEMA,
    PartialState,
    claim_owner,
    record_lock,
    record_path,
    run_folder,
    state_path,
    write_json_atomic,
)
from methods.base import SegMethod


@dataclass
class EvalSettings:
    data_root: Path = field(default_factory=paths.data_root)
    results_root: Path = field(default_factory=paths.results_root)
    batch_size: int = 16
    device: str = "cpu"
    limit: int | None = None
    allow_incomplete: bool = False
    skip_existing: bool = False
    workers: int = 0
    save_every_s: float = 60.0
    save_every_images: int | None = None
    skip_bad: bool = False
    save_vis: int = 0
    progress: bool = True
    shared_pass: bool = True  # benchmarks over the same images in one pass, where the method has the hooks
    compile: bool = False  # torch.compile the method's forward (recorded; changes fp32 rounding slightly)


@dataclass(frozen=True)
class MethodRun:
    """A configured method: what decides its numbers, and the id its records are filed under."""

    method: SegMethod
    options: dict[str, Any]
    checkpoint: str | None

    @property
    def config(self) -> dict[str, Any]:
        return {**self.options, **self.method.config()}

    @property
    def run_id(self) -> str:
        identity = {"name": self.method.name, "config": self.config, "checkpoint": self.method.checkpoint_sha256()}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.method.name}-{digest[:10]}"


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[Shard, str]:
    """Under torchrun (WORLD_SIZE > 1): join the group; each rank gets its own CUDA device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard(), device
    rank = int(os.environ["RANK"])
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Shard(rank, world), device


def resolve_background_value(method: SegMethod, protocol: Protocol, spec: BenchmarkSpec) -> float | None:
    rule = spec.background.rule
    if rule not in ("threshold", "prob_thd"):
        return None
    if spec.background.value is not None:
        return float(spec.background.value)
    value = method.background_value(protocol, spec, rule)
    if value is None:
        raise ConfigError(
            f"{protocol.path}: benchmark {spec.name!r} uses background rule {rule!r} with no value, and method "
            f"{method.name!r} declares none; set benchmarks.{spec.name}.background.value in the protocol"
        )
    return float(value)


def check_split_overlap(method: SegMethod, protocol: Protocol, spec: BenchmarkSpec) -> None:
    trained = method.trained_classes()
    if spec.split is None or not trained:
        return
    normalised = {name.strip().lower() for name in trained}
    unseen = [spec.dataset.classes[k] for k in spec.split.unseen]
    overlap = [name for name in unseen if name.strip().lower() in normalised]
    if overlap:
        raise ConfigError(
            f"{protocol.path}: method {method.name!r} was trained with dense labels on {overlap}, which are unseen "
            f"classes of split {spec.split.name!r} on benchmark {spec.name!r}; its numbers would not be zero-shot"
        )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "open_clip_torch", "numpy", "zsseg-bench"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _git_commit() -> str | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class TextBankCache:
    """One text bank per (names, templates, aggregation) for the life of a method run."""

    def __init__(self) -> None:
        self._banks: dict[tuple, Any] = {}

    def get(self, method: SegMethod, protocol: Protocol, spec: BenchmarkSpec) -> Any:
        key = (spec.class_names, protocol.text.templates, protocol.text.aggregation)
        if key not in self._banks:
            self._banks[key] = method.encode_classes([list(s) for s in spec.class_names], list(protocol.text.templates))
        return self._banks[key]


def _shard_indices(count: int, shard: Shard) -> list[int]:
    return list(range(shard.rank, count, shard.world))


@dataclass
class _Selection:
    """The samples of one benchmark to evaluate, and why its record will be partial."""

    spec: BenchmarkSpec
    samples: list[Sample]
    partial_reasons: list[str]


def _select_samples(spec: BenchmarkSpec, settings: EvalSettings) -> _Selection:
    """The benchmark's samples after the dataset check, --allow-incomplete, --skip-bad and --limit."""
    card = spec.dataset
    partial_reasons: list[str] = []
    if settings.limit is not None:
        partial_reasons.append(f"limit {settings.limit}")
    samples = list_samples(card, settings.data_root)
    check = check_dataset(card, settings.data_root)
    # under --skip-bad, files missing from a split that lists every image are bad files: skipped and listed
    skip_missing = settings.skip_bad and check.status == "incomplete" and len(samples) == card.num_images
    if check.status != "found" and not skip_missing:
        if not settings.allow_incomplete or check.status == "missing":
            missing = f"; first missing: {check.missing[0]}" if check.missing else ""
            if not check.missing and card.split and len(samples) != card.num_images:
                missing = f"; split file {settings.data_root / card.root / card.split} lists {len(samples)}"
            raise DataError(
                f"{settings.data_root / card.root}: dataset {card.name!r} is {check.status} "
                f"({check.found}/{check.expected} images with labels{missing}); {check.remedy}, "
                "or pass --allow-incomplete to evaluate what is there (the record is marked partial)"
                + ("" if len(samples) != card.num_images else "; --skip-bad skips and lists the missing files")
            )
        samples = [s for s in samples if s.image.is_file() and s.label.is_file()]
        partial_reasons.append(f"incomplete dataset: {len(samples)}/{card.num_images} images")
    if settings.limit is not None:
        samples = samples[: settings.limit]
    return _Selection(spec, samples, partial_reasons)


def evaluate_benchmark(
    run: MethodRun,
    protocol: Protocol,
    spec: BenchmarkSpec,
    settings: EvalSettings,
    shard: Shard = Shard(),
    banks: TextBankCache | None = None,
) -> dict[str, Any] | None:
    """Evaluates one benchmark; returns its record (on the main rank) or None when skipped."""
    return evaluate_together(run, protocol, [_select_samples(spec, settings)], settings, shard, banks)[0]


def evaluate_together(
    run: MethodRun,
    protocol: Protocol,
    selections: list[_Selection],
    settings: EvalSettings,
    shard: Shard = Shard(),
    banks: TextBankCache | None = None,
) -> list[dict[str, Any] | None]:
    """Benchmarks over the same images in one pass (encode_crops once, score per class set); one record each.

    A benchmark whose record exists (--skip-existing) is left out; states saved at different points
    (an interrupted single run) are resumed one benchmark at a time.
    """
    folder = run_folder(settings.results_root, protocol.name, run.run_id)
    with contextlib.ExitStack() as locks:
        for selection in selections:
            locks.enter_context(record_lock(folder, selection.spec.name, shard.rank, shard.world))
        prepared = [_prepare_member(run, protocol, chosen, settings, shard, banks, folder) for chosen in selections]
        records: dict[str, dict[str, Any] | None] = {selection.spec.name: None for selection in selections}
        members = [member for member in prepared if member is not None]
        together = len({member.state.done for member in members}) == 1
        for group in [members] if together else [[member] for member in members]:
            if group:
                records.update(_evaluate_members(run, protocol, group, settings, shard, folder))
    return list(records.values())


@dataclass
class _Member:
    """One benchmark of a pass: its samples, text bank, background value, confusion matrix and saved state."""

    spec: BenchmarkSpec
    samples: list[Sample]
    partial_reasons: list[str]
    bank: Any
    background_value: float | None
    matrix: ConfusionMatrix
    state: PartialState
    state_file: Path
    ignored_classes: torch.Tensor | None

    def activate(self, method: SegMethod, protocol: Protocol) -> Callable[[], None]:
        return partial(method.setup, protocol, self.spec)


def _prepare_member(
    run: MethodRun,
    protocol: Protocol,
    selection: _Selection,
    settings: EvalSettings,
    shard: Shard,
    banks: TextBankCache | None,
    folder: Path,
) -> _Member | None:
    """Everything a benchmark needs before its first image; None when --skip-existing finds its record."""
    method, spec = run.method, selection.spec
    partial = bool(selection.partial_reasons) or settings.skip_bad
    state_file = state_path(folder, spec.name, shard.rank, shard.world)
    if settings.skip_existing and not partial and record_path(folder, spec.name, False).exists():
        state_file.unlink(missing_ok=True)  # left by a run killed between writing the record and cleaning up
        return None
    check_split_overlap(method, protocol, spec)
    background_value = resolve_background_value(method, protocol, spec)
    method.setup(protocol, spec)
    bank = (banks or TextBankCache()).get(method, protocol, spec)
    key = {
        "protocol": protocol.hash, "run": run.run_id, "benchmark": spec.name, "rank": shard.rank,
        "world": shard.world, "images": len(selection.samples), "limit": settings.limit,
    }
    matrix = ConfusionMatrix(spec.dataset.num_classes, spec.dataset.ignore_index, torch.device(settings.device))
    state = PartialState.load_or_new(state_file, key, matrix.matrix)
    matrix.matrix = state.matrix
    return _Member(spec, selection.samples, selection.partial_reasons, bank, background_value, matrix, state,
                   state_file, _ignored_in_metric(spec))


def _evaluate_members(
    run: MethodRun,
    protocol: Protocol,
    members: list[_Member],
    settings: EvalSettings,
    shard: Shard,
    folder: Path,
) -> dict[str, dict[str, Any] | None]:
    """One pass over the first member's images (every member has the same ones); a record per member."""
    method = run.method
    first = members[0]
    device = torch.device(settings.device)
    indices = _shard_indices(len(first.samples), shard)
    owner = claim_owner(shard.rank, shard.world)
    done = first.state.done
    label_sources = [(member.spec.dataset, member.samples) for member in members[1:]]
    dataset = BenchmarkDataset(first.spec.dataset, first.samples, indices[done:], ImagePreprocessor(first.spec.image),
                               more_labels=label_sources)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, collate_fn=single_item, num_workers=settings.workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )
    heads = [
        ScoreHead(member.spec, member.bank, member.background_value, member.activate(method, protocol))
        for member in members[1:]
    ]
    method.setup(protocol, first.spec)
    predictor = SlidingWindowPredictor(
        method, first.bank, first.spec, first.background_value, settings.batch_size, device, protocol.precision,
        more=heads, activate=first.activate(method, protocol) if heads else None, compile_model=settings.compile,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    names = "+".join(member.spec.name for member in members)
    bar = tqdm(
        total=len(indices), initial=done, desc=f"{method.name} {names}", unit="img",
        disable=not (settings.progress and shard.is_main), dynamic_ncols=True,
    )
    started = time.perf_counter()
    last_save = started
    seconds_before = first.state.seconds

    def save() -> None:
        for member in members:
            member.state.seconds = seconds_before + time.perf_counter() - started
            member.state.done = done
            member.state.save(member.state_file, owner)

    position_of = {index: position for position, index in enumerate(indices)}
    skipped = first.state.skipped if settings.skip_bad else None
    try:
        for item in _stream(loader, predictor, position_of, skipped):
            labels = [item.item.label, *item.item.more_labels]
            preds = [item.pred, *item.more_preds]
            for member, label, pred in zip(members, labels, preds, strict=True):
                if member.ignored_classes is not None:
                    ignored = torch.isin(label, member.ignored_classes)
                    label = label.masked_fill(ignored, member.spec.dataset.ignore_index)
                member.matrix.update(pred, label)
            if item.item.position < settings.save_vis and shard.is_main:
                for member, label, pred in zip(members, labels, preds, strict=True):
                    _save_example(member.samples[item.item.index], label, pred, member.spec.dataset, folder,
                                  member.spec.name)
            done = item.item.position + 1
            bar.update(done - bar.n)
            now = time.perf_counter()
            due = settings.save_every_images and done % settings.save_every_images == 0
            if due or now - last_save >= settings.save_every_s:
                save()
                last_save = now
    except BaseException:
        save()
        raise
    finally:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = seconds_before + time.perf_counter() - started
    peak_device = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if shard.world > 1:
        stats = torch.tensor([seconds, float(peak_device), float(peak_host)], dtype=torch.float64, device=device)
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)
        seconds, peak_device, peak_host = stats[0].item(), int(stats[1].item()), int(stats[2].item())
    skipped_files = _gather_skipped([why for _, why in sorted(first.state.skipped.items())], shard)
    records: dict[str, dict[str, Any] | None] = {}
    for member in members:
        member.matrix.all_reduce()
        partial_reasons = member.partial_reasons
        if skipped_files:
            partial_reasons = [*partial_reasons, f"skipped {len(skipped_files)} bad file(s)"]
        record = None
        if shard.is_main:
            record = build_record(run, protocol, member.spec, member.matrix, len(member.samples) - len(skipped_files),
                                  seconds, member.background_value, partial_reasons, settings, peak_host, peak_device,
                                  shard)
            record["skipped_files"] = skipped_files
            record["evaluated_with"] = [other.spec.name for other in members if other is not member]
            write_json_atomic(record_path(folder, member.spec.name, bool(partial_reasons)), record, owner)
        records[member.spec.name] = record
    if shard.world > 1:
        dist.barrier()
    for member in members:
        member.state_file.unlink(missing_ok=True)
    return records


def _save_example(sample: Sample, label: torch.Tensor, pred: torch.Tensor, card: DatasetCard, folder: Path,
                  benchmark: str) -> None:
    from benchmark.visualize import example_path, save_examples

    save_examples(
        read_image(sample.image), label.cpu().numpy(), pred.cpu().numpy(),
        card.classes, example_path(folder, benchmark, sample.stem), ignore_index=card.ignore_index,
    )


def _ignored_in_metric(spec: BenchmarkSpec) -> torch.Tensor | None:
    """Under `unseen_only`, pixels of seen classes are not scored."""
    if spec.split is None or spec.split.setting != "unseen_only":
        return None
    return torch.tensor(spec.split.seen, dtype=torch.int64)


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
                             batch["more_labels"])
        yield from predictor.push(item)
    yield from predictor.flush()


def _gather_skipped(skipped: list[str], shard: Shard) -> list[str]:
    if shard.world == 1:
        return list(skipped)
    gathered: list[list[str]] = [[] for _ in range(shard.world)]
    dist.all_gather_object(gathered, list(skipped))
    return [entry for part in gathered for entry in part]


def build_record(
    run: MethodRun,
    protocol: Protocol,
    spec: BenchmarkSpec,
    matrix: ConfusionMatrix,
    images: int,
    seconds: float,
    background_value: float | None,
    partial_reasons: list[str],
    settings: EvalSettings,
    peak_host: int,
    peak_device: int,
    shard: Shard,
) -> dict[str, Any]:
    scores = matrix.compute()
    card = spec.dataset
    record = {
        "schema": RECORD_SCHEMA,
        "protocol": {"name": protocol.name, "hash": protocol.hash, "path": str(protocol.path)},
        "method": {
            "name": run.method.name, "run_id": run.run_id, "config": run.config, "checkpoint": run.checkpoint,
            "checkpoint_sha256": run.method.checkpoint_sha256(), "backbone": run.method.backbone(),
            "score_kind": run.method.score_kind,
        },
        "benchmark": spec.name,
        "dataset": {"card": card.name, "images": images, "expected_images": card.num_images},
        "partial": bool(partial_reasons),
        "partial_reasons": partial_reasons,
        "background": {
            "rule": spec.background.rule, "value": background_value, "area_thd": spec.background.area_thd,
            "value_source": "protocol" if spec.background.value is not None else "method",
        },
        "method_settings": spec.method_settings,
        "precision": protocol.precision,
        "miou": round(scores.miou * 100, 2),
        "aacc": round(scores.aacc * 100, 2),
        "macc": round(scores.macc * 100, 2),
        "per_class_iou": {name: _percent(v) for name, v in zip(card.classes, scores.iou, strict=True)},
        "per_class_acc": {name: _percent(v) for name, v in zip(card.classes, scores.acc, strict=True)},
        "confusion_matrix": matrix.matrix.cpu().tolist(),
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 3) if seconds > 0 else None,
        "peak_memory_bytes": {"host": peak_host, "device": peak_device},
        "device": settings.device,
        "world_size": shard.world,
        "batch_size": settings.batch_size,
        "compiled": settings.compile,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if spec.split is not None:
        split = split_scores(scores.iou, spec.split.seen, spec.split.unseen)
        record["split"] = {
            "name": spec.split.name, "setting": spec.split.setting,
            "seen": [card.classes[k] for k in spec.split.seen],
            "unseen": [card.classes[k] for k in spec.split.unseen],
            "miou_seen": _percent(split.miou_seen), "miou_unseen": _percent(split.miou_unseen),
            "hiou": _percent(split.hiou),
        }
    return record


def _percent(value: float) -> float | None:
    return None if value != value else round(value * 100, 2)


def evaluate(
    run: MethodRun,
    protocol: Protocol,
    benchmarks: list[str] | None,
    settings: EvalSettings,
    shard: Shard = Shard(),
) -> list[dict[str, Any]]:
    banks = TextBankCache()
    run.method.to(settings.device).eval()
    specs = protocol.select(benchmarks)
    records: dict[str, dict[str, Any] | None] = {}
    for group in shared_image_groups(specs, run.method, settings):
        if len(group) == 1:
            records[group[0].name] = evaluate_benchmark(run, protocol, group[0], settings, shard, banks)
            continue
        selections = [_select_samples(spec, settings) for spec in group]
        together = evaluate_together(run, protocol, selections, settings, shard, banks)
        records.update(zip([spec.name for spec in group], together, strict=True))
    return [records[spec.name] for spec in specs if records.get(spec.name) is not None]


def shared_image_groups(
    specs: list[BenchmarkSpec], method: SegMethod, settings: EvalSettings
) -> list[list[BenchmarkSpec]]:
    """The benchmarks in evaluation order, those that share images and geometry grouped for one pass.

    Grouped only where the method has encode_crops/score hooks, `shared_pass` is on and `skip_bad`
    off, and the benchmarks select the same image files, resized and windowed alike. A group sits
    where its first benchmark is in the protocol's order.
    """
    if not (settings.shared_pass and not settings.skip_bad and method.scores_from_features()):
        return [[spec] for spec in specs]
    groups: dict[tuple, list[BenchmarkSpec]] = {}
    for spec in specs:
        try:
            images = tuple(sample.image for sample in _select_samples(spec, settings).samples)
        except DataError:
            images = (spec.name,)  # stands alone; evaluating it raises the error in its turn
        groups.setdefault((images, spec.image, spec.inference), []).append(spec)
    return list(groups.values())
