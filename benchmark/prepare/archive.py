"""Reading the official downloads safely: zip and tar archives, unpacked folders, single files.

Every source lists its regular files by member name (a relative POSIX path, as inside the archive)
and reads them whole. Archive member names that could escape the folder they are extracted to
reject the whole archive before anything is written; links and devices are never read.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from benchmark.errors import DataError

_READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError, NotImplementedError)


@dataclass(frozen=True)
class SourceSpec:
    """What a worker process needs to open a source again: picklable, hashable."""

    kind: str  # zip | tar | folder | file
    path: str
    remedy: str  # the end of every error message about this source: how to fix it


def safe_member_name(name: str, archive: Path, remedy: str) -> str:
    """The member's name, normalised; a name that points outside the archive's folder is an error."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DataError(
            f"{archive}: member {name!r} points outside the folder it would be extracted to; "
            f"refusing to read this archive, it is not an official download ({remedy})"
        )
    return "/".join(part for part in path.parts if part not in ("", "."))


class Source(ABC):
    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.path = Path(spec.path)

    @abstractmethod
    def names(self, prefix: str = "") -> list[str]:
        """Sorted names of the regular files under prefix."""

    @abstractmethod
    def size(self, name: str) -> int: ...

    @abstractmethod
    def read(self, name: str) -> bytes: ...

    def close(self) -> None:
        return None

    def _corrupt(self, name: str, error: BaseException) -> DataError:
        return DataError(
            f"{self.path}: member {name!r} cannot be read ({error or type(error).__name__}); "
            f"the file is corrupt or truncated: {self.spec.remedy}"
        )


class ZipSource(Source):
    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except _READ_ERRORS as error:
            raise DataError(f"{self.path}: not a readable zip archive ({error}); {spec.remedy}") from None
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = safe_member_name(info.filename, self.path, spec.remedy)
            if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16) or not name:
                continue
            self._members[name] = info

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self._members if n.startswith(prefix))

    def size(self, name: str) -> int:
        return self._members[name].file_size

    def read(self, name: str) -> bytes:
        try:
            with self._zip.open(self._members[name]) as handle:
                return handle.read()
        except _READ_ERRORS as error:
            raise self._corrupt(name, error) from None

    def close(self) -> None:
        self._zip.close()


class TarSource(Source):
    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        try:
            self._tar = tarfile.open(self.path, "r:*")  # noqa: SIM115 (kept open: members are read later)
            infos = self._tar.getmembers()
        except _READ_ERRORS as error:
            raise DataError(f"{self.path}: not a readable tar archive ({error}); {spec.remedy}") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        for info in infos:
            name = safe_member_name(info.name, self.path, spec.remedy)
            if info.isreg() and name:
                self._members[name] = info

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self._members if n.startswith(prefix))

    def size(self, name: str) -> int:
        return self._members[name].size

    def read(self, name: str) -> bytes:
        info = self._members[name]
        try:
            handle = self._tar.extractfile(info)
            data = handle.read() if handle else b""
        except _READ_ERRORS as error:
            raise self._corrupt(name, error) from None
        if len(data) != info.size:
            raise self._corrupt(name, EOFError(f"{len(data)} of {info.size} bytes"))
        return data

    def close(self) -> None:
        self._tar.close()


class FolderSource(Source):
    """An unpacked download: member names are paths relative to the folder."""

    def names(self, prefix: str = "") -> list[str]:
        top = self.path / prefix if prefix else self.path
        found = []
        for folder, _, files in os.walk(top):
            relative = Path(folder).relative_to(self.path).as_posix()
            base = "" if relative == "." else f"{relative}/"
            found.extend(f"{base}{file}" for file in files if (Path(folder) / file).is_file())
        return sorted(n for n in found if n.startswith(prefix))

    def size(self, name: str) -> int:
        return (self.path / name).stat().st_size

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as error:
            raise self._corrupt(name, error) from None


class FileSource(Source):
    """A download that is a single plain file; its only member is its own name."""

    def names(self, prefix: str = "") -> list[str]:
        return [self.path.name] if self.path.name.startswith(prefix) else []

    def size(self, name: str) -> int:
        return self.path.stat().st_size

    def read(self, name: str) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise self._corrupt(name, error) from None


_KINDS: dict[str, type[Source]] = {"zip": ZipSource, "tar": TarSource, "folder": FolderSource, "file": FileSource}
_OPEN: dict[tuple[int, SourceSpec, int, int], Source] = {}


def archive_kind(path: Path, remedy: str) -> str:
    """zip or tar, told by the file's content rather than its name."""
    try:
        if zipfile.is_zipfile(path):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error}); {remedy}") from None
    raise DataError(f"{path}: is neither a zip nor a tar archive (corrupt, truncated or another file); {remedy}")


def open_source(spec: SourceSpec) -> Source:
    """The source, opened once per process (and again when its file changed).

    Keyed by process id too: a forked worker must not share its parent's file offsets.
    """
    info = Path(spec.path).stat()
    key = (os.getpid(), spec, info.st_size, info.st_mtime_ns)
    if key not in _OPEN:
        _OPEN[key] = _KINDS[spec.kind](spec)
    return _OPEN[key]


def close_sources() -> None:
    while _OPEN:
        _, source = _OPEN.popitem()
        source.close()


def copy_member(sources: dict[str, Source], part: str, name: str) -> bytes:
    """Job action: a member's bytes as they are."""
    return sources[part].read(name)
