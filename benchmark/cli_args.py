"""Command-line pieces the `zsbench` subcommands share: argument groups, value parsing, the method run."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

import yaml

from benchmark import paths
from benchmark.devices import device_name
from benchmark.errors import BenchmarkError
from benchmark.eval_settings import SCORE_MEMORY_MIB

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


def _number(text: str, kind: type, least: float | None = None, most: float | None = None) -> Any:
    """`text` as an int or a finite float within the bounds given, else argparse's one-line error."""
    wanted = "an integer" if kind is int else "a number"
    if least is not None:
        wanted += f" from {least:g} to {most:g}" if most is not None else f" >= {least:g}"
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or (least is not None and value < least) or (
            most is not None and value > most):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of images, a batch size)."""
    return _number(text, int, least=1)


def image_size(text: str) -> tuple[int, int]:
    """argparse type: WIDTHxHEIGHT in pixels, each >= 1 (e.g. 2048x512)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 1 or int(height) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels such as 2048x512, got {text!r}")
    return int(width), int(height)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (workers, examples to keep, warm-up images)."""
    return _number(text, int, least=0)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (seconds, a tolerance)."""
    return _number(text, float, least=0)


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1] (an opacity)."""
    return _number(text, float, least=0, most=1)


def finite_float(text: str) -> float:
    """argparse type: any finite number (a score threshold)."""
    return _number(text, float)


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
        group.add_argument("--device", default="cpu", type=device_name, help="cpu, cuda, cuda:N or mps")
    if progress:
        group.add_argument("--no-progress", action="store_true")
    return group


def add_score_memory_option(group: argparse._ArgumentGroup) -> None:
    """--score-memory MiB (EvalSettings.score_memory_mib), for the commands that run the engine."""
    group.add_argument("--score-memory", type=positive_int, default=SCORE_MEMORY_MIB, metavar="MiB",
                       help="an image's float32 class scores beyond which the engine stitches, upsamples and reduces "
                            f"them a chunk of classes at a time (large vocabularies; default: {SCORE_MEMORY_MIB})")


def method_run(args: argparse.Namespace) -> MethodRun:
    """The run of the method group's --method, --checkpoint and --opt, with weights under --weights-root."""
    from benchmark.method_run import make_method_run

    weights_root = str(paths.weights_root(args.weights_root))
    return make_method_run(args.method, args.checkpoint, method_options(args.opt), weights_root)
