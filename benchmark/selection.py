"""Which images of each benchmark a run evaluates, and which benchmarks can share one pass over them."""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.data import DataError, Sample, check_dataset, list_samples
from benchmark.eval_settings import EvalSettings
from benchmark.protocol import BenchmarkSpec
from methods.base import SegMethod


@dataclass(frozen=True)
class Selection:
    """The samples of one benchmark to evaluate, and why its record will be partial.

    `error` holds the data error that selecting raised; evaluating the benchmark raises it in its turn.
    """

    spec: BenchmarkSpec
    samples: tuple[Sample, ...]
    partial_reasons: tuple[str, ...]
    error: DataError | None = None

    def checked(self) -> Selection:
        if self.error is not None:
            raise self.error
        return self


def select_samples(spec: BenchmarkSpec, settings: EvalSettings) -> Selection:
    """The benchmark's samples after the dataset check, --allow-incomplete, --skip-bad and --limit."""
    try:
        return _select(spec, settings)
    except DataError as error:
        return Selection(spec, (), (), error)


def _select(spec: BenchmarkSpec, settings: EvalSettings) -> Selection:
    card = spec.dataset
    partial_reasons: list[str] = []
    if settings.limit is not None:
        partial_reasons.append(f"limit {settings.limit}")
    samples = list_samples(card, settings.data_root)
    check = check_dataset(card, settings.data_root)
    # under --skip-bad, files missing from a split that lists every image are bad files: skipped and listed
    skip_missing = settings.skip_bad and check.status == "incomplete" and len(samples) == card.num_images
    if check.status != "found" and not skip_missing:
        if not settings.allow_incomplete or check.status == "missing":
            missing = f"; first missing: {check.missing[0]}" if check.missing else ""
            if not check.missing and card.split and len(samples) != card.num_images:
                missing = f"; split file {settings.data_root / card.root / card.split} lists {len(samples)}"
            raise DataError(
                f"{settings.data_root / card.root}: dataset {card.name!r} is {check.status} "
                f"({check.found}/{check.expected} images with labels{missing}); {check.remedy}, "
                "or pass --allow-incomplete to evaluate what is there (the record is marked partial)"
                + ("" if len(samples) != card.num_images else "; --skip-bad skips and lists the missing files")
            )
        samples = [s for s in samples if s.image.is_file() and s.label.is_file()]
        partial_reasons.append(f"incomplete dataset: {len(samples)}/{card.num_images} images")
    if settings.limit is not None:
        samples = samples[: settings.limit]
    return Selection(spec, tuple(samples), tuple(partial_reasons))


def shared_image_groups(
    selections: list[Selection], method: SegMethod, settings: EvalSettings
) -> list[list[Selection]]:
    """The benchmarks in evaluation order, those that share images and geometry grouped for one pass.

    Grouped only where the method has encode_crops/score hooks, `shared_pass` is on and `skip_bad`
    off, and the benchmarks select the same image files, resized and windowed alike. A group sits
    where its first benchmark is in the protocol's order; a selection that failed stands alone.
    """
    if not (settings.shared_pass and not settings.skip_bad and method.scores_from_features()):
        return [[selection] for selection in selections]
    groups: dict[tuple, list[Selection]] = {}
    for selection in selections:
        spec = selection.spec
        if selection.error is not None:
            images: tuple = (spec.name,)
        else:
            images = tuple(sample.image for sample in selection.samples)
        groups.setdefault((images, spec.image, spec.inference), []).append(selection)
    return list(groups.values())
