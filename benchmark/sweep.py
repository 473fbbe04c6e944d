"""Sensitivity sweeps: one method on a protocol with one setting changed at a time (or on the full grid).

Each variant is a derived protocol (`load_protocol(base, overrides)`, the overrides `zsbench eval --set` would
be given), with its own name, hash and records, filed where eval files them; `leaderboard` and `build` read
them like any run. The variants are evaluated together (`protocol_passes.evaluate_protocols`): those that differ only on
the text side (templates, aggregation, class names, background, method settings) score the crops of one pass
over the images, each with its own head; those that change the images (resize, windows, precision) run their
own passes. `benchmark.sweep_report` turns the result into the report.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from benchmark.distributed import SINGLE_PROCESS, Shard
from benchmark.errors import ConfigError
from benchmark.eval_settings import EvalSettings
from benchmark.method_run import MethodRun
from benchmark.protocol import Protocol, load_protocol
from benchmark.protocol_passes import ProtocolsEvaluation, evaluate_protocols
from benchmark.sweep_knobs import KnobValues, overrides_for, set_argument


@dataclass(frozen=True)
class Variant:
    """The base protocol with some knobs set: `choices` as given, the overrides they make, the protocol."""

    choices: tuple[tuple[str, str], ...]  # (knob, value as given); () for the base itself
    overrides: dict[str, Any]  # empty where the choices leave every setting as the base has it
    protocol: Protocol

    @property
    def label(self) -> str:
        return ", ".join(f"{knob}={value}" for knob, value in self.choices) or "base"

    @property
    def is_base(self) -> bool:
        return not self.overrides

    @property
    def set_arguments(self) -> list[str]:
        """The variant as `zsbench eval --set` arguments."""
        return [set_argument(key, value) for key, value in self.overrides.items()]

    def value_of(self, knob: str) -> str | None:
        return dict(self.choices).get(knob)


def _same_settings(a: Protocol, b: Protocol) -> bool:
    return (a.precision, a.text, a.benchmarks) == (b.precision, b.text, b.benchmarks)


def derive(base: Protocol, choices: tuple[tuple[str, str], ...], overrides: dict[str, Any]) -> Variant:
    """The variant's protocol; the base itself where the overrides change no setting."""
    label = ", ".join(f"{knob}={value}" for knob, value in choices)
    try:
        protocol = load_protocol(base.path, overrides)
    except ConfigError as error:
        hint = "; leave out a benchmark whose file does not fit with --benchmarks" \
            if any(knob == "classes" for knob, _ in choices) else ""
        raise ConfigError(f"--vary {label}: {error}{hint}") from None
    if _same_settings(protocol, base):
        return Variant(choices, {}, base)
    return Variant(choices, overrides, protocol)


def make_variants(
    base: Protocol, knobs: list[KnobValues], grid: bool, benchmarks: list[str] | None
) -> list[Variant]:
    """One knob at a time (the base first, once, as the reference) or every combination (`grid`)."""
    names = [item.knob.name for item in knobs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"--vary {repeated[0]}: given twice; list every value in one --vary {repeated[0]}=V1,V2")
    options = [
        [(item.knob.name, given, overrides_for(item.knob, given, value, base, benchmarks))
         for given, value in zip(item.given, item.values, strict=True)]
        for item in knobs
    ]
    if not grid:
        return [Variant((), {}, base)] + [
            derive(base, ((knob, given),), overrides) for choices in options for knob, given, overrides in choices
        ]
    variants = []
    for combination in itertools.product(*options):
        overrides: dict[str, Any] = {}
        for _, _, own in combination:
            overrides.update(own)
        variants.append(derive(base, tuple((knob, given) for knob, given, _ in combination), overrides))
    return variants


@dataclass(frozen=True)
class SweepResult:
    """What a sweep evaluated and measured."""

    method: str
    run_id: str
    base: Protocol
    benchmarks: list[str]
    knobs: list[KnobValues]
    grid: bool
    variants: list[Variant]
    evaluation: ProtocolsEvaluation

    def record(self, variant: Variant, benchmark: str) -> dict[str, Any] | None:
        return self.evaluation.records.get((variant.protocol.name, benchmark))

    def miou(self, variant: Variant, benchmark: str) -> float | None:
        record = self.record(variant, benchmark)
        return None if record is None else record.get("miou")

    def variant_of(self, protocol_name: str) -> Variant:
        return next(variant for variant in self.variants if variant.protocol.name == protocol_name)


@dataclass(frozen=True)
class SweepPlan:
    """The variants of a sweep, checked (every derived protocol loaded) before any method is built."""

    base: Protocol
    knobs: list[KnobValues]
    benchmarks: list[str]
    grid: bool
    variants: list[Variant]


def plan_sweep(base: Protocol, knobs: list[KnobValues], benchmarks: list[str] | None, grid: bool = False) -> SweepPlan:
    """The variants on the selected benchmarks (all the base's by default)."""
    if not knobs:
        raise ConfigError("sweep: nothing to vary; give --vary KNOB=V1,V2,... (see zsbench sweep --help)")
    selected = [spec.name for spec in base.select(benchmarks)]
    return SweepPlan(base, knobs, selected, grid, make_variants(base, knobs, grid, selected))


def run_sweep(run: MethodRun, plan: SweepPlan, settings: EvalSettings, shard: Shard = SINGLE_PROCESS) -> SweepResult:
    """Every variant of the plan, sharing passes where it can."""
    protocols = list({variant.protocol.name: variant.protocol for variant in plan.variants}.values())
    evaluation = evaluate_protocols(run, [(protocol, plan.benchmarks) for protocol in protocols], settings, shard)
    return SweepResult(run.method.name, run.run_id, plan.base, plan.benchmarks, plan.knobs, plan.grid, plan.variants,
                       evaluation)
