"""Deterministic examples of the two splits: caption images and dense val images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .captions import make_caption
from .scene import Scene, render_scene
from .vocabulary import Vocabulary, load_vocabulary

SPLITS = {"captions": 0, "val": 1}
CAPTION_SIZE = 64
VAL_SHORT = (96, 128)
VAL_LONG_MAX = 160
VAL_LANDSCAPE = 0.7
COMPLETE_FRACTION = 0.8
PORTRAIT_FRACTION = 0.5  # caption images showing one large thing


@dataclass(frozen=True)
class Example:
    image: np.ndarray
    label: np.ndarray
    label_bg: np.ndarray
    objects: list[str]
    caption: str | None = None
    complete: bool | None = None


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG of one example: a function of (seed, split, index) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))


def background_label(label: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Class ids -> 0 for any stuff, 1..T for things."""
    n_stuff = len(vocab.stuff)
    return np.where(label >= n_stuff, label - n_stuff + 1, 0).astype(np.uint8)


def val_size(rng: np.random.Generator) -> tuple[int, int]:
    short = int(rng.integers(VAL_SHORT[0], VAL_SHORT[1] + 1))
    long = int(rng.integers(short, VAL_LONG_MAX + 1))
    return (short, long) if rng.random() < VAL_LANDSCAPE else (long, short)


def _objects(scene: Scene, vocab: Vocabulary) -> list[str]:
    return [vocab.classes[c] for c in np.flatnonzero(np.bincount(scene.label.ravel()))]


def render_example(seed: int, split: str, index: int, complete_fraction: float = COMPLETE_FRACTION) -> Example:
    """Example ``index`` of ``split`` ("captions": 64x64 with a caption, "val": varied size);
    ``objects`` lists the canonical names of the classes in the label, in id order."""
    vocab = load_vocabulary()
    rng = example_rng(seed, split, index)
    h, w = (CAPTION_SIZE, CAPTION_SIZE) if split == "captions" else val_size(rng)
    portrait = split == "captions" and bool(rng.random() < PORTRAIT_FRACTION)
    scene = render_scene(rng, vocab, h, w, portrait)
    example = Example(scene.image, scene.label, background_label(scene.label, vocab), _objects(scene, vocab))
    if split == "captions":
        complete = bool(rng.random() < complete_fraction)
        caption = make_caption(rng, vocab, scene, complete)
        return Example(example.image, example.label, example.label_bg, example.objects, caption, complete)
    return example
