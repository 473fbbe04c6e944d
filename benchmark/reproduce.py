"""`zsbench reproduce`: run every published entry that can run here, compare, and write the report.

Entries are grouped into method runs (method, protocol, checkpoint, options); each run is evaluated on
the benchmarks its entries name, reusing full records of the same protocol hash already in the results
folder. Entries whose weights or data are missing are listed with what to download.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import paths
from benchmark.data import card_remedy, check_dataset
from benchmark.errors import BenchmarkError, ConfigError
from benchmark.published import Published, PublishedEntry, RunSpec

COMPARED, MISSING, NOT_RUNNABLE, ERROR, READY = "compared", "missing", "not runnable", "error", "ready"


@dataclass
class Comparison:
    metric: str
    published: float
    measured: float | None
    tolerance: float

    @property
    def diff(self) -> float | None:
        return None if self.measured is None else round(self.measured - self.published, 2)

    @property
    def ok(self) -> bool:
        return self.diff is not None and abs(self.diff) <= self.tolerance + 1e-9


@dataclass(frozen=True)
class Need:
    """Something to download before an entry can run: a short label, and what to get from where."""

    short: str
    detail: str


@dataclass
class Outcome:
    entry: PublishedEntry
    status: str
    reasons: list[str] = field(default_factory=list)
    needs: list[Need] = field(default_factory=list)  # status MISSING: what to download
    comparisons: list[Comparison] = field(default_factory=list)
    protocol_hash: str | None = None
    record: str | None = None  # the record file the measurement comes from


@dataclass
class Report:
    outcomes: list[Outcome]
    files: list[Path]
    default_tolerance: float | None = None  # --tolerance, overriding the files' values

    def with_status(self, status: str) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == status]

    @property
    def comparisons(self) -> list[tuple[Outcome, Comparison]]:
        return [(o, c) for o in self.with_status(COMPARED) for c in o.comparisons]

    def sources_of_one_number(self) -> list[list[tuple[Outcome, Comparison]]]:
        """Comparisons of one measured number (record and metric) with several sources' published values."""
        groups: dict[tuple[str | None, str], list[tuple[Outcome, Comparison]]] = {}
        for outcome, comparison in self.comparisons:
            groups.setdefault((outcome.record, comparison.metric), []).append((outcome, comparison))
        return [group for group in groups.values() if len(group) > 1]

    @property
    def beyond_tolerance(self) -> list[tuple[Outcome, Comparison]]:
        """Comparisons off by more than their tolerance, except where the same measured number agrees with
        another source's value for it (sources that disagree with each other: the run reproduces one)."""
        agreed = {(o.record, c.metric) for group in self.sources_of_one_number() for o, c in group if c.ok}
        return [(o, c) for o, c in self.comparisons if not c.ok and (o.record, c.metric) not in agreed]

    def exit_code(self, strict: bool = False) -> int:
        failed = bool(self.beyond_tolerance or self.with_status(ERROR))
        if strict:
            failed = failed or bool(self.with_status(MISSING) or self.with_status(NOT_RUNNABLE))
        return 1 if failed else 0


@dataclass
class ReproduceSettings:
    data_root: Path = field(default_factory=paths.data_root)
    weights_root: Path = field(default_factory=paths.weights_root)
    results_root: Path = field(default_factory=paths.results_root)
    device: str = "cpu"
    batch_size: int = 16
    workers: int = 0
    tolerance: float | None = None
    methods: list[str] | None = None  # only entries of these methods
    dry_run: bool = False  # list what would run and what is missing; evaluate nothing
    progress: bool = True


def _run_key(run: RunSpec) -> tuple[str, str, str | None, str, tuple[str, ...]]:
    options = json.dumps(run.options, sort_keys=True, default=str)
    return run.method, run.protocol, run.checkpoint, options, tuple(weights.file for weights in run.weights)


def _local_file(name: str, weights_root: Path) -> Path | None:
    given = Path(name).expanduser()
    for candidate in (given, weights_root / given):
        if candidate.is_file():
            return candidate
    return None


def missing_weights(run: RunSpec, weights_root: Path) -> list[Need]:
    """What to download before this run can start: declared weights files, then the checkpoint."""
    needs = [
        Need(f"weights {weights.file}", f"weights {weights.describe()}; put it in the weights root "
             "(--weights-root, env ZSSEG_WEIGHTS, default ~/.cache/zsseg)")
        for weights in run.weights if _local_file(weights.file, weights_root) is None
    ]
    declared = {Path(weights.file).name for weights in run.weights}
    if run.checkpoint and _local_file(run.checkpoint, weights_root) is None \
            and Path(run.checkpoint).name not in declared:
        needs.append(Need(f"checkpoint {run.checkpoint}",
                          f"checkpoint {run.checkpoint}: not found as given nor under the weights root"))
    return needs


def _valid_record(path: Path, protocol_hash: str) -> dict[str, Any] | None:
    from benchmark.results import read_json

    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except BenchmarkError:
        return None
    if record.get("protocol", {}).get("hash") != protocol_hash or record.get("partial"):
        return None
    return record


def _measured(record: dict[str, Any], metric: str) -> float | None:
    value = record.get("miou") if metric == "miou" else (record.get("split") or {}).get(metric)
    return None if value is None else float(value)


class _GroupRunner:
    """One method run: checks, builds the method, evaluates the benchmarks its entries need."""

    def __init__(self, run: RunSpec, entries: list[PublishedEntry], settings: ReproduceSettings,
                 tolerance_for: Callable[[PublishedEntry], float]) -> None:
        self.run = run
        self.entries = entries
        self.settings = settings
        self.tolerance_for = tolerance_for

    def outcomes(self) -> list[Outcome]:
        from benchmark.protocol import load_protocol

        try:
            protocol = load_protocol(self.run.protocol)
        except ConfigError as error:
            return [Outcome(e, NOT_RUNNABLE, [f"protocol {self.run.protocol!r} does not load: {error}"])
                    for e in self.entries]
        outcomes: dict[int, Outcome] = {}
        by_benchmark: dict[str, list[PublishedEntry]] = {}
        for entry in self.entries:
            benchmark = (entry.run or self.run).benchmark
            if benchmark in protocol.benchmarks:
                by_benchmark.setdefault(benchmark, []).append(entry)
            else:
                outcomes[id(entry)] = Outcome(entry, NOT_RUNNABLE, [
                    f"protocol {protocol.name!r} has no benchmark {benchmark!r}; it has {list(protocol.benchmarks)}"])
        weights = missing_weights(self.run, self.settings.weights_root)
        ready: dict[str, list[PublishedEntry]] = {}
        for name, entries in by_benchmark.items():
            card = protocol.benchmarks[name].dataset
            check = check_dataset(card, self.settings.data_root)
            needs = list(weights)
            if check.status != "found":
                needs.append(Need(f"data {card.name}", (
                    f"data: {card.title} ({card.name}) is {check.status} under <data root>/{card.root} "
                    f"({check.found}/{check.expected} images); {card_remedy(card, Path('<data root>'))}"
                )))
            for entry in entries:
                if needs:
                    outcomes[id(entry)] = Outcome(entry, MISSING, needs=needs, protocol_hash=protocol.hash)
            if not needs:
                ready[name] = entries
        if ready:
            for outcome in self._evaluate(protocol, ready):
                outcomes[id(outcome.entry)] = outcome
        return [outcomes[id(entry)] for entry in self.entries]

    def _evaluate(self, protocol: Any, ready: dict[str, list[PublishedEntry]]) -> list[Outcome]:
        from benchmark.eval_settings import EvalSettings
        from benchmark.method_run import MethodRun
        from benchmark.registry import MethodNotFoundError, build_method, get_method_class
        from benchmark.results import record_path, run_folder
        from benchmark.runner import evaluate

        entries = [entry for group in ready.values() for entry in group]
        if self.settings.dry_run:
            return [Outcome(entry, READY, protocol_hash=protocol.hash) for entry in entries]
        try:
            cls = get_method_class(self.run.method)
        except MethodNotFoundError as error:
            return [Outcome(entry, NOT_RUNNABLE, [str(error)]) for entry in entries]
        try:
            method = build_method(cls, self.run.checkpoint, dict(self.run.options), str(self.settings.weights_root))
        except (BenchmarkError, RuntimeError, OSError, ValueError) as error:
            detail = f"method {self.run.method!r} could not be built: {error}"
            need = Need(f"method {self.run.method} (see above)", detail)
            return [Outcome(entry, MISSING, needs=[need], protocol_hash=protocol.hash) for entry in entries]
        given = {**self.run.options, **({"checkpoint": self.run.checkpoint} if self.run.checkpoint else {})}
        run = MethodRun(method, given, self.run.checkpoint, str(self.settings.weights_root))
        folder = run_folder(self.settings.results_root, protocol.name, run.run_id)
        settings = EvalSettings(
            data_root=self.settings.data_root, results_root=self.settings.results_root,
            batch_size=self.settings.batch_size, device=self.settings.device, workers=self.settings.workers,
            progress=self.settings.progress,
        )
        outcomes = []
        for name, group in ready.items():
            path = record_path(folder, name, False)
            record = _valid_record(path, protocol.hash)
            if record is None:
                print(f"[reproduce] {self.run.method} on {protocol.name}/{name}", file=sys.stderr, flush=True)
                try:
                    evaluate(run, protocol, [name], settings)
                except (BenchmarkError, ValueError, RuntimeError) as error:
                    outcomes += [Outcome(e, ERROR, [f"evaluation failed: {error}"], protocol_hash=protocol.hash)
                                 for e in group]
                    continue
                record = _valid_record(path, protocol.hash)
            if record is None:
                outcomes += [Outcome(e, ERROR, [f"no full record at {path} after evaluation"]) for e in group]
                continue
            for entry in group:
                comparisons = [
                    Comparison(metric, published, _measured(record, metric), self._tolerance(entry))
                    for metric, published in entry.values.items()
                ]
                outcomes.append(Outcome(entry, COMPARED, comparisons=comparisons, protocol_hash=protocol.hash,
                                        record=str(path)))
        return outcomes

    def _tolerance(self, entry: PublishedEntry) -> float:
        return self.settings.tolerance if self.settings.tolerance is not None else self.tolerance_for(entry)


def reproduce(published: Published, settings: ReproduceSettings) -> Report:
    groups: dict[tuple, list[PublishedEntry]] = {}
    outcomes: list[Outcome] = []
    for entry in published.entries:
        if settings.methods and entry.method not in settings.methods and (
                entry.run is None or entry.run.method not in settings.methods):
            continue
        if entry.run is None:
            outcomes.append(Outcome(entry, NOT_RUNNABLE, ["no run block: a number to compare against, "
                                                          "with no recipe in the suite"]))
        else:
            groups.setdefault(_run_key(entry.run), []).append(entry)
    for entries in groups.values():
        runner = _GroupRunner(entries[0].run, entries, settings, published.tolerance_for)
        outcomes.extend(runner.outcomes())
    order = {id(entry): index for index, entry in enumerate(published.entries)}
    outcomes.sort(key=lambda outcome: order[id(outcome.entry)])
    return Report(outcomes, [file.path for file in published.files], settings.tolerance)


METRIC_NAMES = {"miou": "mIoU", "miou_seen": "mIoU-S", "miou_unseen": "mIoU-U", "hiou": "hIoU"}


def _method(entry: PublishedEntry) -> str:
    return entry.method + (f" [{entry.variant}]" if entry.variant else "")


def _several_sources(report: Report) -> list[str]:
    """The report's section on measured numbers that several sources publish: which one each agrees with."""
    from benchmark.formats.markdown import escape
    from benchmark.leaderboard import format_value

    several = report.sources_of_one_number()
    if not several:
        return []
    lines = ["", "## Numbers with several published values", "",
             "One measured number, several sources; it counts as reproduced when it agrees with one of them.", ""]
    for group in several:
        outcome, comparison = group[0]
        agree = [escape(o.entry.source) for o, c in group if c.ok]
        disagree = [escape(o.entry.source) for o, c in group if not c.ok]
        lines.append(
            f"- {escape(_method(outcome.entry))} {escape(outcome.entry.protocol)}/{escape(outcome.entry.dataset)} "
            f"{METRIC_NAMES[comparison.metric]} measured {format_value(comparison.measured)}: agrees with "
            f"{'; '.join(agree) or 'none'}; not with {'; '.join(disagree) or 'none'}"
        )
    return lines


def render_report(report: Report) -> str:
    """leaderboard/REPRODUCTION.md: published, measured and difference; then what is missing, and why."""
    from tabulate import tabulate

    from benchmark.formats.markdown import escape
    from benchmark.leaderboard import format_value
    from benchmark.published import DEFAULT_TOLERANCE

    def table(headers: list[str], rows: list[list[str]]) -> str:
        return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)

    if report.default_tolerance is not None:
        rule = f"{report.default_tolerance} mIoU for every entry (set with --tolerance)"
    else:
        rule = (f"{DEFAULT_TOLERANCE} mIoU unless the published file (`tolerance:`) or the entry states "
                "another; the tolerance column shows the one applied")
    compared, beyond = report.comparisons, report.beyond_tolerance
    lines = [
        "# Reproduction of published numbers",
        "",
        "Generated by `make reproduce` (`zsbench reproduce`) from "
        + ", ".join(f"`{paths.portable_path(path)}`" for path in report.files) + ".",
        f"A number is reproduced when |measured - published| <= the tolerance: {rule}.",
        "",
        f"**{len(compared) - len(beyond)} of {len(compared)} numbers reproduced, {len(beyond)} beyond tolerance; "
        f"{len(report.with_status(MISSING))} entries missing weights or data; "
        f"{len(report.with_status(NOT_RUNNABLE))} not runnable with the suite; "
        f"{len(report.with_status(ERROR))} errors.**",
    ]
    if report.with_status(READY):
        lines += ["", f"Dry run: {len(report.with_status(READY))} entries have their weights and data and would run."]
    if compared:
        rows = []
        failed = {id(comparison) for _, comparison in beyond}
        for outcome, comparison in compared:
            entry = outcome.entry
            status = "ok" if comparison.ok else "**FAIL**" if id(comparison) in failed else "other source"
            rows.append([
                status, escape(_method(entry)), escape(entry.backbone),
                f"{escape(entry.protocol)} ({(outcome.protocol_hash or '')[:12]})", escape(entry.dataset),
                METRIC_NAMES[comparison.metric], format_value(comparison.published, "published"),
                format_value(comparison.measured), format_value(comparison.diff, "diff"), f"{comparison.tolerance:g}",
                escape(entry.source) + (" (third party)" if entry.third_party else ""),
            ])
        lines += ["", "## Compared", "", table(
            ["status", "method", "backbone", "protocol (hash)", "dataset", "metric", "published", "measured", "Δ",
             "tolerance", "source"], rows)]
    lines += _several_sources(report)
    missing = report.with_status(MISSING)
    if missing:
        needed: dict[Need, list[Outcome]] = {}
        for outcome in missing:
            for need in outcome.needs:
                needed.setdefault(need, []).append(outcome)
        lines += ["", "## Missing weights or data", "", "What to download, each once:", ""]
        for need, outcomes in needed.items():
            methods = sorted({o.entry.method for o in outcomes})
            count = f"{len(outcomes)} entr{'y' if len(outcomes) == 1 else 'ies'}"
            lines.append(f"- {escape(need.detail)} (needed by {count}: {escape(', '.join(methods))})")
        rows = [[escape(_method(o.entry)), escape(o.entry.backbone), escape(o.entry.protocol), escape(o.entry.dataset),
                 escape("; ".join(need.short for need in o.needs))] for o in missing]
        lines += ["", table(["method", "backbone", "protocol", "dataset", "missing"], rows)]
    sections = [
        (READY, "Ready to run (dry run)", "weights and data found"),
        (NOT_RUNNABLE, "Not runnable with the suite", "why"),
        (ERROR, "Errors", "error"),
    ]
    for status, title, last in sections:
        outcomes = report.with_status(status)
        if not outcomes:
            continue
        rows = [[escape(_method(o.entry)), escape(o.entry.backbone), escape(o.entry.protocol), escape(o.entry.dataset),
                 "<br>".join(escape(reason) for reason in o.reasons) or "-"] for o in outcomes]
        lines += ["", f"## {title}", "", table(["method", "backbone", "protocol", "dataset", last], rows)]
    return "\n".join(lines) + "\n"
