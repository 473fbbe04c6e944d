"""Boards -> a PNG of mIoU per benchmark per method run (grouped bars, one panel per protocol version).

CHART_COLOURS is the palette of both charts, this PNG and the HTML page's bars: a method run has the same colour in
both (the n-th row of a board, n-th colour).
"""

from __future__ import annotations

from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.leaderboard import Board

CHART_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                 "#9c755f", "#bab0ac")  # Tableau 10


def _text(label: str) -> str:
    """Literal text: a `$` would start matplotlib's math mode."""
    return label.replace("$", r"\$")


def save_plot(boards: list[Board], out: Path, dpi: int = 150) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchmarkError("--plot needs matplotlib: pip install 'matplotlib>=3.7'") from None
    if not boards:
        raise BenchmarkError("nothing to plot: no records")
    widths = [max(6.0, 0.9 * len(board.columns) + 0.25 * len(board.columns) * len(board.rows)) for board in boards]
    figure, axes = plt.subplots(len(boards), 1, figsize=(max(widths), 4.2 * len(boards)), squeeze=False)
    for axis, board in zip(axes[:, 0], boards, strict=True):
        count = max(len(board.rows), 1)
        width = 0.8 / count
        for index, row in enumerate(board.rows):
            values = [row.cell(column).value for column in board.columns]
            positions = [c + (index - (count - 1) / 2) * width for c in range(len(board.columns))]
            heights = [0.0 if v is None else v for v in values]
            axis.bar(positions, heights, width=width * 0.95, label=_text(row.label),
                     color=CHART_COLOURS[index % len(CHART_COLOURS)])
        axis.set_xticks(range(len(board.columns)), [_text(column.label) for column in board.columns],
                        rotation=30, ha="right")
        axis.set_ylabel("mIoU (%)")
        axis.set_title(_text(f"protocol {board.protocol} ({board.short_hash})"))
        axis.grid(axis="y", alpha=0.3)
        axis.set_axisbelow(True)
        axis.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=dpi)
    plt.close(figure)
    return out
