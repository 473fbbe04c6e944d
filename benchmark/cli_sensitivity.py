"""`zsbench sweep` (how much each protocol setting moves a method's numbers) and `zsbench matrix` (every method
under every protocol, and how stable their ranking is)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmark import paths
from benchmark.cli_args import (
    add_method_group,
    add_roots_group,
    add_running_group,
    comma_list,
    method_options,
    method_run,
    non_negative_int,
    positive_int,
)
from benchmark.errors import BenchmarkError

FORMATS = {".md": "md", ".csv": "csv", ".json": "json"}


def _add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmarks", help="comma-separated subset of the benchmarks")
    parser.add_argument("--limit", type=positive_int, help="only the first N images of each benchmark (partial)")
    parser.add_argument("--allow-incomplete", action="store_true", help="evaluate an incomplete dataset (partial)")
    parser.add_argument("--no-shared-pass", action="store_true",
                        help="one pass per (protocol, benchmark) instead of sharing the image side where it can")
    parser.add_argument("--out", metavar="FILE", help="also write the report: .md, .csv or .json by the suffix")
    parser.add_argument("--format", choices=sorted(set(FORMATS.values())),
                        help="format of --out (default: its suffix), or of the printed report without --out")
    running = add_running_group(parser)
    running.add_argument("--batch-size", type=positive_int, default=16, help="crops per forward pass")
    running.add_argument("--workers", type=non_negative_int, default=2,
                         help="DataLoader workers for decoding and resizing")
    add_roots_group(parser, "data", "weights", "results")


def add_commands(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep", help="a method on a protocol with one setting changed at a time (or a grid): the sensitivity report")
    add_method_group(sweep)
    sweep.add_argument("--protocol", required=True, help="the base protocol (name or YAML path)")
    sweep.add_argument("--vary", action="append", default=[], required=True, metavar="KNOB=V1,V2,...",
                       help="a knob and its values (repeatable): resize.short, resize.long_max, inference.mode, "
                            "inference.crop, inference.stride, precision, text.templates (file or named set), "
                            "text.aggregation, classes (another protocol's class names), background.rule, "
                            "background.value, background.area_thd, method.<setting> (e.g. method.pamr)")
    sweep.add_argument("--grid", action="store_true", help="every combination of the values (default: one at a time)")
    sweep.add_argument("--skip-existing", action="store_true",
                       help="read a variant's full record of the same protocol hash instead of recomputing it")
    sweep.add_argument("--plot", metavar="FILE.png", help="also draw the report: a panel per knob")
    _add_evaluation_flags(sweep)
    sweep.set_defaults(func=cmd_sweep)
    matrix = commands.add_parser("matrix", help="every method under every protocol; ranking stability (Kendall's tau)")
    matrix.add_argument("--methods", required=True, help="comma-separated registered method names")
    matrix.add_argument("--protocols", required=True,
                        help="comma-separated protocols: names, YAML paths, or derived ones as eval files them, "
                             "BASE+KEY=VALUE[+KEY=VALUE] (synthetic+image.resize.short=64 is --set "
                             "image.resize.short=64 on synthetic)")
    matrix.add_argument("--opt", action="append", default=[], metavar="[METHOD:]KEY=VALUE",
                        help="method option for every method, or for one (maskclip:variant=clearclip); repeatable")
    matrix.add_argument("--recompute", action="store_true",
                        help="evaluate again where a full record of the same protocol hash and run exists "
                             "(default: read it)")
    _add_evaluation_flags(matrix)
    matrix.set_defaults(func=cmd_matrix)


def _settings(args: argparse.Namespace, device: str, skip_existing: bool) -> Any:
    from benchmark.eval_settings import EvalSettings

    return EvalSettings(
        data_root=paths.data_root(args.data_root), results_root=paths.results_root(args.results),
        batch_size=args.batch_size, device=device, limit=args.limit, allow_incomplete=args.allow_incomplete,
        skip_existing=skip_existing, workers=args.workers, progress=not args.no_progress,
        shared_pass=not args.no_shared_pass,
    )


def _formats(args: argparse.Namespace) -> tuple[str, str | None]:
    """(format printed, format of --out)."""
    if not args.out:
        return args.format or "md", None
    suffix = Path(args.out).suffix.lower()
    if args.format is None and suffix not in FORMATS:
        raise BenchmarkError(f"--out {args.out}: the suffix names the format, one of {', '.join(FORMATS)} "
                             "(or give --format md|csv|json)")
    return "md", args.format or FORMATS[suffix]


def _emit(args: argparse.Namespace, render: Any, result: Any) -> None:
    from benchmark.atomic import write_text_atomic

    printed, written = _formats(args)
    sys.stdout.write(render(result, printed))
    if written is not None:
        write_text_atomic(Path(args.out), render(result, written))
        print(f"\nreport written to {args.out}")


def cmd_sweep(args: argparse.Namespace) -> int:
    from benchmark.distributed import init_distributed
    from benchmark.protocol import load_protocol
    from benchmark.sweep import plan_sweep, run_sweep
    from benchmark.sweep_knobs import parse_vary
    from benchmark.sweep_report import render, save_plot

    base = load_protocol(args.protocol)
    plan = plan_sweep(base, [parse_vary(text) for text in args.vary], comma_list(args.benchmarks), args.grid)
    _formats(args)
    shard, device = init_distributed(args.device)
    result = run_sweep(method_run(args), plan, _settings(args, device, args.skip_existing), shard)
    if shard.is_main:
        _emit(args, render, result)
        if args.plot:
            print(f"plot written to {save_plot(result, Path(args.plot))}")
    return 0


def scoped_options(pairs: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    """`--opt KEY=VALUE` (every method) and `--opt METHOD:KEY=VALUE` (that one) -> options per method."""
    options: dict[str, dict[str, Any]] = {method: {} for method in methods}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        scope, colon, name = key.rpartition(":")
        if colon and scope not in options:
            raise BenchmarkError(f"--opt {pair}: {scope!r} is not one of --methods ({', '.join(methods)})")
        parsed = method_options([f"{name}{sep}{value}"])
        for method in [scope] if colon else methods:
            options[method].update(parsed)
    return options


def protocol_from_text(text: str) -> Any:
    """A protocol name or file, or a derived protocol as eval names it: BASE+KEY=VALUE[+KEY=VALUE...]
    (`synthetic+image.resize.short=64` is `--protocol synthetic --set image.resize.short=64`)."""
    from benchmark.protocol import load_protocol, parse_overrides, protocol_path

    if "+" not in text or protocol_path(text).exists():
        return load_protocol(text)
    base, *pairs = text.split("+")
    return load_protocol(base, parse_overrides(pairs))


def cmd_matrix(args: argparse.Namespace) -> int:
    from benchmark.distributed import init_distributed
    from benchmark.matrix import render, run_matrix
    from benchmark.method_run import make_method_run
    from benchmark.protocol_passes import evaluate_protocols
    from benchmark.registry import get_method_class

    methods = comma_list(args.methods) or []
    protocols = [protocol_from_text(text) for text in comma_list(args.protocols) or []]
    options = scoped_options(args.opt, methods)
    for method in methods:
        get_method_class(method)  # every name known before the first method runs
    _formats(args)
    shard, device = init_distributed(args.device)
    settings = _settings(args, device, not args.recompute)
    weights_root = str(paths.weights_root(args.weights_root))

    def evaluate(method: str, targets: list) -> tuple[str, Any]:
        given = dict(options[method])
        run = make_method_run(method, given.pop("checkpoint", None), given, weights_root)
        if shard.is_main:
            print(f"{run.run_id} on {device}: {len(targets)} protocols", file=sys.stderr, flush=True)
        return run.run_id, evaluate_protocols(run, targets, settings, shard)

    result = run_matrix(methods, protocols, comma_list(args.benchmarks), evaluate)
    if shard.is_main:
        _emit(args, render, result)
    return 0
