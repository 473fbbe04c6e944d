"""Safe YAML loading with errors that name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import ConfigError


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(content).__name__}")
    return content


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
               list: "a list", dict: "a mapping"}


def check_fields(
    mapping: dict[str, Any],
    required: dict[str, type | tuple[type, ...]],
    optional: dict[str, type | tuple[type, ...]],
    path: Path,
    where: str = "",
) -> None:
    """Unknown keys, missing required keys and wrong types are errors naming path and key."""
    prefix = f"{path}: {where}" if where else f"{path}: "
    if not isinstance(mapping, dict):
        raise ConfigError(f"{prefix}expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in required and key not in optional:
            allowed = ", ".join(sorted([*required, *optional]))
            raise ConfigError(f"{prefix}unknown key {key!r} (allowed: {allowed})")
    for key in required:
        if key not in mapping:
            raise ConfigError(f"{prefix}missing required key {key!r}")
    for key, kind in {**required, **optional}.items():
        if key not in mapping or (mapping[key] is None and key in optional):
            continue
        value = mapping[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            continue
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise ConfigError(f"{prefix}key {key!r} must be {expected}, got {value!r}")


def confined_path(base: Path, relative: str, path: Path, key: str) -> Path:
    """`relative` resolved under `base`; a path that escapes `base` is refused."""
    candidate = (base / relative).resolve()
    if not candidate.is_relative_to(base.resolve()):
        raise ConfigError(f"{path}: key {key!r}: path {relative!r} leaves its folder {base}")
    return candidate
