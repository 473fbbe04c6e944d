"""Files replaced in one step: a reader sees the old file or the new one, never a half-written one.

Every writer goes through `replace_atomically`: the content goes to a temporary file
`.<name>.[<owner>.]<random>.tmp` beside the target, is flushed to disk (fsync), renamed over the
target, and the folder entry is flushed too. The file gets the mode of any new file of the user
(0666 less the umask), not tempfile's private 0600, so a shared results folder stays readable by
the team. A writer that fails removes its temporary file; one killed before the rename leaves it
behind, and the next holder of the same claim removes it (`results.record_lock` for records, with
`owner` the claim's tag).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], None], owner: str = "") -> None:
    """`write` fills a temporary file beside `path`, which then replaces `path` durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{owner}." if owner else f".{path.name}."
    temporary = _create_temporary(path.parent, prefix)
    try:
        write(temporary)
        _fsync(temporary, os.O_RDONLY)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync(path.parent, os.O_RDONLY)


def _create_temporary(folder: Path, prefix: str) -> Path:
    """A new empty file `<prefix><random>.tmp` in `folder`, created with mode 0666 for the umask to trim."""
    while True:
        temporary = folder / f"{prefix}{secrets.token_hex(4)}.tmp"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(descriptor)
        return temporary


def _fsync(path: Path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json_atomic(path: str | os.PathLike, content: Any, owner: str = "") -> None:
    """JSON (indent 1, keys in insertion order, NaN written as NaN) to `path`, atomically."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=1, sort_keys=False, allow_nan=True)
            handle.write("\n")

    replace_atomically(path, write, owner)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    replace_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    replace_atomically(path, lambda temporary: temporary.write_bytes(data))


def save_torch_atomically(path: str | os.PathLike, content: Any) -> None:
    """torch.save(content) to `path`, atomically. Saved through an open handle, since torch names the archive's
    inner folder after a file name (here a random temporary one): equal content then gives equal bytes."""
    import torch  # here, so that writers of plain files (the synthetic world's worker processes) do not load torch

    def save(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            torch.save(content, handle)

    replace_atomically(path, save)
