"""Boards -> a Markdown page: one section per protocol version, per-class tables on request."""

from __future__ import annotations

from tabulate import tabulate

from benchmark.formats.options import RenderOptions
from benchmark.leaderboard import Board, format_value

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
        for table in per_class_tables(board):
            lines += ["", table]
    return "\n".join(lines)


def render(boards: list[Board], options: RenderOptions) -> str:
    parts = [f"# {escape(options.title)}"]
    parts += [render_board(board, options) for board in boards] or [NO_RECORDS]
    return "\n\n".join(parts) + "\n"


def splice(existing: str, page: str) -> str:
    """Keeps the hand-written part of a page above GENERATED_MARKER; the generated page, less its title,
    replaces the rest. Without the marker, the generated page is the whole file."""
    if GENERATED_MARKER not in existing:
        return page
    head = existing.split(GENERATED_MARKER, 1)[0]
    body = page.split("\n", 1)[1].lstrip("\n") if page.startswith("# ") else page
    return f"{head}{GENERATED_MARKER}\n\n{body}"
