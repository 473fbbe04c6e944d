"""Boards -> JSON: every number of every board, for scripts (null where there is none).

Per-class IoU: a mapping per row (wide), or a board-level list with an entry per run, benchmark and class (long,
with "per_class_layout": "long"). The vocabulary-scaling view: "view": "vocabulary", a pair list per row.
"""

from __future__ import annotations

import json
from typing import Any

from benchmark.formats.options import RenderOptions
from benchmark.leaderboard import Board, Cell, Row, per_class_layout, per_class_long
from benchmark.vocabulary_scaling import VocabularyBoard


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


def board_content(board: Board, per_class: bool, layout: str = "wide") -> dict[str, Any]:
    rows = []
    for row in board.rows:
        content: dict[str, Any] = {
            "label": row.label, "method": row.name, "run_id": row.run_id, "backbone": row.backbone,
            "partial": row.partial, "config": row.method.get("config") or {},
            "checkpoint": row.method.get("checkpoint"),
            "scores": _scores(board, row),
        }
        if per_class and layout == "wide":
            content["per_class_iou"] = {name: row.per_class[name] for name in board.benchmarks if name in row.per_class}
        rows.append(content)
    content = {
        "protocol": board.protocol, "protocol_hash": board.hash, "benchmarks": board.benchmarks,
        "columns": [column.label for column in board.columns], "with_published": board.with_published,
        "rows": rows,
    }
    if per_class and layout == "long":
        content["per_class_layout"] = "long"
        content["per_class"] = [
            {"label": line.row.label, "run_id": line.row.run_id, "partial": line.row.partial,
             "benchmark": line.benchmark, "class_index": line.index, "class": line.name, "iou": line.iou}
            for line in per_class_long(board)
        ]
    return content


def _dumps(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def render(boards: list[Board], options: RenderOptions) -> str:
    layout = per_class_layout(boards, options.per_class_layout) if options.per_class else "wide"
    return _dumps({"title": options.title,
                   "boards": [board_content(board, options.per_class, layout) for board in boards]})


def vocabulary_content(board: VocabularyBoard) -> dict[str, Any]:
    rows = []
    for row in board.rows:
        pairs = []
        for column in board.pairs:
            values = board.values(row, column)
            pairs.append({"small": column.pair.small, "large": column.pair.large, "small_miou": values.small,
                          "large_miou": values.large, "drop": values.drop, "drop_percent": values.drop_percent})
        rows.append({"label": row.label, "method": row.name, "run_id": row.run_id, "backbone": row.backbone,
                     "partial": row.partial, "config": row.method.get("config") or {},
                     "checkpoint": row.method.get("checkpoint"), "pairs": pairs})
    return {
        "protocol": board.protocol, "protocol_hash": board.hash,
        "pairs": [{"title": column.pair.title, "small": column.pair.small, "large": column.pair.large,
                   "small_protocol": column.small_protocol, "small_protocol_hash": column.small_hash}
                  for column in board.pairs],
        "notes": board.notes, "rows": rows,
    }


def render_vocabulary(boards: list[VocabularyBoard], options: RenderOptions) -> str:
    return _dumps({"title": options.title, "view": "vocabulary",
                   "boards": [vocabulary_content(board) for board in boards]})
