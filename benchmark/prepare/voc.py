"""PASCAL VOC 2012 (cards voc21, voc20): the trainval tar's VOCdevkit/VOC2012, as it is."""

from __future__ import annotations

from benchmark.prepare.archive import Source
from benchmark.prepare.jobs import Job
from benchmark.prepare.preparer import Part, Preparer, copy_jobs

ROOT = "VOCdevkit/VOC2012/"

PART = Part(
    key="voc2012",
    download="VOCtrainval_11-May-2012.tar",
    prefix=f"{ROOT}ImageSets/Segmentation/",
    suffix="val.txt",
    folders=(".", "..", "../.."),
)


def plan(sources: dict[str, Source]) -> list[Job]:
    return copy_jobs(sources[PART.key], PART.key, ROOT, ROOT)


PREPARER = Preparer(
    name="voc2012",
    title="PASCAL VOC 2012 trainval, as it is",
    cards=("voc21", "voc20"),
    parts=(PART,),
    plan=plan,
)
