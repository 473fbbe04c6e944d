"""PASCAL Context with all 459 classes (card context459), from the full annotation's trainval.tar.gz.

VOCdevkit/VOC2010 from the VOC 2010 trainval tar, as context.py copies it, plus, for every image of the val
split, annotations_detectron2/pc459_val/<stem>.tif: the LabelMap of trainval/<stem>.mat minus one as uint16,
so labels.txt's classes 1-459 become 0-458 and 0 (unlabelled) wraps to 65535, the void value
(KU-CVLAB/CAT-Seg@6d3a188 datasets/prepare_pascal_context_459.py). labels.txt's 459 names must be the
context459 card's classes, in order.

The val split: CAT-Seg reads pascalcontext_val.txt, which no official download holds (CAT-Seg issue #47
asks where it comes from). PASCAL Context annotates the 10,103 images of VOC 2010 trainval and keeps VOC 2010's
split of them, 4,998 train and 5,105 val (dataset-ninja/PASCAL-context SUMMARY.md; converters of the full
annotation pair trainval/*.mat with VOC2010 ImageSets/Main/{train,val}.txt), so ImageSets/SegmentationContext/
val.txt is written from the VOC 2010 tar's ImageSets/Main/val.txt: its stems sorted, one a line, the form
context.py writes from trainval_merged.json's val phase. A split file already in place (from
`prepare context59`) must be that file, or the run stops.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from benchmark.errors import DataError
from benchmark.prepare.archive import Source
from benchmark.prepare.context import ROOT, VOC2010, split_file
from benchmark.prepare.jobs import Job, merge_jobs
from benchmark.prepare.labels import encode_tiff
from benchmark.prepare.preparer import Part, Preparer, copy_jobs

CARD = "context459"
NUM_CLASSES = 459
VAL_LIST = f"{ROOT}ImageSets/Main/val.txt"
SPLIT = f"{ROOT}ImageSets/SegmentationContext/val.txt"
LABELS = f"{ROOT}annotations_detectron2/pc459_val/"

TRAINVAL = Part(
    key="trainval",
    download="trainval.tar.gz",
    prefix="trainval/",
    suffix=".mat",
    folders=(".", ROOT, "VOC2010", ".."),
)
_STEM = re.compile(r"[A-Za-z0-9_-]+")


def val_stems(voc: Source) -> tuple[str, ...]:
    """The VOC 2010 main val set's stems, sorted."""
    if VAL_LIST not in voc.names(VAL_LIST.rpartition("/")[0]):
        raise DataError(f"{voc.path}: holds no {VAL_LIST}; not the VOC 2010 trainval tar: {voc.spec.remedy}")
    try:
        stems = [line.strip() for line in voc.read(VAL_LIST).decode("ascii").splitlines() if line.strip()]
    except UnicodeDecodeError:
        stems = None
    if not stems or not all(_STEM.fullmatch(stem) for stem in stems):
        raise DataError(f"{voc.path}: {VAL_LIST} is not a list of image stems; {voc.spec.remedy}")
    return tuple(sorted(set(stems)))


def check_class_names(trainval: Source, members: set[str]) -> None:
    """labels.txt ("k: name" lines) must name the card's classes 1..459 in order."""
    from benchmark.data import load_card

    expected = load_card(CARD).classes
    where = f"{trainval.path}: labels.txt"
    if "labels.txt" not in members:
        raise DataError(f"{trainval.path}: holds no labels.txt; not the PASCAL Context full annotation: "
                        f"{trainval.spec.remedy}")
    names = {}
    try:
        for line in trainval.read("labels.txt").decode("utf-8").splitlines():
            if ":" in line:
                key, name = line.split(":", 1)
                names[int(key)] = name.strip()
    except (UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{where}: not lines of 'k: name' ({error}); {trainval.spec.remedy}") from None
    if sorted(names) != list(range(1, NUM_CLASSES + 1)):
        raise DataError(f"{where}: numbers classes {min(names, default=None)}..{max(names, default=None)} "
                        f"({len(names)} of them), expected 1..{NUM_CLASSES}; not the PASCAL Context full "
                        f"annotation: {trainval.spec.remedy}")
    for k, name in enumerate(expected, start=1):
        if names[k] != name:
            raise DataError(f"{where}: class {k} is {names[k]!r}, the {CARD} card ({CARD}.yaml) says {name!r}; "
                            f"not the labels the card was written from: {trainval.spec.remedy}")


def _image_size(voc: Source, stem: str) -> tuple[int, int]:
    name = f"{ROOT}JPEGImages/{stem}.jpg"
    try:
        with Image.open(io.BytesIO(voc.read(name))) as image:
            return image.size
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{voc.path}: {name} cannot be decoded ({error}); {voc.spec.remedy}") from None


def context459_label(sources: dict[str, Source], stem: str) -> bytes:
    """Job action: trainval/<stem>.mat's LabelMap minus one (0 wraps to 65535) as a 16-bit TIFF."""
    import scipy.io  # here, not at the top: every `zsbench` command imports the preparers

    trainval = sources[TRAINVAL.key]
    name = f"trainval/{stem}.mat"
    where, remedy = f"{trainval.path}: {name}", trainval.spec.remedy
    data = trainval.read(name)
    try:
        content = scipy.io.loadmat(io.BytesIO(data))
    except Exception as error:  # scipy raises many kinds on a malformed file; each is a corrupt download here
        raise DataError(f"{where}: not a readable MATLAB file ({type(error).__name__}: {error}); {remedy}") from None
    label_map = content.get("LabelMap")
    if not isinstance(label_map, np.ndarray):
        raise DataError(f"{where}: holds no LabelMap; not the PASCAL Context full annotation: {remedy}")
    if label_map.ndim != 2 or label_map.dtype.kind not in "iu":
        raise DataError(f"{where}: LabelMap is {label_map.dtype} of shape {label_map.shape}, expected a 2-D integer "
                        f"map; {remedy}")
    values = label_map.astype(np.int64)
    bad = (values < 0) | (values > NUM_CLASSES)
    if bad.any():
        raise DataError(f"{where}: LabelMap values {np.unique(values[bad])[:10].tolist()} are outside "
                        f"0..{NUM_CLASSES}; {remedy}")
    width, height = _image_size(sources[VOC2010.key], stem)
    if values.shape != (height, width):
        raise DataError(f"{where}: LabelMap is {values.shape[1]}x{values.shape[0]}, the image {stem}.jpg "
                        f"{width}x{height}; {remedy}")
    return encode_tiff((values - 1) % 65536)


def plan(sources: dict[str, Source]) -> list[Job]:
    voc, trainval = sources[VOC2010.key], sources[TRAINVAL.key]
    mats = set(trainval.names())
    check_class_names(trainval, mats)
    stems = val_stems(voc)
    images = set(voc.names(f"{ROOT}JPEGImages/"))
    for stem in stems:
        if f"{ROOT}JPEGImages/{stem}.jpg" not in images:
            raise DataError(f"{voc.path}: {ROOT}JPEGImages/{stem}.jpg of the val split is missing; {voc.spec.remedy}")
        if f"trainval/{stem}.mat" not in mats:
            raise DataError(f"{trainval.path}: trainval/{stem}.mat of the val split is missing; the download is "
                            f"partial or not the PASCAL Context full annotation: {trainval.spec.remedy}")
    originals = copy_jobs(voc, VOC2010.key, ROOT, ROOT)
    labels = [Job(f"{LABELS}{stem}.tif", context459_label, (stem,)) for stem in stems]
    return merge_jobs(originals, labels, [Job(SPLIT, split_file, (stems,), exact=True)])


PREPARER = Preparer(
    name="pascal_context_full",
    title="PASCAL Context (VOC 2010 + the full annotation trainval.tar.gz), all 459 classes",
    cards=(CARD,),
    parts=(VOC2010, TRAINVAL),
    plan=plan,
)
