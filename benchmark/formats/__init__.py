"""Boards -> text in one of the output formats: md, latex, csv, html, json.

render: leaderboard boards (benchmark.leaderboard); render_vocabulary: vocabulary-scaling boards
(benchmark.vocabulary_scaling). Each format module has both, as `render` and `render_vocabulary`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.formats.options import RenderOptions
from benchmark.leaderboard import Board
from benchmark.vocabulary_scaling import VocabularyBoard

FORMATS = ("md", "latex", "csv", "html", "json")
SUFFIXES = {".md": "md", ".markdown": "md", ".tex": "latex", ".csv": "csv", ".html": "html", ".htm": "html",
            ".json": "json"}


def format_for(path: str | Path | None, fmt: str | None) -> str:
    """--format wins; else the --out file's suffix; else Markdown."""
    if fmt:
        if fmt not in FORMATS:
            raise BenchmarkError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
        return fmt
    if path is not None:
        suffix = Path(path).suffix.lower()
        if suffix not in SUFFIXES:
            raise BenchmarkError(f"{path}: cannot tell the format from suffix {suffix!r}; pass --format")
        return SUFFIXES[suffix]
    return "md"


def renderer(fmt: str) -> Callable[[list[Board], RenderOptions], str]:
    from benchmark.formats import csv_table, html_page, json_table, latex, markdown

    return {"md": markdown.render, "latex": latex.render, "csv": csv_table.render, "html": html_page.render,
            "json": json_table.render}[fmt]


def render(boards: list[Board], fmt: str, options: RenderOptions | None = None) -> str:
    return renderer(fmt)(boards, options or RenderOptions())


def render_vocabulary(boards: list[VocabularyBoard], fmt: str, options: RenderOptions | None = None) -> str:
    from benchmark.formats import csv_table, html_page, json_table, latex, markdown

    modules = {"md": markdown, "latex": latex, "csv": csv_table, "html": html_page, "json": json_table}
    return modules[fmt].render_vocabulary(boards, options or RenderOptions())
