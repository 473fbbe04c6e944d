"""COCO-Stuff 164k val (cards coco_stuff171, coco_object, coco_object_strict), from val alone.

Images from val2017.zip; the raw stuffthingmaps of val2017 are kept as they are and converted
through coco_stuff_labels.yaml into *_labelTrainIds.png (mmsegmentation's coco_stuff164k
converter), *_instanceTrainIds.png (the COCO-Object converter TCL ships, unlabeled -> 0) and
*_instanceTrainIdsStrict.png (the same with unlabeled kept as 255). Unlike both reference
converters, the train maps are neither needed nor converted.
"""

from __future__ import annotations

import re

from benchmark.prepare.archive import Source
from benchmark.prepare.jobs import Job, merge_jobs
from benchmark.prepare.labels import remap_member
from benchmark.prepare.preparer import Part, Preparer, copy_jobs

ROOT = "coco_stuff164k/"
IMAGES = Part(
    key="images",
    download="val2017.zip",
    prefix="val2017/",
    suffix=".jpg",
    folders=(".", "images", f"{ROOT}images"),
)
LABELS = Part(
    key="labels",
    download="stuffthingmaps_trainval2017.zip",
    prefix="val2017/",
    suffix=".png",
    folders=(".", "annotations", f"{ROOT}annotations", "stuffthingmaps_trainval2017"),
)
_IMAGE = re.compile(r"val2017/\d+\.jpg")
_LABEL = re.compile(r"val2017/\d+\.png")
# output suffix -> column of coco_stuff_labels.yaml
CONVERSIONS = {
    "_labelTrainIds.png": "coco_stuff171",
    "_instanceTrainIds.png": "coco_object",
    "_instanceTrainIdsStrict.png": "coco_object_strict",
}


def plan(sources: dict[str, Source]) -> list[Job]:
    images = copy_jobs(sources["images"], "images", "val2017/", f"{ROOT}images/val2017/", keep=_IMAGE.fullmatch)
    raw = copy_jobs(sources["labels"], "labels", "val2017/", f"{ROOT}annotations/val2017/", keep=_LABEL.fullmatch)
    converted = [
        Job(f"{ROOT}annotations/{name[:-len('.png')]}{suffix}", remap_member,
            ("labels", name, "coco_stuff_labels", column))
        for name in sources["labels"].names(LABELS.prefix)
        if _LABEL.fullmatch(name)
        for suffix, column in CONVERSIONS.items()
    ]
    return merge_jobs(images, raw, converted)


PREPARER = Preparer(
    name="coco_stuff164k",
    title="COCO-Stuff 164k val2017: COCO-Stuff 171 and COCO-Object labels",
    cards=("coco_stuff171", "coco_object", "coco_object_strict"),
    parts=(IMAGES, LABELS),
    plan=plan,
)
