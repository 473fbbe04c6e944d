"""One result record per (protocol, method run, benchmark): the numbers and their provenance."""

from __future__ import annotations

import json
import math
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from benchmark import paths
from benchmark.errors import BenchmarkError
from benchmark.method_run import MethodRun
from benchmark.metrics import ConfusionMatrix, split_scores
from benchmark.protocol import BenchmarkSpec, Protocol
from benchmark.results import RECORD_SCHEMA


@dataclass(frozen=True)
class Execution:
    """How a pass ran: the facts every record of the pass shares."""

    seconds: float
    peak_host_bytes: int
    peak_device_bytes: int
    device: str
    world_size: int
    batch_size: int
    compiled: bool


@dataclass(frozen=True)
class Outcome:
    """What one benchmark of the pass measured."""

    spec: BenchmarkSpec
    metric: ConfusionMatrix
    images: int
    background_value: float | None
    partial_reasons: tuple[str, ...]


def build_record(run: MethodRun, protocol: Protocol, outcome: Outcome, execution: Execution) -> dict[str, Any]:
    spec, card = outcome.spec, outcome.spec.dataset
    scores = outcome.metric.compute()
    seconds = execution.seconds
    record = {
        "schema": RECORD_SCHEMA,
        "protocol": {"name": protocol.name, "hash": protocol.hash, "path": paths.portable_path(protocol.path),
                     "set": protocol.overrides},
        "method": {
            "name": run.method.name, "run_id": run.run_id, "config": run.config,
            "checkpoint": run.portable_options().get("checkpoint"), "class": run.class_path,
            "checkpoint_sha256": run.method.checkpoint_sha256(), "backbone": run.method.backbone(),
            "score_kind": run.method.score_kind,
        },
        "benchmark": spec.name,
        "dataset": {"card": card.name, "images": outcome.images, "expected_images": card.num_images},
        "partial": bool(outcome.partial_reasons),
        "partial_reasons": list(outcome.partial_reasons),
        "background": {
            "rule": spec.background.rule, "value": outcome.background_value, "area_thd": spec.background.area_thd,
            "value_source": "protocol" if spec.background.value is not None else "method",
        },
        "method_settings": spec.method_settings,
        "precision": protocol.precision,
        "miou": percent(scores.miou),
        "aacc": percent(scores.aacc),
        "macc": percent(scores.macc),
        "per_class_iou": {name: percent(v) for name, v in zip(card.classes, scores.iou, strict=True)},
        "per_class_acc": {name: percent(v) for name, v in zip(card.classes, scores.acc, strict=True)},
        "confusion_matrix": outcome.metric.state_dict()["matrix"],
        "seconds": round(seconds, 3),
        "images_per_s": round(outcome.images / seconds, 3) if seconds > 0 else None,
        "peak_memory_bytes": {"host": execution.peak_host_bytes, "device": execution.peak_device_bytes},
        "device": execution.device,
        "world_size": execution.world_size,
        "batch_size": execution.batch_size,
        "compiled": execution.compiled,
        "versions": versions(),
        "git_commit": git_commit(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if spec.split is not None:
        split = split_scores(scores.iou, spec.split.seen, spec.split.unseen)
        record["split"] = {
            "name": spec.split.name, "setting": spec.split.setting,
            "seen": [card.classes[k] for k in spec.split.seen],
            "unseen": [card.classes[k] for k in spec.split.unseen],
            "miou_seen": percent(split.miou_seen), "miou_unseen": percent(split.miou_unseen),
            "hiou": percent(split.hiou),
        }
    check_strict_json(record, f"the record of {run.method.name} on {spec.name}")
    return record


def check_strict_json(content: Any, what: str) -> None:
    """Refuses NaN and Infinity, which strict JSON readers (browsers, jq, Go) reject: a record holds null."""
    try:
        json.dumps(content, allow_nan=False)
    except ValueError:
        fields = ", ".join(non_finite_fields(content))
        raise BenchmarkError(f"{what} holds NaN or Infinity at {fields}; records are strict JSON") from None


def non_finite_fields(content: Any, prefix: str = "") -> list[str]:
    """The dotted keys of every NaN or infinite float in nested dicts and lists."""
    if isinstance(content, float):
        return [] if math.isfinite(content) else [prefix or "(top level)"]
    if isinstance(content, dict):
        items = content.items()
    elif isinstance(content, (list, tuple)):
        items = enumerate(content)
    else:
        return []
    return [field for key, value in items
            for field in non_finite_fields(value, f"{prefix}.{key}" if prefix else str(key))]


def percent(value: float) -> float | None:
    """A fraction as a percentage with two decimals; NaN (class absent, no pixel scored) or infinite as None."""
    return round(value * 100, 2) if math.isfinite(value) else None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "open_clip_torch", "numpy", "zsseg-bench"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def git_commit() -> str | None:
    """The suite's commit, with '-dirty' when tracked files differ from it; None outside a checkout."""
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
