"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, "Single-Stage Semantic Segmentation
from Image Labels", CVPR 2020; reference code visinf/1-stage-wseg models/mods/pamr.py).

Each pixel's mask becomes a weighted average of its 8 neighbours at every dilation d (offsets
-d, 0, +d per axis, replicate padding at the border). The weights come from the image alone:

    a_p = mean over image channels of  -|I - I_p| / (1e-8 + 0.1 * sigma)
    w_p = softmax over all neighbours p of a_p

where sigma is the per-channel standard deviation (unbiased) of the 9 pixels of the 3x3
neighbourhood, pooled over all dilations. The averaging is repeated `steps` times. The
weights do not depend on the mask, so PAMR is linear in it: refining scaled logits gives the
scaled refined logits.

This version sums neighbour by neighbour instead of stacking all of them, so memory stays at a
few copies of the mask whatever the number of dilations.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


@dataclass(frozen=True)
class PamrSettings:
    steps: int = 10
    dilations: tuple[int, ...] = (8, 16)


def pamr_settings(value: Any, default: PamrSettings = PamrSettings()) -> PamrSettings | None:  # noqa: B008
    """A method's `pamr` setting: None/False: off; True: `default`; a mapping {steps, dilations} over
    `default` (0 steps: off). Raises ValueError for anything else."""
    if value is None or value is False:
        return None
    if value is True:
        return default
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"steps", "dilations"})
        if unknown:
            raise ValueError(f"pamr settings take steps and dilations, not {unknown}")
        steps = int(value.get("steps", default.steps))
        dilations = tuple(int(d) for d in value.get("dilations", default.dilations))
        return PamrSettings(steps, dilations) if steps > 0 else None
    raise ValueError(f"pamr must be null, a boolean or a mapping {{steps, dilations}}, got {value!r}")


def _shifted(padded: Tensor, pad: int, dy: int, dx: int, height: int, width: int) -> Tensor:
    """The tensor's values at (y + dy, x + dx), read from a replicate-padded copy."""
    return padded[..., pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def _neighbours(x: Tensor, dilations: Sequence[int], with_centre: bool = False) -> Iterator[Tensor]:
    height, width = x.shape[-2:]
    pad = max(dilations)
    padded = F.pad(x, [pad] * 4, mode="replicate")
    offsets = ((0, 0), *NEIGHBOUR_OFFSETS) if with_centre else NEIGHBOUR_OFFSETS
    for d in dilations:
        for dy, dx in offsets:
            yield _shifted(padded, pad, dy * d, dx * d, height, width)


def _local_std(image: Tensor, dilations: Sequence[int]) -> Tensor:
    """Unbiased std over the 3x3 neighbourhood at every dilation (the centre once per dilation)."""
    count = 9 * len(dilations)
    mean = sum(_neighbours(image, dilations, with_centre=True)) / count
    squares = sum((value - mean) ** 2 for value in _neighbours(image, dilations, with_centre=True))
    return (squares / (count - 1)).sqrt()


def pamr_affinity(image: Tensor, dilations: Sequence[int]) -> Tensor:
    """image [B, K, H, W] -> neighbour weights [B, 8 * len(dilations), H, W], summing to 1."""
    scale = 1e-8 + 0.1 * _local_std(image, dilations)
    affinities = [(-(image - neighbour).abs() / scale).mean(dim=1) for neighbour in _neighbours(image, dilations)]
    return torch.stack(affinities, dim=1).softmax(dim=1)


def pamr(image: Tensor, mask: Tensor, steps: int = 10, dilations: Sequence[int] = (8, 16)) -> Tensor:
    """Refines mask [B, C, h, w] with image [B, K, H, W]; the mask is first resized to H x W
    (bilinear, align_corners=True, as the reference does). Computed in float32."""
    dilations = tuple(int(d) for d in dilations)
    out_dtype = mask.dtype
    image, mask = image.float(), mask.float()
    if mask.shape[-2:] != image.shape[-2:]:
        mask = F.interpolate(mask, size=image.shape[-2:], mode="bilinear", align_corners=True)
    weights = pamr_affinity(image, dilations)
    for _ in range(steps):
        refined = torch.zeros_like(mask)
        for index, neighbour in enumerate(_neighbours(mask, dilations)):
            refined += weights[:, index:index + 1] * neighbour
        mask = refined
    return mask.to(out_dtype)
