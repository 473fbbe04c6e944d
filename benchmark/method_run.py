"""A configured method and the id its records are filed under."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import paths
from benchmark.registry import build_method, class_path, get_method_class, option_defaults
from methods.base import SegMethod

# Options that say where things are or how to load them, never what the numbers are: the weights they
# point to enter a run's identity by their sha256 (checkpoint_sha256 and the method's config).
LOCATION_OPTIONS = ("checkpoint", "pretrained", "weights_root", "text_cache", "allow_torchscript")
# Options whose resolved value the method's config() reports (the architecture a weights file or tag
# implies): `--opt pretrained=synthetic` and `--opt model=... --opt pretrained=<its file>` are one run.
RESOLVED_OPTIONS = ("model",)


@dataclass(frozen=True)
class MethodRun:
    """A configured method: what decides its numbers, and the id its records are filed under.

    The id is the method's content: its name, the options that change numbers (those that differ from
    the constructor's defaults; locations and the architecture left out), its `config()` and the sha256
    of its weights; never a path, so the same weights give the same id on every machine and folder.
    """

    method: SegMethod
    options: dict[str, Any]  # as given (--opt), --checkpoint included as "checkpoint"
    checkpoint: str | None = None
    weights_root: str | None = None

    @property
    def identity(self) -> dict[str, Any]:
        defaults = option_defaults(type(self.method))
        left_out = (*LOCATION_OPTIONS, *RESOLVED_OPTIONS)
        options = {key: value for key, value in self.options.items()
                   if key not in left_out and not (key in defaults and defaults[key] == value)}
        return {"name": self.method.name, "options": options, "config": self.method.config(),
                "weights_sha256": self.method.checkpoint_sha256()}

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.method.name}-{digest[:10]}"

    @property
    def config(self) -> dict[str, Any]:
        """The options as a record shows them (file paths relative to the weights root) and the method's config."""
        return {**self.portable_options(), **self.method.config()}

    def portable_options(self) -> dict[str, Any]:
        shown = {}
        for key, value in self.options.items():
            if key == "weights_root":
                continue
            if isinstance(value, str) and key in LOCATION_OPTIONS and _names_a_file(value, self.weights_root):
                value = paths.portable_path(paths.resolve_checkpoint(value, self.weights_root), self.weights_root)
            shown[key] = value
        return shown

    @property
    def class_path(self) -> str:
        return class_path(type(self.method))


def _names_a_file(value: str, weights_root: str | None) -> bool:
    return Path(value).expanduser().is_file() or paths.resolve_checkpoint(value, weights_root).is_file()


def make_method_run(
    method: str, checkpoint: str | None, options: dict[str, Any], weights_root: str | None
) -> MethodRun:
    """The method named on a command line (registered name or package.module:ClassName), built and configured."""
    cls = get_method_class(method)
    built = build_method(cls, checkpoint, options, weights_root)
    given = {**options, **({"checkpoint": checkpoint} if checkpoint is not None else {})}
    return MethodRun(built, given, checkpoint, weights_root)
