"""Result records and partial-run state, written atomically (temp file + rename)."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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


_NUMBER = (int, float)
_MISSING = object()
RECORD_FIELDS: dict[str, tuple[type, ...]] = {  # what the tables read from every record, and its type
    "protocol.name": (str,), "protocol.hash": (str,), "method.name": (str,), "method.run_id": (str,),
    "benchmark": (str,), "partial": (bool,), "miou": (*_NUMBER, type(None)),
}


@dataclass(frozen=True)
class UnreadableRecord:
    """A file that should hold a record but cannot be used: why, in a few words."""

    path: Path
    reason: str


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the record, None) for a complete one; (None, why) for a record file that cannot be used (truncated,
    not valid JSON, another schema, a missing key); (None, None) for JSON that is no record (a bench result)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, UnicodeDecodeError) as error:
        return None, f"cannot be read ({error})"
    except json.JSONDecodeError as error:
        return None, f"not valid JSON, truncated? ({error})"
    if not isinstance(content, dict) or "miou" not in content or "schema" not in content:
        return None, None
    if content["schema"] != RECORD_SCHEMA:
        return None, f"record schema {content['schema']!r}; this version reads schema {RECORD_SCHEMA}"
    for field, kinds in RECORD_FIELDS.items():
        value: Any = content
        for key in field.split("."):
            value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
        if value is _MISSING:
            return None, f"incomplete record (no {field})"
        if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
            return None, f"incomplete record ({field} is {value!r})"
    return content, None


def is_record(path: Path) -> bool:
    """Whether `path` holds a complete, readable record of this schema (what --skip-existing may keep)."""
    return read_record(path)[0] is not None


def read_records(sources: list[Path]) -> tuple[list[dict[str, Any]], list[UnreadableRecord]]:
    """Every record under the given files or folders (partial state files excluded), and the record files
    that cannot be used; JSON files that are no records are passed over."""
    records, unreadable = [], []
    for source in sources:
        files = [source] if source.is_file() else sorted(source.rglob("*.json"))
        for file in files:
            if file.name.startswith(".") or not file.is_file():
                continue
            record, problem = read_record(file)
            if problem is not None:
                unreadable.append(UnreadableRecord(file, problem))
            elif record is not None:
                record["_path"] = str(file)
                records.append(record)
    return records, unreadable


def load_records(sources: list[Path]) -> list[dict[str, Any]]:
    """Every record under the given files or folders; the first unusable record file is an error."""
    records, unreadable = read_records(sources)
    if unreadable:
        first = unreadable[0]
        raise BenchmarkError(f"{first.path}: {first.reason}; delete it or rerun its eval to recompute it")
    return records
