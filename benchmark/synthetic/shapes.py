"""Thing shapes: outlines in unit coordinates and anti-aliased coverage masks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

SUPERSAMPLE = 4
_SHIFT = 4
_SEGMENTS = 48

# A shape is a list of fill passes: (contours, value). Contours in one pass are filled together
# (so an inner contour cuts a hole); later passes paint over earlier ones.
Passes = list[tuple[list[np.ndarray], int]]
ShapeFn = Callable[[np.random.Generator], Passes]


@dataclass(frozen=True)
class Placement:
    """Where a shape goes, in pixels: centre, radius, rotation (radians), x/y stretch."""

    cx: float
    cy: float
    radius: float
    angle: float
    aspect: float


def _polygon(radius: float, n: int = _SEGMENTS, dx: float = 0.0, phase: float = 0.0) -> np.ndarray:
    t = phase + np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([dx + radius * np.cos(t), radius * np.sin(t)], axis=1)


def circle(rng: np.random.Generator) -> Passes:
    return [([_polygon(1.0)], 1)]


def square(rng: np.random.Generator) -> Passes:
    return [([_polygon(1.0, 4, phase=np.pi / 4)], 1)]


def triangle(rng: np.random.Generator) -> Passes:
    return [([_polygon(1.1, 3, phase=-np.pi / 2) + [0, 0.275]], 1)]


def star(rng: np.random.Generator) -> Passes:
    inner = rng.uniform(0.38, 0.5)
    t = -np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
    return [([np.stack([r * np.cos(t), r * np.sin(t)], axis=1)], 1)]


def ring(rng: np.random.Generator) -> Passes:
    return [([_polygon(1.0), _polygon(rng.uniform(0.45, 0.65))], 1)]


def cross(rng: np.random.Generator) -> Passes:
    a = rng.uniform(0.26, 0.38)
    points = [
        (a, -1),
        (a, -a),
        (1, -a),
        (1, a),
        (a, a),
        (a, 1),
        (-a, 1),
        (-a, a),
        (-1, a),
        (-1, -a),
        (-a, -a),
        (-a, -1),
    ]
    return [([np.asarray(points, np.float64)], 1)]


def heart(rng: np.random.Generator) -> Passes:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [([np.stack([x, y - 2.5], axis=1) / 16.5], 1)]


def moon(rng: np.random.Generator) -> Passes:
    offset = rng.uniform(0.4, 0.65)
    return [([_polygon(1.0)], 1), ([_polygon(rng.uniform(0.85, 1.0), dx=offset)], 0)]


SHAPES: dict[str, ShapeFn] = {
    "circle": circle,
    "square": square,
    "triangle": triangle,
    "star": star,
    "ring": ring,
    "cross": cross,
    "heart": heart,
    "moon": moon,
}


def coverage(passes: Passes, place: Placement, h: int, w: int) -> np.ndarray:
    """Fraction of each pixel the shape covers, float32 [h, w] in [0, 1]."""
    cos, sin = np.cos(place.angle), np.sin(place.angle)
    stretch = np.array([place.aspect**0.5, place.aspect**-0.5]) * place.radius
    rotation = np.array([[cos, -sin], [sin, cos]])
    scale = SUPERSAMPLE * (1 << _SHIFT)
    canvas = np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE), np.uint8)
    for contours, value in passes:
        pixels = [
            np.round(((c * stretch) @ rotation.T + [place.cx, place.cy]) * scale).astype(np.int32) for c in contours
        ]
        cv2.fillPoly(canvas, pixels, 255 if value else 0, lineType=cv2.LINE_8, shift=_SHIFT)
    small = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0
