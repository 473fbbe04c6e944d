"""Training settings: ``defaults.yaml`` merged with a run's overrides, checked key by key."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import ConfigError

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
NESTED = ("network", "views", "superpixels", "loss_weights", "teacher")


EMBEDDING_LOSSES = ("cosine", "contrastive")
SEMANTIC_TARGETS = ("centres", "text")


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    return yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8"))


def default_settings() -> dict[str, Any]:
    return copy.deepcopy(_defaults())


def resolve_settings(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The defaults with ``overrides`` applied; nested sections merge key by key."""
    settings = default_settings()
    for key, value in (overrides or {}).items():
        if key not in settings:
            raise ConfigError(f"CLIP-S4 has no training setting {key!r}; known: {sorted(settings)} ({DEFAULTS_FILE})")
        if key in NESTED:
            if not isinstance(value, dict):
                raise ConfigError(f"CLIP-S4 setting {key!r} takes a mapping, got {value!r}")
            unknown = sorted(set(value) - set(settings[key]))
            if unknown:
                raise ConfigError(f"CLIP-S4 setting {key!r} has no keys {unknown}; known: {sorted(settings[key])}")
            settings[key].update(value)
        else:
            settings[key] = value
    if settings["embedding_loss"] not in EMBEDDING_LOSSES:
        raise ConfigError(
            f"CLIP-S4 setting 'embedding_loss' must be one of {EMBEDDING_LOSSES}, got {settings['embedding_loss']!r}"
        )
    if settings["semantic_targets"] not in SEMANTIC_TARGETS:
        raise ConfigError(
            f"CLIP-S4 setting 'semantic_targets' must be one of {SEMANTIC_TARGETS}, "
            f"got {settings['semantic_targets']!r}"
        )
    return settings


def read_templates(value: str | list[str]) -> list[str]:
    """A template list, or a file (relative to this folder) with one template per line."""
    if isinstance(value, list):
        return [str(t) for t in value]
    path = Path(value)
    path = path if path.is_absolute() else DEFAULTS_FILE.parent / path
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    if not templates:
        raise ConfigError(f"{path}: no templates")
    return templates
