"""Thing surface patterns: every kind of thing wears its own, as real object categories have their look.

``PATTERNS[name](rng, h, w, place, period)`` -> float32 [h, w] in [0, 1]: how much of the thing's
contrast tone shows at each pixel (0: its colour). Patterns are laid out in the thing's own frame
(centre, random orientation and phase) with about ``period`` pixels between repeats, so a patch of a
few periods inside a thing tells which kind it is whatever its colour.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .shapes import Placement
from .textures import value_noise

Pattern = Callable[[np.random.Generator, int, int, Placement, float], np.ndarray]
PERIOD = (0.075, 0.095)  # pattern period as a fraction of the image's short side
INK = 0.85  # how far a fully inked pixel moves from the colour to its contrast tone
_LIGHT = 110.0  # colours brighter than this (mean channel) get dark ink, darker ones light ink


def _frame(rng: np.random.Generator, h: int, w: int, place: Placement) -> tuple[np.ndarray, np.ndarray]:
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xs - np.float32(place.cx), ys - np.float32(place.cy)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    phase_u, phase_v = rng.uniform(0, 1, 2).astype(np.float32)
    return dx * cos + dy * sin + phase_u, -dx * sin + dy * cos + phase_v


def _soft(wave: np.ndarray) -> np.ndarray:
    """A sine made into a soft-edged square wave in [0, 1]."""
    return np.clip(0.5 + 1.5 * wave, 0.0, 1.0)


def solid(rng: np.random.Generator, h: int, w: int, place: Placement, period: float) -> np.ndarray:
    return np.zeros((h, w), np.float32)


def stripes(rng: np.random.Generator, h: int, w: int, place: Placement, period: float) -> np.ndarray:
    u, _ = _frame(rng, h, w, place)
    return _soft(np.sin(2 * np.pi * u / period))


def checker(rng: np.random.Generator, h: int, w: int, place: Placement, period: float) -> np.ndarray:
    u, v = _frame(rng, h, w, place)
    return _soft(np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period))


def _cell_offsets(rng: np.random.Generator, h: int, w: int, place: Placement, period: float):
    u, v = _frame(rng, h, w, place)
    return np.abs(np.mod(u / period, 1.0) - 0.5), np.abs(np.mod(v / period, 1.0) - 0.5)


def dots(rng: np.random.Generator, h: int, w: int, place: Placement, period: float) -> np.ndarray:
    du, dv = _cell_offsets(rng, h, w, place, period)
    return np.clip((0.32 - np.sqrt(du**2 + dv**2)) / 0.08, 0.0, 1.0)


def grid(rng: np.random.Generator, h: int, w: int, place: Placement, period: float) -> np.ndarray:
    du, dv = _cell_offsets(rng, h, w, place, period)
    return np.clip((np.maximum(du, dv) - 0.3) / 0.06, 0.0, 1.0)


def speckle(rng: np.random.Generator, h: int, w: int, place: Placement, period: float) -> np.ndarray:
    noise = value_noise(rng, h, w, max(period / 3, 1.0))
    return np.clip((noise - 0.5) / 0.12, 0.0, 1.0)


def rings(rng: np.random.Generator, h: int, w: int, place: Placement, period: float) -> np.ndarray:
    u, v = _frame(rng, h, w, place)
    return _soft(np.sin(2 * np.pi * np.sqrt(u**2 + v**2) / period))


def waves(rng: np.random.Generator, h: int, w: int, place: Placement, period: float) -> np.ndarray:
    u, v = _frame(rng, h, w, place)
    return _soft(np.sin(2 * np.pi * (u + 0.35 * period * np.sin(2 * np.pi * v / (1.6 * period))) / period))


PATTERNS: dict[str, Pattern] = {
    "solid": solid,
    "stripes": stripes,
    "checker": checker,
    "dots": dots,
    "grid": grid,
    "speckle": speckle,
    "rings": rings,
    "waves": waves,
}


def patterned(fill: np.ndarray, ink: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``fill`` [h, w, 3] with ``ink`` [h, w] drawn in the contrast tone of the base colour ``base`` [3]."""
    tone = base * 0.35 if float(base.mean()) > _LIGHT else base + 0.6 * (255.0 - base)
    amount = (INK * ink)[..., None]
    return fill * (1 - amount) + (fill / np.maximum(base, 1.0)) * tone * amount
