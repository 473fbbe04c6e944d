"""Boards -> a Markdown page: one section per protocol version, per-class tables on request (wide: a table per
benchmark, a column per run; long: one table per protocol version, a row per run, benchmark and class); the
vocabulary-scaling view as a page of its own."""

from __future__ import annotations

from dataclasses import replace

from tabulate import tabulate

from benchmark.formats.options import RenderOptions
from benchmark.leaderboard import Board, format_value, per_class_layout, per_class_long
from benchmark.vocabulary_scaling import (
    EMPTY_NOTE,
    NOTE,
    VALUE_KINDS,
    VocabularyBoard,
    column_labels,
    sources_sentence,
)

GENERATED_MARKER = "<!-- zsbench leaderboard: everything below is generated; edit above this line -->"
NO_RECORDS = "No records yet: `zsbench eval` (or `make demo`) writes them under results/."
_SPECIAL = str.maketrans({char: "\\" + char for char in "\\|<>`*[]~"} | {"\n": " ", "\r": " "})


def escape(text: object) -> str:
    """Literal text in a Markdown table cell: no HTML, no emphasis, no column breaks."""
    return str(text).translate(_SPECIAL)


def code(text: object) -> str:
    """A code span, or escaped text where a backtick would end the span early."""
    text = str(text).replace("\n", " ").replace("\r", " ")
    return f"`{text}`" if "`" not in text else escape(text)


def _table(headers: list[str], body: list[list[str]], text_columns: int) -> str:
    align = ["left"] * text_columns + ["right"] * (len(headers) - text_columns)
    return tabulate(body, headers=headers, tablefmt="github", colalign=align, disable_numparse=True)


def board_table(board: Board) -> str:
    columns = board.display_columns
    leading = ["method", "backbone"] if board.has_backbone else ["method"]
    body = []
    for row in board.rows:
        cells = [escape(row.label)] + ([escape(row.backbone or "-")] if board.has_backbone else [])
        cells += [format_value(row.cell(dc.column).get(dc.kind), dc.kind) for dc in columns]
        body.append(cells)
    return _table(leading + [escape(dc.label) for dc in columns], body, len(leading))


def _sources(board: Board) -> list[str]:
    found: dict[str, bool] = {}
    for row in board.rows:
        for cell in row.cells.values():
            if cell.source:
                found.setdefault(cell.source, cell.third_party)
    return [f"- {escape(source)}" + (" (re-reported by a third party)" if third else "")
            for source, third in found.items()]


def per_class_tables(board: Board) -> list[str]:
    parts = []
    for name in board.benchmarks:
        classes = board.classes.get(name) or []
        if not classes:
            continue
        rows = [row for row in board.rows if name in row.per_class]
        body = [[escape(cls), *(format_value(row.per_class[name].get(cls)) for row in rows)] for cls in classes]
        parts.append(f"### Per-class IoU (%): {escape(name)}\n\n"
                     + _table(["class", *(escape(row.label) for row in rows)], body, 1))
    return parts


def per_class_long_table(board: Board) -> str:
    body = [[escape(line.row.label), escape(line.benchmark), str(line.index), escape(line.name),
             format_value(line.iou)] for line in per_class_long(board)]
    table = tabulate(body, headers=["method", "benchmark", "#", "class", "IoU"], tablefmt="github",
                     colalign=["left", "left", "right", "left", "right"], disable_numparse=True)
    return ("### Per-class IoU (%), a row per run, benchmark and class\n\n"
            "`#`: the class's position in the dataset card, from 0.\n\n" + table)


def render_board(board: Board, options: RenderOptions, level: int = 2) -> str:
    heading = "#" * level
    lines = [f"{heading} Protocol {code(board.protocol)} (hash {code(board.short_hash)})", ""]
    note = "mIoU (%) per benchmark; avg: mean mIoU over all benchmarks, where each has a number."
    if any(column.metric != "miou" for column in board.columns):
        note += " Zero-shot splits: mIoU over seen (S) and unseen (U) classes and their harmonic mean (hIoU)."
    if board.with_published:
        note += " `paper`: the published number; `Δ`: measured minus published."
    lines += [note, "", board_table(board)]
    if board.with_published:
        sources = _sources(board)
        lines += ["", "Published numbers from:", "", *(sources or ["- (no matching published entry)"])]
    if options.per_class:
        if per_class_layout([board], options.per_class_layout) == "long":
            lines += ["", per_class_long_table(board)] if any(board.classes.values()) else []
        else:
            for table in per_class_tables(board):
                lines += ["", table]
    return "\n".join(lines)


def render(boards: list[Board], options: RenderOptions) -> str:
    if options.per_class:  # one layout for the whole page
        options = replace(options, per_class_layout=per_class_layout(boards, options.per_class_layout))
    parts = [f"# {escape(options.title)}"]
    parts += [render_board(board, options) for board in boards] or [NO_RECORDS]
    return "\n\n".join(parts) + "\n"


def vocabulary_table(board: VocabularyBoard) -> str:
    leading = ["method", "backbone"] if board.has_backbone else ["method"]
    headers = leading + [escape(label) for column in board.pairs for label in column_labels(column)]
    body = []
    for row in board.rows:
        cells = [escape(row.label)] + ([escape(row.backbone or "-")] if board.has_backbone else [])
        for column in board.pairs:
            values = board.values(row, column)
            cells += [format_value(values.get(kind)) for kind in VALUE_KINDS]
        body.append(cells)
    return _table(headers, body, len(leading))


def render_vocabulary_board(board: VocabularyBoard, level: int = 2) -> str:
    heading = "#" * level
    lines = [f"{heading} Vocabulary scaling: protocol {code(board.protocol)} (hash {code(board.short_hash)})", "",
             escape(NOTE)]
    sources = sources_sentence(board)
    if sources:
        lines += ["", escape(sources)]
    lines += ["", vocabulary_table(board)]
    if board.notes:
        lines += ["", "Notes:", "", *(f"- {escape(note)}" for note in board.notes)]
    return "\n".join(lines)


def render_vocabulary(boards: list[VocabularyBoard], options: RenderOptions) -> str:
    parts = [f"# {escape(options.title)}"]
    parts += [render_vocabulary_board(board) for board in boards] or [escape(EMPTY_NOTE)]
    return "\n\n".join(parts) + "\n"


def splice(existing: str, page: str) -> str:
    """Keeps the hand-written part of a page above GENERATED_MARKER; the generated page, less its title,
    replaces the rest. Without the marker, the generated page is the whole file."""
    if GENERATED_MARKER not in existing:
        return page
    head = existing.split(GENERATED_MARKER, 1)[0]
    body = page.split("\n", 1)[1].lstrip("\n") if page.startswith("# ") else page
    return f"{head}{GENERATED_MARKER}\n\n{body}"
