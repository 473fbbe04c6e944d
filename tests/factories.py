"""Real Protocol / BenchmarkSpec / DatasetCard / TextSpec objects for tests, with small defaults.

Adapters read typed fields (benchmark.dataset.name, benchmark.method_settings, protocol.text), so
tests hand them the same frozen dataclasses a loaded protocol holds, never look-alikes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.data import DatasetCard
from benchmark.protocol import BackgroundSpec, BenchmarkSpec, ClassSplit, ImageSpec, InferenceSpec, Protocol, TextSpec

NO_RESIZE = ImageSpec(None, None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
NO_BACKGROUND = BackgroundSpec("none")


def make_card(name: str = "toyset", classes: Sequence[str] = ("a", "b"), **fields: Any) -> DatasetCard:
    values: dict[str, Any] = {
        "name": name, "title": name, "source": "tests", "root": name, "img_dir": "images", "ann_dir": "labels",
        "img_suffix": ".png", "seg_map_suffix": ".png", "split": None, "num_images": 1, "ignore_index": 255,
        "reduce_zero_label": False, "has_background": False, "classes": tuple(classes), "notes": "",
        "path": Path(f"<tests:{name}>"),
    }
    values.update(fields)
    return DatasetCard(**values)


def make_text(templates: Sequence[str] = ("{}",), aggregation: str = "mean_normalised") -> TextSpec:
    return TextSpec(tuple(templates), aggregation)


def make_spec(
    names: Sequence[Sequence[str]] = (("a",), ("b",)),
    *,
    name: str = "bench",
    dataset: DatasetCard | str | None = None,
    background: BackgroundSpec = NO_BACKGROUND,
    image: ImageSpec = NO_RESIZE,
    mode: str = "slide",
    crop: int | None = 16,
    stride: int | None = 8,
    method_settings: dict[str, Any] | None = None,
    split: ClassSplit | None = None,
) -> BenchmarkSpec:
    """A benchmark over `names` (synonyms per class); `dataset` a card or a card name (classes = first names)."""
    class_names = tuple(tuple(synonyms) for synonyms in names)
    if not isinstance(dataset, DatasetCard):
        card_classes = (("background",) if background.rule == "threshold" else ()) + tuple(s[0] for s in class_names)
        dataset = make_card(dataset or name, card_classes)
    return BenchmarkSpec(
        name=name, dataset=dataset, class_names=class_names, image=image, inference=InferenceSpec(mode, crop, stride),
        background=background, method_settings=dict(method_settings or {}), split=split,
    )


def make_protocol(
    benchmarks: Sequence[BenchmarkSpec] = (),
    *,
    name: str = "test",
    text: TextSpec | None = None,
    precision: str = "fp32",
) -> Protocol:
    return Protocol(
        name=name, title=name, source="tests", path=Path(f"<tests:{name}.yaml>"), precision=precision,
        text=text or make_text(), benchmarks={spec.name: spec for spec in benchmarks}, hash="0" * 64,
    )


TINY_VFM_CONFIG = {  # a tiny random timm ViT standing in for DINO ViT-B/8 (8 px patches, class token, DINO's positions)
    "family": "dino",
    "timm_model": "vit_base_patch8_224",
    "timm_kwargs": {"img_size": 32, "embed_dim": 128, "depth": 2, "num_heads": 2},  # 64-wide heads, as CLIP's
    "source": "tests/factories.py: a tiny random stand-in for DINO ViT-B/8",
    "input_mean": [0.485, 0.456, 0.406],
    "input_std": [0.229, 0.224, 0.225],
    "position_rule": {"offset": 0.1, "antialias": False},
}


TINY_SAM_CONFIG = {  # a tiny random SAM: segment-anything's layout, image encoder 32 wide, 2 heads, 2 blocks
    "family": "sam",
    "sam_kwargs": {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2,
                   "encoder_global_attn_indexes": [1]},
    "source": "tests/factories.py: a tiny random stand-in for SAM ViT-B",
    "input_mean": [0.485, 0.456, 0.406],
    "input_std": [0.229, 0.224, 0.225],
    "input_size": 1024,
}


def write_tiny_vision_model(folder: Path, config: dict, name: str, seed: int = 0) -> tuple[Path, Path]:
    """(config .json, weights .pth) of a tiny random vision model built from `config` (`build_vfm`: timm's layout,
    which is DINO's, or segment-anything's)."""
    import json

    import torch

    from methods.vfm_backbone import build_vfm

    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    weights = folder / f"{name}.pth"
    torch.save(build_vfm(config).state_dict(), weights)
    return config_path, weights


def write_tiny_sam(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny random SAM (TINY_SAM_CONFIG)."""
    return write_tiny_vision_model(folder, TINY_SAM_CONFIG, "tiny_sam", seed)


def write_tiny_vfm(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny random DINO-like ViT (TINY_VFM_CONFIG)."""
    return write_tiny_vision_model(folder, TINY_VFM_CONFIG, "tiny_dino", seed)
