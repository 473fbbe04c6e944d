"""Output files as jobs, made into the staging folder by parallel worker processes."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmark.atomic import write_bytes_atomic
from benchmark.prepare.archive import Source, SourceSpec, open_source


@dataclass(frozen=True)
class Job:
    """One output file: `make(sources, *args)` returns its bytes.

    make is a module-level function (so that it reaches worker processes); sources maps a
    download's part key to its opened Source. size: the size of a file copied as it is, so that
    a file of another size already at the output counts as not done. exact: a file already at the
    output is compared with what this job makes (a small file shared by preparers, such as a split
    file); a different one stops the run, never replaced.
    """

    output: str  # path under the data root, POSIX
    make: Callable[..., bytes]
    args: tuple[Any, ...] = ()
    size: int | None = None
    exact: bool = False  # a file already at the output must hold exactly these bytes: another is an error


def merge_jobs(*groups: list[Job]) -> list[Job]:
    """Jobs by output; a later group's job replaces an earlier one's for the same output."""
    merged: dict[str, Job] = {}
    for group in groups:
        for job in group:
            merged[job.output] = job
    return list(merged.values())


def _make_chunk(specs: dict[str, SourceSpec], folder: Path, jobs: list[Job]) -> int:
    sources: dict[str, Source] = {key: open_source(spec) for key, spec in specs.items()}
    for job in jobs:
        write_bytes_atomic(folder / job.output, job.make(sources, *job.args))
    return len(jobs)


def run_jobs(
    jobs: list[Job],
    specs: dict[str, SourceSpec],
    folder: Path,
    workers: int = 1,
    progress: bool = True,
    desc: str = "writing",
) -> None:
    """Makes every job's output under folder; the first error stops the rest and is raised."""
    if not jobs:
        return
    with tqdm(total=len(jobs), desc=desc, unit="file", disable=not progress) as bar:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                bar.update(_make_chunk(specs, folder, [job]))
            return
        size = max(1, min(64, len(jobs) // (workers * 8)))
        chunks = [jobs[start:start + size] for start in range(0, len(jobs), size)]
        pool = ProcessPoolExecutor(max_workers=workers)
        try:
            pending: set[Future] = {pool.submit(_make_chunk, specs, folder, chunk) for chunk in chunks}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    bar.update(future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
