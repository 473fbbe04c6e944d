"""COCO run-length encoded masks (the format of PASCAL in Detail's trainval_merged.json).

A mask of size [h, w] is a list of run lengths over its pixels in column-major order, starting
with a run of zeros. The compressed form stores each count as base-32 digits in ASCII (offset
48, low digit first, 0x20 = more digits follow, 0x10 in the last digit = negative); from the
fourth count on, a count is stored as the difference to the count two places before it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmark.errors import DataError


def decode_counts(counts: str, where: str) -> np.ndarray:
    """Run lengths (int64) from the compressed string."""
    try:
        codes = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        raise DataError(f"{where}: RLE counts hold non-ASCII characters; the annotation file is corrupt") from None
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (codes < 0).any() or (codes > 63).any() or codes[-1] & 0x20:
        raise DataError(f"{where}: RLE counts string is malformed; the annotation file is corrupt")
    ends = np.flatnonzero((codes & 0x20) == 0)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    value_of = np.repeat(np.arange(ends.size), lengths)
    digit = np.arange(codes.size) - starts[value_of]
    values = np.zeros(ends.size, dtype=np.int64)
    np.add.at(values, value_of, (codes & 0x1F) << (5 * digit))
    negative = (codes[ends] & 0x10) != 0
    values[negative] |= np.left_shift(np.int64(-1), 5 * lengths[negative])
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    return values


def decode_mask(segmentation: dict[str, Any], where: str) -> np.ndarray:
    """Boolean HxW mask from {"size": [h, w], "counts": str (compressed) or list (plain)}."""
    try:
        height, width = (int(v) for v in segmentation["size"])
        raw = segmentation["counts"]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: segmentation is not an RLE mask with 'size' and 'counts'") from None
    counts = decode_counts(raw, where) if isinstance(raw, str) else np.asarray(raw, dtype=np.int64)
    if (counts < 0).any() or counts.sum() != height * width:
        raise DataError(
            f"{where}: RLE counts cover {int(counts.sum())} pixels, the mask has {height}x{width}; "
            "the annotation file is corrupt"
        )
    flat = np.repeat(np.arange(counts.size) % 2 == 1, counts)
    return flat.reshape(width, height).T
