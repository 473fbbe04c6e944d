"""Records -> tables."""

from __future__ import annotations

import math
from typing import Any

from tabulate import tabulate


def miou_rows(records: list[dict[str, Any]], benchmarks: list[str]) -> list[dict[str, Any]]:
    """One row per (protocol hash, method run, partial), mIoU per benchmark and their average.

    Partial records (--limit, incomplete data) get rows of their own, marked, and never share a row with
    full ones; the average is given only when every benchmark has a number.
    """
    rows: dict[tuple, dict[str, Any]] = {}
    for record in records:
        key = (record["protocol"]["hash"], record["method"]["run_id"], record["partial"])
        row = rows.setdefault(key, {
            "method": record["method"]["name"] + (" (partial)" if record["partial"] else ""),
            "run": record["method"]["run_id"],
            "protocol": record["protocol"]["name"],
            "scores": {},
        })
        row["scores"][record["benchmark"]] = record["miou"]
    table = []
    for row in rows.values():
        values = [row["scores"].get(name) for name in benchmarks]
        complete = all(v is not None and not math.isnan(v) for v in values)
        row["average"] = round(sum(values) / len(values), 2) if complete and values else None
        table.append(row)
    return table


def miou_table(records: list[dict[str, Any]], benchmarks: list[str], fmt: str = "github") -> str:
    rows = miou_rows(records, benchmarks)
    headers = ["method", *benchmarks, "avg"]
    body = [
        [row["method"], *[_cell(row["scores"].get(name)) for name in benchmarks], _cell(row["average"])]
        for row in rows
    ]
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
