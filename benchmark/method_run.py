"""A configured method and the id its records are filed under."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from benchmark.registry import build_method, get_method_class
from methods.base import SegMethod


@dataclass(frozen=True)
class MethodRun:
    """A configured method: what decides its numbers, and the id its records are filed under."""

    method: SegMethod
    options: dict[str, Any]
    checkpoint: str | None

    @property
    def config(self) -> dict[str, Any]:
        return {**self.options, **self.method.config()}

    @property
    def run_id(self) -> str:
        identity = {"name": self.method.name, "config": self.config, "checkpoint": self.method.checkpoint_sha256()}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.method.name}-{digest[:10]}"


def make_method_run(
    method: str, checkpoint: str | None, options: dict[str, Any], weights_root: str | None
) -> MethodRun:
    """The method named on a command line (registered name or package.module:ClassName), built and configured."""
    cls = get_method_class(method)
    return MethodRun(build_method(cls, checkpoint, options, weights_root), options, checkpoint)
