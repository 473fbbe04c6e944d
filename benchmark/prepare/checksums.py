"""The official downloads (downloads.yaml): where each comes from and its published digests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from tqdm import tqdm

from benchmark.errors import DataError

DOWNLOADS_FILE = Path(__file__).with_name("downloads.yaml")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Digest:
    algorithm: str  # a hashlib name: md5, sha1, sha256
    value: str
    source: str  # where it was published


@dataclass(frozen=True)
class Download:
    name: str
    url: str
    digests: tuple[Digest, ...]

    @property
    def remedy(self) -> str:
        return f"download {self.name} again from {self.url}"


@cache
def load_downloads(path: Path = DOWNLOADS_FILE) -> dict[str, Download]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    downloads = {}
    for name, entry in raw.items():
        digests = []
        for item in entry.get("digests") or []:
            algorithm = next(key for key in item if key != "source")
            digests.append(Digest(algorithm, str(item[algorithm]).lower(), item["source"]))
        downloads[name] = Download(name, entry["url"], tuple(digests))
    return downloads


def file_digests(path: Path, algorithms: list[str], progress: bool = False) -> dict[str, str]:
    """Hex digests of the file for each algorithm, in one pass."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with path.open("rb") as handle, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=f"checking {path.name}",
        disable=not progress, leave=False,
    ) as bar:
        while chunk := handle.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
            bar.update(len(chunk))
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def verify_download(path: Path, download: Download, progress: bool = False) -> str:
    """A line for the report; a file matching none of the published digests is an error."""
    if not download.digests:
        return f"not checked: no digest is published for {download.name}"
    found = file_digests(path, sorted({d.algorithm for d in download.digests}), progress)
    for digest in download.digests:
        if found[digest.algorithm] == digest.value:
            return f"{digest.algorithm} {digest.value} matches ({digest.source})"
    expected = ", ".join(f"{d.algorithm} {d.value}" for d in download.digests)
    actual = ", ".join(f"{name} {value}" for name, value in found.items())
    raise DataError(
        f"{path}: checksum does not match the official {download.name} (expected {expected}; "
        f"found {actual}): the download is corrupt, truncated or another file; {download.remedy}"
    )
