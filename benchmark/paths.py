"""Where the suite finds its data files, datasets, weights and results."""

from __future__ import annotations

import hashlib
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


_sha256_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """The file's sha256, computed once per (path, size, modification time) in a process."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _sha256_cache:
        digest = hashlib.sha256()
        with open(resolved, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _sha256_cache[key] = digest.hexdigest()
    return _sha256_cache[key]


def portable_path(path: str | os.PathLike, weights_root_override: str | os.PathLike | None = None,
                  data_root_override: str | os.PathLike | None = None) -> str:
    """A path as a record or a table may show it on any machine: relative to the weights root, the
    data root or the suite's checkout where it lies under one of them, else the file name alone."""
    resolved = Path(path).expanduser().resolve()
    for root in (weights_root(weights_root_override), data_root(data_root_override), REPO_ROOT):
        try:
            return resolved.relative_to(Path(root).expanduser().resolve()).as_posix()
        except ValueError:
            continue
    return resolved.name
