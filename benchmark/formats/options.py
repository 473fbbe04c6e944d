"""What a renderer is asked for, beside the boards: per-class tables and their layout, the page title, examples
shown."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderOptions:
    per_class: bool = False
    title: str = "zsseg-bench leaderboard"
    examples_per_benchmark: int = 4  # html: qualitative examples shown per (run, benchmark), where saved
    per_class_layout: str = "auto"  # auto | wide | long (leaderboard.per_class_layout)
