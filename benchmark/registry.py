"""Method registry: a decorator, the built-in `methods` package, entry points and import paths."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from benchmark.errors import BenchmarkError
from methods.base import SegMethod

ENTRY_POINT_GROUP = "zsseg_bench.methods"

_registry: dict[str, type[SegMethod]] = {}
_trainers: dict[str, Trainer] = {}
_discovered = False


@dataclass(frozen=True)
class Trainer:
    """A `zsbench train NAME` command that a method family offers; registered where the family trains."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]  # the command's own flags
    run: Callable[[argparse.Namespace], dict[str, Any]]  # trains; returns the summary printed as YAML


class MethodNotFoundError(BenchmarkError, LookupError):
    pass


def register_method(name: str | None = None) -> Callable[[type[SegMethod]], type[SegMethod]]:
    """Class decorator: `@register_method()` registers under the class's `name` attribute."""

    def decorate(cls: type[SegMethod]) -> type[SegMethod]:
        key = name or getattr(cls, "name", None)
        if not key:
            raise ValueError(f"{cls.__qualname__}: give register_method a name or set the class's `name`")
        existing = _registry.get(key)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"method name {key!r} is taken by {existing.__module__}.{existing.__qualname__}")
        if not issubclass(cls, SegMethod):
            raise TypeError(f"{cls.__qualname__} must subclass methods.base.SegMethod")
        cls.name = key
        _registry[key] = cls
        return cls

    return decorate


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    import methods

    for info in pkgutil.iter_modules(methods.__path__, prefix="methods."):
        if info.name != "methods.base":
            importlib.import_module(info.name)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        cls = entry.load()
        register_method(entry.name)(cls)


def register_trainer(trainer: Trainer) -> Trainer:
    existing = _trainers.get(trainer.name)
    if existing is not None and existing.run.__qualname__ != trainer.run.__qualname__:
        raise ValueError(f"trainer name {trainer.name!r} is taken by {existing.run.__module__}")
    _trainers[trainer.name] = trainer
    return trainer


def list_trainers() -> list[Trainer]:
    """Every registered trainer, by name (the method packages are imported first)."""
    _discover()
    return [_trainers[name] for name in sorted(_trainers)]


def list_methods() -> list[str]:
    _discover()
    return sorted(_registry)


def get_method_class(name_or_path: str) -> type[SegMethod]:
    """A registered name, or an import path `package.module:ClassName`."""
    if ":" in name_or_path:
        module_name, _, attr = name_or_path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise MethodNotFoundError(
                f"cannot import {module_name!r} for method {name_or_path!r}: {error}. "
                "Check the module is installed or on PYTHONPATH."
            ) from error
        cls = getattr(module, attr, None)
        if not (isinstance(cls, type) and issubclass(cls, SegMethod)):
            raise MethodNotFoundError(f"{name_or_path!r} is not a SegMethod subclass")
        if not getattr(cls, "name", None):
            cls.name = attr
        return cls
    _discover()
    if name_or_path not in _registry:
        known = ", ".join(sorted(_registry)) or "none"
        raise MethodNotFoundError(
            f"unknown method {name_or_path!r}; registered: {known}. "
            "Use a registered name or an import path package.module:ClassName."
        )
    return _registry[name_or_path]


def build_method(
    cls: type[SegMethod], checkpoint: str | None = None, options: dict | None = None, weights_root: str | None = None
) -> SegMethod:
    """Instantiates a method from CLI-style settings; options are checked against its constructor."""
    import inspect

    options = dict(options or {})
    parameters = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = sorted(name for name in parameters if name != "self")
    if checkpoint is not None:
        if "checkpoint" not in parameters and not accepts_any:
            raise BenchmarkError(f"method {cls.name!r} takes no --checkpoint")
        options["checkpoint"] = checkpoint
    if weights_root is not None and ("weights_root" in parameters or accepts_any):
        options.setdefault("weights_root", weights_root)
    unknown = [key for key in options if key not in parameters]
    if unknown and not accepts_any:
        raise BenchmarkError(f"method {cls.name!r} has no option {unknown}; its options: {accepted}")
    return cls(**options)
