"""A sweep's sensitivity report: per knob and benchmark the mIoU of each value, the spread (max - min), the knobs
ranked by mean spread over the benchmarks, the variants (protocols, hashes, `--set` to rerun one with eval) and
what was shared; as Markdown, CSV, JSON or a plot.

One knob at a time, a knob's rows are its values (the base, once, as the reference); on a grid, each value's
row holds the mean over the grid points that have it (the other knobs' values averaged out), and the grid is
listed point by point.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from benchmark.errors import BenchmarkError
from benchmark.protocol import BenchmarkSpec, Protocol
from benchmark.sweep import SweepResult, Variant

AVERAGE = "avg"


@dataclass(frozen=True)
class KnobRow:
    value: str  # as given, "(base)" marked; or the base's own value
    base: bool
    miou: dict[str, float | None]  # benchmark -> mIoU (%), AVERAGE included
    protocol: str | None  # the variant's protocol; None for a grid row (a mean over protocols)


@dataclass(frozen=True)
class KnobTable:
    knob: str
    side: str
    rows: list[KnobRow]
    spread: dict[str, float | None]  # benchmark (and AVERAGE) -> max - min over the rows

    @property
    def mean_spread(self) -> float | None:
        values = [value for name, value in self.spread.items() if name != AVERAGE and value is not None]
        return round(mean(values), 2) if values else None


def _average(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else round(mean(values), 2)


def _with_average(miou: dict[str, float | None]) -> dict[str, float | None]:
    return {**miou, AVERAGE: _average(list(miou.values()))}


def _spread(rows: list[KnobRow], column: str) -> float | None:
    values = [row.miou[column] for row in rows if row.miou.get(column) is not None]
    return round(max(values) - min(values), 2) if len(values) > 1 else None


def base_setting(knob: str, protocol: Protocol, spec: BenchmarkSpec) -> Any:
    """The base protocol's own value of a knob for one benchmark (what the reference row stands for)."""
    if knob.startswith("method."):
        return spec.method_settings.get(knob.removeprefix("method."), "method default")
    if knob == "background.value" and spec.background.value is None:
        return "method default"
    return {
        "resize.short": spec.image.resize_short, "resize.long_max": spec.image.resize_long_max,
        "inference.mode": spec.inference.mode, "inference.crop": spec.inference.crop,
        "inference.stride": spec.inference.stride, "precision": protocol.precision,
        "text.templates": f"{len(protocol.text.templates)} templates", "text.aggregation": protocol.text.aggregation,
        "classes": protocol.name, "background.rule": spec.background.rule, "background.value": spec.background.value,
        "background.area_thd": spec.background.area_thd,
    }[knob]


def _base_label(knob: str, result: SweepResult) -> str:
    values = {str(base_setting(knob, result.base, result.base.benchmarks[name])) for name in result.benchmarks}
    return f"base: {values.pop()}" if len(values) == 1 else "base: per benchmark"


def _row(result: SweepResult, variant: Variant, value: str) -> KnobRow:
    miou = {name: result.miou(variant, name) for name in result.benchmarks}
    return KnobRow(value, variant.is_base, _with_average(miou), variant.protocol.name)


def knob_tables(result: SweepResult) -> list[KnobTable]:
    """One table per knob, in the order the knobs were given."""
    tables = []
    for item in result.knobs:
        knob = item.knob.name
        if result.grid:
            rows = []
            for given in item.given:
                points = [variant for variant in result.variants if variant.value_of(knob) == given]
                miou = {name: _average([result.miou(v, name) for v in points]) for name in result.benchmarks}
                rows.append(KnobRow(given, False, _with_average(miou), None))
        else:
            own = [variant for variant in result.variants if variant.choices and variant.choices[0][0] == knob]
            rows = [_row(result, variant, variant.choices[0][1] + (" (base)" if variant.is_base else ""))
                    for variant in own]
            if not any(variant.is_base for variant in own):
                rows.insert(0, _row(result, result.variants[0], _base_label(knob, result)))
        columns = [*result.benchmarks, AVERAGE]
        tables.append(KnobTable(knob, item.knob.side, rows, {column: _spread(rows, column) for column in columns}))
    return tables


def ranking(tables: list[KnobTable]) -> list[KnobTable]:
    """The knobs by mean spread over the benchmarks, largest first (knobs without a spread last)."""
    return sorted(tables, key=lambda table: (table.mean_spread is None, -(table.mean_spread or 0.0)))


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _sharing_lines(result: SweepResult) -> list[str]:
    """Which variants shared a pass over the images, which records were read back, and the text banks."""
    evaluation, lines = result.evaluation, []
    for number, keys in enumerate(evaluation.passes, start=1):
        labels = list(dict.fromkeys(result.variant_of(protocol).label for protocol, _ in keys))
        benchmarks = ", ".join(dict.fromkeys(f"`{name}`" for _, name in keys))
        shared = f"the crops encoded once and scored for {len(keys)} (variant, benchmark) pairs" if len(keys) > 1 \
            else "one (variant, benchmark) pair"
        lines.append(f"- pass {number} over the images of {benchmarks}: {shared}: {'; '.join(labels)}")
    if evaluation.reused:
        reused = "; ".join(f"{result.variant_of(protocol).label} on `{name}`" for protocol, name in evaluation.reused)
        lines.append(f"- records read back from an earlier run (same protocol hash and run): {reused}")
    lines.append(f"- text banks: {evaluation.text_banks_encoded} encoded, {evaluation.text_banks_reused} reused "
                 "(one per class names, templates and aggregation)")
    return lines


def render_markdown(result: SweepResult) -> str:
    from tabulate import tabulate

    from benchmark.formats.markdown import code, escape

    def table(headers: list[str], rows: list[list[str]]) -> str:
        return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)

    tables = knob_tables(result)
    columns = [*result.benchmarks, AVERAGE]
    mode = "every combination of the values (grid); a value's row is the mean over the grid points that have it" \
        if result.grid else "one setting changed at a time; the base protocol is the reference row of every knob"
    lines = [f"# Sensitivity of `{result.run_id}` on `{result.base.name}` ({result.base.short_hash})", "",
             f"mIoU (%) of `{result.method}`, {mode}. Spread = max - min over a knob's rows.", "",
             "## Knobs ranked by spread", "",
             table(["rank", "knob", "side", *[f"{name} spread" for name in result.benchmarks], "mean spread"],
                   [[str(rank), code(t.knob), t.side, *[_cell(t.spread[name]) for name in result.benchmarks],
                     _cell(t.mean_spread)] for rank, t in enumerate(ranking(tables), start=1)]), ""]
    for knob_table in tables:
        rows = [[escape(row.value), *[_cell(row.miou[column]) for column in columns]] for row in knob_table.rows]
        rows.append(["**spread**", *[_cell(knob_table.spread[column]) for column in columns]])
        lines += [f"## `{knob_table.knob}`", "", table(["value", *columns], rows), ""]
    if result.grid:
        rows = [[escape(variant.label), *[_cell(value) for value in _variant_miou(result, variant).values()]]
                for variant in result.variants]
        lines += ["## Grid", "", table(["variant", *columns], rows), ""]
    rows = [[escape(variant.label), code(variant.protocol.name), variant.protocol.short_hash,
             escape(" ".join(f"--set {argument}" for argument in variant.set_arguments) or "(none)")]
            for variant in _unique(result.variants)]
    lines += ["## Variants", "", "Each is a derived protocol; `zsbench eval --protocol "
              f"{result.base.name} --set ...` evaluates one alone and files its records in the same place.", "",
              table(["variant", "protocol", "hash", "eval arguments"], rows), "",
              "## Passes over the images", "", *_sharing_lines(result), ""]
    return "\n".join(lines)


def _unique(variants: list[Variant]) -> list[Variant]:
    """The first variant of each protocol (grid points that set nothing new share the base's)."""
    first: dict[str, Variant] = {}
    for variant in variants:
        first.setdefault(variant.protocol.name, variant)
    return list(first.values())


def _variant_miou(result: SweepResult, variant: Variant) -> dict[str, float | None]:
    return _with_average({name: result.miou(variant, name) for name in result.benchmarks})


def render_csv(result: SweepResult) -> str:
    """Long format: one line per (knob, value, benchmark), with the knob's spread on that benchmark."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["knob", "side", "value", "base", "benchmark", "miou", "spread", "protocol", "protocol_hash"])
    hashes = {variant.protocol.name: variant.protocol.hash for variant in result.variants}
    for knob_table in knob_tables(result):
        for row in knob_table.rows:
            for column in [*result.benchmarks, AVERAGE]:
                writer.writerow([knob_table.knob, knob_table.side, row.value, row.base, column,
                                 _cell(row.miou[column]), _cell(knob_table.spread[column]), row.protocol or "",
                                 hashes.get(row.protocol or "", "")])
    return out.getvalue()


def as_json(result: SweepResult) -> dict[str, Any]:
    evaluation = result.evaluation
    tables = knob_tables(result)
    return {
        "method": result.method, "run_id": result.run_id,
        "base": {"name": result.base.name, "hash": result.base.hash}, "grid": result.grid,
        "benchmarks": result.benchmarks,
        "ranking": [{"knob": t.knob, "mean_spread": t.mean_spread} for t in ranking(tables)],
        "knobs": [{**asdict(t), "mean_spread": t.mean_spread} for t in tables],
        "variants": [{"label": variant.label, "choices": [list(choice) for choice in variant.choices],
                      "protocol": variant.protocol.name, "hash": variant.protocol.hash,
                      "set": variant.set_arguments, "miou": _variant_miou(result, variant)}
                     for variant in result.variants],
        "passes": [[list(key) for key in keys] for keys in evaluation.passes],
        "reused": [list(key) for key in evaluation.reused],
        "text_banks": {"encoded": evaluation.text_banks_encoded, "reused": evaluation.text_banks_reused},
    }


def render(result: SweepResult, fmt: str) -> str:
    if fmt == "csv":
        return render_csv(result)
    if fmt == "json":
        return json.dumps(as_json(result), indent=2) + "\n"
    return render_markdown(result)


def _short(value: str) -> str:
    """A file given as a value (templates, classes) by its name, for an axis label."""
    return Path(value).name if "/" in value else value


def save_plot(result: SweepResult, out: Path, dpi: int = 150) -> Path:
    """One panel per knob: mIoU of each value, a line per benchmark, the spread in the title."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchmarkError("--plot needs matplotlib: pip install 'matplotlib>=3.7'") from None
    from benchmark.formats.plot import CHART_COLOURS

    tables = knob_tables(result)
    columns = min(3, len(tables))
    rows = -(-len(tables) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False)
    for axis, knob_table in zip(axes.flat, tables, strict=False):
        labels = [_short(row.value).replace("$", r"\$") for row in knob_table.rows]
        for index, name in enumerate(result.benchmarks):
            values = [float("nan") if row.miou[name] is None else row.miou[name] for row in knob_table.rows]
            axis.plot(range(len(labels)), values, marker="o", label=name, color=CHART_COLOURS[index % 10])
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize="small")
        axis.set_title(f"{knob_table.knob} (mean spread {_cell(knob_table.mean_spread)})", fontsize="medium")
        axis.set_ylabel("mIoU (%)")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(tables):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize="small", frameon=False)
    figure.suptitle(f"{result.run_id} on {result.base.name} ({result.base.short_hash})")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=dpi)
    plt.close(figure)
    return out
