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
            "split": {},
        })
        row["scores"][record["benchmark"]] = record["miou"]
        if "split" in record:
            split = record["split"]
            row["split"][record["benchmark"]] = (split["miou_seen"], split["miou_unseen"], split["hiou"])
    table = []
    for row in rows.values():
        values = [row["scores"].get(name) for name in benchmarks]
        complete = all(v is not None and not math.isnan(v) for v in values)
        row["average"] = round(sum(values) / len(values), 2) if complete and values else None
        table.append(row)
    return table


SPLIT_COLUMNS = ("mIoU-S", "mIoU-U", "hIoU")


def miou_table(records: list[dict[str, Any]], benchmarks: list[str], fmt: str = "github") -> str:
    """mIoU per benchmark and average; zero-shot split benchmarks show mIoU-S, mIoU-U and hIoU."""
    rows = miou_rows(records, benchmarks)
    split_benchmarks = {name for row in rows for name in row["split"]}
    headers = ["method"]
    for name in benchmarks:
        columns = [f"{name} {column}" for column in SPLIT_COLUMNS] if name in split_benchmarks else [name]
        headers.extend(columns)
    headers.append("avg")
    body = []
    for row in rows:
        cells = [row["method"]]
        for name in benchmarks:
            if name in split_benchmarks:
                cells.extend(_cell(v) for v in row["split"].get(name, (None, None, None)))
            else:
                cells.append(_cell(row["scores"].get(name)))
        body.append([*cells, _cell(row["average"])])
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
