"""A staging folder inside the data root: outputs are made there and moved into place at the end.

Every file, staged or final, appears under its name only complete (written to a temporary name,
then renamed), so a file that exists is a finished one. An interrupted prepare leaves its staging
folder behind and the next run picks up from it; an error discards it, leaving the data root as it
was. Staging and data root share a file system, so moving a file into place is a rename.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tqdm import tqdm

STAGING_DIR = ".zsbench-staging"


class Staging:
    def __init__(self, data_root: Path, name: str) -> None:
        self.data_root = data_root
        self.top = data_root / STAGING_DIR
        self.root = self.top / name
        self.files = self.root / "files"
        self._created: list[Path] | None = None

    def staged(self, output: str) -> Path:
        return self.files / output

    def has(self, output: str) -> bool:
        return self.staged(output).is_file()

    def open(self) -> None:
        """Creates the staging folder, remembering which folders did not exist before."""
        if self._created is not None:
            return
        self._created = []
        folder = self.top
        while not folder.exists():
            self._created.append(folder)
            folder = folder.parent
        self.files.mkdir(parents=True, exist_ok=True)

    def commit(self, outputs: list[str], progress: bool = False) -> None:
        """Moves the staged outputs into place under the data root."""
        for output in tqdm(outputs, desc="moving into place", unit="file", disable=not progress, leave=False):
            staged = self.staged(output)
            if not staged.is_file():
                continue  # moved by an earlier, interrupted commit
            destination = self.data_root / output
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, destination)

    def finish(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self.top.is_dir() and not any(self.top.iterdir()):
            self.top.rmdir()

    def discard(self) -> None:
        """Removes everything this staging folder added to the data root."""
        self.finish()
        for folder in self._created or []:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
