"""Records (+ published numbers) -> boards: one per protocol version, rows = method runs.

A board is what every output format renders: its columns are the protocol's benchmarks (mIoU-S,
mIoU-U and hIoU for zero-shot split benchmarks) and the average; each cell holds the measured value
and, where published numbers were attached, the paper's value and the difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from benchmark.errors import BenchmarkError
from benchmark.published import PublishedEntry, find_entry

AVERAGE = "avg"
SPLIT_METRICS = ("miou_seen", "miou_unseen", "hiou")
SPLIT_COLUMNS = ("mIoU-S", "mIoU-U", "hIoU")
METRIC_LABELS = dict(zip(SPLIT_METRICS, SPLIT_COLUMNS, strict=True))
KINDS = ("value", "published", "diff")
KIND_SUFFIX = {"value": "", "published": " paper", "diff": " Δ"}
PER_CLASS_LAYOUTS = ("auto", "wide", "long")
# The most classes a wide per-class table (a row per class, a column per run) shows: COCO-Stuff's 171 still fit;
# PASCAL Context 459 and ADE20K-Full 847 get the long layout (a row per run, benchmark and class).
WIDE_CLASS_LIMIT = 200


class MixedProtocolError(BenchmarkError):
    """Records of two versions (hashes) of one protocol would share a column."""


@dataclass(frozen=True)
class Column:
    benchmark: str  # a benchmark name, or AVERAGE
    metric: str = "miou"  # miou | miou_seen | miou_unseen | hiou

    @property
    def label(self) -> str:
        return self.benchmark if self.metric == "miou" else f"{self.benchmark} {METRIC_LABELS[self.metric]}"


@dataclass(frozen=True)
class DisplayColumn:
    """One printed column: a measured value, its published value, or their difference."""

    column: Column
    kind: str = "value"

    @property
    def label(self) -> str:
        return self.column.label + KIND_SUFFIX[self.kind]


@dataclass
class Cell:
    value: float | None = None
    published: float | None = None
    source: str | None = None  # where the published value comes from
    third_party: bool = False

    @property
    def diff(self) -> float | None:
        if self.value is None or self.published is None:
            return None
        return round(self.value - self.published, 2)

    def get(self, kind: str) -> float | None:
        return {"value": self.value, "published": self.published, "diff": self.diff}[kind]


@dataclass
class Row:
    label: str
    method: dict[str, Any]  # the records' `method` block
    partial: bool
    cells: dict[Column, Cell] = field(default_factory=dict)
    overall: dict[str, Cell] = field(default_factory=dict)  # benchmark -> mIoU over all classes (averages)
    per_class: dict[str, dict[str, float | None]] = field(default_factory=dict)
    record_paths: dict[str, str] = field(default_factory=dict)  # benchmark -> record file
    published_only: bool = False  # a paper's numbers with no measured run on this board

    @property
    def name(self) -> str:
        return self.method["name"]

    @property
    def run_id(self) -> str:
        return self.method["run_id"]

    @property
    def backbone(self) -> str | None:
        return self.method.get("backbone")

    def cell(self, column: Column) -> Cell:
        return self.cells.get(column) or Cell()


@dataclass
class Board:
    protocol: str
    hash: str
    benchmarks: list[str]
    columns: list[Column]
    rows: list[Row]
    classes: dict[str, list[str]] = field(default_factory=dict)  # benchmark -> class names, card order
    with_published: bool = False

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    @property
    def display_columns(self) -> list[DisplayColumn]:
        kinds = KINDS if self.with_published else ("value",)
        return [DisplayColumn(column, kind) for column in self.columns for kind in kinds]

    @property
    def has_backbone(self) -> bool:
        return any(row.backbone for row in self.rows)

    def ranks(self, column: Column) -> dict[int, int]:
        """Row index -> 1 (best) or 2 (second best) among full rows; ties share a rank."""
        values = sorted({v for row in self.rows if not row.partial and (v := row.cell(column).value) is not None},
                        reverse=True)
        ranks = {}
        for index, row in enumerate(self.rows):
            value = row.cell(column).value
            if row.partial or value is None:
                continue
            if value == values[0]:
                ranks[index] = 1
            elif len(values) > 1 and value == values[1]:
                ranks[index] = 2
        return ranks


@dataclass(frozen=True)
class ClassIoU:
    """One line of the long per-class layout: a run's IoU of one class of one benchmark."""

    row: Row
    benchmark: str
    index: int  # the class's position in the card's order, from 0
    name: str
    iou: float | None
    best: bool  # the highest IoU of this class among the board's full rows


def per_class_layout(boards: list[Board], requested: str = "auto") -> str:
    """"wide" or "long": auto is wide while every benchmark with per-class numbers has at most WIDE_CLASS_LIMIT
    classes; wide is refused beyond it, naming the benchmark."""
    if requested not in PER_CLASS_LAYOUTS:
        raise BenchmarkError(f"per-class layout {requested!r}: expected one of {', '.join(PER_CLASS_LAYOUTS)}")
    if requested == "long":
        return "long"
    for board in boards:
        for name in board.benchmarks:
            count = len(board.classes.get(name) or [])
            if count <= WIDE_CLASS_LIMIT:
                continue
            if requested == "wide":
                raise BenchmarkError(
                    f"--per-class-layout wide: benchmark {name!r} of protocol {board.protocol!r} has {count} classes, "
                    f"more than the {WIDE_CLASS_LIMIT} a wide table (a row per class, a column per run) shows; use "
                    "--per-class-layout long (a row per run, benchmark and class)")
            return "long"
    return "wide"


def per_class_long(board: Board) -> list[ClassIoU]:
    """A line per (run, benchmark, class): runs in board order, benchmarks in column order, classes in card order."""
    best: dict[tuple[str, str], float] = {}
    for row in board.rows:
        if row.partial:
            continue
        for name, values in row.per_class.items():
            for cls, value in values.items():
                if value is not None and value > best.get((name, cls), -math.inf):
                    best[(name, cls)] = value
    lines = []
    for row in board.rows:
        for name in board.benchmarks:
            if name not in row.per_class:
                continue
            for index, cls in enumerate(board.classes.get(name) or []):
                value = row.per_class[name].get(cls)
                top = not row.partial and value is not None and value == best.get((name, cls))
                lines.append(ClassIoU(row, name, index, cls, value, top))
    return lines


def finite_value(value: Any) -> float | None:
    """A number as a float; None for a missing value and for NaN or Infinity (older records hold NaN)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def protocol_key(record: dict[str, Any]) -> tuple[str, str]:
    return record["protocol"]["name"], record["protocol"]["hash"]


def check_one_hash_per_protocol(records: Iterable[dict[str, Any]]) -> None:
    """Refuses records of one protocol name with different hashes, naming both hashes and files."""
    first: dict[str, dict[str, Any]] = {}
    for record in records:
        name, digest = protocol_key(record)
        seen = first.setdefault(name, record)
        if seen["protocol"]["hash"] != digest:
            raise MixedProtocolError(
                f"protocol {name!r} appears with two hashes: {seen['protocol']['hash'][:12]} in "
                f"{seen.get('_path', '?')} and {digest[:12]} in {record.get('_path', '?')}; the protocol "
                "changed between these runs, so their numbers do not share a column. Re-run one side, or "
                "build the two sets separately"
            )


def group_by_protocol(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(protocol_key(record), []).append(record)
    return groups


def benchmark_order(protocol: str, records: list[dict[str, Any]]) -> list[str]:
    """The protocol file's benchmark order where it loads, then any other benchmark in record order."""
    from benchmark.errors import ConfigError
    from benchmark.protocol import list_protocols, load_protocol

    order: list[str] = []
    if protocol in list_protocols():
        try:
            order = list(load_protocol(protocol).benchmarks)
        except ConfigError:
            order = []
    present = list(dict.fromkeys(record["benchmark"] for record in records))
    return [name for name in order if name in present] + [name for name in present if name not in order]


def label_rows(rows: list[Row]) -> None:
    """A method name, made unique among the board's rows by the config keys where its runs differ."""
    by_name: dict[tuple[str, bool], list[Row]] = {}
    for row in rows:
        by_name.setdefault((row.name, row.partial), []).append(row)
    for (name, partial), group in by_name.items():
        suffix = " (partial)" if partial else ""
        if len(group) == 1:
            group[0].label = name + suffix
            continue
        configs = [row.method.get("config") or {} for row in group]
        keys = sorted({key for config in configs for key in config})
        differing = [key for key in keys if len({repr(config.get(key)) for config in configs}) > 1]
        for row, config in zip(group, configs, strict=True):
            detail = ", ".join(f"{key}={config.get(key)}" for key in differing)
            row.label = f"{name} ({detail or row.run_id}){suffix}"


def build_board(
    records: list[dict[str, Any]],
    benchmarks: list[str] | None = None,
    published: list[PublishedEntry] | None = None,
    sort: bool = True,
) -> Board:
    """One board from the records of one protocol version (one hash)."""
    if not records:
        raise BenchmarkError("no records to tabulate")
    check_one_hash_per_protocol(records)
    protocol, digest = protocol_key(records[0])
    benchmarks = benchmarks or benchmark_order(protocol, records)
    split = {record["benchmark"] for record in records if "split" in record}
    columns = [
        Column(name, metric) for name in benchmarks for metric in (SPLIT_METRICS if name in split else ("miou",))
    ]
    columns.append(Column(AVERAGE))
    rows: dict[tuple[str, bool], Row] = {}
    classes: dict[str, list[str]] = {}
    for record in records:
        name = record["benchmark"]
        if name not in benchmarks:
            continue
        row = rows.setdefault((record["method"]["run_id"], bool(record["partial"])),
                              Row(label="", method=record["method"], partial=bool(record["partial"])))
        row.overall[name] = Cell(finite_value(record["miou"]))
        if name in split:
            for metric in SPLIT_METRICS:
                row.cells[Column(name, metric)] = Cell(finite_value(record["split"].get(metric)))
        else:
            row.cells[Column(name)] = row.overall[name]
        row.per_class[name] = {key: finite_value(value) for key, value in (record.get("per_class_iou") or {}).items()}
        classes.setdefault(name, list(record.get("per_class_iou") or {}))
        if "_path" in record:
            row.record_paths[name] = record["_path"]
    board = Board(protocol, digest, list(benchmarks), columns, list(rows.values()), classes)
    label_rows(board.rows)
    if published is not None:
        attach_published(board, published)
    for row in board.rows:
        row.cells[Column(AVERAGE)] = _average(row, benchmarks)
    if sort:
        board.rows.sort(key=_sort_key)
    return board


def _average(row: Row, benchmarks: list[str]) -> Cell:
    """Mean mIoU over every benchmark, only when each has a number (measured, and published apart)."""
    cells = [row.overall.get(name) or Cell() for name in benchmarks]

    def mean(values: list[float | None]) -> float | None:
        if not values or any(v is None for v in values):
            return None
        return round(sum(values) / len(values), 2)

    return Cell(mean([c.value for c in cells]), mean([c.published for c in cells]))


def _sort_key(row: Row) -> tuple:
    """Measured full rows by average, partial ones, then published-only rows by their published average."""
    cell = row.cell(Column(AVERAGE))
    average = cell.published if row.published_only else cell.value
    return (row.published_only, row.partial, average is None, -(average or 0.0), row.label)


def attach_published(board: Board, entries: list[PublishedEntry]) -> None:
    """Puts the matching paper number beside each measured one (see published.find_entry), then adds a row
    for every published method with numbers on the board's benchmarks that no measured row shows."""
    board.with_published = True
    shown: set[tuple] = set()
    for row in board.rows:
        for name in board.benchmarks:
            entry = find_entry(entries, board.protocol, name, row.method)
            if entry is None:
                continue
            shown.add(_published_row_key(entry))
            cells = [(row.cells.setdefault(c, Cell()), c.metric) for c in board.columns if c.benchmark == name]
            cells.append((row.overall.setdefault(name, Cell()), "miou"))
            for cell, metric in cells:
                cell.published = entry.values.get(metric)
                cell.source = entry.source
                cell.third_party = entry.third_party
    board.rows.extend(_published_rows(board, [e for e in entries if _published_row_key(e) not in shown]))


def _published_row_key(entry: PublishedEntry) -> tuple:
    return entry.method, entry.backbone, entry.protocol, entry.variant


def _published_rows(board: Board, entries: list[PublishedEntry]) -> list[Row]:
    """One row per published (method, backbone, protocol, variant) on the board's benchmarks, from the source that
    covers most of them (the authors' among equals), its gaps filled from the other sources; each cell keeps its
    source. One source's row, not the best number per benchmark: an average over a mix of sources would be a
    number nobody printed. A paper's comparison table mixes protocols; a row from another protocol than the
    board's names it, since its numbers were not measured under the board's settings."""
    groups: dict[tuple, list[PublishedEntry]] = {}
    for entry in entries:
        if entry.dataset in board.benchmarks and "miou" in entry.values:
            groups.setdefault(_published_row_key(entry), []).append(entry)
    rows = []
    for (method, backbone, protocol, variant), group in groups.items():
        datasets_of: dict[str, set[str]] = {}
        for entry in group:
            datasets_of.setdefault(entry.source, set()).add(entry.dataset)
        coverage = {source: len(datasets) for source, datasets in datasets_of.items()}
        chosen: dict[str, PublishedEntry] = {}
        for entry in sorted(group, key=lambda e: (-coverage[e.source], e.third_party)):
            chosen.setdefault(entry.dataset, entry)
        third_party = all(entry.third_party for entry in chosen.values())
        details = ["published"] + ([] if protocol == board.protocol else [f"protocol {protocol}"])
        details += ["third party"] if third_party else []
        label = f"{method}{f' [{variant}]' if variant else ''} ({', '.join(details)})"
        sources = "; ".join(dict.fromkeys(entry.source for entry in chosen.values()))
        row = Row(label=label, method={"name": method, "run_id": f"published: {sources}", "backbone": backbone},
                  partial=False, published_only=True)
        for entry in chosen.values():
            cell = Cell(published=entry.values["miou"], source=entry.source, third_party=entry.third_party)
            row.overall[entry.dataset] = cell
            row.cells[Column(entry.dataset)] = cell
        rows.append(row)
    return rows


def build_boards(
    records: list[dict[str, Any]],
    published: list[PublishedEntry] | None = None,
    benchmarks: list[str] | None = None,
    sort: bool = True,
) -> list[Board]:
    """One board per (protocol name, hash), in order of protocol name."""
    groups = group_by_protocol(records)
    return [build_board(groups[key], benchmarks, published, sort) for key in sorted(groups)]


def published_board(protocol: Any, published: list[PublishedEntry], benchmarks: list[str] | None = None) -> Board:
    """A board of a protocol with no measured runs: the published rows on its benchmarks only."""
    names = benchmarks or list(protocol.benchmarks)
    board = Board(protocol.name, protocol.hash, names, [*(Column(name) for name in names), Column(AVERAGE)], [])
    attach_published(board, published)
    for row in board.rows:
        row.cells[Column(AVERAGE)] = _average(row, names)
    board.rows.sort(key=_sort_key)
    return board


def format_value(value: float | None, kind: str = "value") -> str:
    """Measured: two decimals; published: as precise as it was given; difference: signed."""
    if value is None or math.isnan(value):
        return "-"
    if kind == "diff":
        return f"{value:+.2f}"
    if kind == "published" and round(value, 1) == value:
        return f"{value:.1f}"
    return f"{value:.2f}"


def miou_rows(records: list[dict[str, Any]], benchmarks: list[str]) -> list[dict[str, Any]]:
    """One row per (protocol hash, method run, partial), mIoU per benchmark and their average.

    Partial records (--limit, incomplete data) get rows of their own, marked, and never share a row with
    full ones; the average is given only when every benchmark has a number.
    """
    table = []
    for board in build_boards(records, benchmarks=benchmarks, sort=False):
        for row in board.rows:
            table.append({
                "method": row.label, "run": row.run_id, "protocol": board.protocol,
                "scores": {name: (row.overall.get(name) or Cell()).value for name in benchmarks},
                "split": {
                    name: tuple(row.cell(Column(name, metric)).value for metric in SPLIT_METRICS)
                    for name in benchmarks if Column(name, "hiou") in board.columns
                },
                "average": row.cell(Column(AVERAGE)).value,
            })
    return table


def miou_table(records: list[dict[str, Any]], benchmarks: list[str], fmt: str = "github") -> str:
    """mIoU per benchmark and average; zero-shot split benchmarks show mIoU-S, mIoU-U and hIoU."""
    parts = []
    for board in build_boards(records, benchmarks=benchmarks, sort=False):
        headers = ["method", *(column.label for column in board.columns)]
        body = [[row.label, *(format_value(row.cell(c).value) for c in board.columns)] for row in board.rows]
        parts.append(tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True))
    return "\n\n".join(parts)
