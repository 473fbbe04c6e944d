"""The text banks of one method run, encoded once per (class names, text settings)."""

from __future__ import annotations

from typing import Any

from benchmark.protocol import BenchmarkSpec, Protocol
from methods.base import SegMethod


class TextBankCache:
    """One text bank per (names, templates, aggregation) for the life of a method run; counts what it saved."""

    def __init__(self) -> None:
        self._banks: dict[tuple, Any] = {}
        self.encoded = 0  # banks encoded
        self.reused = 0  # requests answered from the cache

    def get(self, method: SegMethod, protocol: Protocol, spec: BenchmarkSpec) -> Any:
        key = (spec.class_names, protocol.text)
        if key in self._banks:
            self.reused += 1
        else:
            self._banks[key] = method.encode_classes([list(s) for s in spec.class_names], protocol.text)
            self.encoded += 1
        return self._banks[key]
