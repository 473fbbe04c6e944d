"""Procedural stuff textures: ``TEXTURES[name](rng, h, w)`` -> float32 RGB [h, w, 3] on a 0..255 scale."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Texture = Callable[[np.random.Generator, int, int], np.ndarray]


def value_noise(rng: np.random.Generator, h: int, w: int, cell_y: float, cell_x: float | None = None) -> np.ndarray:
    """Smooth noise in [0, 1] with features about ``cell`` pixels apart."""
    cell_x = cell_y if cell_x is None else cell_x
    gh = max(2, int(round(h / cell_y)) + 1)
    gw = max(2, int(round(w / cell_x)) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def fbm(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3, stretch: float = 1.0) -> np.ndarray:
    """Fractal sum of value noise; ``stretch`` > 1 elongates features horizontally."""
    total = np.zeros((h, w), np.float32)
    weight_sum = 0.0
    for octave in range(octaves):
        weight = 0.5**octave
        size = max(cell / 2**octave, 1.0)
        total += weight * value_noise(rng, h, w, size, size * stretch)
        weight_sum += weight
    return total / weight_sum


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], spread: float) -> np.ndarray:
    return np.asarray(rgb, np.float32) + rng.uniform(-spread, spread, 3).astype(np.float32)


def _grain(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    return rng.normal(0.0, sigma, (h, w, 1)).astype(np.float32)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w]
    return ys.astype(np.float32), xs.astype(np.float32)


def sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    top = _jitter(rng, (75, 135, 225), 20)
    bottom = _jitter(rng, (170, 205, 245), 15)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None] * rng.uniform(0.5, 1.0)
    image = top * (1 - t) + bottom * t
    clouds = fbm(rng, h, w, cell=rng.uniform(14, 32), octaves=3, stretch=rng.uniform(1.5, 3.0))
    threshold = rng.uniform(0.5, 0.8)
    alpha = np.clip((clouds - threshold) / 0.15, 0, 1)[..., None] * rng.uniform(0.6, 1.0)
    white = _jitter(rng, (245, 246, 250), 5)
    return image * (1 - alpha) + white * alpha + _grain(rng, h, w, 1.5)


def water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = _jitter(rng, (25, 90, 150), 22)
    ys, xs = _grid(h, w)
    wavelength = rng.uniform(4, 9)
    warp = fbm(rng, h, w, cell=rng.uniform(10, 22), octaves=2, stretch=2.0)
    waves = np.sin(2 * np.pi * (ys / wavelength + 1.5 * warp + xs * rng.uniform(-0.03, 0.03)))
    shade = 1 + 0.16 * waves + 0.2 * (fbm(rng, h, w, cell=24, octaves=2) - 0.5)
    glints = np.clip((waves - 0.75) / 0.25, 0, 1) * value_noise(rng, h, w, 6, 12)
    return base * shade[..., None] + 110 * glints[..., None] + _grain(rng, h, w, 2)


def grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = _jitter(rng, (70, 140, 45), 20)
    blades = value_noise(rng, h, w, cell_y=rng.uniform(4, 8), cell_x=rng.uniform(1.0, 1.6))
    patches = fbm(rng, h, w, cell=rng.uniform(14, 28), octaves=2)[..., None]
    tint = _jitter(rng, (150, 165, 60), 15) if rng.random() < 0.5 else _jitter(rng, (30, 85, 25), 10)
    image = base * (1 - 0.5 * patches) + tint * 0.5 * patches
    return image * (0.65 + 0.7 * blades)[..., None] + _grain(rng, h, w, 4)


def sand(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = _jitter(rng, (215, 188, 135), 15)
    ys, xs = _grid(h, w)
    angle = rng.uniform(0, np.pi)
    warp = fbm(rng, h, w, cell=rng.uniform(12, 24), octaves=2)
    along = xs * np.cos(angle) + ys * np.sin(angle)
    ripples = np.sin(2 * np.pi * along / rng.uniform(5, 10) + 4 * warp)
    shading = 10 * ripples + 20 * (fbm(rng, h, w, cell=30, octaves=2) - 0.5)
    return base + shading[..., None] + _grain(rng, h, w, 9)


def snow(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = _jitter(rng, (242, 244, 248), 5)
    bumps = value_noise(rng, h, w, rng.uniform(3, 6))[..., None]
    drifts = fbm(rng, h, w, cell=rng.uniform(18, 40), octaves=2)[..., None]
    shadow = _jitter(rng, (60, 50, 25), 8)
    image = base - shadow * (0.6 * drifts * rng.uniform(0.5, 1.0) + 0.35 * bumps)
    sparkles = (rng.random((h, w, 1)) < 0.02) * 30.0
    return image + sparkles + _grain(rng, h, w, 4)


def rock(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    grey = rng.uniform(95, 150)
    base = np.float32(grey) + rng.uniform(-12, 12, 3).astype(np.float32)
    shade = 0.6 + 0.8 * fbm(rng, h, w, cell=rng.uniform(6, 14), octaves=4)
    ridges = fbm(rng, h, w, cell=rng.uniform(10, 22), octaves=2)
    cracks = np.clip(1 - np.abs(ridges - 0.5) / 0.03, 0, 1)
    image = base * (shade * (1 - 0.55 * cracks))[..., None]
    return image + _grain(rng, h, w, 6)


def brick(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    brick_w = int(rng.integers(9, 17))
    brick_h = max(4, int(round(brick_w * rng.uniform(0.4, 0.55))))
    ys, xs = np.mgrid[0:h, 0:w]
    ys = ys + int(rng.integers(0, brick_h))
    rows = ys // brick_h
    xs = xs + (rows % 2) * (brick_w // 2) + int(rng.integers(0, brick_w))
    cols = xs // brick_w
    mortar = ((ys % brick_h) < 1) | ((xs % brick_w) < 1)
    tints = rng.uniform(0.8, 1.15, (int(rows.max()) + 1, int(cols.max()) + 1)).astype(np.float32)
    colour = _jitter(rng, (165, 68, 48), 22)
    image = colour * tints[rows, cols][..., None]
    image = np.where(mortar[..., None], _jitter(rng, (190, 185, 175), 15), image)
    dirt = 0.85 + 0.3 * fbm(rng, h, w, cell=16, octaves=2)
    return image * dirt[..., None] + _grain(rng, h, w, 6)


def wood(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    vertical = rng.random() < 0.5
    length, across = (h, w) if vertical else (w, h)
    plank = rng.uniform(10, 20)
    v = np.arange(across, dtype=np.float32)[:, None] + rng.uniform(0, plank)
    grain = value_noise(rng, across, length, cell_y=rng.uniform(1.5, 3), cell_x=rng.uniform(15, 30))
    warp = fbm(rng, across, length, cell=20, octaves=2)
    rings = np.sin(2 * np.pi * (v / rng.uniform(2.5, 5) + 3 * warp))
    index = (v // plank).astype(np.int64)
    tints = rng.uniform(0.8, 1.2, int(index.max()) + 1).astype(np.float32)
    shade = (1 + 0.12 * rings + 0.25 * (grain - 0.5)) * tints[index]
    shade = np.where((v % plank) < 1, 0.55, shade)
    if vertical:
        shade = shade.T
    base = _jitter(rng, (150, 100, 55), 12) * rng.uniform(0.7, 1.2)
    return base * shade[..., None] + _grain(rng, h, w, 3)


TEXTURES: dict[str, Texture] = {
    "sky": sky,
    "water": water,
    "grass": grass,
    "sand": sand,
    "snow": snow,
    "rock": rock,
    "brick": brick,
    "wood": wood,
}
