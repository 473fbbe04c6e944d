"""What a trained checkpoint says about its training, as a record may show it on any machine."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath
from typing import Any


def training_facts(meta: dict[str, Any], keys: Iterable[str]) -> dict[str, Any] | None:
    """The `keys` present in a checkpoint's metadata; paths (of the data, the initial weights) as their
    last component, since a folder of the training machine says nothing elsewhere. None when empty."""
    facts = {key: _portable(meta[key]) for key in keys if key in meta}
    return facts or None


def _portable(value: Any) -> Any:
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return PurePath(value).name
    return value
