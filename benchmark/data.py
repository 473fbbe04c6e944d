"""Dataset cards (datasets/*.yaml) -> samples on disk -> decoded images and labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from benchmark import paths
from benchmark.errors import ConfigError, DataError
from benchmark.yamlio import at_line, check_fields, load_yaml_mapping

PREPARE_HINT = "see datasets/README.md for the expected layout and where to download it"


@dataclass(frozen=True)
class DatasetCard:
    name: str
    title: str
    source: str
    root: str
    img_dir: str
    ann_dir: str
    img_suffix: str
    seg_map_suffix: str
    split: str | None
    num_images: int
    ignore_index: int
    reduce_zero_label: bool
    has_background: bool
    classes: tuple[str, ...]
    notes: str
    path: Path
    remedy: str = ""  # how to get the data, where preparing downloads does not apply; {data_root} is filled in

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def identity(self) -> dict[str, Any]:
        """Everything about the card that decides a number (hashed into protocols)."""
        return {
            "name": self.name, "root": self.root, "img_dir": self.img_dir, "ann_dir": self.ann_dir,
            "img_suffix": self.img_suffix, "seg_map_suffix": self.seg_map_suffix, "split": self.split,
            "num_images": self.num_images, "ignore_index": self.ignore_index,
            "reduce_zero_label": self.reduce_zero_label, "classes": list(self.classes),
        }


_CARD_REQUIRED = {
    "name": str, "root": str, "img_dir": str, "ann_dir": str, "img_suffix": str,
    "seg_map_suffix": str, "num_images": int, "classes": list,
}
_CARD_OPTIONAL = {
    "title": str, "source": str, "split": str, "ignore_index": int, "reduce_zero_label": bool,
    "has_background": bool, "notes": str, "remedy": str,
}


def card_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        return candidate
    return paths.CARDS_DIR / f"{name_or_path}.yaml"


def list_cards() -> list[str]:
    return sorted(p.stem for p in paths.CARDS_DIR.glob("*.yaml"))


def load_card(name_or_path: str | Path) -> DatasetCard:
    path = card_path(name_or_path)
    if not path.exists():
        known = ", ".join(list_cards()) or "none"
        raise ConfigError(f"{path}: no dataset card {str(name_or_path)!r} (cards: {known})")
    raw = load_yaml_mapping(path)
    check_fields(raw, _CARD_REQUIRED, _CARD_OPTIONAL, path)
    if raw["name"] != path.stem:
        raise ConfigError(
            f"{path}: key 'name'{at_line(raw, 'name')} is {raw['name']!r} but must equal the file stem {path.stem!r}"
        )
    classes = raw["classes"]
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise ConfigError(
            f"{path}: key 'classes'{at_line(raw, 'classes')} must be a non-empty list of non-empty strings"
        )
    if len(set(classes)) != len(classes):
        duplicates = sorted({c for c in classes if classes.count(c) > 1})
        raise ConfigError(f"{path}: key 'classes'{at_line(raw, 'classes')} repeats {duplicates}")
    for key in ("root", "img_dir", "ann_dir", "split", "img_suffix", "seg_map_suffix"):
        value = raw.get(key)
        if value and (Path(value).is_absolute() or ".." in Path(value).parts):
            raise ConfigError(
                f"{path}: key {key!r}{at_line(raw, key)} must be a relative path inside the data root, got {value!r}"
            )
    ignore_index = raw.get("ignore_index", 255)
    if 0 <= ignore_index < len(classes):
        raise ConfigError(
            f"{path}: key 'ignore_index'{at_line(raw, 'ignore_index')} {ignore_index} collides with a class id"
        )
    return DatasetCard(
        name=raw["name"], title=raw.get("title") or raw["name"], source=raw.get("source") or "",
        root=raw["root"], img_dir=raw["img_dir"], ann_dir=raw["ann_dir"], img_suffix=raw["img_suffix"],
        seg_map_suffix=raw["seg_map_suffix"], split=raw.get("split"), num_images=raw["num_images"],
        ignore_index=ignore_index, reduce_zero_label=bool(raw.get("reduce_zero_label", False)),
        has_background=bool(raw.get("has_background", False)), classes=tuple(classes),
        notes=raw.get("notes") or "", path=path, remedy=raw.get("remedy") or "",
    )


@dataclass(frozen=True)
class Sample:
    stem: str
    image: Path
    label: Path


def _card_root(card: DatasetCard, data_root: Path) -> Path:
    return data_root / card.root


def list_stems(card: DatasetCard, data_root: Path) -> list[str]:
    """The split's image stems, in split-file order (or sorted, without a split file)."""
    root = _card_root(card, data_root)
    if card.split:
        split_file = root / card.split
        if not split_file.exists():
            raise DataError(f"{split_file}: split file of dataset {card.name!r} is missing; {PREPARE_HINT}")
        try:
            lines = split_file.read_text(encoding="utf-8").splitlines()
        except PermissionError as error:
            raise DataError(f"{split_file}: cannot be read ({error.strerror}); check its permissions") from None
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"{split_file}: cannot be read ({error}); {PREPARE_HINT}") from None
        stems = []
        for number, line in enumerate(lines, start=1):
            stem = line.strip()
            if stem and (Path(stem).is_absolute() or ".." in Path(stem).parts):
                raise DataError(f"{split_file}: line {number}: entry {stem!r} leaves the dataset folder; re-prepare it")
            if stem:
                stems.append(stem)
        return stems
    image_dir = root / card.img_dir
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder of dataset {card.name!r} is missing; {PREPARE_HINT}")
    stems = [
        str(p.relative_to(image_dir))[: -len(card.img_suffix)]
        for p in image_dir.rglob(f"*{card.img_suffix}")
        if p.is_file()
    ]
    return sorted(stems)


def list_samples(card: DatasetCard, data_root: Path) -> list[Sample]:
    root = _card_root(card, data_root)
    return [
        Sample(
            stem,
            root / card.img_dir / f"{stem}{card.img_suffix}",
            root / card.ann_dir / f"{stem}{card.seg_map_suffix}",
        )
        for stem in list_stems(card, data_root)
    ]


@dataclass
class DataCheck:
    dataset: str
    status: str  # found | missing | incomplete | bad
    found: int
    expected: int
    missing: list[str]
    bad: list[str]  # with read_files: eval's reason for each sample it would stop on, "<file>: <why>; <fix>"
    remedy: str

    @property
    def unreadable(self) -> list[str]:
        """`bad` under its former name."""
        return self.bad


def card_remedy(card: DatasetCard, data_root: Path) -> str:
    """What to do when a card's data is missing: the card's own `remedy`, else prepare it (datasets/README.md)."""
    if card.remedy:
        return card.remedy.strip().replace("{data_root}", str(data_root))
    return f"prepare {card.name} under {_card_root(card, data_root)} ({PREPARE_HINT})"


def check_dataset(card: DatasetCard, data_root: Path, read_files: bool = False) -> DataCheck:
    """Counts images and labels against the card; with read_files, also reads every sample as eval does
    (`read_sample`: decoding, label values, image and label sizes) and keeps eval's reason per bad sample."""
    remedy = card_remedy(card, data_root)
    try:
        samples = list_samples(card, data_root)
    except DataError:
        return DataCheck(card.name, "missing", 0, card.num_images, [], [], remedy)
    missing = [str(p) for s in samples for p in (s.image, s.label) if not p.is_file()]
    bad: list[str] = []
    if read_files:
        for sample in samples:
            try:
                if sample.image.is_file() and sample.label.is_file():
                    read_sample(sample, card)
                elif sample.image.is_file():
                    read_image(sample.image)
                elif sample.label.is_file():
                    read_label(sample.label, card)
            except DataError as error:
                bad.append(str(error))
    found = sum(1 for s in samples if s.image.is_file() and s.label.is_file())
    if bad:
        status = "bad"
    elif found == 0:
        status = "missing"
    elif found < card.num_images or missing:
        status = "incomplete"
    else:
        status = "found"
    return DataCheck(card.name, status, found, card.num_images, missing, bad, remedy)


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def read_image(path: Path) -> np.ndarray:
    """uint8 HxWx3 in RGB order, decoded by OpenCV as mmcv's default backend does.

    OpenCV 4 decodes a truncated JPEG with only a warning (grey fill), so a JPEG must end with its
    end-of-image marker, whatever the OpenCV version (entropy-coded data never holds that byte pair).
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing; {PREPARE_HINT}") from None
    except OSError as error:
        raise DataError(f"{path}: image cannot be read ({error.strerror}); check its permissions") from None
    if data.size == 0:
        raise DataError(f"{path}: image file is empty (0 bytes); re-download or re-prepare the dataset")
    raw = data.tobytes()
    if raw.startswith(JPEG_START) and JPEG_END not in raw[-1024:]:
        raise DataError(f"{path}: JPEG is truncated (no end-of-image marker); re-download or re-prepare it")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: image cannot be decoded (corrupt or not an image); re-download or re-prepare it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


INDEX_MODES = {"L", "P", "I;16", "I;16L", "I;16B", "I"}  # 8-bit, palette, 16-bit and 32-bit integer images


def read_label_raw(path: Path) -> np.ndarray:
    """The label file's index values, HxW, exactly: 8-bit and palette PNGs (indices, never colours) and 16-bit
    PNG/TIFF labels (the detectron2-style trees of A-847 and PC-459, values up to 65535)."""
    if not path.is_file():
        raise DataError(f"{path}: label file is missing; {PREPARE_HINT}")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in {"RGB", "RGBA", "LA"}:
                raise DataError(
                    f"{path}: label is a colour ({mode}) image, expected an index PNG (mode L or P); "
                    "convert it to class indices (see datasets/README.md)"
                )
            if mode not in INDEX_MODES:
                raise DataError(
                    f"{path}: label is a {mode!r} image, expected integer class indices (8- or 16-bit PNG or TIFF); "
                    "re-prepare the dataset (see datasets/README.md)"
                )
            array = np.array(image)
    except DataError:
        raise
    except PermissionError as error:
        raise DataError(f"{path}: label cannot be read ({error.strerror}); check its permissions") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: label cannot be decoded ({error}); re-download or re-prepare it") from None
    if array.ndim != 2:
        raise DataError(f"{path}: label has shape {array.shape}, expected a single-channel index image")
    return array


def map_label(raw: np.ndarray, card: DatasetCard, path: Path) -> np.ndarray:
    """Card semantics applied to raw index values: reduce_zero_label, value check. int64 HxW."""
    label = raw.astype(np.int64)
    if card.reduce_zero_label:
        label[label == 0] = 255
        label -= 1
        label[label == 254] = 255
        if card.ignore_index != 255:
            label[label == 255] = card.ignore_index
    valid = (label == card.ignore_index) | ((label >= 0) & (label < card.num_classes))
    if not valid.all():
        bad = np.unique(raw[~valid])[:10].tolist()
        raise DataError(
            f"{path}: label values {bad} are outside dataset {card.name!r}'s {card.num_classes} classes "
            f"(ignore index {card.ignore_index}); is the label converted for this card? see datasets/README.md"
        )
    return label


def read_label(path: Path, card: DatasetCard) -> np.ndarray:
    return map_label(read_label_raw(path), card, path)


def check_label_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    if image.shape[:2] != label.shape:
        raise DataError(
            f"{label_path}: label size {label.shape[1]}x{label.shape[0]} differs from image "
            f"{image_path} size {image.shape[1]}x{image.shape[0]}; re-prepare the dataset"
        )


def read_sample(sample: Sample, card: DatasetCard) -> tuple[np.ndarray, np.ndarray]:
    """The image and its card's label, with every check eval makes on a sample (the reason in a DataError)."""
    image = read_image(sample.image)
    label = read_label(sample.label, card)
    check_label_size(image, label, sample.image, sample.label)
    return image, label


class BenchmarkDataset(torch.utils.data.Dataset):
    """The samples at `indices` of a card's split: decoded, checked, and transformed image + label."""

    def __init__(
        self,
        card: DatasetCard,
        samples: list[Sample],
        indices: list[int],
        transform: Callable[[np.ndarray], torch.Tensor],
        more_labels: Sequence[tuple[DatasetCard, list[Sample]]] = (),
        keep_original: bool = False,
    ) -> None:
        self.card = card
        self.keep_original = keep_original  # also return the decoded image before the transform ("original")
        self.samples = samples
        self.indices = indices
        self.transform = transform
        self.more_labels = list(more_labels)  # other benchmarks' labels of the same images, read alongside

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        """A data error comes back as {"error": message}, so that it crosses worker processes intact."""
        index = self.indices[position]
        sample = self.samples[index]
        sources = [(self.card, sample), *((card, samples[index]) for card, samples in self.more_labels)]
        labels = []
        try:
            image = read_image(sample.image)
            for card, source in sources:
                labels.append(read_label(source.label, card))
            for (_, source), label in zip(sources, labels, strict=True):
                check_label_size(image, label, sample.image, source.label)
        except DataError as error:
            return {"index": index, "error": str(error)}
        item = {
            "index": index,
            "stem": sample.stem,
            "image": self.transform(image),
            "label": torch.from_numpy(labels[0]),
            "more_labels": [torch.from_numpy(label) for label in labels[1:]],
        }
        if self.keep_original:
            item["original"] = torch.from_numpy(np.ascontiguousarray(image))
        return item


def single_item(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader collate for batch_size=1: images of different sizes stay unbatched."""
    return batch[0]
