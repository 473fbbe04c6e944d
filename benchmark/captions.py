"""Image-caption pairs from a jsonl folder or from webdataset tar shards.

Two layouts are read:

* a folder holding one ``*.jsonl`` file (``captions.jsonl`` preferred), one JSON object a line,
  ``{"image": "images/000000.png", "caption": "..."}``, image paths relative to the jsonl's folder;
* webdataset shards: uncompressed ``*.tar`` files whose members are grouped by key (the member
  name up to the first dot of its base name), each sample an image (``key.jpg|jpeg|png|webp``)
  and a caption (``key.txt``, or ``key.json`` with a ``"caption"`` field). Shard patterns may use
  braces: ``cc3m-{0000..0331}.tar``, ``{train,val}-{00..09}.tar``.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
JSONL_NAME = "captions.jsonl"

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


class CaptionDataError(ValueError):
    """A caption source is malformed; the message names the file (and line or member)."""


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` alternatives and ``{0000..0331}`` numeric ranges (zero padding kept), in order."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = _RANGE.match(body)
    if numeric:
        lo_text, hi_text = numeric.groups()
        lo, hi = int(lo_text), int(hi_text)
        padded = any(t.lstrip("-").startswith("0") and len(t.lstrip("-")) > 1 for t in (lo_text, hi_text))
        width = max(len(lo_text), len(hi_text)) if padded else 0
        step = 1 if hi >= lo else -1
        options = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    else:
        options = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


@dataclass(frozen=True)
class _FileSample:
    image: Path
    caption: str
    origin: str


@dataclass(frozen=True)
class _TarSample:
    shard: Path
    member: str
    offset: int
    size: int
    caption: str


def _decode_image(data: bytes | Path, origin: str) -> Image.Image:
    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise CaptionDataError(f"cannot read image {origin}: {err}") from err


def find_jsonl(folder: Path) -> Path:
    """The caption file of a jsonl folder: ``captions.jsonl`` or the folder's only ``*.jsonl``."""
    preferred = folder / JSONL_NAME
    if preferred.is_file():
        return preferred
    candidates = sorted(folder.glob("*.jsonl"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"no caption file in {folder}: expected {preferred} (or one *.jsonl file)")
    names = ", ".join(c.name for c in candidates)
    raise CaptionDataError(f"several *.jsonl files in {folder} ({names}) and no {JSONL_NAME}")


def read_jsonl(path: Path) -> list[_FileSample]:
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    samples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CaptionDataError(f"{where}: line is not JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise CaptionDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            image, caption = record.get("image"), record.get("caption")
            if not isinstance(image, str) or not isinstance(caption, str):
                raise CaptionDataError(f'{where}: needs string fields "image" and "caption"')
            samples.append(_FileSample(path.parent / image, caption, where))
    return samples


def _split_key(member: str) -> tuple[str, str]:
    folder, _, base = member.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _caption_from(shard: Path, handle: BinaryIO, info: tarfile.TarInfo, json_field: bool) -> str:
    handle.seek(info.offset_data)
    raw = handle.read(info.size)
    where = f"{shard}:{info.name}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CaptionDataError(f"{where}: caption is not UTF-8") from err
    if not json_field:
        return text.strip()
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise CaptionDataError(f"{where}: not JSON ({err.msg})") from err
    caption = record.get("caption") if isinstance(record, dict) else None
    if not isinstance(caption, str):
        raise CaptionDataError(f'{where}: no string "caption" field')
    return caption.strip()


def index_shard(shard: Path) -> list[_TarSample]:
    if not shard.is_file():
        raise FileNotFoundError(f"tar shard not found: {shard}")
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(shard, mode="r:") as archive:
            for info in archive:
                if info.isfile():
                    key, extension = _split_key(info.name)
                    groups.setdefault(key, {})[extension] = info
    except tarfile.TarError as err:
        raise CaptionDataError(f"cannot read tar shard {shard} (uncompressed .tar expected): {err}") from err
    samples = []
    with shard.open("rb") as handle:
        for key, members in groups.items():
            image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
            if image is None:
                raise CaptionDataError(f"{shard}: sample {key!r} has no image ({'|'.join(IMAGE_EXTENSIONS)})")
            if "txt" in members:
                caption = _caption_from(shard, handle, members["txt"], json_field=False)
            elif "json" in members:
                caption = _caption_from(shard, handle, members["json"], json_field=True)
            else:
                raise CaptionDataError(f"{shard}: sample {key!r} has no caption (.txt or .json)")
            samples.append(_TarSample(shard, image.name, image.offset_data, image.size, caption))
    return samples


def resolve_shards(patterns: str | Path | Iterable[str | Path]) -> list[Path]:
    """Shard paths from brace patterns or a folder of ``*.tar`` files, in the given order."""
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    shards: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(path.glob("*.tar"))
            if not found:
                raise FileNotFoundError(f"no *.tar shards in {path}")
            shards.extend(found)
        else:
            shards.extend(Path(p) for p in expand_braces(str(pattern)))
    return shards


class CaptionDataset(Dataset):
    """Image-caption pairs; ``dataset[i]`` is ``(transform(image), caption)`` (a PIL RGB image by default).

    ``source``: a jsonl folder, a ``.jsonl`` file, a folder of ``.tar`` shards, a shard pattern
    with braces, or a list of shard patterns.
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.transform = transform
        self.samples: list[_FileSample | _TarSample] = []
        if isinstance(source, (str, Path)) and _is_jsonl_source(Path(source)):
            path = Path(source)
            self.samples.extend(read_jsonl(path if path.suffix == ".jsonl" else find_jsonl(path)))
        else:
            for shard in resolve_shards(source):
                self.samples.extend(index_shard(shard))

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def captions(self) -> list[str]:
        return [sample.caption for sample in self.samples]

    def load_image(self, index: int) -> Image.Image:
        sample = self.samples[index]
        if isinstance(sample, _FileSample):
            if not sample.image.is_file():
                raise FileNotFoundError(f"image not found: {sample.image} (listed at {sample.origin})")
            return _decode_image(sample.image, f"{sample.image} (listed at {sample.origin})")
        with sample.shard.open("rb") as handle:
            handle.seek(sample.offset)
            data = handle.read(sample.size)
        return _decode_image(data, f"{sample.shard}:{sample.member}")

    def __getitem__(self, index: int) -> tuple[Any, str]:
        image = self.load_image(index)
        caption = self.samples[index].caption
        return (self.transform(image) if self.transform else image), caption


def _is_jsonl_source(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*.jsonl")) or not any(path.glob("*.tar"))
    return not (path.suffix == ".tar" or "{" in path.name)
