"""Write the synthetic world to disk: caption pairs, a dense val split and ``world.json``.

Every file is written under a temporary name and renamed, and ``world.json`` comes last, so a
folder with a ``world.json`` is complete. ``.world.pending.json`` records the settings of a build
in progress: a re-run with the same settings keeps the files already there (they are
deterministic) and writes the missing ones; other settings rebuild everything.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from benchmark.atomic import write_bytes_atomic

from .examples import CAPTION_SIZE, COMPLETE_FRACTION, VAL_LONG_MAX, VAL_SHORT, render_example
from .vocabulary import load_vocabulary

GENERATOR = "zsseg-bench synthetic world"
GENERATOR_VERSION = 2  # bump whenever the bytes a seed produces change
_STEM = re.compile(r"^\d{6}\.png$")
_CHUNK = 32
_MAX_COUNT = 1_000_000


@dataclass(frozen=True)
class _Task:
    root: Path
    seed: int
    index: int
    complete_fraction: float
    keep_existing: bool


def _write_png(path: Path, array: np.ndarray, keep_existing: bool) -> None:
    if keep_existing and path.exists():
        return
    pixels = array[..., ::-1] if array.ndim == 3 else array
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes_atomic(path, encoded.tobytes())


def _caption_item(task: _Task) -> dict:
    example = render_example(task.seed, "captions", task.index, task.complete_fraction)
    name = f"{task.index:06d}.png"
    _write_png(task.root / "images" / name, example.image, task.keep_existing)
    return {
        "image": f"images/{name}",
        "caption": example.caption,
        "objects": example.objects,
        "complete": example.complete,
    }


def _val_item(task: _Task) -> np.ndarray:
    example = render_example(task.seed, "val", task.index)
    name = f"{task.index:06d}.png"
    _write_png(task.root / "images" / name, example.image, task.keep_existing)
    _write_png(task.root / "labels" / name, example.label, task.keep_existing)
    _write_png(task.root / "labels_bg" / name, example.label_bg, task.keep_existing)
    return np.bincount(example.label.ravel(), minlength=len(load_vocabulary().classes))


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _run(fn: Callable, tasks: list[_Task], workers: int) -> Iterator:
    if workers <= 1:
        yield from map(fn, tasks)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        yield from pool.map(fn, tasks, chunksize=_CHUNK)


def _vocabulary_sha256() -> str:
    data = resources.files(__package__).joinpath("vocabulary.yaml").read_bytes()
    return hashlib.sha256(data).hexdigest()


def _settings(seed: int, n_captions: int, n_val: int, complete_fraction: float) -> dict:
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "vocabulary_sha256": _vocabulary_sha256(),
        "seed": seed,
        "n_captions": n_captions,
        "n_val": n_val,
        "complete_fraction": complete_fraction,
    }


def _expected_files(out: Path, n_captions: int, n_val: int) -> Iterable[Path]:
    yield out / "captions" / "captions.jsonl"
    yield out / "val" / "val.txt"
    for i in range(n_captions):
        yield out / "captions" / "images" / f"{i:06d}.png"
    for folder in ("images", "labels", "labels_bg"):
        for i in range(n_val):
            yield out / "val" / folder / f"{i:06d}.png"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(out: Path, settings: dict) -> dict | None:
    world = _read_json(out / "world.json")
    if world is None or any(world.get(k) != v for k, v in settings.items()):
        return None
    if not all(p.exists() for p in _expected_files(out, settings["n_captions"], settings["n_val"])):
        return None
    return world


def _remove_leftovers(folder: Path, count: int) -> None:
    """Delete temporary files and numbered images beyond ``count`` left by earlier builds."""
    for path in folder.iterdir():
        stale = _STEM.match(path.name) and int(path.name[:6]) >= count
        if stale or (path.name.startswith(".") and path.name.endswith(".tmp")):
            path.unlink()


def _write_captions(out: Path, settings: dict, keep: bool, workers: int) -> int:
    root = out / "captions"
    (root / "images").mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root / "images", settings["n_captions"])
    tasks = [
        _Task(root, settings["seed"], i, settings["complete_fraction"], keep) for i in range(settings["n_captions"])
    ]
    lines, complete = [], 0
    for record in _run(_caption_item, tasks, workers):
        complete += record["complete"]
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    write_bytes_atomic(root / "captions.jsonl", "".join(lines).encode("utf-8"))
    return complete


def _write_val(out: Path, settings: dict, keep: bool, workers: int) -> np.ndarray:
    root = out / "val"
    for folder in ("images", "labels", "labels_bg"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root / folder, settings["n_val"])
    tasks = [_Task(root, settings["seed"], i, settings["complete_fraction"], keep) for i in range(settings["n_val"])]
    pixels = np.zeros(len(load_vocabulary().classes), np.int64)
    for counts in _run(_val_item, tasks, workers):
        pixels += counts
    stems = "".join(f"{i:06d}\n" for i in range(settings["n_val"]))
    write_bytes_atomic(root / "val.txt", stems.encode("utf-8"))
    return pixels


def generate_world(
    out: Path,
    seed: int,
    n_captions: int = 6000,
    n_val: int = 150,
    workers: int = 1,
    complete_fraction: float = COMPLETE_FRACTION,
) -> dict:
    """Build (or complete) the synthetic world under ``out`` and return its ``world.json`` content.

    Layout: ``captions/images/NNNNNN.png`` (64x64 RGB) with ``captions/captions.jsonl``
    (``image``, ``caption``, ``objects``, ``complete`` per line) and ``val/{images,labels,
    labels_bg}/NNNNNN.png`` with ``val/val.txt``. The output depends on the settings only,
    not on ``workers``; a complete folder with the same settings is left untouched.
    """
    if not (0 <= n_captions <= _MAX_COUNT and 0 <= n_val <= _MAX_COUNT):
        raise ValueError(f"n_captions and n_val must be in 0..{_MAX_COUNT}, got {n_captions} and {n_val}")
    if not 0.0 <= complete_fraction <= 1.0:
        raise ValueError(f"complete_fraction must be in [0, 1], got {complete_fraction}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = Path(out)
    settings = _settings(int(seed), int(n_captions), int(n_val), float(complete_fraction))
    world = _is_complete(out, settings)
    if world is not None:
        return world
    out.mkdir(parents=True, exist_ok=True)
    pending = out / ".world.pending.json"
    keep = _read_json(pending) == settings
    (out / "world.json").unlink(missing_ok=True)
    write_bytes_atomic(pending, json.dumps(settings, indent=2).encode("utf-8"))

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        complete = _write_captions(out, settings, keep, workers)
        pixels = _write_val(out, settings, keep, workers)
    finally:
        cv2.setNumThreads(threads)

    vocab = load_vocabulary()
    world = {
        **settings,
        "counts": {"captions": n_captions, "complete_captions": complete, "val": n_val},
        "caption_size": [CAPTION_SIZE, CAPTION_SIZE],
        "val_short_side": list(VAL_SHORT),
        "val_long_side_max": VAL_LONG_MAX,
        "stuff": [c.name for c in vocab.stuff],
        "things": [c.name for c in vocab.things],
        "classes": vocab.classes,
        "classes_bg": vocab.classes_bg,
        "val_class_pixels": dict(zip(vocab.classes, pixels.tolist(), strict=True)),
    }
    write_bytes_atomic(out / "world.json", (json.dumps(world, indent=2) + "\n").encode("utf-8"))
    pending.unlink()
    return world
