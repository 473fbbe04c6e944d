"""Per-benchmark rules a run checks before its first image: background value, zero-shot overlap, scored pixels."""

from __future__ import annotations

import torch

from benchmark.errors import ConfigError
from benchmark.protocol import BenchmarkSpec, Protocol
from methods.base import SegMethod


def resolve_background_value(method: SegMethod, protocol: Protocol, spec: BenchmarkSpec) -> float | None:
    """The protocol's background value, else the method's own for the rule; None for rules without one."""
    rule = spec.background.rule
    if rule not in ("threshold", "prob_thd"):
        return None
    if spec.background.value is not None:
        return float(spec.background.value)
    value = method.background_value(protocol, spec, rule)
    if value is None:
        raise ConfigError(
            f"{protocol.path}: benchmark {spec.name!r} uses background rule {rule!r} with no value, and method "
            f"{method.name!r} declares none: return the method's value for {rule!r} from its background_value() "
            f"(README, Adding a method), or pass --set benchmarks.{spec.name}.background.value=V for this run"
        )
    return float(value)


def check_split_overlap(method: SegMethod, protocol: Protocol, spec: BenchmarkSpec) -> None:
    """Refuses a zero-shot split whose unseen classes the method was trained on with dense labels."""
    trained = method.trained_classes()
    if spec.split is None or not trained:
        return
    normalised = {name.strip().lower() for name in trained}
    unseen = [spec.dataset.classes[k] for k in spec.split.unseen]
    overlap = [name for name in unseen if name.strip().lower() in normalised]
    if overlap:
        raise ConfigError(
            f"{protocol.path}: method {method.name!r} was trained with dense labels on {overlap}, which are unseen "
            f"classes of split {spec.split.name!r} on benchmark {spec.name!r}; its numbers would not be zero-shot"
        )


def check_before_first_image(method: SegMethod, protocol: Protocol, specs: list[BenchmarkSpec]) -> None:
    """Every benchmark's requirements, checked before any image of any benchmark is evaluated."""
    for spec in specs:
        check_split_overlap(method, protocol, spec)
        resolve_background_value(method, protocol, spec)


def ignored_in_metric(spec: BenchmarkSpec) -> torch.Tensor | None:
    """Under `unseen_only`, pixels of seen classes are not scored: their class ids, else None."""
    if spec.split is None or spec.split.setting != "unseen_only":
        return None
    return torch.tensor(spec.split.seen, dtype=torch.int64)
