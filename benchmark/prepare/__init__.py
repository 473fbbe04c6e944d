"""`zsbench prepare`: the cards' layouts from the official downloads.

One preparer per download set (voc2012, pascal_context, pascal_context_full, coco_stuff164k, cityscapes,
ade20k, ade20k_full);
each card name also selects the preparer that writes it. Label tables and the downloads'
published checksums are data files beside these modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.errors import ConfigError
from benchmark.prepare import ade20k, ade20k_full, cityscapes, coco_stuff, context, context_full, voc
from benchmark.prepare.preparer import Preparer, run_preparer

PREPARERS: dict[str, Preparer] = {
    p.name: p for p in (voc.PREPARER, context.PREPARER, context_full.PREPARER, coco_stuff.PREPARER,
                        cityscapes.PREPARER, ade20k.PREPARER, ade20k_full.PREPARER)
}
CARD_PREPARERS: dict[str, str] = {card: p.name for p in PREPARERS.values() for card in p.cards}
NAMES: tuple[str, ...] = tuple(sorted({*PREPARERS, *CARD_PREPARERS}))


def get_preparer(name: str) -> Preparer:
    """A preparer by its name or by the name of a card it writes."""
    if name in PREPARERS:
        return PREPARERS[name]
    if name in CARD_PREPARERS:
        return PREPARERS[CARD_PREPARERS[name]]
    raise ConfigError(f"no preparer for {name!r}; known: {', '.join(NAMES)}")


def prepare_dataset(
    name: str,
    src: Path,
    data_root: Path,
    workers: int = 1,
    progress: bool = True,
    verify_checksums: bool = True,
) -> dict[str, Any]:
    """Writes the layout of every card the preparer serves under data_root; returns a report.

    src: the official download (archive or file), the folder holding the downloads, or the folder
    they unpack to. Re-running is a no-op; an interrupted run resumes; a corrupt or foreign
    download raises DataError and leaves data_root as it was. The report's "complete" is false
    (and "summary" says so) when a card finds fewer images than it expects.
    """
    return run_preparer(get_preparer(name), Path(src), Path(data_root), workers, progress, verify_checksums)


__all__ = ["NAMES", "PREPARERS", "get_preparer", "prepare_dataset"]
