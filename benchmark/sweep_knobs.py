"""The knobs a sensitivity sweep turns: short names for protocol settings, their accepted values, and the
`--set` overrides (benchmark.protocol.apply_overrides keys) each value makes on a base protocol.

`--vary resize.short=64,96,128` turns `image.resize.short`; `--vary classes=sclip` gives every benchmark the
class-name file that protocol `sclip` uses for the benchmark of the same name; `--vary method.pamr=true,false`
turns `method_settings.pamr`. A value's overrides are exactly what `zsbench eval --set` would be given, so a
variant is the derived protocol that command evaluates (its own name and hash, its records where eval files them).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmark import paths
from benchmark.errors import ConfigError
from benchmark.protocol import (
    AGGREGATIONS,
    BACKGROUND_RULES,
    PRECISIONS,
    Protocol,
    list_protocols,
    protocol_path,
)
from benchmark.yamlio import load_yaml_mapping

METHOD_PREFIX = "method."
TEMPLATES_DIR = paths.PROTOCOLS_DIR / "templates"


@dataclass(frozen=True)
class Knob:
    """One setting a sweep can vary: what it sets, what it accepts, and which side of the method it reaches."""

    name: str
    key: str  # the override key (apply_overrides); empty where `overrides` is computed per value
    accepts: str  # the accepted values, as the one-line error names them
    side: str  # image (its own pass over the images) | text (scored from a pass shared with other variants)
    check: Callable[[Any], bool]
    about: str


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda value: value in choices


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


KNOBS: dict[str, Knob] = {knob.name: knob for knob in (
    Knob("resize.short", "image.resize.short", "positive integers (pixels)", "image", _positive_int,
         "short side the image is resized to (mmcv imrescale)"),
    Knob("resize.long_max", "image.resize.long_max", "positive integers (pixels)", "image", _positive_int,
         "cap on the long side"),
    Knob("inference.mode", "inference.mode", "slide, whole", "image", _one_of(("slide", "whole")),
         "sliding windows or the whole image at once"),
    Knob("inference.crop", "inference.crop", "positive integers (pixels)", "image", _positive_int,
         "sliding-window size"),
    Knob("inference.stride", "inference.stride", "positive integers (pixels)", "image", _positive_int,
         "sliding-window stride"),
    Knob("precision", "precision", ", ".join(PRECISIONS), "image", _one_of(PRECISIONS),
         "numeric precision of the forward passes"),
    Knob("text.templates", "", "a template file under the protocol's folder, or a named set", "text", _text,
         "prompt templates"),
    Knob("text.aggregation", "text.aggregation", ", ".join(AGGREGATIONS), "text", _one_of(AGGREGATIONS),
         "how template embeddings are averaged"),
    Knob("classes", "", "protocol names or protocol files", "text", _text,
         "class-name files: another protocol's, benchmark by benchmark"),
    Knob("background.rule", "background.rule", ", ".join(BACKGROUND_RULES), "text", _one_of(BACKGROUND_RULES),
         "background rule"),
    Knob("background.value", "background.value", "numbers, or null (the method's own value)", "text",
         _number_or_null, "background threshold"),
    Knob("background.area_thd", "background.area_thd", "numbers, or null (no area rule)", "text",
         _number_or_null, "SCLIP's small-class suppression"),
)}
KNOB_LIST = ", ".join([*KNOBS, "method.<setting>"])


def knob_named(name: str) -> Knob:
    """The knob called `name`; `method.<setting>` is a method setting (method_settings.<setting>)."""
    if name in KNOBS:
        return KNOBS[name]
    setting = name[len(METHOD_PREFIX):] if name.startswith(METHOD_PREFIX) else ""
    if setting and "." not in setting and setting.strip():
        # a setting the method reads in `setup`: by the interface it reaches score/refine only, never encode_crops
        return Knob(name, f"method_settings.{setting}", "any value the method reads", "text", lambda _: True,
                    f"method setting {setting!r} (read by the method's setup)")
    raise ConfigError(f"--vary {name}: unknown knob {name!r}; knobs: {KNOB_LIST} (e.g. method.pamr, "
                      "method.logit_scale)")


@dataclass(frozen=True)
class KnobValues:
    """A `--vary KEY=V1,V2,...`: the knob and its values, each as given and as read (YAML)."""

    knob: Knob
    given: tuple[str, ...]
    values: tuple[Any, ...]


def parse_vary(text: str) -> KnobValues:
    """`KEY=V1,V2,...` -> the knob and its values, each checked against what the knob accepts."""
    name, sep, listed = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"--vary {text!r}: expected KNOB=V1,V2,...; knobs: {KNOB_LIST}")
    knob = knob_named(name)
    given = tuple(value.strip() for value in listed.split(",") if value.strip())
    if not given:
        raise ConfigError(f"--vary {text!r}: no values; {knob.name} takes {_accepted(knob)}")
    repeated = sorted({value for value in given if given.count(value) > 1})
    if repeated:
        raise ConfigError(f"--vary {name}: value {repeated[0]!r} is listed twice")
    values = []
    for value in given:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if not knob.check(parsed):
            raise ConfigError(f"--vary {name}={value}: {value!r} is not accepted; {name} takes {_accepted(knob)}")
        values.append(parsed)
    return KnobValues(knob, given, tuple(values))


def _accepted(knob: Knob) -> str:
    if knob.name == "text.templates":
        return f"{knob.accepts} ({', '.join(template_sets())})"
    if knob.name == "classes":
        return f"{knob.accepts} ({', '.join(list_protocols())})"
    return knob.accepts


def template_sets() -> list[str]:
    """The named template sets: protocols/templates/<name>.txt."""
    return sorted(path.stem for path in TEMPLATES_DIR.glob("*.txt"))


def overrides_for(knob: Knob, given: str, value: Any, base: Protocol, benchmarks: list[str] | None) -> dict[str, Any]:
    """The `--set` overrides that give `base` this knob value (`benchmarks`: those the sweep evaluates)."""
    if knob.name == "text.templates":
        return {"text.templates": _templates_path(given, base)}
    if knob.name == "classes":
        return _class_files(given, base, benchmarks)
    return {knob.key: value}


def _relative_to_protocol(target: Path, base: Protocol, what: str) -> str:
    """`target` as the base protocol's YAML would name it (relative to its folder, inside it)."""
    folder = base.path.parent.resolve()
    target = target.resolve()
    if not target.is_relative_to(folder):
        raise ConfigError(f"{what}: {target} lies outside the folder of protocol {base.name!r} ({folder}); a "
                          "protocol reads files under its own folder only")
    return Path(os.path.relpath(target, folder)).as_posix()


def _templates_path(given: str, base: Protocol) -> str:
    """A named set (protocols/templates/<name>.txt) or a template file, relative to the base's folder."""
    named = TEMPLATES_DIR / f"{given}.txt"
    target = named if named.is_file() else Path(given).expanduser()
    if not target.is_absolute() and not target.is_file():
        target = base.path.parent / given
    if not target.is_file():
        raise ConfigError(f"--vary text.templates={given}: no template set {given!r} and no such file; named sets: "
                          f"{', '.join(template_sets())}, or a template file under {base.path.parent}")
    return _relative_to_protocol(target, base, f"--vary text.templates={given}")


def _class_files(given: str, base: Protocol, benchmarks: list[str] | None) -> dict[str, str]:
    """Each benchmark the sweep evaluates (all the base's by default) takes the class-name file that protocol
    `given` uses for it; only those, so that a benchmark whose file does not fit (another background rule, other
    class lines) can be left out with --benchmarks."""
    other = protocol_path(given)
    if not other.is_file():
        raise ConfigError(f"--vary classes={given}: no protocol {given!r}; protocols: {', '.join(list_protocols())}")
    raw = load_yaml_mapping(other)
    theirs = raw.get("benchmarks") if isinstance(raw.get("benchmarks"), dict) else {}
    selected = benchmarks or list(base.benchmarks)
    missing = [name for name in selected if name not in theirs]
    if missing:
        raise ConfigError(f"--vary classes={given}: protocol {raw.get('name', given)!r} has no benchmark "
                          f"{', '.join(missing)} of protocol {base.name!r}; it has {', '.join(theirs) or 'none'}")
    overrides = {}
    for name in selected:
        entry = theirs[name]
        if not isinstance(entry, dict) or not isinstance(entry.get("classes"), str):
            raise ConfigError(f"{other}: benchmark {name!r} names no class-name file (key 'classes')")
        target = other.parent / entry["classes"]
        overrides[f"benchmarks.{name}.classes"] = _relative_to_protocol(target, base, f"--vary classes={given}")
    return overrides


def set_argument(key: str, value: Any) -> str:
    """One override as `zsbench eval --set` takes it (the value written so that YAML reads it back)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return f"{key}={text.removesuffix('...').strip()}"
