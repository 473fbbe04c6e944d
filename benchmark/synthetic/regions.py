"""Stuff layouts: split an image into 1-3 regions (horizon, diagonal or blob cuts)."""

from __future__ import annotations

import numpy as np

from .textures import fbm, value_noise

MIN_REGION_FRACTION = 0.12
_ATTEMPTS = 30


def horizon(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    level = rng.uniform(0.25, 0.75) * h
    wobble = rng.uniform(0.0, 0.25) * h
    line = level + wobble * (value_noise(rng, 1, w, 1, rng.uniform(8, 40))[0] - 0.5)
    return np.arange(h, dtype=np.float32)[:, None] < line[None, :]


def diagonal(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    distance = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
    wobble = rng.uniform(0.0, 0.2) * min(h, w) * (fbm(rng, h, w, cell=min(h, w) / 3, octaves=2) - 0.5)
    return distance + wobble > 0


def blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    short = min(h, w)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    rx, ry = rng.uniform(0.25, 0.5, 2) * short
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    radial = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
    return radial + 0.8 * (fbm(rng, h, w, cell=short / 3, octaves=2) - 0.5) < 1


CUTS = {"horizon": horizon, "diagonal": diagonal, "blob": blob}
_CUT_NAMES = tuple(CUTS)
_CUT_WEIGHTS = (0.45, 0.3, 0.25)


def stuff_layout(rng: np.random.Generator, h: int, w: int, n_regions: int) -> np.ndarray:
    """Region index (0..n_regions-1) per pixel, int64 [h, w]; every region covers
    at least MIN_REGION_FRACTION of the image (fewer regions if that keeps failing)."""
    for _ in range(_ATTEMPTS):
        layout = np.zeros((h, w), np.int64)
        for region in range(1, n_regions):
            cut = CUTS[_CUT_NAMES[rng.choice(len(_CUT_NAMES), p=_CUT_WEIGHTS)]](rng, h, w)
            if rng.random() < 0.5:
                cut = ~cut
            layout[cut] = region
        counts = np.bincount(layout.ravel(), minlength=n_regions)
        if counts.min() >= MIN_REGION_FRACTION * h * w:
            return layout
    return stuff_layout(rng, h, w, n_regions - 1) if n_regions > 1 else np.zeros((h, w), np.int64)
