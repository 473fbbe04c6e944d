"""A preparer: the official downloads a dataset is made from, and how it runs end to end.

The run: find each download under --src (the archive by its official name, or the folder it
unpacks to), check that it is the expected download, plan every output file, skip the outputs
already in place, verify the downloads' published checksums, make the rest in a staging folder
and move them into place, then count the cards' images.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.atomic import write_bytes_atomic
from benchmark.errors import DataError
from benchmark.prepare.archive import Source, SourceSpec, archive_kind, close_sources, copy_member, open_source
from benchmark.prepare.checksums import load_downloads, verify_download
from benchmark.prepare.jobs import Job, run_jobs
from benchmark.prepare.staging import Staging


@dataclass(frozen=True)
class Part:
    """One official download. Recognised by holding a file under `prefix` whose name ends in
    `suffix`; unpacked, its root may be any of `folders` (relative to the --src folder)."""

    key: str
    download: str  # official file name, a key of downloads.yaml
    prefix: str
    suffix: str
    folders: tuple[str, ...] = (".",)
    single_file: bool = False  # a plain file, not an archive; `folders` then name the file itself


@dataclass(frozen=True)
class Preparer:
    name: str
    title: str
    cards: tuple[str, ...]
    parts: tuple[Part, ...]
    plan: Callable[[dict[str, Source]], list[Job]]


def copy_jobs(source: Source, part: str, prefix: str, output_prefix: str,
              keep: Callable[[str], bool] = lambda name: True) -> list[Job]:
    """Jobs copying every member under prefix (that keep accepts) to output_prefix, as it is."""
    return [
        Job(output_prefix + name[len(prefix):], copy_member, (part, name), source.size(name))
        for name in source.names(prefix)
        if keep(name)
    ]


def _holds_marker(folder: Path, part: Part) -> bool:
    top = folder / part.prefix
    if not top.is_dir():
        return False
    return any(file.endswith(part.suffix) for _, _, files in os.walk(top) for file in files)


def locate(part: Part, src: Path, single_part: bool) -> SourceSpec:
    """Where part is under src: the download itself, or the folder it unpacks to."""
    download = load_downloads()[part.download]
    remedy = download.remedy
    folder = src if src.is_dir() else src.parent
    candidates = []
    if src.is_file() and (single_part or src.name == part.download):
        candidates.append(src)
    candidates.append(folder / part.download)
    for candidate in candidates:
        if candidate.is_file():
            kind = "file" if part.single_file else archive_kind(candidate, remedy)
            return SourceSpec(kind, str(candidate), remedy)
    for relative in part.folders:
        candidate = (folder / relative).resolve()
        if part.single_file and candidate.is_file():
            return SourceSpec("file", str(candidate), remedy)
        if not part.single_file and _holds_marker(candidate, part):
            return SourceSpec("folder", str(candidate), remedy)
    places = ", ".join(str(folder / relative) for relative in part.folders)
    raise DataError(
        f"{src}: found neither {part.download} nor its unpacked contents ({part.prefix}...{part.suffix} "
        f"under {places}); download it from {download.url} and pass the file, or the folder holding it, as --src"
    )


def _check_contents(source: Source, part: Part) -> None:
    if part.single_file:
        return
    if not any(name.endswith(part.suffix) for name in source.names(part.prefix)):
        raise DataError(
            f"{source.path}: does not look like {part.download}: it holds no {part.prefix}...{part.suffix} "
            f"file; {source.spec.remedy}"
        )


def _in_place(job: Job, data_root: Path, sources: dict[str, Source]) -> bool:
    target = data_root / job.output
    if not target.is_file():
        return False
    if job.exact:
        if target.read_bytes() != job.make(sources, *job.args):
            raise DataError(
                f"{target}: differs from the file these downloads give (it was made from other data, by another "
                "preparer or from another download); move it away and prepare again, or prepare from the downloads "
                "it was made from"
            )
        return True
    return job.size is None or target.stat().st_size == job.size


def _verify(preparer: Preparer, specs: dict[str, SourceSpec], staging: Staging, progress: bool) -> dict[str, str]:
    """Checksum lines per part; results already verified by an interrupted run are reused."""
    cache_file = staging.root / "verified.json"
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    lines = {}
    for part in preparer.parts:
        spec = specs[part.key]
        if spec.kind == "folder":
            lines[part.key] = "not checked: an unpacked folder"
            continue
        path = Path(spec.path)
        info = path.stat()
        key = f"{path.resolve()}:{info.st_size}:{info.st_mtime_ns}"
        if key not in cache:
            cache[key] = verify_download(path, load_downloads()[part.download], progress)
        lines[part.key] = cache[key]
    staging.open()
    write_bytes_atomic(cache_file, json.dumps(cache, indent=1).encode())
    return lines


def _card_checks(cards: tuple[str, ...], data_root: Path) -> dict[str, dict[str, Any]]:
    from benchmark.data import check_dataset, load_card

    checks = {}
    for name in cards:
        check = check_dataset(load_card(name), data_root)
        checks[name] = {"status": check.status, "found": check.found, "expected": check.expected}
    return checks


def run_preparer(
    preparer: Preparer,
    src: Path,
    data_root: Path,
    workers: int = 1,
    progress: bool = True,
    verify_checksums: bool = True,
) -> dict[str, Any]:
    started = time.monotonic()
    src, data_root = Path(src).expanduser(), Path(data_root).expanduser()
    if not src.exists():
        raise DataError(f"{src}: no such file or folder; pass the downloaded file, or the folder holding it, as --src")
    staging = Staging(data_root, preparer.name)
    try:
        specs = {part.key: locate(part, src, len(preparer.parts) == 1) for part in preparer.parts}
        sources = {key: open_source(spec) for key, spec in specs.items()}
        for part in preparer.parts:
            _check_contents(sources[part.key], part)
        jobs = preparer.plan(sources)
        pending = [job for job in jobs if not _in_place(job, data_root, sources)]
        resumed = sum(staging.has(job.output) for job in pending)
        checksums = {part.key: "not checked: nothing to write" for part in preparer.parts}
        if pending:
            if verify_checksums:
                checksums = _verify(preparer, specs, staging, progress)
            else:
                checksums = {part.key: "not checked: checksums off" for part in preparer.parts}
            staging.open()
            try:
                to_make = [job for job in pending if not staging.has(job.output)]
                run_jobs(to_make, specs, staging.files, workers, progress, desc=f"{preparer.name}: writing")
                staging.commit([job.output for job in pending], progress)
            except DataError:
                staging.discard()
                raise
            staging.finish()
    finally:
        close_sources()
    return _report(preparer, data_root, specs, checksums, len(jobs), len(pending), resumed, started)


def _report(preparer: Preparer, data_root: Path, specs: dict[str, SourceSpec], checksums: dict[str, str],
            total: int, pending: int, resumed: int, started: float) -> dict[str, Any]:
    cards = _card_checks(preparer.cards, data_root)
    complete = all(check["status"] == "found" for check in cards.values())
    counts = ", ".join(f"{name} {c['status']} {c['found']}/{c['expected']}" for name, c in cards.items())
    summary = (
        f"{preparer.name}: {pending - resumed} files written, {resumed} resumed from an interrupted run, "
        f"{total - pending} already in place; {counts}"
    )
    if not complete:
        summary += "; incomplete: the cards expect more images than were found (a partial or foreign download?)"
    return {
        "dataset": preparer.name,
        "title": preparer.title,
        "data_root": str(data_root),
        "sources": {key: {"path": spec.path, "kind": spec.kind, "checksum": checksums[key]}
                    for key, spec in specs.items()},
        "outputs": {"total": total, "in_place": total - pending, "resumed": resumed, "written": pending - resumed},
        "cards": cards,
        "complete": complete,
        "summary": summary,
        "seconds": round(time.monotonic() - started, 3),
    }
