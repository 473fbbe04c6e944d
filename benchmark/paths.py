"""Where the suite finds its data files, datasets, weights and results."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CARDS_DIR = REPO_ROOT / "datasets"
PROTOCOLS_DIR = REPO_ROOT / "protocols"
LEADERBOARD_DIR = REPO_ROOT / "leaderboard"


def data_root(override: str | os.PathLike | None = None) -> Path:
    """--data-root, else $ZSSEG_DATA, else ./data."""
    return Path(override or os.environ.get("ZSSEG_DATA") or "data").expanduser()


def weights_root(override: str | os.PathLike | None = None) -> Path:
    """--weights-root, else $ZSSEG_WEIGHTS, else ~/.cache/zsseg."""
    return Path(override or os.environ.get("ZSSEG_WEIGHTS") or "~/.cache/zsseg").expanduser()


def results_root(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get("ZSSEG_RESULTS") or "results").expanduser()


def resolve_checkpoint(checkpoint: str, weights_root_override: str | os.PathLike | None = None) -> Path:
    """A checkpoint path as given when it exists (or is absolute), else relative to the weights root."""
    given = Path(checkpoint).expanduser()
    if given.is_absolute() or given.is_file():
        return given
    return weights_root(weights_root_override) / given
