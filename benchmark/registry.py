"""Method registry: a decorator, the built-in `methods` package, entry points and import paths."""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from benchmark.errors import BenchmarkError
from methods.base import SegMethod

ENTRY_POINT_GROUP = "zsseg_bench.methods"
_VARIADIC = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)

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


class MethodNameError(BenchmarkError, ValueError):
    """Two classes claim one method name: their records would show as one method."""


def register_method(name: str | None = None) -> Callable[[type[SegMethod]], type[SegMethod]]:
    """Class decorator: `@register_method()` registers under the class's `name` attribute."""

    def decorate(cls: type[SegMethod]) -> type[SegMethod]:
        key = name or getattr(cls, "name", None)
        if not key:
            raise ValueError(f"{cls.__qualname__}: give register_method a name or set the class's `name`")
        existing = _registry.get(key)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise MethodNameError(
                f"method name {key!r} of {class_path(cls)} is taken by {class_path(existing)}; "
                "give the class another `name`"
            )
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


def class_path(cls: type) -> str:
    """`package.module:ClassName`, the spelling --method accepts."""
    return f"{cls.__module__}:{cls.__qualname__}"


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
        _discover()
        taken = _registry.get(cls.name)
        if taken is not None and taken is not cls:
            raise MethodNameError(
                f"method {name_or_path!r} is named {cls.name!r}, the name of {class_path(taken)}: its records would "
                "show as that method; give the class another `name`"
            )
        return cls
    _discover()
    if name_or_path not in _registry:
        known = ", ".join(sorted(_registry)) or "none"
        raise MethodNotFoundError(
            f"unknown method {name_or_path!r}; registered: {known}. "
            "Use a registered name or an import path package.module:ClassName."
        )
    return _registry[name_or_path]


def option_names(cls: type[SegMethod]) -> tuple[list[str], bool]:
    """The constructor options a method takes, and whether it takes any keyword (``**options``).

    A class may list what its ``**options`` accept in ``extra_options`` (e.g. a baseline's variants).
    """
    if cls.__init__ is object.__init__:
        return [], False
    parameters = inspect.signature(cls.__init__).parameters
    names = [name for name, p in parameters.items() if name != "self" and p.kind not in _VARIADIC]
    declared = cls.extra_options
    names += [name for name in declared or () if name not in names]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return names, takes_any and declared is None


def option_defaults(cls: type[SegMethod]) -> dict[str, Any]:
    """The constructor's default value of each option that has one."""
    if cls.__init__ is object.__init__:
        return {}
    parameters = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}


def build_method(
    cls: type[SegMethod], checkpoint: str | None = None, options: dict | None = None, weights_root: str | None = None
) -> SegMethod:
    """Instantiates a method from CLI-style settings; options are checked against its constructor."""
    options = dict(options or {})
    accepted, accepts_any = option_names(cls)
    if checkpoint is not None:
        if "checkpoint" not in accepted and not accepts_any:
            raise BenchmarkError(f"method {cls.name!r} takes no --checkpoint; its options: {', '.join(accepted)}")
        options["checkpoint"] = checkpoint
    if weights_root is not None and ("weights_root" in accepted or accepts_any):
        options.setdefault("weights_root", weights_root)
    unknown = [key for key in options if key not in accepted]
    if unknown and not accepts_any:
        raise BenchmarkError(_unknown_option_message(cls.name, unknown[0], accepted))
    return cls(**options)


def _unknown_option_message(method: str, option: str, accepted: list[str]) -> str:
    from benchmark.protocol import METHOD_SETTING_HINTS

    guess = difflib.get_close_matches(option, [*accepted, *METHOD_SETTING_HINTS], n=1, cutoff=0.6)
    hint = ""
    if guess and guess[0] in accepted:
        hint = f" (did you mean {guess[0]!r}?)"
    elif guess:
        hint = (f" ({guess[0]!r} is a protocol setting, not a method option: pass "
                f"--set method_settings.{guess[0]}=VALUE)")
    options = ", ".join(accepted) or "none"
    return f"method {method!r} has no option {option!r}{hint}; its options (--opt KEY=VALUE): {options}"
