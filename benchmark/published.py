"""Published numbers (leaderboard/published*.yaml): load, validate, and match them to result records.

A file is a mapping:

    tolerance: 0.3          # optional: largest |measured - published| that `zsbench reproduce` accepts
    notes: ...              # optional free text (e.g. numbers deliberately left out, and why)
    entries:                # one per (method, backbone, protocol, dataset[, variant])
      - method: tcl
        backbone: ViT-B/16
        protocol: tcl8
        dataset: voc21
        miou: 55.0
        source: Cha et al., CVPR 2023, Table 2
        third_party: false
        run: {checkpoint: tcl.pth, options: {pamr: true}}

Every key is listed in ENTRY_REQUIRED / ENTRY_OPTIONAL / RUN_KEYS below and explained in
leaderboard/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark import paths
from benchmark.errors import ConfigError
from benchmark.yamlio import check_fields

DEFAULT_TOLERANCE = 0.3
METRICS = ("miou", "miou_seen", "miou_unseen", "hiou")
FILE_KEYS = {"entries": list, "tolerance": float, "notes": str, "schema": int}
ENTRY_REQUIRED = {"method": str, "backbone": str, "protocol": str, "dataset": str, "source": str}
ENTRY_OPTIONAL = {
    "miou": float, "miou_seen": float, "miou_unseen": float, "hiou": float,
    "third_party": bool, "variant": str, "note": str, "url": str, "tolerance": float, "run": dict,
    "average": float,
}
RUN_KEYS = {"method": str, "protocol": str, "benchmark": str, "checkpoint": str, "options": dict, "weights": list}
WEIGHTS_REQUIRED = {"file": str}
WEIGHTS_OPTIONAL = {"url": str, "sha256": str, "note": str}


@dataclass(frozen=True)
class WeightsFile:
    """A file a run needs under the weights root, and where to get it."""

    file: str
    url: str | None = None
    sha256: str | None = None
    note: str | None = None

    def describe(self) -> str:
        parts = [self.file]
        if self.url:
            parts.append(f"from {self.url}")
        if self.sha256:
            parts.append(f"(sha256 {self.sha256})")
        if self.note:
            parts.append(f"- {self.note}")
        return " ".join(parts)


@dataclass(frozen=True)
class RunSpec:
    """How to reproduce an entry with the suite: `zsbench eval --method M --protocol P ...`."""

    method: str
    protocol: str  # a protocol name, or a YAML path (relative paths are relative to the published file)
    benchmark: str
    checkpoint: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    weights: tuple[WeightsFile, ...] = ()

    @property
    def protocol_name(self) -> str:
        return Path(self.protocol).stem if self.protocol.endswith((".yaml", ".yml")) else self.protocol


@dataclass(frozen=True)
class PublishedEntry:
    method: str
    backbone: str
    protocol: str
    dataset: str
    source: str
    values: dict[str, float]  # the metrics given, among METRICS
    file: Path
    index: int  # 1-based position in the file's entries
    line: int | None = None
    third_party: bool = False
    variant: str | None = None
    note: str | None = None
    url: str | None = None
    tolerance: float | None = None
    run: RunSpec | None = None
    average: float | None = None  # the mean over the entry's row as its source prints it

    @property
    def where(self) -> str:
        at = f" (line {self.line})" if self.line else ""
        variant = f" [{self.variant}]" if self.variant else ""
        return (f"{self.file}: entry {self.index}{at} ({self.method} {self.backbone}{variant}, "
                f"protocol {self.protocol}, dataset {self.dataset})")

    @property
    def key(self) -> tuple[str, str, str, str, str | None, str]:
        return (self.method, self.backbone, self.protocol, self.dataset, self.variant, self.source)


@dataclass(frozen=True)
class PublishedFile:
    path: Path
    entries: tuple[PublishedEntry, ...]
    tolerance: float = DEFAULT_TOLERANCE
    notes: str | None = None


@dataclass
class Published:
    """Every entry of a set of published files, and what the check found worth a warning."""

    files: list[PublishedFile]
    warnings: list[str]

    @property
    def entries(self) -> list[PublishedEntry]:
        return [entry for file in self.files for entry in file.entries]

    def tolerance_for(self, entry: PublishedEntry) -> float:
        if entry.tolerance is not None:
            return entry.tolerance
        return next((f.tolerance for f in self.files if f.path == entry.file), DEFAULT_TOLERANCE)


def published_files(folder: Path | None = None) -> list[Path]:
    """leaderboard/published*.yaml, sorted."""
    return sorted((folder or paths.LEADERBOARD_DIR).glob("published*.yaml"))


class _LineLoader(yaml.SafeLoader):
    """safe_load that remembers the line where each mapping starts: lines[id(mapping)] = (line, mapping)."""

    lines: dict[int, tuple[int, dict[Any, Any]]]


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> Any:
    data: dict[Any, Any] = {}
    loader.lines[id(data)] = (node.start_mark.line + 1, data)
    yield data
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges; the merged keys may repeat
            continue
        key = loader.construct_object(key_node)
        if key in seen:  # yaml's safe_load keeps the last value silently: a published number would vanish
            raise yaml.constructor.ConstructorError(
                None, None, f"repeated key {key!r}: keep one (or set `variant` to tell entries apart)",
                key_node.start_mark,
            )
        seen.add(key)
    data.update(loader.construct_mapping(node))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def _read_yaml(path: Path) -> tuple[Any, dict[int, int]]:
    """The file's content, and the line each mapping in it starts on, by id(mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from None
    loader = _LineLoader(text)
    loader.lines = {}
    try:
        content = loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: invalid YAML: {getattr(error, 'problem', None) or error}") from None
    finally:
        loader.dispose()
    return content, {key: line for key, (line, _) in loader.lines.items()}


def load_published_file(path: Path) -> PublishedFile:
    """One file, validated; a bad entry is an error naming the file, the entry and the key."""
    content, lines = _read_yaml(path)
    if content is None:
        content = {"entries": []}
    if isinstance(content, list):
        content = {"entries": content}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping with 'entries' (or a list of entries) at the top level")
    check_fields(content, {}, FILE_KEYS, path)
    if content.get("schema") not in (None, 1):
        raise ConfigError(f"{path}: key 'schema' is {content['schema']!r}; this suite reads schema 1")
    tolerance = content.get("tolerance")
    if tolerance is not None and tolerance < 0:
        raise ConfigError(f"{path}: key 'tolerance' must not be negative, got {tolerance!r}")
    entries = tuple(
        _entry(raw, path, index, lines.get(id(raw))) for index, raw in enumerate(content.get("entries") or [], 1)
    )
    check_stated_averages(entries)
    return PublishedFile(
        path, entries, DEFAULT_TOLERANCE if tolerance is None else float(tolerance), content.get("notes")
    )


def _entry(raw: Any, path: Path, index: int, line: int | None) -> PublishedEntry:
    at = f" (line {line})" if line else ""
    name = ""
    if isinstance(raw, dict):
        name = " (" + ", ".join(str(raw[k]) for k in ("method", "protocol", "dataset") if k in raw) + ")"
    where = f"entry {index}{at}{name}: "
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where}expected a mapping, got {type(raw).__name__}")
    check_fields(raw, ENTRY_REQUIRED, ENTRY_OPTIONAL, path, where)
    for key in ENTRY_REQUIRED:
        if not raw[key].strip():
            raise ConfigError(f"{path}: {where}key {key!r} is empty")
    values = {key: float(raw[key]) for key in METRICS if raw.get(key) is not None}
    if not values:
        raise ConfigError(f"{path}: {where}gives no number: give miou, or miou_seen/miou_unseen/hiou")
    for key, value in values.items():
        if not (math.isfinite(value) and 0 <= value <= 100):
            raise ConfigError(f"{path}: {where}key {key!r} must be a percentage in [0, 100], got {value!r}")
    tolerance = raw.get("tolerance")
    if tolerance is not None and tolerance < 0:
        raise ConfigError(f"{path}: {where}key 'tolerance' must not be negative")
    run = _run(raw["run"], raw, path, where + "run: ") if raw.get("run") is not None else None
    return PublishedEntry(
        method=raw["method"], backbone=raw["backbone"], protocol=raw["protocol"], dataset=raw["dataset"],
        source=raw["source"].strip(), values=values, file=path, index=index, line=line,
        third_party=bool(raw.get("third_party", False)), variant=raw.get("variant"), note=raw.get("note"),
        url=raw.get("url"), tolerance=None if tolerance is None else float(tolerance), run=run,
        average=None if raw.get("average") is None else float(raw["average"]),
    )


def _printed_decimals(value: float) -> int:
    text = repr(float(value))
    return 0 if text.endswith(".0") else len(text.split(".")[1])


def check_stated_averages(entries: tuple[PublishedEntry, ...]) -> None:
    """Entries that state their row's `average` must hold one mIoU per dataset and average to it, to the
    printed precision (42.455 prints as 42.46 or 42.45): a typo in one number, or a number of another row,
    shows up as an average the source does not print."""
    rows: dict[tuple, list[PublishedEntry]] = {}
    for entry in entries:
        if entry.average is not None:
            key = (entry.method, entry.backbone, entry.protocol, entry.variant, entry.average)
            rows.setdefault(key, []).append(entry)
    for (method, _, protocol, variant, average), row in rows.items():
        first = row[0]
        datasets = [entry.dataset for entry in row]
        if len(set(datasets)) != len(datasets) or any("miou" not in entry.values for entry in row):
            raise ConfigError(
                f"{first.where}: the entries of {method} on {protocol}{f' [{variant}]' if variant else ''} with "
                f"average {average} must give one miou per dataset (got datasets {datasets})"
            )
        mean = sum(entry.values["miou"] for entry in row) / len(row)
        if abs(mean - average) > 0.5 * 10 ** -_printed_decimals(average) + 1e-9:
            numbers = ", ".join(f"{entry.dataset} {entry.values['miou']}" for entry in row)
            raise ConfigError(
                f"{first.where}: its row ({numbers}) averages "
                f"{mean:.4f}, but the entries state average {average}: a number is mistyped or from another row"
            )


def _run(raw: dict[str, Any], entry: dict[str, Any], path: Path, where: str) -> RunSpec:
    check_fields(raw, {}, RUN_KEYS, path, where)
    weights = []
    for number, item in enumerate(raw.get("weights") or [], 1):
        check_fields(item, WEIGHTS_REQUIRED, WEIGHTS_OPTIONAL, path, f"{where}weights {number}: ")
        weights.append(WeightsFile(item["file"], item.get("url"), item.get("sha256"), item.get("note")))
    protocol = raw.get("protocol") or entry["protocol"]
    if raw.get("protocol") and not protocol.endswith((".yaml", ".yml")):
        from benchmark.protocol import list_protocols

        if protocol not in list_protocols():
            raise ConfigError(
                f"{path}: {where}key 'protocol' names {protocol!r}, which is not a protocol of the suite "
                f"({', '.join(list_protocols())}); give a suite protocol or a protocol file (.yaml)"
            )
    if protocol.endswith((".yaml", ".yml")) and not Path(protocol).is_absolute():
        protocol = str(path.parent / protocol)
    return RunSpec(
        method=raw.get("method") or entry["method"], protocol=protocol,
        benchmark=raw.get("benchmark") or entry["dataset"], checkpoint=raw.get("checkpoint"),
        options=dict(raw.get("options") or {}), weights=tuple(weights),
    )


def load_published(files: list[Path] | None = None) -> Published:
    """Every entry of `files` (default: leaderboard/published*.yaml), checked across files too."""
    loaded = [load_published_file(path) for path in (published_files() if files is None else files)]
    warnings: list[str] = []
    seen: dict[tuple, PublishedEntry] = {}
    for entry in (e for f in loaded for e in f.entries):
        first = seen.setdefault(entry.key, entry)
        if first is entry:
            continue
        if first.values != entry.values:
            raise ConfigError(
                f"{entry.where}: gives {entry.values} but {first.where} gives {first.values} for the same "
                "method, backbone, protocol, dataset, variant and source; keep one, or set `variant`"
            )
        warnings.append(f"{entry.where}: repeats {first.where}")
    warnings.extend(_protocol_warnings(loaded))
    return Published(loaded, warnings)


def _protocol_warnings(files: list[PublishedFile]) -> list[str]:
    """Entries naming a protocol of the suite must name one of its benchmarks."""
    from benchmark.protocol import list_protocols, load_protocol

    known = set(list_protocols())
    benchmarks: dict[str, list[str] | None] = {}
    warnings = []
    for entry in (e for f in files for e in f.entries):
        names = [(entry.protocol, entry.dataset)]
        if entry.run is not None:
            names.append((entry.run.protocol, entry.run.benchmark))
        for protocol, dataset in names:
            if protocol not in known:
                continue
            if protocol not in benchmarks:
                try:
                    benchmarks[protocol] = list(load_protocol(protocol).benchmarks)
                except ConfigError as error:
                    benchmarks[protocol] = None
                    warnings.append(f"protocol {protocol!r} does not load, its entries are unchecked: {error}")
            known_benchmarks = benchmarks[protocol]
            if known_benchmarks is not None and dataset not in known_benchmarks:
                raise ConfigError(
                    f"{entry.where}: protocol {protocol!r} has no benchmark {dataset!r}; it has {known_benchmarks}"
                )
    return warnings


def _normalised(text: str) -> str:
    return "".join(char for char in text.lower() if char.isalnum())


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _matches(entry: PublishedEntry, protocol: str, benchmark: str, method: dict[str, Any]) -> int | None:
    """How specifically `entry` describes this run on this benchmark; None when it does not."""
    run = entry.run
    if (run.protocol_name if run else entry.protocol) != protocol:
        return None
    if (run.benchmark if run else entry.dataset) != benchmark:
        return None
    if (run.method if run else entry.method) != method.get("name"):
        return None
    backbone = method.get("backbone")
    if backbone and _normalised(entry.backbone) not in _normalised(backbone):
        return None
    score = 0
    if run is not None:
        config = method.get("config") or {}
        if any(key not in config or not _same_value(config[key], value) for key, value in run.options.items()):
            return None
        checkpoint = method.get("checkpoint")  # None: the method's default file, which the record does not name
        if run.checkpoint and checkpoint and Path(str(checkpoint)).name != Path(run.checkpoint).name:
            return None
        score = 1 + len(run.options) + bool(run.checkpoint and checkpoint)
    return score


def find_entry(
    entries: list[PublishedEntry], protocol: str, benchmark: str, method: dict[str, Any]
) -> PublishedEntry | None:
    """The published entry for a record's `method` block on (protocol name, benchmark), if any.

    Entries with a `run:` block match only runs with its options and checkpoint file; the most specific
    match wins, then the authors' own number over a third party's, then the first in file order.
    """
    best: tuple[int, int, int] | None = None
    found = None
    for order, entry in enumerate(entries):
        score = _matches(entry, protocol, benchmark, method)
        if score is None:
            continue
        rank = (score, 0 if entry.third_party else 1, -order)
        if best is None or rank > best:
            best, found = rank, entry
    return found
