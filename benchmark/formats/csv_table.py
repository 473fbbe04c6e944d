"""Boards -> one CSV: a row per method run, a column per (benchmark, metric, measured|paper|Δ).

Several boards share one header (the union of their columns, in order), with the protocol and its hash
as the first columns; a board leaves the columns it lacks empty. Per-class IoU: wide (a row per class, a
column per run) or long (a row per run, benchmark and class). Vocabulary scaling: a row per (run, pair).
"""

from __future__ import annotations

import csv
import io

from benchmark.formats.options import RenderOptions
from benchmark.leaderboard import Board, per_class_layout, per_class_long
from benchmark.vocabulary_scaling import VocabularyBoard

LEADING = ["protocol", "protocol_hash", "method", "run_id", "backbone", "partial"]
PER_CLASS_LONG = ["protocol", "protocol_hash", "method", "run_id", "partial", "benchmark", "class_index", "class",
                  "iou"]
VOCABULARY = ["protocol", "protocol_hash", "method", "run_id", "backbone", "partial", "pair", "small",
              "small_protocol", "small_protocol_hash", "small_miou", "large", "large_miou", "drop", "drop_percent"]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _write(header: list[str], rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main_table(boards: list[Board]) -> str:
    header = list(LEADING)
    rows = []
    for board in boards:
        for display in board.display_columns:
            if display.label not in header:
                header.append(display.label)
        for row in board.rows:
            line = {"protocol": board.protocol, "protocol_hash": board.hash, "method": row.label,
                    "run_id": row.run_id, "backbone": row.backbone or "", "partial": str(row.partial).lower()}
            for display in board.display_columns:
                line[display.label] = _number(row.cell(display.column).get(display.kind))
            rows.append(line)
    return _write(header, rows)


def per_class_table(boards: list[Board]) -> str:
    """A row per (protocol, benchmark, class), a column per method run."""
    header = ["protocol", "protocol_hash", "benchmark", "class"]
    rows = []
    for board in boards:
        for name in board.benchmarks:
            runs = [row for row in board.rows if name in row.per_class]
            header.extend(row.label for row in runs if row.label not in header)
            for cls in board.classes.get(name) or []:
                line = {"protocol": board.protocol, "protocol_hash": board.hash, "benchmark": name, "class": cls}
                line.update({row.label: _number(row.per_class[name].get(cls)) for row in runs})
                rows.append(line)
    return _write(header, rows)


def per_class_long_table(boards: list[Board]) -> str:
    """A row per (protocol, run, benchmark, class); class_index is the class's position in the card, from 0."""
    rows = []
    for board in boards:
        for line in per_class_long(board):
            rows.append({"protocol": board.protocol, "protocol_hash": board.hash, "method": line.row.label,
                         "run_id": line.row.run_id, "partial": str(line.row.partial).lower(),
                         "benchmark": line.benchmark, "class_index": str(line.index), "class": line.name,
                         "iou": _number(line.iou)})
    return _write(PER_CLASS_LONG, rows)


def render(boards: list[Board], options: RenderOptions) -> str:
    if not options.per_class:
        return main_table(boards)
    if per_class_layout(boards, options.per_class_layout) == "long":
        return per_class_long_table(boards)
    return per_class_table(boards)


def render_vocabulary(boards: list[VocabularyBoard], options: RenderOptions) -> str:
    """A row per (protocol version, run, pair), with the protocol version the small side comes from."""
    rows = []
    for board in boards:
        for row in board.rows:
            for column in board.pairs:
                values = board.values(row, column)
                rows.append({
                    "protocol": board.protocol, "protocol_hash": board.hash, "method": row.label,
                    "run_id": row.run_id, "backbone": row.backbone or "", "partial": str(row.partial).lower(),
                    "pair": column.pair.title, "small": column.pair.small,
                    "small_protocol": column.small_protocol or "", "small_protocol_hash": column.small_hash or "",
                    "small_miou": _number(values.small), "large": column.pair.large,
                    "large_miou": _number(values.large), "drop": _number(values.drop),
                    "drop_percent": _number(values.drop_percent),
                })
    return _write(VOCABULARY, rows)
