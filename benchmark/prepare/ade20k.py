"""ADE20K (card ade20k): the scene-parsing zip's ADEChallengeData2016, as it is."""

from __future__ import annotations

from benchmark.prepare.archive import Source
from benchmark.prepare.jobs import Job
from benchmark.prepare.preparer import Part, Preparer, copy_jobs

ROOT = "ADEChallengeData2016/"

PART = Part(
    key="ade20k",
    download="ADEChallengeData2016.zip",
    prefix=f"{ROOT}images/validation/",
    suffix=".jpg",
    folders=(".", "..", "ade"),
)


def plan(sources: dict[str, Source]) -> list[Job]:
    return copy_jobs(sources[PART.key], PART.key, ROOT, f"ade/{ROOT}")


PREPARER = Preparer(
    name="ade20k",
    title="ADE20K (ADEChallengeData2016), as it is",
    cards=("ade20k",),
    parts=(PART,),
    plan=plan,
)
