"""Result records and partial-run state, written atomically (temp file + rename)."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmark.atomic import write_json_atomic
from benchmark.errors import BenchmarkError

RECORD_SCHEMA = 1


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BenchmarkError(f"{path}: not a readable JSON file ({error}); delete it to recompute") from None


def run_folder(results_root: Path, protocol_name: str, run_id: str) -> Path:
    return results_root / protocol_name / run_id


def record_path(folder: Path, benchmark: str, partial: bool) -> Path:
    return folder / (f"{benchmark}.partial.json" if partial else f"{benchmark}.json")


def state_path(folder: Path, benchmark: str, rank: int, world: int) -> Path:
    return folder / f".{benchmark}.state.r{rank}of{world}.json"


def claim_owner(rank: int, world: int) -> str:
    """The tag of the temporary files written under one claim (see benchmark.atomic)."""
    return f"r{rank}of{world}"


def _remove_stale_temporaries(folder: Path, benchmark: str, rank: int, world: int) -> None:
    """Temporary files of this claim left by a killed writer: only the claim's holder writes them."""
    owner = claim_owner(rank, world)
    targets = [state_path(folder, benchmark, rank, world).name]
    if rank == 0:
        targets += [record_path(folder, benchmark, partial).name for partial in (False, True)]
    for target in targets:
        for stale in folder.glob(f".{glob.escape(target)}.{owner}.*.tmp"):
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def record_lock(folder: Path, benchmark: str, rank: int, world: int) -> Iterator[None]:
    """Exclusive claim on one benchmark's record for one rank; a second run waits for the first."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{benchmark}.r{rank}of{world}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run that holds {path}", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _remove_stale_temporaries(folder, benchmark, rank, world)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class PartialState:
    """A benchmark's progress on one shard: the metric's state over the first `done` images, the
    seconds spent, the files skipped; saved under `key` (what must match for a resume)."""

    def __init__(
        self, key: dict[str, Any], metric: dict[str, Any] | None = None, done: int = 0, seconds: float = 0.0,
        skipped: dict[int, str] | None = None,
    ) -> None:
        self.key = key
        self.metric = metric  # the metric's state_dict(); None before the first save
        self.done = done  # shard positions [0, done) are in the metric or in `skipped`
        self.seconds = seconds
        self.skipped = skipped or {}  # shard position -> why its files were skipped (--skip-bad)

    def save(self, path: Path, owner: str = "") -> None:
        write_json_atomic(path, {
            "key": self.key, "done": self.done, "seconds": self.seconds,
            "skipped": [[position, why] for position, why in sorted(self.skipped.items()) if position < self.done],
            "metric": self.metric,
        }, owner)

    @classmethod
    def load_or_new(cls, path: Path, key: dict[str, Any]) -> PartialState:
        """Resume from `path` if it was saved for the same key; else start from zero."""
        if path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
                if saved.get("key") == key and isinstance(saved.get("metric"), dict):
                    skipped = {int(position): str(why) for position, why in saved.get("skipped", [])}
                    return cls(key, saved["metric"], int(saved["done"]), float(saved["seconds"]), skipped)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return cls(key)


def load_records(sources: list[Path]) -> list[dict[str, Any]]:
    """Every record under the given files or folders (partial state files excluded)."""
    records = []
    for source in sources:
        files = [source] if source.is_file() else sorted(source.rglob("*.json"))
        for file in files:
            if file.name.startswith("."):
                continue
            content = read_json(file)
            if isinstance(content, dict) and content.get("schema") == RECORD_SCHEMA:
                content["_path"] = str(file)
                records.append(content)
    return records
