"""Safe YAML loading with errors that name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import ConfigError


class YamlMapping(dict):
    """A mapping read from YAML that remembers its own line and the line of each key (1-based)."""

    line: int | None = None
    key_lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}


class _LineLoader(yaml.SafeLoader):
    """safe_load (no Python tags) whose mappings are YamlMappings; a key given twice is an error."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Any:
    mapping = YamlMapping()
    mapping.line = node.start_mark.line + 1
    yield mapping
    explicit = {id(key_node) for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # keys merged in with `<<:` come first; this mapping's own keys override them
    own_lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark
            ) from None
        line = key_node.start_mark.line + 1
        if id(key_node) in explicit:
            if key in own_lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} repeats the one at line {own_lines[key]}", key_node.start_mark
                )
            own_lines[key] = line
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def line_of(mapping: Any, key: Any = None) -> int | None:
    """The line of `key` in a mapping read by load_yaml_mapping (of the mapping itself without a key)."""
    if not isinstance(mapping, YamlMapping):
        return None
    return mapping.line if key is None else mapping.key_lines.get(key)


def at_line(mapping: Any, key: Any = None) -> str:
    """" (line N)" for error messages, or "" where the line is not known."""
    line = line_of(mapping, key)
    return f" (line {line})" if line else ""


def merged(top: dict[str, Any] | None, override: dict[str, Any] | None) -> dict[str, Any] | None:
    """`override`'s keys over `top`'s, keeping the line of each key."""
    if override is None:
        return top
    result = YamlMapping({**(top or {}), **override})
    result.line = line_of(override)
    for part in (top, override):
        if isinstance(part, YamlMapping):
            result.key_lines.update(part.key_lines)
    return result


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from None
    try:
        content = yaml.load(text, Loader=_LineLoader)  # a SafeLoader: Python tags are refused
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
            raise ConfigError(f"{prefix}unknown key {key!r}{at_line(mapping, key)}; allowed: {allowed}")
    for key in required:
        if key not in mapping:
            where_mapping = f" (in the mapping at line {line_of(mapping)})" if line_of(mapping) else ""
            raise ConfigError(f"{prefix}missing required key {key!r}{where_mapping}")
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
            raise ConfigError(f"{prefix}key {key!r}{at_line(mapping, key)} must be {expected}, got {value!r}")


def confined_path(base: Path, relative: str, path: Path, key: str, line: int | None = None) -> Path:
    """`relative` resolved under `base`; a path that escapes `base` (also through a symlink) is refused."""
    candidate = (base / relative).resolve()
    if not candidate.is_relative_to(base.resolve()):
        where = f" (line {line})" if line else ""
        raise ConfigError(f"{path}: key {key!r}{where}: path {relative!r} leaves its folder {base}")
    return candidate
