"""Boards -> one CSV: a row per method run, a column per (benchmark, metric, measured|paper|Δ).

Several boards share one header (the union of their columns, in order), with the protocol and its hash
as the first columns; a board leaves the columns it lacks empty.
"""

from __future__ import annotations

import csv
import io

from benchmark.formats.options import RenderOptions
from benchmark.leaderboard import Board

LEADING = ["protocol", "protocol_hash", "method", "run_id", "backbone", "partial"]


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


def render(boards: list[Board], options: RenderOptions) -> str:
    return per_class_table(boards) if options.per_class else main_table(boards)
