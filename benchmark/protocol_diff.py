"""What two protocols do differently: every setting the hash covers, benchmark by benchmark.

`resolved(protocol)` is one protocol as its hash sees it (class-name files read, per-benchmark values
merged over the protocol's defaults); `diff(a, b)` lists the settings whose values differ, and
nothing else; `render_markdown` and `as_json` print the result. Class names are compared per
prompted class (the dataset card's order), so `person` against `person, person in shirt` shows as
one line, side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from benchmark.protocol import BenchmarkSpec, Protocol


@dataclass(frozen=True)
class SettingDiff:
    """One setting whose value differs; `a` or `b` is None where a protocol does not set it."""

    setting: str
    a: Any
    b: Any


@dataclass(frozen=True)
class ClassDiff:
    """A prompted class whose names (the prompt text) differ."""

    index: int
    label: str  # the dataset card's name of the class
    a: tuple[str, ...] | None
    b: tuple[str, ...] | None


@dataclass
class TemplateDiff:
    count_a: int
    count_b: int
    only_a: list[str]
    only_b: list[str]
    same_lines_other_order: bool


@dataclass
class BenchmarkDiff:
    name: str
    settings: list[SettingDiff] = field(default_factory=list)
    classes: list[ClassDiff] = field(default_factory=list)
    class_count: tuple[int, int] = (0, 0)

    @property
    def empty(self) -> bool:
        return not self.settings and not self.classes


@dataclass
class ProtocolDiff:
    a: Protocol
    b: Protocol
    settings: list[SettingDiff]
    templates: TemplateDiff | None
    benchmarks: list[BenchmarkDiff]
    only_a: list[str]
    only_b: list[str]

    @property
    def empty(self) -> bool:
        return not (self.settings or self.templates or self.only_a or self.only_b
                    or any(not bench.empty for bench in self.benchmarks))

    @property
    def in_every_benchmark(self) -> list[SettingDiff]:
        """Differences with the same two values in every compared benchmark (printed once)."""
        if len(self.benchmarks) < 2:
            return []
        first, *others = self.benchmarks
        return [item for item in first.settings if all(item in bench.settings for bench in others)]


def benchmark_settings(spec: BenchmarkSpec) -> dict[str, Any]:
    """Every setting of one benchmark but its class names, as dotted keys (image.resize_short, ...)."""
    content: dict[str, Any] = {
        "dataset": spec.dataset.name,
        "image": asdict(spec.image),
        "inference": asdict(spec.inference),
        "background": asdict(spec.background),
        "method_settings": spec.method_settings,
    }
    if spec.split is not None:
        content["split"] = {"name": spec.split.name, "setting": spec.split.setting}
    content["metric"] = {"ignore_index": spec.ignore_in_metric}
    flat: dict[str, Any] = {}
    for section, value in content.items():
        if isinstance(value, dict):
            flat.update({f"{section}.{key}": inner for key, inner in value.items()})
        else:
            flat[section] = value
    return {key: list(value) if isinstance(value, tuple) else value for key, value in flat.items()}


def resolved(protocol: Protocol) -> dict[str, Any]:
    """The protocol as its hash covers it, with its name, hash, title and source in front."""
    return {
        "name": protocol.name,
        "hash": protocol.hash,
        "title": protocol.title,
        "source": protocol.source,
        "precision": protocol.precision,
        "text": {"aggregation": protocol.text.aggregation, "templates": list(protocol.text.templates)},
        "benchmarks": {
            name: {**_nest(benchmark_settings(spec)), "class_names": [list(names) for names in spec.class_names]}
            for name, spec in protocol.benchmarks.items()
        },
    }


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        target = nested
        *parents, last = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return nested


def _setting_diffs(a: dict[str, Any], b: dict[str, Any]) -> list[SettingDiff]:
    keys = list(dict.fromkeys([*a, *b]))
    return [SettingDiff(key, a.get(key), b.get(key)) for key in keys if a.get(key) != b.get(key)]


def _template_diff(a: tuple[str, ...], b: tuple[str, ...]) -> TemplateDiff | None:
    if a == b:
        return None
    in_b, in_a = set(b), set(a)
    only_a = [line for line in a if line not in in_b]
    only_b = [line for line in b if line not in in_a]
    return TemplateDiff(len(a), len(b), only_a, only_b, not only_a and not only_b)


def prompts_by_card_class(spec: BenchmarkSpec) -> list[tuple[str, ...] | None]:
    """The names prompted for each class of the dataset card, in the card's order; None for a class that is
    not prompted (background under the `threshold` rule, which a constant score stands for)."""
    prompted: list[tuple[str, ...] | None] = list(spec.class_names)
    if spec.background.rule == "threshold":
        prompted.insert(0, None)
    return prompted


def _class_diffs(a: BenchmarkSpec, b: BenchmarkSpec) -> list[ClassDiff]:
    labels = a.dataset.classes if len(a.dataset.classes) >= len(b.dataset.classes) else b.dataset.classes
    by_class_a, by_class_b = prompts_by_card_class(a), prompts_by_card_class(b)
    diffs = []
    for index in range(max(len(by_class_a), len(by_class_b))):
        names_a = by_class_a[index] if index < len(by_class_a) else None
        names_b = by_class_b[index] if index < len(by_class_b) else None
        if names_a != names_b:
            label = labels[index] if index < len(labels) else f"class {index}"
            diffs.append(ClassDiff(index, label, names_a, names_b))
    return diffs


def diff(a: Protocol, b: Protocol, benchmarks: list[str] | None = None) -> ProtocolDiff:
    """Every difference between `a` and `b` (restricted to `benchmarks` where given)."""
    top = _setting_diffs({"precision": a.precision, "text.aggregation": a.text.aggregation},
                         {"precision": b.precision, "text.aggregation": b.text.aggregation})
    names_a = [name for name in a.benchmarks if not benchmarks or name in benchmarks]
    names_b = [name for name in b.benchmarks if not benchmarks or name in benchmarks]
    compared = []
    for name in names_a:
        if name not in b.benchmarks:
            continue
        spec_a, spec_b = a.benchmarks[name], b.benchmarks[name]
        compared.append(BenchmarkDiff(
            name, _setting_diffs(benchmark_settings(spec_a), benchmark_settings(spec_b)),
            _class_diffs(spec_a, spec_b), (len(spec_a.class_names), len(spec_b.class_names)),
        ))
    return ProtocolDiff(
        a, b, top, _template_diff(a.text.templates, b.text.templates), compared,
        [name for name in names_a if name not in b.benchmarks], [name for name in names_b if name not in a.benchmarks],
    )


def _names(names: tuple[str, ...] | None) -> str | None:
    return None if names is None else ", ".join(names)


NOT_PROMPTED = "(not prompted: threshold background)"


def as_json(result: ProtocolDiff) -> dict[str, Any]:
    def side(protocol: Protocol) -> dict[str, Any]:
        return {"name": protocol.name, "hash": protocol.hash, "path": str(protocol.path)}

    templates = None
    if result.templates is not None:
        templates = asdict(result.templates)
    return {
        "a": side(result.a),
        "b": side(result.b),
        "identical": result.empty,
        "settings": [asdict(item) for item in result.settings],
        "templates": templates,
        "in_every_benchmark": [asdict(item) for item in result.in_every_benchmark],
        "only_in_a": result.only_a,
        "only_in_b": result.only_b,
        "benchmarks": {
            bench.name: {
                "settings": [asdict(item) for item in bench.settings],
                "class_count": list(bench.class_count),
                "classes": [{"index": c.index, "class": c.label, "a": _names(c.a), "b": _names(c.b)}
                            for c in bench.classes],
            }
            for bench in result.benchmarks if not bench.empty
        },
    }


def _cell(value: Any) -> str:
    import json

    from benchmark.formats.markdown import escape

    if value is None:
        return "(not set)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list, bool)):
        return escape(json.dumps(value, default=str))
    return escape(str(value))


def render_markdown(result: ProtocolDiff) -> str:
    """The diff as Markdown: protocol-wide settings, templates, then one section per benchmark that differs."""
    from tabulate import tabulate

    a, b = result.a, result.b

    def table(rows: list[list[str]], first: str) -> str:
        return tabulate(rows, headers=[first, f"`{a.name}`", f"`{b.name}`"], tablefmt="github", disable_numparse=True)

    lines = [f"# Protocol diff: `{a.name}` ({a.short_hash}) vs `{b.name}` ({b.short_hash})", ""]
    if result.empty:
        return "\n".join([*lines, "No setting differs: the two protocols evaluate identically.", ""])
    if result.settings:
        lines += ["## Whole protocol", "", table([[s.setting, _cell(s.a), _cell(s.b)] for s in result.settings],
                                                 "setting"), ""]
    if result.templates is not None:
        t = result.templates
        lines += ["## Templates", "", f"{t.count_a} templates in `{a.name}`, {t.count_b} in `{b.name}`."]
        if t.same_lines_other_order:
            lines.append("The same lines in another order (the text embeddings differ only by rounding).")
        for label, only in ((a.name, t.only_a), (b.name, t.only_b)):
            if only:
                shown = "; ".join(f"`{line}`" for line in only[:12]) + (f" (+{len(only) - 12} more)" if len(only) > 12
                                                                         else "")
                lines.append(f"Only in `{label}` ({len(only)}): {shown}")
        lines.append("")
    if result.only_a or result.only_b:
        lines += ["## Benchmarks in one protocol only", ""]
        lines += [f"- `{name}`: only in `{a.name}`" for name in result.only_a]
        lines += [f"- `{name}`: only in `{b.name}`" for name in result.only_b]
        lines.append("")
    common = result.in_every_benchmark
    if common:
        lines += ["## Every benchmark", "", table([[s.setting, _cell(s.a), _cell(s.b)] for s in common], "setting"), ""]
    for bench in result.benchmarks:
        own = [item for item in bench.settings if item not in common]
        if not own and not bench.classes:
            continue
        lines += [f"## Benchmark `{bench.name}`", ""]
        if own:
            lines += [table([[s.setting, _cell(s.a), _cell(s.b)] for s in own], "setting"), ""]
        if bench.classes:
            total = max(len(prompts_by_card_class(spec)) for spec in (result.a.benchmarks[bench.name],
                                                                       result.b.benchmarks[bench.name]))
            lines += [f"Class names that differ: {len(bench.classes)} of {total} classes (the dataset's order).", ""]
            rows = [[_cell(c.label), _cell(_names(c.a) or NOT_PROMPTED), _cell(_names(c.b) or NOT_PROMPTED)]
                    for c in bench.classes]
            lines += [table(rows, "class"), ""]
    same = [bench.name for bench in result.benchmarks if bench.empty]
    if same:
        lines += [f"Identical benchmarks: {', '.join(f'`{name}`' for name in same)}.", ""]
    return "\n".join(lines)

