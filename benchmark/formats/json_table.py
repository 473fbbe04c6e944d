"""Boards -> JSON: every number of every board, for scripts (null where there is none)."""

from __future__ import annotations

import json
from typing import Any

from benchmark.formats.options import RenderOptions
from benchmark.leaderboard import Board, Cell, Row


def _cell(cell: Cell) -> dict[str, Any]:
    content: dict[str, Any] = {"value": cell.value}
    if cell.published is not None or cell.source is not None:
        content.update(published=cell.published, diff=cell.diff, source=cell.source, third_party=cell.third_party)
    return content


def _scores(board: Board, row: Row) -> dict[str, dict[str, Any]]:
    """benchmark -> metric -> cell; a split benchmark also gives its mIoU over all classes."""
    scores: dict[str, dict[str, Any]] = {}
    for column in board.columns:
        scores.setdefault(column.benchmark, {})[column.metric] = _cell(row.cell(column))
    for name, cell in row.overall.items():
        scores.setdefault(name, {}).setdefault("miou", _cell(cell))
    return scores


def board_content(board: Board, per_class: bool) -> dict[str, Any]:
    rows = []
    for row in board.rows:
        content: dict[str, Any] = {
            "label": row.label, "method": row.name, "run_id": row.run_id, "backbone": row.backbone,
            "partial": row.partial, "config": row.method.get("config") or {},
            "checkpoint": row.method.get("checkpoint"),
            "scores": _scores(board, row),
        }
        if per_class:
            content["per_class_iou"] = {name: row.per_class[name] for name in board.benchmarks if name in row.per_class}
        rows.append(content)
    return {
        "protocol": board.protocol, "protocol_hash": board.hash, "benchmarks": board.benchmarks,
        "columns": [column.label for column in board.columns], "with_published": board.with_published,
        "rows": rows,
    }


def render(boards: list[Board], options: RenderOptions) -> str:
    content = {"title": options.title, "boards": [board_content(board, options.per_class) for board in boards]}
    return json.dumps(content, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
