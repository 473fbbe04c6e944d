"""Protocols (protocols/*.yaml): everything that decides a number, validated and hashed."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from benchmark import paths
from benchmark.data import DatasetCard, load_card
from benchmark.errors import ConfigError
from benchmark.yamlio import at_line, check_fields, confined_path, line_of, load_yaml_mapping, merged

RESIZE_FIELDS = {"short": int, "long_max": int}
BACKGROUND_RULES = ("none", "names", "threshold", "prob_thd")
AGGREGATIONS = ("mean_unnormalised", "mean_normalised")
PRECISIONS = ("fp32", "bf16", "fp16")
# method_settings keys that the built-in methods read (a protocol may set others for other methods).
METHOD_SETTING_HINTS = ("logit_scale", "pamr", "kp_w")


@dataclass(frozen=True)
class ImageSpec:
    resize_short: int | None
    resize_long_max: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class InferenceSpec:
    mode: str  # slide | whole
    crop: int | None
    stride: int | None


@dataclass(frozen=True)
class BackgroundSpec:
    rule: str
    value: float | None = None
    area_thd: float | None = None


@dataclass(frozen=True)
class TextSpec:
    templates: tuple[str, ...]
    aggregation: str


@dataclass(frozen=True)
class ClassSplit:
    """Seen/unseen classes of a zero-shot split, as card class ids, and how they are evaluated."""

    name: str
    source: str
    seen: tuple[int, ...]
    unseen: tuple[int, ...]
    setting: str  # generalised: all classes at once | unseen_only: unseen pixels, unseen predictions


SPLIT_SETTINGS = ("generalised", "unseen_only")


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    dataset: DatasetCard
    class_names: tuple[tuple[str, ...], ...]  # names per prompted class, synonyms grouped
    image: ImageSpec
    inference: InferenceSpec
    background: BackgroundSpec
    method_settings: dict[str, Any] = field(default_factory=dict)
    split: ClassSplit | None = None
    # The label value the metric masks, where a protocol sets one other than the card's ignore_index (`metric:
    # {ignore_index: 255}`: mmseg IoUMetric's default on a card whose void is 65535). Label values outside the
    # classes are then pixels without a label whose predictions count in the predicted class's union.
    metric_ignore_index: int | None = None

    @property
    def ignore_in_metric(self) -> int:
        """The label value the metric skips: the protocol's `metric.ignore_index`, else the card's ignore_index."""
        return self.dataset.ignore_index if self.metric_ignore_index is None else self.metric_ignore_index

    @property
    def flat_names(self) -> list[str]:
        return [name for synonyms in self.class_names for name in synonyms]

    @property
    def name_to_class(self) -> list[int]:
        """For each flat name, the index of its prompted class."""
        return [k for k, synonyms in enumerate(self.class_names) for _ in synonyms]


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    source: str
    path: Path
    precision: str
    text: TextSpec
    benchmarks: dict[str, BenchmarkSpec]
    hash: str
    overrides: dict[str, Any] = field(default_factory=dict)  # --set KEY=VALUE over the file (a derived protocol)

    def select(self, names: list[str] | None) -> list[BenchmarkSpec]:
        if not names:
            return list(self.benchmarks.values())
        unknown = [n for n in names if n not in self.benchmarks]
        if unknown:
            raise ConfigError(
                f"{self.path}: protocol {self.name!r} has no benchmark {unknown}; it has {list(self.benchmarks)}"
            )
        return [self.benchmarks[n] for n in names]

    @property
    def short_hash(self) -> str:
        return self.hash[:12]


def protocol_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        return candidate
    return paths.PROTOCOLS_DIR / f"{name_or_path}.yaml"


def list_protocols() -> list[str]:
    return sorted(p.stem for p in paths.PROTOCOLS_DIR.glob("*.yaml"))


def read_lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: {what} file cannot be read ({error})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def split_names(line: str) -> list[str]:
    """Comma-separated names, stripped; a name in double quotes is kept verbatim (spaces, commas)."""
    names, current, quoted = [], [], False
    for char in line:
        if char == '"':
            quoted = not quoted
            current.append(char)
        elif char == "," and not quoted:
            names.append("".join(current))
            current = []
        else:
            current.append(char)
    names.append("".join(current))
    result = []
    for name in (n.strip() for n in names):
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1]
        if name.strip():
            result.append(name)
    return result


def read_class_names(path: Path) -> tuple[tuple[str, ...], ...]:
    """One class per line, synonyms comma-separated (see split_names)."""
    classes = []
    for number, line in enumerate(read_lines(path, "class-name"), start=1):
        synonyms = tuple(split_names(line))
        if not synonyms:
            raise ConfigError(f"{path}: class {number} has no name")
        classes.append(synonyms)
    return tuple(classes)


def read_templates(path: Path) -> tuple[str, ...]:
    templates = tuple(read_lines(path, "template"))
    if not templates:
        raise ConfigError(f"{path}: template file is empty")
    for template in templates:
        if template.count("{}") != 1:
            raise ConfigError(f"{path}: template {template!r} must contain exactly one '{{}}'")
    return templates


def _image_spec(raw: dict[str, Any], path: Path, where: str) -> ImageSpec:
    check_fields(raw, {"mean": list, "std": list}, {"resize": dict}, path, where)
    resize = raw.get("resize")
    if resize is not None:
        check_fields(resize, RESIZE_FIELDS, {}, path, f"{where}resize: ")
    for key in ("mean", "std"):
        values = raw[key]
        if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
            raise ConfigError(
                f"{path}: {where}key {key!r}{at_line(raw, key)} must be three numbers (RGB), got {values!r}"
            )
    if any(v <= 0 for v in raw["std"]):
        raise ConfigError(f"{path}: {where}key 'std'{at_line(raw, 'std')} must be positive")
    return ImageSpec(
        resize_short=resize["short"] if resize else None,
        resize_long_max=resize["long_max"] if resize else None,
        mean=tuple(float(v) for v in raw["mean"]),
        std=tuple(float(v) for v in raw["std"]),
    )


def _inference_spec(raw: dict[str, Any], path: Path, where: str) -> InferenceSpec:
    check_fields(raw, {"mode": str}, {"crop": int, "stride": int}, path, where)
    mode = raw["mode"]
    if mode not in ("slide", "whole"):
        raise ConfigError(f"{path}: {where}key 'mode'{at_line(raw, 'mode')} must be 'slide' or 'whole', got {mode!r}")
    if mode == "slide":
        for key in ("crop", "stride"):
            if not raw.get(key) or raw[key] <= 0:
                raise ConfigError(f"{path}: {where}slide mode needs a positive {key!r}{at_line(raw, key)}")
    return InferenceSpec(mode=mode, crop=raw.get("crop"), stride=raw.get("stride"))


def _background_spec(raw: dict[str, Any], path: Path, where: str) -> BackgroundSpec:
    check_fields(raw, {"rule": str}, {"value": float, "area_thd": float}, path, where)
    if raw["rule"] not in BACKGROUND_RULES:
        raise ConfigError(
            f"{path}: {where}key 'rule'{at_line(raw, 'rule')} must be one of {BACKGROUND_RULES}, got {raw['rule']!r}"
        )
    return BackgroundSpec(rule=raw["rule"], value=raw.get("value"), area_thd=raw.get("area_thd"))


_PROTOCOL_REQUIRED = {"name": str, "image": dict, "inference": dict, "text": dict, "benchmarks": dict}
_PROTOCOL_OPTIONAL = {
    "title": str, "source": str, "precision": str, "background": dict, "method_settings": dict, "metric": dict,
}
_BENCHMARK_REQUIRED = {"dataset": str, "classes": str}
_BENCHMARK_OPTIONAL = {
    "image": dict, "inference": dict, "background": dict, "method_settings": dict, "split": dict, "metric": dict,
}


def _metric_ignore_index(raw: dict[str, Any], card: DatasetCard, path: Path, where: str) -> int | None:
    """`metric: {ignore_index: N}`: None where it is absent or equals the card's own ignore_index."""
    check_fields(raw, {}, {"ignore_index": int}, path, where)
    value = raw.get("ignore_index")
    if value is None or value == card.ignore_index:
        return None
    if value < 0:
        raise ConfigError(f"{path}: {where}key 'ignore_index'{at_line(raw, 'ignore_index')} must be a label value "
                          f"(>= 0), got {value}")
    return value


def _check_class_count(spec: BenchmarkSpec, classes_file: Path) -> None:
    card = spec.dataset
    prompted = len(spec.class_names)
    if spec.background.rule == "threshold":
        if not card.has_background:
            raise ConfigError(
                f"{classes_file}: the threshold background rule needs a card with a background class 0; "
                f"{card.path} has has_background: false"
            )
        expected, what = card.num_classes - 1, "classes after background (threshold rule)"
    else:
        expected, what = card.num_classes, "classes"
    if prompted != expected:
        raise ConfigError(
            f"{classes_file}: {prompted} class lines, but {card.path} needs {expected} {what} "
            f"for benchmark {spec.name!r}"
        )
    if spec.background.rule in ("prob_thd", "names") and not card.has_background:
        raise ConfigError(f"{classes_file}: rule {spec.background.rule!r} needs a card with a background class 0")


def load_protocol(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Protocol:
    """A protocol file, validated and hashed; with `overrides` (dotted key -> value, see `apply_overrides`)
    the derived protocol: its name says what was set, and it has its own hash."""
    if overrides:
        try:
            return _load_protocol(name_or_path, overrides)
        except ConfigError as error:
            settings = " ".join(f"{key}={value}" for key, value in overrides.items())
            raise ConfigError(f"{error} (with --set {settings})") from None
    return _load_protocol(name_or_path, None)


def _load_protocol(name_or_path: str | Path, overrides: dict[str, Any] | None) -> Protocol:
    path = protocol_path(name_or_path)
    if not path.exists():
        known = ", ".join(list_protocols()) or "none"
        raise ConfigError(f"{path}: no protocol {str(name_or_path)!r} (protocols: {known})")
    raw = load_yaml_mapping(path)
    check_fields(raw, _PROTOCOL_REQUIRED, _PROTOCOL_OPTIONAL, path)
    if raw["name"] != path.stem:
        raise ConfigError(
            f"{path}: key 'name'{at_line(raw, 'name')} is {raw['name']!r} but must equal the file stem {path.stem!r}"
        )
    if overrides:
        apply_overrides(raw, overrides)
    base = path.parent
    precision = raw.get("precision") or "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(
            f"{path}: key 'precision'{at_line(raw, 'precision')} must be one of {PRECISIONS}, got {precision!r}"
        )
    check_fields(raw["text"], {"templates": str, "aggregation": str}, {}, path, "text: ")
    if raw["text"]["aggregation"] not in AGGREGATIONS:
        raise ConfigError(f"{path}: text: key 'aggregation'{at_line(raw['text'], 'aggregation')} must be one of "
                          f"{AGGREGATIONS}")
    templates = read_templates(
        confined_path(base, raw["text"]["templates"], path, "text.templates", line_of(raw["text"], "templates"))
    )
    text = TextSpec(templates=templates, aggregation=raw["text"]["aggregation"])
    if not raw["benchmarks"]:
        raise ConfigError(f"{path}: key 'benchmarks'{at_line(raw, 'benchmarks')} is empty")
    top_settings = raw.get("method_settings") or {}
    benchmarks: dict[str, BenchmarkSpec] = {}
    for bench_name, bench_raw in raw["benchmarks"].items():
        where = f"benchmarks: {bench_name}: "
        check_fields(bench_raw, _BENCHMARK_REQUIRED, _BENCHMARK_OPTIONAL, path, where)
        classes_file = confined_path(
            base, bench_raw["classes"], path, f"benchmarks.{bench_name}.classes", line_of(bench_raw, "classes")
        )
        spec = BenchmarkSpec(
            name=bench_name,
            dataset=_card(bench_raw["dataset"], base, path, bench_name, line_of(bench_raw, "dataset")),
            class_names=read_class_names(classes_file),
            image=_image_spec(merged(raw["image"], bench_raw.get("image")), path, f"{where}image: "),
            inference=_inference_spec(
                merged(raw["inference"], bench_raw.get("inference")), path, f"{where}inference: "
            ),
            background=_background_spec(
                merged(raw.get("background") or {"rule": "none"}, bench_raw.get("background")),
                path,
                f"{where}background: ",
            ),
            method_settings={**top_settings, **(bench_raw.get("method_settings") or {})},
        )
        spec = replace(spec, metric_ignore_index=_metric_ignore_index(
            merged(raw.get("metric") or {}, bench_raw.get("metric")), spec.dataset, path, f"{where}metric: "))
        _check_class_count(spec, classes_file)
        if bench_raw.get("split") is not None:
            split = _class_split(bench_raw["split"], spec.dataset, base, path, f"{where}split: ")
            spec = replace(spec, split=split)
        benchmarks[bench_name] = spec
    content = {
        "name": raw["name"],
        "precision": precision,
        "text": {"templates": list(text.templates), "aggregation": text.aggregation},
        "benchmarks": {name: _spec_content(spec) for name, spec in benchmarks.items()},
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Protocol(
        name=raw["name"], title=raw.get("title") or raw["name"], source=raw.get("source") or "", path=path,
        precision=precision, text=text, benchmarks=benchmarks, hash=digest, overrides=dict(overrides or {}),
    )


OVERRIDE_SECTIONS = (
    "image", "inference", "background", "method_settings", "metric", "precision", "text", "benchmarks",
)
PER_BENCHMARK_SECTIONS = ("image", "inference", "background", "method_settings", "metric")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs -> {dotted key: value read as YAML}."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not all(key.split(".")):
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with a dotted key, e.g. "
                              "method_settings.logit_scale=50 or benchmarks.voc21.background.value=0.4")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {pair!r}: the value is not YAML ({error})") from None
    return overrides


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Sets each dotted key in the protocol's raw mapping and renames it after what was set.

    ``image.*``, ``inference.*``, ``background.*``, ``method_settings.*`` and ``metric.*`` apply to every benchmark
    (also where a benchmark sets its own value); ``benchmarks.NAME.*`` to one; ``precision`` and
    ``text.*`` to the protocol.
    """
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] not in OVERRIDE_SECTIONS:
            raise ConfigError(f"--set {key}: unknown setting {parts[0]!r}; settable: {', '.join(OVERRIDE_SECTIONS)}")
        if parts[0] == "benchmarks":
            if len(parts) < 3 or parts[1] not in raw["benchmarks"]:
                raise ConfigError(f"--set {key}: expected benchmarks.NAME.SETTING with NAME one of "
                                  f"{', '.join(raw['benchmarks'])}")
        elif len(parts) == 1 and parts[0] != "precision":
            raise ConfigError(f"--set {key}: name a setting inside {parts[0]!r}, e.g. {parts[0]}.KEY=VALUE")
        _set_dotted(raw, parts, value)
        if parts[0] in PER_BENCHMARK_SECTIONS:
            for bench in raw["benchmarks"].values():
                if isinstance(bench, dict) and isinstance(bench.get(parts[0]), dict):
                    _set_dotted(bench, parts, value)
    settings = "+".join(f"{key}={value}" for key, value in overrides.items())
    name = f"{raw['name']}+{re.sub(r'[^A-Za-z0-9._=,+-]', '_', settings)}"
    if len(name) > 100:
        digest = hashlib.sha256(settings.encode()).hexdigest()[:10]
        name = f"{raw['name']}+set-{digest}"
    raw["name"] = name


def _set_dotted(mapping: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        inner = mapping.get(part)
        if inner is None:
            inner = mapping[part] = {}
        if not isinstance(inner, dict):
            raise ConfigError(f"--set {'.'.join(parts)}: {part!r} is not a section")
        mapping = inner
    mapping[parts[-1]] = value


def _class_split(raw: dict[str, Any], card: DatasetCard, base: Path, path: Path, where: str) -> ClassSplit:
    """`split: {file: splits/x.yaml, setting: generalised}`; the file lists seen and unseen by card name."""
    check_fields(raw, {"file": str}, {"setting": str}, path, where)
    setting = raw.get("setting") or "generalised"
    if setting not in SPLIT_SETTINGS:
        raise ConfigError(
            f"{path}: {where}key 'setting'{at_line(raw, 'setting')} must be one of {SPLIT_SETTINGS}, got {setting!r}"
        )
    split_file = confined_path(base, raw["file"], path, "split.file", line_of(raw, "file"))
    content = load_yaml_mapping(split_file)
    check_fields(content, {"name": str, "seen": list, "unseen": list}, {"source": str, "dataset": str}, split_file)
    if content.get("dataset") and content["dataset"] != card.name:
        raise ConfigError(f"{split_file}: split is for dataset {content['dataset']!r}, used with {card.name!r}")
    index = {name: k for k, name in enumerate(card.classes)}
    ids = {}
    for key in ("seen", "unseen"):
        unknown = [name for name in content[key] if name not in index]
        if unknown:
            raise ConfigError(
                f"{split_file}: key {key!r}{at_line(content, key)}: {unknown} are not classes of {card.path}"
            )
        ids[key] = tuple(index[name] for name in content[key])
    overlap = sorted(set(content["seen"]) & set(content["unseen"]))
    if overlap:
        raise ConfigError(f"{split_file}: classes {overlap} are both seen and unseen")
    missing = [name for name in card.classes if name not in set(content["seen"]) | set(content["unseen"])]
    if missing:
        raise ConfigError(f"{split_file}: classes {missing} of {card.path} are neither seen nor unseen")
    return ClassSplit(content["name"], content.get("source") or "", ids["seen"], ids["unseen"], setting)


def _card(reference: str, base: Path, path: Path, bench_name: str, line: int | None = None) -> DatasetCard:
    """A card name (datasets/<name>.yaml) or a card file relative to the protocol's folder."""
    if reference.endswith((".yaml", ".yml")):
        return load_card(confined_path(base, reference, path, f"benchmarks.{bench_name}.dataset", line))
    return load_card(reference)


def _spec_content(spec: BenchmarkSpec) -> dict[str, Any]:
    """What enters the hash; an optional field enters only when set, so older hashes stay valid."""
    content = {
        "dataset": spec.dataset.identity(),
        "class_names": [list(s) for s in spec.class_names],
        "image": asdict(spec.image),
        "inference": asdict(spec.inference),
        "background": asdict(spec.background),
        "method_settings": spec.method_settings,
    }
    if spec.split is not None:
        content["split"] = asdict(spec.split)
    if spec.metric_ignore_index is not None:
        content["metric"] = {"ignore_index": spec.metric_ignore_index}
    return content
