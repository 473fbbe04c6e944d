"""Miniature datasets written in a card's exact on-disk layout, for tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmark.data import DatasetCard

_CITIES = ("frankfurt", "lindau", "munster")


def fake_stems(card: DatasetCard, count: int) -> list[str]:
    if card.name.startswith("cityscapes"):
        return [f"{_CITIES[i % 3]}/{_CITIES[i % 3]}_{i:06d}_000019" for i in range(count)]
    if card.name.startswith("ade"):
        return [f"ADE_val_{i + 1:08d}" for i in range(count)]
    if card.name.startswith("coco"):
        return [f"{i + 139:012d}" for i in range(count)]
    return [f"2008_{i:06d}" for i in range(count)]


def raw_label_values(card: DatasetCard) -> np.ndarray:
    """Values a converted label file of this card may hold (before reduce_zero_label)."""
    if card.reduce_zero_label:
        return np.arange(0, card.num_classes + 1)
    return np.concatenate([np.arange(card.num_classes), [card.ignore_index]])


def write_fake_dataset(
    card: DatasetCard,
    data_root: Path,
    count: int = 3,
    sizes: list[tuple[int, int]] | None = None,
    seed: int = 0,
    palette: bool = False,
) -> list[str]:
    """Writes `count` random images and labels; returns the stems. sizes are (height, width)."""
    rng = np.random.default_rng(seed)
    root = data_root / card.root
    stems = fake_stems(card, count)
    values = raw_label_values(card)
    for i, stem in enumerate(stems):
        height, width = (sizes or [(24 + 5 * i, 32 + 3 * i)])[i % len(sizes or [0])]
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        wide = values.max() > 255  # 16-bit labels (A-847, PC-459: void 65535)
        label = rng.choice(values, size=(height, width)).astype(np.uint16 if wide else np.uint8)
        image_path = root / card.img_dir / f"{stem}{card.img_suffix}"
        label_path = root / card.ann_dir / f"{stem}{card.seg_map_suffix}"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        written = Image.fromarray(label)
        if palette:
            written = written.convert("P")
            written.putpalette(list(rng.integers(0, 256, 768, dtype=np.uint8)))
        written.save(label_path)
    if card.split:
        split_file = root / card.split
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split_file.write_text("".join(f"{s}\n" for s in stems))
    return stems


def write_card(folder: Path, name: str, classes: list[str], count: int, **overrides) -> Path:
    """A small card of our own (a fake dataset under <data_root>/<name>)."""
    import yaml

    content = {
        "name": name, "root": name, "img_dir": "images", "ann_dir": "labels", "img_suffix": ".png",
        "seg_map_suffix": ".png", "split": "val.txt", "num_images": count, "classes": classes,
        "ignore_index": 255, "reduce_zero_label": False, "has_background": False, **overrides,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def write_toy_protocol(folder: Path, name: str, class_names: dict[str, str], benchmarks: dict) -> Path:
    """A toy protocol (24 px short side, 16 px windows, one template) in folder, with its class-name files.

    class_names maps a names-file stem to its text; benchmarks is the protocol's `benchmarks` mapping.
    """
    import yaml

    (folder / "names").mkdir(exist_ok=True)
    for stem, text in class_names.items():
        (folder / "names" / f"{stem}.txt").write_text(text)
    (folder / "templates.txt").write_text("a photo of a {}.\n")
    protocol = {
        "name": name,
        "image": {"resize": {"short": 24, "long_max": 64}, "mean": [120, 115, 100], "std": [60, 60, 60]},
        "inference": {"mode": "slide", "crop": 16, "stride": 8},
        "text": {"templates": "templates.txt", "aggregation": "mean_normalised"},
        "benchmarks": benchmarks,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    return path


def shrink_label(path: Path) -> None:
    """Overwrites a label file with a 5x5 one: its size no longer matches its image."""
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(path)


def put_value_9_in_label(path: Path) -> None:
    """Sets one pixel of a label file to 9, a class id outside the toy cards."""
    label = np.asarray(Image.open(path)).copy()
    label[2, 2] = 9
    Image.fromarray(label).save(path)
