"""PASCAL Context (cards context60, context59), without the Detail API.

VOCdevkit/VOC2010 from the VOC 2010 trainval tar, as it is, plus what mmsegmentation's
tools/dataset_converters/pascal_context.py makes from trainval_merged.json: for every image of
phase train or val, SegmentationClassContext/<stem>.png (each annotation's RLE mask painted with
its category id in file order, so later ones win, then mapped to 0-59 by context_labels.yaml), and
ImageSets/SegmentationContext/{train,val}.txt (the stems, sorted).
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from benchmark.errors import DataError
from benchmark.prepare.archive import Source
from benchmark.prepare.jobs import Job, merge_jobs
from benchmark.prepare.labels import apply_lut, encode_png
from benchmark.prepare.preparer import Part, Preparer, copy_jobs
from benchmark.prepare.rle import decode_mask

ROOT = "VOCdevkit/VOC2010/"
PHASES = ("train", "val")

VOC2010 = Part(
    key="voc2010",
    download="VOCtrainval_03-May-2010.tar",
    prefix=f"{ROOT}JPEGImages/",
    suffix=".jpg",
    folders=(".", "..", "../.."),
)
ANNOTATIONS = Part(
    key="annotations",
    download="trainval_merged.json",
    prefix="",
    suffix=".json",
    folders=("trainval_merged.json", f"{ROOT}trainval_merged.json", "VOC2010/trainval_merged.json"),
    single_file=True,
)


def context_label(sources: dict[str, Source], height: int, width: int,
                  annotations: tuple[tuple[int, dict[str, Any]], ...], where: str) -> bytes:
    """Job action: one image's label PNG from its (category id, RLE mask) annotations."""
    mask = np.zeros((height, width), dtype=np.int64)
    for category_id, segmentation in annotations:
        painted = decode_mask(segmentation, where)
        if painted.shape != mask.shape:
            raise DataError(f"{where}: an RLE mask is {painted.shape}, the image {mask.shape}; the annotation "
                            "file is corrupt")
        mask[painted] = category_id
    return encode_png(apply_lut(mask, "context_labels", "label", where))


def split_file(sources: dict[str, Source], stems: tuple[str, ...]) -> bytes:
    """Job action: a split file, one stem a line."""
    return "".join(f"{stem}\n" for stem in stems).encode()


def _label_jobs(annotations: Source) -> list[Job]:
    """The label and split-file jobs from trainval_merged.json, read as the Detail API does."""
    try:
        content = json.loads(annotations.read(annotations.path.name))
        by_id = {entry["id"]: entry for entry in content["annos_segmentation"]}
        per_image: dict[Any, list[tuple[int, dict[str, Any]]]] = {}
        for entry in by_id.values():
            per_image.setdefault(entry["image_id"], []).append((int(entry["category_id"]), entry["segmentation"]))
        labels, stems = [], {phase: [] for phase in PHASES}
        for image in content["images"]:
            if image.get("phase") not in PHASES:
                continue
            file_name = str(image["file_name"])
            if PurePosixPath(file_name).name != file_name or file_name in ("", ".", ".."):
                raise ValueError(f"image file_name {file_name!r} is not a plain file name")
            stems[image["phase"]].append(PurePosixPath(file_name).stem)
            labels.append(Job(
                f"{ROOT}SegmentationClassContext/{file_name.replace('jpg', 'png')}", context_label,
                (int(image["height"]), int(image["width"]), tuple(per_image.get(image["image_id"], ())),
                 f"{annotations.path}: image {file_name}"),
            ))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(
            f"{annotations.path}: not the PASCAL Context trainval_merged.json (PASCAL in Detail format): "
            f"{error!r}; {annotations.spec.remedy}"
        ) from None
    splits = [Job(f"{ROOT}ImageSets/SegmentationContext/{phase}.txt", split_file, (tuple(sorted(stems[phase])),))
              for phase in PHASES]
    return labels + splits


def plan(sources: dict[str, Source]) -> list[Job]:
    originals = copy_jobs(sources["voc2010"], "voc2010", ROOT, ROOT)
    return merge_jobs(originals, _label_jobs(sources["annotations"]))


PREPARER = Preparer(
    name="pascal_context",
    title="PASCAL Context (VOC 2010 + trainval_merged.json), 59 classes and background",
    cards=("context60", "context59"),
    parts=(VOC2010, ANNOTATIONS),
    plan=plan,
)
