"""`zsbench bench`: the engine's throughput against a loop with the reference repositories' structure.

Synthetic images with a benchmark's typical sizes (bench_shapes.yaml) and random label maps of its
class count are written in the dataset card's layout, then evaluated twice in one process:

- engine: `runner.evaluate_benchmark`, the path `zsbench eval` runs (decoding and resizing in the
  DataLoader, crops batched across images, stitching, argmax, confusion matrix on the device);
- reference: mmseg 0.27 `EncoderDecoder.slide_inference` + `inference` as TCL and SCLIP run it:
  one crop per forward in fp32, each crop's scores padded to the full image and added, full-resolution
  softmax and argmax per image, and the confusion matrix updated per image on the CPU.

Both read the same files through the same DataLoader settings and share the per-image label step
(synonym max, background rule, argmax: inference.label_map), so what differs is
the inference loop around the model. At fp32 both must give the same confusion matrix.
"""

from __future__ import annotations

import cProfile
import gc
import math
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from benchmark.data import BenchmarkDataset, DatasetCard, list_samples, single_item
from benchmark.errors import ConfigError, DataError
from benchmark.eval_settings import SCORE_MEMORY_MIB, EvalSettings
from benchmark.inference import (
    ImagePreprocessor,
    PreparedImage,
    ScoreHead,
    SlidingWindowPredictor,
    label_map,
    rescale_size,
    upsamples_once,
    windows_for,
)
from benchmark.method_run import MethodRun
from benchmark.metrics import scores_from_matrix
from benchmark.numerics import precision_mode
from benchmark.policy import resolve_background_value
from benchmark.protocol import BenchmarkSpec, Protocol
from benchmark.runner import evaluate_benchmark
from benchmark.text_banks import TextBankCache
from benchmark.yamlio import check_fields, load_yaml_mapping
from methods.base import SegMethod

SHAPES_FILE = Path(__file__).with_name("bench_shapes.yaml")
BENCH_SCHEMA = 1


@dataclass(frozen=True)
class SizeRange:
    """Inclusive pixel ranges a synthetic image's width and height are drawn from."""

    width: tuple[int, int]
    height: tuple[int, int]

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        width = int(rng.integers(self.width[0], self.width[1] + 1))
        return width, int(rng.integers(self.height[0], self.height[1] + 1))


def load_shapes(path: Path = SHAPES_FILE) -> dict[str, SizeRange]:
    """Dataset card name -> the typical image sizes of its split."""
    shapes = {}
    for card, entry in load_yaml_mapping(path).items():
        check_fields(entry, {"width": list, "height": list}, {}, path, f"{card}: ")
        ranges = []
        for key in ("width", "height"):
            values = entry[key]
            if len(values) != 2 or not all(isinstance(v, int) and v > 0 for v in values) or values[0] > values[1]:
                raise ConfigError(f"{path}: {card}: key {key!r} must be [min, max], positive integers, got {values!r}")
            ranges.append((values[0], values[1]))
        shapes[card] = SizeRange(*ranges)
    return shapes


def size_range_for(card: DatasetCard, path: Path = SHAPES_FILE) -> SizeRange:
    shapes = load_shapes(path)
    if card.name not in shapes:
        raise ConfigError(
            f"{path}: no image sizes for dataset card {card.name!r}; add `{card.name}: "
            "{width: [min, max], height: [min, max]}` with the typical sizes of its images"
        )
    return shapes[card.name]


def raw_label_values(card: DatasetCard) -> np.ndarray:
    """Values a label file of this card holds before the card's mapping (reduce_zero_label, ignore)."""
    if card.reduce_zero_label:
        return np.arange(card.num_classes + 1)
    ignore = [card.ignore_index] if card.ignore_index <= 65535 else []
    return np.array([*range(card.num_classes), *ignore])


def synthetic_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random colours with pixel noise: compresses and decodes about as a photograph does."""
    coarse = rng.integers(0, 256, size=(max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    image += rng.integers(-12, 13, size=image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def synthetic_label(rng: np.random.Generator, width: int, height: int, values: np.ndarray) -> np.ndarray:
    """A random index map of 16x16-pixel blocks; 8-bit, or 16-bit where a value exceeds 255 (A-847, PC-459)."""
    dtype = np.uint8 if values.max() <= 255 else np.uint16
    coarse = rng.choice(values, size=(max(1, height // 16 + 1), max(1, width // 16 + 1))).astype(dtype)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST)


def write_synthetic_split(
    card: DatasetCard, sizes: SizeRange, count: int, seed: int, data_root: Path
) -> list[tuple[int, int]]:
    """`count` seeded random images and labels in the card's layout under data_root; their (width, height)."""
    rng = np.random.default_rng(seed)
    root = data_root / card.root
    values = raw_label_values(card)
    stems, drawn = [], []
    for index in range(count):
        width, height = sizes.draw(rng)
        stem = f"bench_{index:06d}"
        image_path = root / card.img_dir / f"{stem}{card.img_suffix}"
        label_path = root / card.ann_dir / f"{stem}{card.seg_map_suffix}"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        image = synthetic_image(rng, width, height)
        if not cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise DataError(f"{image_path}: cannot be written")
        if not cv2.imwrite(str(label_path), synthetic_label(rng, width, height, values)):
            raise DataError(f"{label_path}: cannot be written")
        stems.append(stem)
        drawn.append((width, height))
    if card.split:
        split_file = root / card.split
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split_file.write_text("".join(f"{stem}\n" for stem in stems), encoding="utf-8")
    return drawn


def crop_count(spec: BenchmarkSpec, sizes: list[tuple[int, int]]) -> int:
    """Forward crops the protocol's resize and windows give for images of these (width, height)."""
    total = 0
    for width, height in sizes:
        if spec.image.resize_short is not None:
            width, height = rescale_size(
                width, height, spec.image.resize_short, spec.image.resize_long_max or spec.image.resize_short
            )
        total += len(windows_for(spec.inference, height, width))
    return total


@torch.no_grad()
def flops_per_crop(method: SegMethod, bank: Any, spec: BenchmarkSpec, device: torch.device) -> int | None:
    """The model's FLOPs on one full crop (matrix products, convolutions, attention); None in whole mode and for a
    method whose per-image context reads the sample's own files (`needs_original_image`: a zero crop has none)."""
    if spec.inference.mode != "slide" or method.needs_original_image:
        return None
    crop = torch.zeros(1, 3, spec.inference.crop, spec.inference.crop, device=device)
    with FlopCounterMode(display=False) as counter:
        method.predict_masks(crop, bank, **method.crop_context([crop[0]]))
    return int(counter.get_total_flops())


def _host_peak_reset() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM) of this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _host_peak_bytes() -> int:
    peak = _proc_status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak resident host memory of this process and peak allocated device memory over a `with` block.

    Host: the kernel's high-water mark, reset on entry; where it cannot be reset (no /proc), the
    process's lifetime peak, which then also covers what ran before (`host_since_start` is False).
    `host_added_bytes` is the peak less the resident memory on entry (torch alone holds ~0.5 GB).
    DataLoader worker processes are not counted.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.host_bytes = 0
        self.host_start_bytes = 0
        self.device_bytes = 0
        self.host_since_start = False

    @property
    def host_added_bytes(self) -> int:
        return max(0, self.host_bytes - self.host_start_bytes)

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        self.host_since_start = _host_peak_reset()
        self.host_start_bytes = _proc_status_bytes("VmRSS") or 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.device_bytes = torch.cuda.max_memory_allocated(self.device)
        self.host_bytes = _host_peak_bytes()


@dataclass
class LoopResult:
    images: int
    crops: int
    seconds: float
    matrix: np.ndarray
    peak_host_bytes: int = 0
    host_added_bytes: int = 0
    peak_device_bytes: int = 0
    host_since_start: bool = False
    seconds_all: list[float] = field(default_factory=list)
    record: dict[str, Any] | None = None

    def take_memory(self, memory: PeakMemory) -> None:
        self.peak_host_bytes = memory.host_bytes
        self.host_added_bytes = memory.host_added_bytes
        self.peak_device_bytes = memory.device_bytes
        self.host_since_start = memory.host_since_start

    @classmethod
    def best_of(cls, runs: list[LoopResult]) -> LoopResult:
        """The fastest run, with the largest memory peaks of all and every run's seconds."""
        best = min(runs, key=lambda loop: loop.seconds)
        return replace(
            best,
            peak_host_bytes=max(loop.peak_host_bytes for loop in runs),
            host_added_bytes=max(loop.host_added_bytes for loop in runs),
            peak_device_bytes=max(loop.peak_device_bytes for loop in runs),
            host_since_start=all(loop.host_since_start for loop in runs),
            seconds_all=[loop.seconds for loop in runs],
        )

    def summary(self, flops_per_crop: int | None) -> dict[str, Any]:
        return {
            "images": self.images,
            "crops": self.crops,
            "seconds": self.seconds,
            "seconds_all": self.seconds_all,
            "images_per_s": self.images / self.seconds if self.seconds > 0 else None,
            "crops_per_s": self.crops / self.seconds if self.seconds > 0 else None,
            "model_gflops_per_s": flops_per_crop * self.crops / self.seconds / 1e9
            if flops_per_crop and self.seconds > 0 else None,
            "peak_host_bytes": self.peak_host_bytes,
            "host_added_bytes": self.host_added_bytes,
            "peak_device_bytes": self.peak_device_bytes,
            "miou": round(scores_from_matrix(torch.from_numpy(self.matrix)).miou * 100, 4),
            "confusion_matrix": self.matrix.tolist(),
        }


def profile_loops(folder: Path, loops: dict[str, Callable[[], LoopResult]]) -> None:
    """One untimed run of each loop under cProfile, saved as folder/<name>.prof (read with pstats)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, loop in loops.items():
        profile = cProfile.Profile()
        profile.runcall(loop)
        profile.dump_stats(folder / f"{name}.prof")


def _measured(loop: Callable[[], LoopResult], device: torch.device) -> LoopResult:
    with PeakMemory(device) as memory:
        result = loop()
    result.take_memory(memory)
    return result


@torch.no_grad()
def reference_predict(
    method: SegMethod, bank: Any, spec: BenchmarkSpec, background_value: float | None, image: Tensor,
    label_size: tuple[int, int], original: Tensor | None = None, stem: str | None = None,
) -> tuple[Tensor, int]:
    """One image as mmseg 0.27 slide_inference / whole_inference + inference(rescale=True) run it.

    image: [3,h,w] resized and normalised. Returns the label map [H,W] at label_size and the number of
    forward passes (one crop each, fp32).
    """
    _, height, width = image.shape
    if spec.inference.mode == "whole":
        crop_h, crop_w, stride_h, stride_w = height, width, height, width
    else:
        crop_h = crop_w = spec.inference.crop
        stride_h = stride_w = spec.inference.stride
    grids_h = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    grids_w = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    preds = image.new_zeros((1, len(spec.flat_names), height, width))
    count = image.new_zeros((1, 1, height, width))
    with precision_mode("fp32", image.device):
        given = {"original": original, "stem": stem} if method.needs_original_image else {}
        context = method.encode_image(image, **given) if method.uses_image_context() else None
    contexts = {"contexts": [context]} if method.uses_image_context() else {}
    for h_idx in range(grids_h):
        for w_idx in range(grids_w):
            y1, x1 = h_idx * stride_h, w_idx * stride_w
            y2, x2 = min(y1 + crop_h, height), min(x1 + crop_w, width)
            y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
            crop = image[None, :, y1:y2, x1:x2]
            windows = {"windows": [(y1, y2, x1, x2)]} if method.needs_windows else {}
            with precision_mode("fp32", image.device):
                logits = method.predict_masks(crop, bank, **contexts, **windows).float()
            if upsamples_once(method, spec):  # whole image: from the method's grid to the label size at once
                preds, count = logits, image.new_ones(1)
                continue
            if logits.shape[-2:] != crop.shape[-2:]:
                logits = F.interpolate(logits, size=crop.shape[-2:], mode="bilinear", align_corners=False)
            preds += F.pad(logits, (x1, width - x2, y1, height - y2))
            count[:, :, y1:y2, x1:x2] += 1
    preds = preds / count
    if tuple(preds.shape[-2:]) != tuple(label_size):
        preds = F.interpolate(preds, size=label_size, mode="bilinear", align_corners=False)
    return label_map(method, spec, background_value, image, preds[0], context), grids_h * grids_w


def update_confusion(matrix: np.ndarray, pred: np.ndarray, label: np.ndarray, ignore_index: int) -> None:
    """Adds one image's (label, prediction) pairs to matrix [K,K] (rows: label) on the CPU; a [K+1,K] matrix counts
    labels outside the classes in its last row."""
    keep = label != ignore_index
    rows, classes = matrix.shape
    labels = label[keep].astype(np.int64)
    if rows > classes:
        labels = np.where((labels >= 0) & (labels < classes), labels, classes)
    pairs = labels * classes + pred[keep].astype(np.int64)
    matrix += np.bincount(pairs, minlength=rows * classes).reshape(rows, classes)


def reference_loop(
    method: SegMethod,
    bank: Any,
    spec: BenchmarkSpec,
    background_value: float | None,
    data_root: Path,
    device: torch.device,
    workers: int = 0,
    limit: int | None = None,
) -> LoopResult:
    """Every image of the card's split under data_root, one at a time (see reference_predict)."""
    card = spec.dataset
    samples = list_samples(card, data_root)[:limit]
    dataset = BenchmarkDataset(card, samples, list(range(len(samples))), ImagePreprocessor(spec.image),
                               keep_original=method.needs_original_image)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=single_item, num_workers=workers)
    seen = list(spec.split.seen) if spec.split is not None and spec.split.setting == "unseen_only" else []
    extra = 0 if spec.metric_ignore_index is None else 1
    matrix = np.zeros((card.num_classes + extra, card.num_classes), dtype=np.int64)
    crops = 0
    started = time.perf_counter()
    for item in loader:
        if "error" in item:
            raise DataError(item["error"])
        label = item["label"].numpy()
        if seen:
            label = np.where(np.isin(label, seen), spec.ignore_in_metric, label)
        pred, forwards = reference_predict(
            method, bank, spec, background_value, item["image"].to(device), tuple(label.shape), item.get("original"),
            item["stem"],
        )
        update_confusion(matrix, pred.cpu().numpy(), label, spec.ignore_in_metric)
        crops += forwards
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return LoopResult(len(samples), crops, time.perf_counter() - started, matrix)


def engine_predictions(
    method: SegMethod, bank: Any, spec: BenchmarkSpec, background_value: float | None, data_root: Path,
    device: torch.device, batch_size: int, precision: str,
) -> list[Tensor]:
    """Every image's label map [H,W] (uint8 or int16 on the CPU) from the engine's predictor at `precision`."""
    card = spec.dataset
    samples = list_samples(card, data_root)
    dataset = BenchmarkDataset(card, samples, list(range(len(samples))), ImagePreprocessor(spec.image),
                               keep_original=method.needs_original_image)
    predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, background_value)], batch_size, device, precision)
    dtype = torch.uint8 if card.num_classes < 256 else torch.int16
    maps: list[Tensor] = []
    for item in torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=single_item):
        if "error" in item:
            raise DataError(item["error"])
        prepared = PreparedImage(item["index"], item["stem"], item["image"], item["label"], len(maps),
                                 original=item.get("original"))
        maps.extend(done.pred.to("cpu", dtype) for done in predictor.push(prepared))
    maps.extend(done.pred.to("cpu", dtype) for done in predictor.flush())
    return maps


def pixel_agreement(first: list[Tensor], second: list[Tensor]) -> float:
    """The fraction of pixels, over all images, whose label is the same in both lists of label maps."""
    same = sum(int((a == b).sum()) for a, b in zip(first, second, strict=True))
    return same / sum(a.numel() for a in first)


@dataclass
class BenchSettings:
    images: int = 20
    device: str = "cpu"
    precision: str | None = None  # None: the protocol's
    batch_size: int = 16
    workers: int = 0
    warmup: int = 1
    repeat: int = 1  # each loop timed this many times, alternating; the fastest run is reported
    seed: int = 0
    profile_dir: Path | None = None  # after timing, one more run of each loop under cProfile, saved here
    compile: bool = False  # torch.compile the engine's forward; the reference loop stays eager
    image_size: tuple[int, int] | None = None  # (width, height) of every image; None: the card's bench_shapes.yaml
    score_memory_mib: int = SCORE_MEMORY_MIB  # the engine's EvalSettings.score_memory_mib


@dataclass
class _Measurements:
    engine_runs: list[LoopResult]
    reference_runs: list[LoopResult]
    flops: float | None
    agreement: float | None  # pixel agreement of the engine at its precision with fp32; None at fp32


def _measure(run: MethodRun, protocol: Protocol, precision: str, spec: BenchmarkSpec, settings: BenchSettings,
             folder: Path, sizes: list[tuple[int, int]]) -> _Measurements:
    """Warm-up, then the engine and the reference loop timed `repeat` times each, alternating."""
    method, device = run.method, torch.device(settings.device)
    engine_protocol = replace(protocol, precision=precision)
    data_root = folder / "data"
    banks = TextBankCache()

    def engine(results: str, limit: int | None) -> dict[str, Any]:
        eval_settings = EvalSettings(
            data_root=data_root, results_root=folder / results, batch_size=settings.batch_size,
            device=str(device), limit=limit, allow_incomplete=True, workers=settings.workers,
            save_every_s=math.inf, progress=False, compile=settings.compile,
            score_memory_mib=settings.score_memory_mib,
        )
        return evaluate_benchmark(run, engine_protocol, spec, eval_settings, banks=banks)

    def engine_loop() -> LoopResult:
        record = engine("results", None)
        shutil.rmtree(folder / "results")
        matrix = np.asarray(record["confusion_matrix"], dtype=np.int64)
        loop = LoopResult(record["dataset"]["images"], crop_count(spec, sizes), record["seconds"], matrix)
        loop.record = record
        return loop

    background_value = resolve_background_value(method, protocol, spec)
    if settings.warmup > 0:
        engine("warmup", settings.warmup)
    method.setup(engine_protocol, spec)
    bank = banks.get(method, protocol, spec)
    reference_run = partial(reference_loop, method, bank, spec, background_value, data_root, device, settings.workers)
    if settings.warmup > 0:
        reference_run(settings.warmup)
    engine_runs, reference_runs = [], []
    for _ in range(settings.repeat):
        engine_runs.append(_measured(engine_loop, device))
        reference_runs.append(_measured(reference_run, device))
    flops = flops_per_crop(method, bank, spec, device)
    agreement = None
    if precision != "fp32":
        maps = [
            engine_predictions(method, bank, spec, background_value, data_root, device, settings.batch_size, mode)
            for mode in ("fp32", precision)
        ]
        agreement = pixel_agreement(*maps)
    if settings.profile_dir is not None:
        profile_loops(settings.profile_dir, {"engine": engine_loop, "reference": reference_run})
    return _Measurements(engine_runs, reference_runs, flops, agreement)


def run_bench(run: MethodRun, protocol: Protocol, benchmark: str, settings: BenchSettings) -> dict[str, Any]:
    """Engine and reference loop on the same synthetic images; the result as a JSON-ready dict."""
    if settings.images < 1:
        raise ConfigError(f"--n must be at least 1, got {settings.images}")
    if settings.repeat < 1:
        raise ConfigError(f"--repeat must be at least 1, got {settings.repeat}")
    (spec,) = protocol.select([benchmark])
    precision = settings.precision or protocol.precision
    card = spec.dataset
    device = torch.device(settings.device)
    method = run.method.to(device).eval()
    with tempfile.TemporaryDirectory(prefix="zsbench-bench-") as folder:
        size_range = size_range_for(card) if settings.image_size is None else SizeRange(
            (settings.image_size[0],) * 2, (settings.image_size[1],) * 2)
        sizes = write_synthetic_split(card, size_range, settings.images, settings.seed, Path(folder) / "data")
        measured = _measure(run, protocol, precision, spec, settings, Path(folder), sizes)
    engine_runs, reference_runs, flops, agreement = (
        measured.engine_runs, measured.reference_runs, measured.flops, measured.agreement
    )
    engine_result, reference = LoopResult.best_of(engine_runs), LoopResult.best_of(reference_runs)
    record = engine_result.record
    identical = all(np.array_equal(loop.matrix, reference.matrix) for loop in [*engine_runs, *reference_runs])
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    return {
        "schema": BENCH_SCHEMA,
        "method": {
            "name": method.name, "run_id": run.run_id, "options": run.options, "checkpoint": run.checkpoint,
            "backbone": method.backbone(),
        },
        "protocol": {"name": protocol.name, "hash": protocol.hash},
        "benchmark": spec.name,
        "dataset": card.name,
        "num_classes": card.num_classes,
        "num_names": len(spec.flat_names),
        "images": settings.images,
        "image_sizes": {
            "width": [min(widths), max(widths)], "height": [min(heights), max(heights)],
            "mean_pixels": round(float(np.mean([w * h for w, h in sizes]))),
        },
        "seed": settings.seed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "tf32_in_fp32_forwards": False if device.type == "cuda" else None,
        "precision": precision,
        "reference_precision": "fp32",
        "batch_size": settings.batch_size,
        "workers": settings.workers,
        "warmup": settings.warmup,
        "repeat": settings.repeat,
        "host_peak_since_start": engine_result.host_since_start and reference.host_since_start,
        "flops_per_crop": flops,
        "engine": engine_result.summary(flops),
        "reference": reference.summary(flops),
        "speedup": _ratio(reference.seconds, engine_result.seconds),
        "host_memory_ratio": _ratio(engine_result.peak_host_bytes, reference.peak_host_bytes),
        "device_memory_ratio": _ratio(engine_result.peak_device_bytes, reference.peak_device_bytes),
        "confusion_identical": identical,
        "identical_required": precision == "fp32" and not settings.compile,
        "compiled": settings.compile,
        "confusion_pixels_moved": int(np.abs(engine_result.matrix - reference.matrix).sum() // 2),
        "pixel_agreement_with_fp32": agreement,
        "versions": record["versions"],
        "git_commit": record["git_commit"],
        "time": record["time"],
    }


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def _gflops(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def bench_table(result: dict[str, Any]) -> str:
    """The result as a table for a terminal, with the verdict on the confusion matrices."""
    cuda = result["device"].startswith("cuda")
    headers = ["loop", "precision", "images", "crops", "seconds", "images/s", "crops/s", "model GFLOP/s",
               "peak host MiB", "added MiB"]
    headers += ["peak device MiB"] if cuda else []
    headers += ["mIoU"]
    rows = []
    for name, precision in (("engine", result["precision"]), ("reference", result["reference_precision"])):
        loop = result[name]
        row = [name, precision, loop["images"], loop["crops"], f"{loop['seconds']:.3f}",
               f"{loop['images_per_s']:.2f}", f"{loop['crops_per_s']:.1f}", _gflops(loop["model_gflops_per_s"]),
               _mib(loop["peak_host_bytes"]),
               _mib(loop["host_added_bytes"])]
        row += [_mib(loop["peak_device_bytes"])] if cuda else []
        rows.append([*row, f"{loop['miou']:.2f}"])
    speedup = _times(result["speedup"])
    ratio = ["engine / reference", "", "", "", "", speedup, speedup, speedup, _times(result["host_memory_ratio"]), ""]
    ratio += [_times(result["device_memory_ratio"])] if cuda else []
    rows.append([*ratio, ""])
    sizes = result["image_sizes"]
    title = (
        f"{result['method']['name']} on {result['protocol']['name']}/{result['benchmark']} "
        f"({result['num_classes']} classes, {result['num_names']} names), {result['images']} synthetic images "
        f"{sizes['width'][0]}-{sizes['width'][1]} x {sizes['height'][0]}-{sizes['height'][1]} px, "
        f"{result['device']}, batch {result['batch_size']}, {result['workers']} workers, {result['threads']} threads"
    )
    if result["confusion_identical"]:
        verdict = "confusion matrices: identical"
    elif result["identical_required"]:
        verdict = (f"confusion matrices: DIFFER at fp32 ({result['confusion_pixels_moved']} pixels moved); "
                   "the engine must match the reference exactly")
    else:
        difference = result["engine"]["miou"] - result["reference"]["miou"]
        engine = result["precision"] + (", compiled" if result.get("compiled") else "")
        verdict = (f"confusion matrices: differ at {engine} ({result['confusion_pixels_moved']} "
                   f"pixels moved), mIoU {difference:+.2f} against the fp32 reference")
    agreement = result.get("pixel_agreement_with_fp32")
    if agreement is not None:
        verdict += f"\npixel agreement of the engine at {result['precision']} with the engine at fp32: {agreement:.4%}"
    table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    return f"{title}\n\n{table}\n\n{verdict}"
