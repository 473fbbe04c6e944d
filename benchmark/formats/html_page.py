"""Boards -> one self-contained HTML page: sortable tables, bar charts (inline SVG), per-class IoU,
saved qualitative examples, and each board's provenance (full protocol hash; date, suite version and
commit of its records). No network: inline CSS and script, images as data: URIs, and a
Content-Security-Policy that forbids fetching anything. Every field from a record is escaped.

Per-class IoU is a table per benchmark (wide) or, for long class lists, one table per protocol version with a
row per run, benchmark and class (long). The vocabulary-scaling view is a page of its own.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from html import escape as _escape
from pathlib import Path

from benchmark.formats.options import RenderOptions
from benchmark.formats.plot import CHART_COLOURS
from benchmark.leaderboard import Board, Column, format_value, per_class_layout, per_class_long
from benchmark.vocabulary_scaling import EMPTY_NOTE, NOTE, VALUE_KINDS, VocabularyBoard, column_labels, sources_sentence

SHOWN_VALUES = 3  # distinct suite versions or commits named in a board's provenance line

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
  padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; } code { font-size: 0.95em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; white-space: nowrap; }
thead th { border-bottom: 2px solid #444; cursor: pointer; user-select: none; text-align: left; }
thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
thead th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; } td.second { text-decoration: underline; }
td.diff { color: #666; } tr.partial td { color: #888; font-style: italic; }
.scroll { overflow-x: auto; } details { margin: 0.6em 0; } summary { cursor: pointer; }
figure.example { display: inline-block; margin: 0.4em; } figure.example img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; } svg text { font: 11px sans-serif; fill: #333; }
p.provenance { color: #555; font-size: 0.9em; }
"""

SCRIPT = """
"use strict";
(function () {
  function sortKey(cell) {
    var value = cell.getAttribute("data-sort");
    if (value === null) { return {text: cell.textContent.trim().toLowerCase()}; }
    if (value === "") { return null; }
    return {number: parseFloat(value)};
  }
  function compare(a, b) {
    if (a === null || b === null) { return a === b ? 0 : (a === null ? 1 : -1); }
    if ("number" in a && "number" in b) { return a.number - b.number; }
    return String(a.text).localeCompare(String(b.text));
  }
  function sortTable(table, index) {
    var header = table.tHead.rows[0].cells[index];
    var body = table.tBodies[0];
    var numeric = body.rows.length > 0 && body.rows[0].cells[index].hasAttribute("data-sort");
    var current = header.getAttribute("aria-sort");
    var descending = current ? current === "ascending" : numeric;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (x, y) {
      var a = sortKey(x.cells[index]), b = sortKey(y.cells[index]);
      if (a === null || b === null) { return compare(a, b); }
      return descending ? -compare(a, b) : compare(a, b);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.setAttribute("tabindex", "0");
      th.addEventListener("click", function () { sortTable(table, index); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortTable(table, index); }
      });
    });
  });
  document.documentElement.setAttribute("data-sortable", "ready");
})();
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def escape(text: object) -> str:
    return _escape(str(text), quote=True)


def _number_cell(value: float | None, kind: str, rank: int | None = None) -> str:
    classes = ["num"] + (["diff"] if kind == "diff" else []) + {1: ["best"], 2: ["second"]}.get(rank or 0, [])
    sort = "" if value is None else f"{value:.4f}"
    return f'<td class="{" ".join(classes)}" data-sort="{sort}">{escape(format_value(value, kind))}</td>'


def main_table(board: Board) -> str:
    columns = board.display_columns
    ranks = {column: board.ranks(column) for column in board.columns}
    headers = ["method"] + (["backbone"] if board.has_backbone else []) + [d.label for d in columns]
    lines = ['<div class="scroll"><table class="sortable leaderboard"><thead><tr>'
             + "".join(f'<th scope="col">{escape(h)}</th>' for h in headers) + "</tr></thead><tbody>"]
    for index, row in enumerate(board.rows):
        cells = [f'<td title="{escape(row.run_id)}">{escape(row.label)}</td>']
        if board.has_backbone:
            cells.append(f"<td>{escape(row.backbone or '-')}</td>")
        for display in columns:
            cell = row.cell(display.column)
            rank = ranks[display.column].get(index) if display.kind == "value" else None
            cells.append(_number_cell(cell.get(display.kind), display.kind, rank))
        attribute = ' class="partial"' if row.partial else ""
        lines.append(f"<tr{attribute}>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def per_class_table(board: Board, benchmark: str) -> str:
    rows = [row for row in board.rows if benchmark in row.per_class]
    lines = ['<div class="scroll"><table class="sortable per-class"><thead><tr><th scope="col">class</th>'
             + "".join(f'<th scope="col">{escape(row.label)}</th>' for row in rows) + "</tr></thead><tbody>"]
    for cls in board.classes.get(benchmark) or []:
        values = [row.per_class[benchmark].get(cls) for row in rows]
        full = [v for v, row in zip(values, rows, strict=True) if v is not None and not row.partial]
        best = max(full) if full else None
        cells = [_number_cell(v, "value", 1 if v is not None and v == best and not row.partial else None)
                 for v, row in zip(values, rows, strict=True)]
        lines.append(f"<tr><td>{escape(cls)}</td>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def per_class_long_table(board: Board) -> str:
    """A row per run, benchmark and class; the best IoU of each class among full rows in bold."""
    headers = ["method", "benchmark", "#", "class", "IoU"]
    lines = ['<div class="scroll"><table class="sortable per-class-long"><thead><tr>'
             + "".join(f'<th scope="col">{escape(h)}</th>' for h in headers) + "</tr></thead><tbody>"]
    for line in per_class_long(board):
        attribute = ' class="partial"' if line.row.partial else ""
        lines.append(f'<tr{attribute}><td title="{escape(line.row.run_id)}">{escape(line.row.label)}</td>'
                     f'<td>{escape(line.benchmark)}</td><td class="num" data-sort="{line.index}">{line.index}</td>'
                     f"<td>{escape(line.name)}</td>{_number_cell(line.iou, 'value', 1 if line.best else None)}</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def bar_chart(board: Board) -> str:
    """Grouped bars: one group per column (benchmark metric, average), one bar per method run."""
    columns: list[Column] = board.columns
    rows = board.rows
    values = [v for row in rows for c in columns if (v := row.cell(c).value) is not None]
    if not rows or not values:
        return ""
    top = max(10.0, -(-max(values) // 10) * 10)
    bar, gap, height, left, bottom = 12, 18, 200, 40, 70
    group = bar * len(rows) + gap
    width = left + group * len(columns) + 10
    legend_height = 18 * len(rows) + 10
    total = 10 + height + bottom + legend_height
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" role="img" '
             f'aria-label="{escape("mIoU per benchmark and method, protocol " + board.protocol)}">']
    for tick in range(0, int(top) + 1, 10 if top <= 60 else 20):
        y = 10 + height - tick / top * height
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    for c, column in enumerate(columns):
        x0 = left + c * group + gap / 2
        for r, row in enumerate(rows):
            value = row.cell(column).value
            if value is None:
                continue
            bar_height = max(value, 0.0) / top * height
            colour = CHART_COLOURS[r % len(CHART_COLOURS)]
            tip = escape(f"{row.label}, {column.label}: {format_value(value)}")
            parts.append(f'<rect x="{x0 + r * bar:.1f}" y="{10 + height - bar_height:.1f}" width="{bar - 1}" '
                         f'height="{bar_height:.1f}" fill="{colour}"><title>{tip}</title></rect>')
        label_x = x0 + bar * len(rows) / 2
        parts.append(f'<text x="{label_x:.1f}" y="{10 + height + 14}" text-anchor="end" '
                     f'transform="rotate(-35 {label_x:.1f} {10 + height + 14})">{escape(column.label)}</text>')
    for r, row in enumerate(rows):
        y = 10 + height + bottom + 18 * r
        parts.append(f'<rect x="{left}" y="{y}" width="12" height="12" '
                     f'fill="{CHART_COLOURS[r % len(CHART_COLOURS)]}"/>'
                     f'<text x="{left + 18}" y="{y + 10}">{escape(row.label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure class="example"><img src="data:image/png;base64,{data}" alt="{escape(path.stem)}">'
            f"<figcaption>{escape(path.stem)}</figcaption></figure>")


def examples(board: Board, limit: int) -> str:
    from benchmark.visualize import examples_dir

    parts = []
    for row in board.rows:
        for name in board.benchmarks:
            record = row.record_paths.get(name)
            folder = examples_dir(Path(record).parent, name) if record else None
            files = sorted(folder.glob("*.png"))[:limit] if folder and folder.is_dir() else []
            if files:
                parts.append(f"<details><summary>Examples: {escape(row.label)} on {escape(name)} "
                             "(image | ground truth | prediction)</summary>\n"
                             + "\n".join(_image(file) for file in files) + "\n</details>")
    return "\n".join(parts)


def _sources(board: Board) -> str:
    found: dict[str, bool] = {}
    for row in board.rows:
        for cell in row.cells.values():
            if cell.source:
                found.setdefault(cell.source, cell.third_party)
    if not found:
        return "<p>No published entry matches these runs.</p>"
    items = "".join(f"<li>{escape(source)}{' (re-reported by a third party)' if third else ''}</li>"
                    for source, third in found.items())
    return f"<p>Published numbers from:</p><ul>{items}</ul>"


def _listed(values: set[str]) -> str:
    shown = sorted(values)[:SHOWN_VALUES]
    more = f" and {len(values) - SHOWN_VALUES} more" if len(values) > SHOWN_VALUES else ""
    return ", ".join(f"<code>{escape(value)}</code>" for value in shown) + more


def provenance(board: Board) -> str:
    """The full protocol hash, and, from the board's record files: the days the numbers were measured, the
    zsseg-bench version(s) and the git commit(s) that measured them."""
    days: set[str] = set()
    suites: set[str] = set()
    commits: set[str] = set()
    for file in {file for row in board.rows for file in row.record_paths.values()}:
        try:
            record = json.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("time"), str):
            days.add(record["time"][:10])
        suite = (record.get("versions") or {}).get("zsseg-bench")
        if suite:
            suites.add(str(suite))
        commit = record.get("git_commit")
        if commit:
            commits.add(str(commit)[:12] + ("-dirty" if str(commit).endswith("-dirty") else ""))
    measured = []
    if days:
        measured.append(escape(min(days) if len(days) == 1 else f"{min(days)} to {max(days)}"))
    if suites:
        measured.append(f"by zsseg-bench {_listed(suites)}")
    if commits:
        measured.append(f"at commit {_listed(commits)}")
    text = f"Protocol hash <code>{escape(board.hash)}</code>."
    if measured:
        text += " Measured " + " ".join(measured) + "."
    return f'<p class="provenance">{text}</p>'


def board_section(board: Board, options: RenderOptions) -> str:
    note = ("mIoU (%) per benchmark; avg: mean mIoU over all benchmarks, where each has a number. "
            "Click a column header to sort. Best in bold, second underlined.")
    if board.with_published:
        note += " paper: the published number; Δ: measured minus published."
    parts = [
        f'<section class="board" id="{escape("protocol-" + board.protocol + "-" + board.short_hash)}">',
        f"<h2>Protocol <code>{escape(board.protocol)}</code> (hash <code>{escape(board.short_hash)}</code>)</h2>",
        provenance(board),
        f"<p>{escape(note)}</p>",
        main_table(board),
    ]
    if board.with_published:
        parts.append(_sources(board))
    parts.append(bar_chart(board))
    if per_class_layout([board], options.per_class_layout) == "long":
        if any(board.classes.values()):
            parts.append(f"<details{' open' if options.per_class else ''}><summary>Per-class IoU (%), a row per run, "
                         "benchmark and class (#: the class's position in the dataset card, from 0)</summary>\n"
                         f"{per_class_long_table(board)}\n</details>")
    else:
        for name in board.benchmarks:
            if board.classes.get(name):
                parts.append(f"<details{' open' if options.per_class else ''}><summary>Per-class IoU (%): "
                             f"{escape(name)}</summary>\n{per_class_table(board, name)}\n</details>")
    example_html = examples(board, options.examples_per_benchmark)
    if example_html:
        parts.append(example_html)
    parts.append("</section>")
    return "\n".join(part for part in parts if part)


def render(boards: list[Board], options: RenderOptions) -> str:
    options = replace(options, per_class_layout=per_class_layout(boards, options.per_class_layout))  # one per page
    body = "\n".join(board_section(board, options) for board in boards) or "<p>No records.</p>"
    return _page(body, options)


def _page(body: str, options: RenderOptions) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(options.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{escape(options.title)}</h1>\n{body}\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def vocabulary_table(board: VocabularyBoard) -> str:
    headers = ["method"] + (["backbone"] if board.has_backbone else [])
    headers += [label for column in board.pairs for label in column_labels(column)]
    lines = ['<div class="scroll"><table class="sortable vocabulary"><thead><tr>'
             + "".join(f'<th scope="col">{escape(h)}</th>' for h in headers) + "</tr></thead><tbody>"]
    for row in board.rows:
        cells = [f'<td title="{escape(row.run_id)}">{escape(row.label)}</td>']
        if board.has_backbone:
            cells.append(f"<td>{escape(row.backbone or '-')}</td>")
        for column in board.pairs:
            values = board.values(row, column)
            cells += [_number_cell(values.get(kind), "value") for kind in VALUE_KINDS]
        attribute = ' class="partial"' if row.partial else ""
        lines.append(f"<tr{attribute}>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def vocabulary_section(board: VocabularyBoard) -> str:
    parts = [
        f'<section class="board" id="{escape("vocabulary-" + board.protocol + "-" + board.short_hash)}">',
        f"<h2>Vocabulary scaling: protocol <code>{escape(board.protocol)}</code> "
        f"(hash <code>{escape(board.short_hash)}</code>)</h2>",
        f'<p class="provenance">Protocol hash <code>{escape(board.hash)}</code>.</p>',
        f"<p>{escape(NOTE)} Click a column header to sort.</p>",
    ]
    sources = sources_sentence(board)
    if sources:
        parts.append(f"<p>{escape(sources)}</p>")
    parts.append(vocabulary_table(board))
    if board.notes:
        parts.append("<p>Notes:</p><ul>" + "".join(f"<li>{escape(note)}</li>" for note in board.notes) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def render_vocabulary(boards: list[VocabularyBoard], options: RenderOptions) -> str:
    body = "\n".join(vocabulary_section(board) for board in boards) or f"<p>{escape(EMPTY_NOTE)}</p>"
    return _page(body, options)
