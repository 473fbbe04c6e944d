"""The text banks of one method run, encoded once per (class names, text settings)."""

from __future__ import annotations

from typing import Any

from benchmark.protocol import BenchmarkSpec, Protocol
from methods.base import SegMethod


class TextBankCache:
    """One text bank per (names, templates, aggregation) for the life of a method run."""

    def __init__(self) -> None:
        self._banks: dict[tuple, Any] = {}

    def get(self, method: SegMethod, protocol: Protocol, spec: BenchmarkSpec) -> Any:
        key = (spec.class_names, protocol.text)
        if key not in self._banks:
            self._banks[key] = method.encode_classes([list(s) for s in spec.class_names], protocol.text)
        return self._banks[key]
