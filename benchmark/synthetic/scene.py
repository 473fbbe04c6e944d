"""One synthetic scene: stuff regions with procedural textures, then 1-4 coloured things."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .patterns import PATTERNS, PERIOD, patterned
from .regions import stuff_layout
from .shapes import SHAPES, Placement, coverage
from .textures import TEXTURES
from .vocabulary import Vocabulary

STUFF_COUNT_WEIGHTS = {1: 0.25, 2: 0.45, 3: 0.3}
THING_COUNT_WEIGHTS = {1: 0.35, 2: 0.35, 3: 0.3}
THING_RADIUS = (0.15, 0.28)
PORTRAIT_RADIUS = (0.3, 0.42)
USUAL_COLOUR_FRACTION = 0.85
MIN_THING_PIXELS = 12
MIN_VISIBLE_AFTER_OCCLUSION = 0.6
_PLACEMENT_ATTEMPTS = 12


@dataclass(frozen=True)
class Thing:
    class_id: int
    colour: int
    pixels: int


@dataclass(frozen=True)
class Stuff:
    class_id: int
    pixels: int


@dataclass(frozen=True)
class Scene:
    image: np.ndarray
    label: np.ndarray
    things: tuple[Thing, ...]
    stuff: tuple[Stuff, ...]


def _weighted_count(rng: np.random.Generator, weights: dict[int, float]) -> int:
    return int(rng.choice(list(weights), p=list(weights.values())))


def _paint_stuff(rng: np.random.Generator, vocab: Vocabulary, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    n_regions = _weighted_count(rng, STUFF_COUNT_WEIGHTS)
    classes = rng.choice(len(vocab.stuff), size=n_regions, replace=False)
    layout = stuff_layout(rng, h, w, n_regions)
    image = np.zeros((h, w, 3), np.float32)
    for region in range(int(layout.max()) + 1):
        mask = layout == region
        texture = TEXTURES[vocab.stuff[classes[region]].drawer](rng, h, w)
        image[mask] = texture[mask]
    return image, classes[layout].astype(np.uint8)


def _sample_placement(rng: np.random.Generator, h: int, w: int, radius_range: tuple[float, float]) -> Placement:
    radius = rng.uniform(*radius_range) * min(h, w)
    margin = 0.6 * radius
    return Placement(
        cx=rng.uniform(margin, w - margin),
        cy=rng.uniform(margin, h - margin),
        radius=radius,
        angle=rng.uniform(-np.pi, np.pi),
        aspect=float(np.exp(rng.uniform(-0.25, 0.25))),
    )


def _thing_fill(
    rng: np.random.Generator, base: tuple[int, int, int], pattern: str, place: Placement, h: int, w: int
) -> np.ndarray:
    """The thing's surface over the whole image: its jittered colour, shaded, wearing its kind's pattern."""
    rgb = np.asarray(base, np.float32) + rng.uniform(-18, 18, 3).astype(np.float32)
    direction = rng.uniform(-np.pi, np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xs / w - 0.5) * np.cos(direction) + (ys / h - 0.5) * np.sin(direction)) * rng.uniform(0.0, 0.35)
    fill = rgb * (1 + ramp)[..., None] + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    ink = PATTERNS[pattern](rng, h, w, place, rng.uniform(*PERIOD) * min(h, w))
    return patterned(fill, ink, rgb)


def _thing_colours(rng: np.random.Generator, vocab: Vocabulary, classes: np.ndarray) -> list[int]:
    """A colour index per thing, all different: the kind's usual colour (USUAL_COLOUR_FRACTION), else any other."""
    names = [c.name for c in vocab.colours]
    usual = [names.index(vocab.things[c].colour) for c in classes]
    chosen: list[int] = []
    for index, colour in enumerate(usual):
        if rng.random() >= USUAL_COLOUR_FRACTION or colour in chosen:
            free = [c for c in range(len(names)) if c not in chosen and c not in usual[index + 1 :]]
            colour = free[int(rng.integers(len(free)))]
        chosen.append(colour)
    return chosen


def _paint_things(
    rng: np.random.Generator, vocab: Vocabulary, image: np.ndarray, label: np.ndarray, portrait: bool
) -> tuple[Thing, ...]:
    h, w = label.shape
    n_things = 1 if portrait else _weighted_count(rng, THING_COUNT_WEIGHTS)
    radius_range = PORTRAIT_RADIUS if portrait else THING_RADIUS
    classes = rng.choice(len(vocab.things), size=n_things, replace=False)
    colours = _thing_colours(rng, vocab, classes)
    owner = np.full((h, w), -1, np.int64)
    placed: list[tuple[int, int, int]] = []
    for class_index, colour in zip(classes, colours, strict=True):
        passes = SHAPES[vocab.things[class_index].drawer](rng)
        for _ in range(_PLACEMENT_ATTEMPTS):
            place = _sample_placement(rng, h, w, radius_range)
            alpha = coverage(passes, place, h, w)
            solid = alpha >= 0.5
            area = int(solid.sum())
            if area < MIN_THING_PIXELS:
                continue
            left = np.bincount(owner[~solid & (owner >= 0)], minlength=len(placed))
            if all(left[i] >= MIN_VISIBLE_AFTER_OCCLUSION * a for i, (_, _, a) in enumerate(placed)):
                break
        else:
            continue
        fill = _thing_fill(rng, vocab.colours[colour].rgb, vocab.things[class_index].pattern, place, h, w)
        if rng.random() < 0.5:
            edge = alpha - cv2.erode(alpha, np.ones((3, 3), np.uint8))
            fill = fill * (1 - 0.45 * edge[..., None])
        image += alpha[..., None] * (fill - image)
        owner[solid] = len(placed)
        label[solid] = len(vocab.stuff) + class_index
        placed.append((int(class_index), int(colour), area))
    visible = np.bincount(owner[owner >= 0], minlength=len(placed))
    return tuple(Thing(len(vocab.stuff) + c, colour, int(n)) for (c, colour, _), n in zip(placed, visible, strict=True))


def render_scene(rng: np.random.Generator, vocab: Vocabulary, h: int, w: int, portrait: bool = False) -> Scene:
    """Image uint8 [h, w, 3] RGB and label uint8 [h, w] of class ids (stuff, then things).

    A portrait shows one large thing (PORTRAIT_RADIUS), as object-centric web photos do.
    """
    image, label = _paint_stuff(rng, vocab, h, w)
    things = _paint_things(rng, vocab, image, label, portrait)
    image = image * rng.uniform(0.9, 1.1)
    counts = np.bincount(label.ravel(), minlength=len(vocab.stuff))[: len(vocab.stuff)]
    stuff = tuple(Stuff(int(c), int(counts[c])) for c in np.flatnonzero(counts))
    return Scene(np.clip(np.rint(image), 0, 255).astype(np.uint8), label, things, stuff)
