"""Label tables (the *_labels.yaml files beside this module) and index-PNG conversion."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from benchmark.errors import DataError

TABLES_DIR = Path(__file__).parent


@cache
def load_lut(table: str, column: str) -> np.ndarray:
    """Lookup array: input value -> column's value; -1 where the table has no value."""
    path = TABLES_DIR / f"{table}.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    key, rows = raw["key"], raw["rows"]
    lut = np.full(max(256, max(row[key] for row in rows) + 1), -1, dtype=np.int32)
    for row in rows:
        if row[column] is not None:
            lut[row[key]] = row[column]
    return lut


def apply_lut(values: np.ndarray, table: str, column: str, where: str) -> np.ndarray:
    """uint8 labels; a value the table does not know is an error naming where it was found."""
    lut = load_lut(table, column)
    known = (values >= 0) & (values < len(lut))
    mapped = np.where(known, lut[np.clip(values, 0, len(lut) - 1)], -1)
    if (mapped < 0).any():
        bad = np.unique(values[mapped < 0])[:10].tolist()
        raise DataError(
            f"{where}: label values {bad} are not in {table}.yaml ({column}); "
            "this is not an official label file, or it was converted already"
        )
    return mapped.astype(np.uint8)


def decode_index_png(data: bytes, where: str) -> np.ndarray:
    """The label image's index values (palette indices for a P image), HxW."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ("L", "P"):
                raise DataError(f"{where}: label image has mode {image.mode}, expected an 8-bit index PNG")
            return np.array(image)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{where}: label image cannot be decoded ({error}); the download is corrupt") from None


def _encoded(labels: np.ndarray, dtype: type, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(labels.astype(dtype)).save(buffer, format=image_format)
    return buffer.getvalue()


def encode_png(labels: np.ndarray) -> bytes:
    """A single-channel (mode L) PNG, as mmsegmentation's converters save them."""
    return _encoded(labels, np.uint8, "PNG")


def encode_tiff(labels: np.ndarray) -> bytes:
    """A 16-bit single-channel TIFF (PIL mode I;16), as CAT-Seg's scripts save A-847 and PC-459 labels."""
    return _encoded(labels, np.uint16, "TIFF")


def remap_member(sources: dict, part: str, name: str, table: str, column: str) -> bytes:
    """Job action: a label member converted through a table column."""
    source = sources[part]
    where = f"{source.path}: {name}"
    return encode_png(apply_lut(decode_index_png(source.read(name), where), table, column, where))
