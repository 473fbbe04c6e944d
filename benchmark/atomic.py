"""Files replaced in one step: a reader sees the old file or the new one, never a half-written one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """`write` fills a temporary file beside `path`, which then replaces `path`; on failure no temporary is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # ".tmp": what cleanups of stale files look for
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_torch_atomically(path: str | os.PathLike, content: Any) -> None:
    """torch.save(content) to `path`, atomically."""
    import torch  # here, so that writers of plain files (the synthetic world's worker processes) do not load torch

    replace_atomically(path, lambda temporary: torch.save(content, temporary))
