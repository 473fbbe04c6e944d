"""Command-line pieces the `zsbench` subcommands share: argument groups, value parsing, the method run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import yaml

from benchmark import paths
from benchmark.errors import BenchmarkError

if TYPE_CHECKING:
    from benchmark.method_run import MethodRun

ROOTS = {
    "data": ("--data-root", "data root (default: $ZSSEG_DATA or ./data)"),
    "weights": ("--weights-root", "weights root (default: $ZSSEG_WEIGHTS or ~/.cache/zsseg)"),
    "results": ("--results", "results folder (default: $ZSSEG_RESULTS or ./results)"),
}


def comma_list(value: str | None) -> list[str] | None:
    """"a, b,c" -> ["a", "b", "c"]; None where nothing was given."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def method_options(pairs: list[str]) -> dict[str, Any]:
    """`--opt a=1 --opt b=x` -> {"a": 1, "b": "x"} (values read as YAML)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchmarkError(f"--opt {pair!r}: expected key=value")
        options[key] = yaml.safe_load(value)
    return options


def add_method_group(
    parser: argparse.ArgumentParser, opt_help: str = "method option (repeatable)"
) -> argparse._ArgumentGroup:
    """--method, --checkpoint, --opt: the method run a command builds (see `method_run`)."""
    group = parser.add_argument_group("method")
    group.add_argument("--method", required=True, help="registered name or package.module:ClassName")
    group.add_argument("--checkpoint", help="weights file for the method")
    group.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help=opt_help)
    return group


def add_roots_group(parser: argparse.ArgumentParser, *roots: str) -> argparse._ArgumentGroup:
    """--data-root, --weights-root, --results: those of ROOTS ("data", "weights", "results") named."""
    group = parser.add_argument_group("roots")
    for root in roots:
        flag, help_text = ROOTS[root]
        group.add_argument(flag, help=help_text)
    return group


def add_running_group(
    parser: argparse.ArgumentParser, device: bool = True, progress: bool = True
) -> argparse._ArgumentGroup:
    """--device, --no-progress; a command adds its own batch size and workers to the group it returns."""
    group = parser.add_argument_group("running")
    if device:
        group.add_argument("--device", default="cpu")
    if progress:
        group.add_argument("--no-progress", action="store_true")
    return group


def method_run(args: argparse.Namespace) -> MethodRun:
    """The run of the method group's --method, --checkpoint and --opt, with weights under --weights-root."""
    from benchmark.method_run import make_method_run

    weights_root = str(paths.weights_root(args.weights_root))
    return make_method_run(args.method, args.checkpoint, method_options(args.opt), weights_root)
