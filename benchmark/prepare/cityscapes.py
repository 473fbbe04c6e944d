"""Cityscapes (card cityscapes): val images and fine labels, label ids converted to train ids.

The *_gtFine_labelTrainIds.png files are the official *_gtFine_labelIds.png ones put through
cityscapesscripts' labels table (cityscapes_labels.yaml). mmsegmentation's converter redraws the
polygons (*_gtFine_polygons.json) with cityscapesscripts' json2labelImg in 'trainIds' mode
instead; the two agree wherever that drawing matches the official label-id images.
"""

from __future__ import annotations

import re

from benchmark.prepare.archive import Source
from benchmark.prepare.jobs import Job, merge_jobs
from benchmark.prepare.labels import remap_member
from benchmark.prepare.preparer import Part, Preparer, copy_jobs

IMAGES = Part(
    key="images",
    download="leftImg8bit_trainvaltest.zip",
    prefix="leftImg8bit/val/",
    suffix="_leftImg8bit.png",
    folders=(".", "cityscapes", ".."),
)
LABELS = Part(
    key="labels",
    download="gtFine_trainvaltest.zip",
    prefix="gtFine/val/",
    suffix="_gtFine_labelIds.png",
    folders=(".", "cityscapes", ".."),
)
_IMAGE = re.compile(r"leftImg8bit/val/[^/]+/[^/]+_leftImg8bit\.png")
_LABEL_FILE = re.compile(r"gtFine/val/[^/]+/[^/]+_gtFine_(color\.png|instanceIds\.png|labelIds\.png|polygons\.json)")


def plan(sources: dict[str, Source]) -> list[Job]:
    images = copy_jobs(sources["images"], "images", IMAGES.prefix, f"cityscapes/{IMAGES.prefix}",
                       keep=_IMAGE.fullmatch)
    originals = copy_jobs(sources["labels"], "labels", LABELS.prefix, f"cityscapes/{LABELS.prefix}",
                          keep=_LABEL_FILE.fullmatch)
    train_ids = [
        Job(f"cityscapes/{name.replace('_gtFine_labelIds.png', '_gtFine_labelTrainIds.png')}", remap_member,
            ("labels", name, "cityscapes_labels", "train_id"))
        for name in sources["labels"].names(LABELS.prefix)
        if name.endswith(LABELS.suffix) and _LABEL_FILE.fullmatch(name)
    ]
    return merge_jobs(images, originals, train_ids)


PREPARER = Preparer(
    name="cityscapes",
    title="Cityscapes val, fine labels as train ids",
    cards=("cityscapes",),
    parts=(IMAGES, LABELS),
    plan=plan,
)
