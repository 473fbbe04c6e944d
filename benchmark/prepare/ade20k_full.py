"""ADE20K-Full (card ade847): the validation images of ADE20K_2021_17_01.zip, as CAT-Seg prepares them.

The facts of KU-CVLAB/CAT-Seg@6d3a188 datasets/prepare_ade20k_full.py (from facebookresearch/MaskFormer):
entry i of ADE20K_2021_17_01/index_ade20k.pkl is the image <folder[i]>/<filename[i]>, a validation image
when the filename's second "_" field is "val", with its class mask in <stem>_seg.png (RGB: R // 10 * 256 + G).
An image whose short side exceeds 512 shrinks to a short side of 512 and a long side of
round(long / short * 512): OpenCV bilinear on the image, nearest on the class mask. The mask goes through
ade20k_full_labels.yaml (id -> trainId; any other value is void, 65535) into a 16-bit TIFF,
annotations_detectron2/validation/<stem>.tif. The image is written to images_detectron2/validation/<filename>
re-encoded by PIL as a JPEG at PIL's default quality (75), resized or not, as CAT-Seg's
Image.fromarray(img).save(path) does: the zip's own JPEG bytes are never copied. Nothing else is written.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import io
import pickle
from functools import cache
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from benchmark.errors import DataError
from benchmark.prepare.archive import Source, safe_member_name
from benchmark.prepare.jobs import Job
from benchmark.prepare.labels import encode_tiff, load_lut
from benchmark.prepare.preparer import Part, Preparer

ROOT = "ADE20K_2021_17_01/"
INDEX = f"{ROOT}index_ade20k.pkl"
IMAGES = f"{ROOT}images_detectron2/validation/"
LABELS = f"{ROOT}annotations_detectron2/validation/"
SHORT_SIDE = 512
VOID = 65535

PART = Part(
    key="ade20k_full",
    download="ADE20K_2021_17_01.zip",
    prefix=ROOT,
    suffix="index_ade20k.pkl",
    folders=(".", ".."),
)

def _latin1(text: str, encoding: str) -> bytes:
    """How protocol-2 pickles store bytes: _codecs.encode(text, "latin1"); no other codec is looked up."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"it encodes bytes with the {encoding!r} codec, which an index never does")
    return codecs.encode(text, "latin1")


_ARRAY = np.arange(2)
# The globals a pickled dict of lists, strings and numpy arrays needs (numpy 1.x and 2.x module names).
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY.__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY.__reduce__()[0],
    ("numpy.core.multiarray", "scalar"): np.int64(0).__reduce__()[0],
    ("numpy._core.multiarray", "scalar"): np.int64(0).__reduce__()[0],
    ("numpy.core.numeric", "_frombuffer"): _ARRAY.__reduce_ex__(5)[0],
    ("numpy._core.numeric", "_frombuffer"): _ARRAY.__reduce_ex__(5)[0],
    ("_codecs", "encode"): _latin1,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{(module, name): getattr(builtins, name)
       for module in ("builtins", "__builtin__") for name in ("set", "frozenset", "bytearray", "complex")},
}


class _IndexUnpickler(pickle.Unpickler):
    """Builds containers, strings, numbers and numpy arrays; any other global is refused, never imported."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which an index never holds") from None


def _not_the_index(source: Source, why: str) -> DataError:
    return DataError(
        f"{source.path}: {INDEX} is not the ADE20K-Full index (a pickled dict whose 'folder' and 'filename' "
        f"lists name every image): {why}; {source.spec.remedy}"
    )


def read_index(source: Source, members: set[str]) -> tuple[list[str], list[str]]:
    """The index's folder and filename lists, read without running anything the pickle names."""
    if INDEX not in members:
        raise DataError(f"{source.path}: holds no {INDEX}; not the ADE20K_2021_17_01 download: {source.spec.remedy}")
    data = source.read(INDEX)
    try:
        index = _IndexUnpickler(io.BytesIO(data)).load()
    except Exception as error:  # a malformed pickle can raise nearly anything; none of it may escape as a crash
        raise _not_the_index(source, f"{type(error).__name__}: {error}") from None
    if not isinstance(index, dict) or "folder" not in index or "filename" not in index:
        keys = sorted(map(str, index))[:8] if isinstance(index, dict) else None
        raise _not_the_index(source, f"it holds a {type(index).__name__}" + (f" with keys {keys}" if keys else ""))
    folders, files = index["folder"], index["filename"]
    if not all(isinstance(v, (list, tuple, np.ndarray)) for v in (folders, files)) or len(folders) != len(files):
        raise _not_the_index(source, "'folder' and 'filename' are not lists of the same length")
    if not all(isinstance(v, str) for v in (*folders, *files)):
        raise _not_the_index(source, "'folder' and 'filename' hold entries that are not strings")
    return [str(v) for v in folders], [str(v) for v in files]


def validation_entries(source: Source) -> list[tuple[str, str]]:
    """(image member, file name) of every validation entry of the index, in index order."""
    members = set(source.names(ROOT))
    folders, files = read_index(source, members)
    remedy = source.spec.remedy
    entries, seen = [], {}
    for folder, file_name in zip(folders, files, strict=True):
        parts = file_name.split("_")
        if len(parts) < 2 or parts[1] != "val":
            continue
        if PurePosixPath(file_name).name != file_name or not file_name.endswith(".jpg"):
            raise _not_the_index(source, f"validation entry {file_name!r} is not a plain *.jpg file name")
        if file_name in seen:
            raise _not_the_index(source, f"{file_name} is listed twice ({seen[file_name]} and {folder})")
        seen[file_name] = folder
        image = safe_member_name(f"{folder}/{file_name}", source.path, remedy)
        for member in (image, seg_member(image)):
            if member not in members:
                raise DataError(
                    f"{source.path}: {member} is missing, though {INDEX} lists it; the download is partial or "
                    f"not the official one: {remedy}"
                )
        entries.append((image, file_name))
    return entries


def seg_member(image: str) -> str:
    return f"{image[:-len('.jpg')]}_seg.png"


def target_size(height: int, width: int) -> tuple[int, int] | None:
    """(height, width) after shrinking the short side to SHORT_SIDE; None when the short side is not above it."""
    if width >= height > SHORT_SIDE:
        return SHORT_SIDE, round(width / float(height) * SHORT_SIDE)
    if height >= width > SHORT_SIDE:
        return round(height / float(width) * SHORT_SIDE), SHORT_SIDE
    return None


@cache
def train_id_table() -> np.ndarray:
    """uint16 lookup for every class-mask value (0 .. 25 * 256 + 255): its trainId, VOID where the table has none."""
    lut = load_lut("ade20k_full_labels", "trainId")
    table = np.full(26 * 256, VOID, dtype=np.uint16)
    known = np.flatnonzero(lut[: table.size] >= 0)
    table[known] = lut[known]
    return table


def _decode(source: Source, name: str, header_only: bool = False) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(source.read(name)))
        if not header_only:
            image.load()
        return image
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{source.path}: {name} cannot be decoded ({error}); {source.spec.remedy}") from None


def validation_image(sources: dict[str, Source], image: str) -> bytes:
    """Job action: the image, shrunk where its short side exceeds 512, re-encoded as PIL's default JPEG."""
    import cv2  # here, not at the top: every `zsbench` command imports the preparers

    source = sources[PART.key]
    pixels = np.asarray(_decode(source, image))
    if pixels.dtype != np.uint8:
        raise DataError(f"{source.path}: {image} is not an 8-bit image ({pixels.dtype}); {source.spec.remedy}")
    size = target_size(*pixels.shape[:2])
    if size is not None:
        pixels = cv2.resize(pixels, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels).save(buffer, format="JPEG")
    except (OSError, ValueError) as error:
        raise DataError(f"{source.path}: {image} cannot be written as a JPEG ({error}); {source.spec.remedy}") from None
    return buffer.getvalue()


def validation_label(sources: dict[str, Source], image: str) -> bytes:
    """Job action: the image's class mask as trainIds, shrunk as the image is, in a 16-bit TIFF."""
    import cv2

    source = sources[PART.key]
    seg = seg_member(image)
    width, height = _decode(source, image, header_only=True).size
    decoded = _decode(source, seg)
    if decoded.mode not in ("RGB", "RGBA"):
        raise DataError(f"{source.path}: {seg} has mode {decoded.mode}, expected an RGB class mask; "
                        f"{source.spec.remedy}")
    colours = np.asarray(decoded)
    if colours.shape[:2] != (height, width):
        raise DataError(f"{source.path}: {seg} is {colours.shape[1]}x{colours.shape[0]}, its image {width}x{height}; "
                        f"{source.spec.remedy}")
    mask = (colours[..., 0] // 10).astype(np.int32) * 256 + colours[..., 1].astype(np.int32)
    size = target_size(height, width)
    if size is not None:
        mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return encode_tiff(train_id_table()[mask])


def plan(sources: dict[str, Source]) -> list[Job]:
    jobs = []
    for image, file_name in validation_entries(sources[PART.key]):
        jobs.append(Job(f"{IMAGES}{file_name}", validation_image, (image,)))
        jobs.append(Job(f"{LABELS}{file_name[:-len('.jpg')]}.tif", validation_label, (image,)))
    return jobs


PREPARER = Preparer(
    name="ade20k_full",
    title="ADE20K-Full (ADE20K_2021_17_01) validation, 847 classes, as CAT-Seg prepares it",
    cards=("ade847",),
    parts=(PART,),
    plan=plan,
)
