"""`zsbench` subcommands that turn records into tables and pictures.

leaderboard  records under results folders -> md | latex | csv | html | json, optionally a PNG plot
build        merge records from several machines or folders into one table (one hash per protocol)
reproduce    run the published entries that can run here; write leaderboard/REPRODUCTION.md
predict      one image, a list of class names -> a colour overlay with a legend
check-published  validate leaderboard/published*.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmark import paths
from benchmark.cli_args import add_method_group, add_roots_group, add_running_group, comma_list, method_run
from benchmark.errors import BenchmarkError


def _published_entries(args: argparse.Namespace) -> list[Any] | None:
    from benchmark.published import load_published

    if not (args.published or args.published_file):
        return None
    published = load_published([Path(f) for f in args.published_file] if args.published_file else None)
    for warning in published.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return published.entries


def _select(records: list[dict[str, Any]], args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Records of --protocol (its current hash where the protocol loads), full ones unless --partial."""
    from benchmark.protocol import load_protocol, protocol_path

    benchmarks = comma_list(args.benchmarks)
    if not args.partial:
        records = [r for r in records if not r.get("partial")]
    if not args.protocol:
        return records, benchmarks
    if protocol_path(args.protocol).exists():
        protocol = load_protocol(args.protocol)
        others = sorted({r["protocol"]["hash"][:12] for r in records
                         if r["protocol"]["name"] == protocol.name and r["protocol"]["hash"] != protocol.hash})
        if others:
            print(f"note: records of protocol {protocol.name!r} with other hashes ({', '.join(others)}) left out; "
                  f"the current one is {protocol.short_hash}", file=sys.stderr)
        records = [r for r in records if r["protocol"]["hash"] == protocol.hash]
        return records, benchmarks or [spec.name for spec in protocol.benchmarks.values()]
    return [r for r in records if r["protocol"]["name"] == args.protocol], benchmarks


def _write_outputs(boards: list[Any], args: argparse.Namespace) -> None:
    from benchmark.formats import RenderOptions, format_for, render

    fmt = format_for(args.out, args.format)
    text = render(boards, fmt, RenderOptions(per_class=args.per_class, title=args.title))
    if args.out:
        out = Path(args.out)
        if fmt == "md" and out.is_file():
            from benchmark.formats.markdown import splice

            text = splice(out.read_text(encoding="utf-8"), text)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out} ({fmt}, {len(boards)} protocol table(s))", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.plot:
        from benchmark.formats.plot import save_plot

        print(f"wrote {save_plot(boards, Path(args.plot))}", file=sys.stderr)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.leaderboard import build_boards
    from benchmark.results import load_records

    folders = [Path(f) for f in args.results] if args.results else [paths.results_root()]
    records, benchmarks = _select(load_records([f for f in folders if f.exists()]), args)
    boards = build_boards(records, _published_entries(args), benchmarks)
    _write_outputs(boards, args)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from benchmark.leaderboard import build_boards, check_one_hash_per_protocol
    from benchmark.results import load_records

    sources = [Path(source) for source in args.sources]
    missing = [str(source) for source in sources if not source.exists()]
    if missing:
        raise BenchmarkError(f"no such file or folder: {', '.join(missing)}")
    records, benchmarks = _select(_deduplicated(load_records(sources)), args)
    if not records:
        raise BenchmarkError(f"no records under {', '.join(map(str, sources))}")
    check_one_hash_per_protocol(records)
    _write_outputs(build_boards(records, _published_entries(args), benchmarks), args)
    return 0


def _deduplicated(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same (protocol hash, run, benchmark, partial) from two places counts once: the newest record."""
    kept: dict[tuple, dict[str, Any]] = {}
    for record in records:
        key = (record["protocol"]["hash"], record["method"]["run_id"], record["benchmark"], record["partial"])
        other = kept.get(key)
        if other is not None and other["miou"] != record["miou"]:
            print(f"warning: {record.get('_path')} and {other.get('_path')} hold the same run with different mIoU "
                  f"({record['miou']} vs {other['miou']}); keeping the newer", file=sys.stderr)
        if other is None or str(record.get("time", "")) > str(other.get("time", "")):
            kept[key] = record
    return list(kept.values())


def cmd_reproduce(args: argparse.Namespace) -> int:
    from benchmark.published import load_published
    from benchmark.reproduce import ReproduceSettings, render_report, reproduce

    published = load_published([Path(f) for f in args.published] if args.published else None)
    for warning in published.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    settings = ReproduceSettings(
        data_root=paths.data_root(args.data_root), weights_root=paths.weights_root(args.weights_root),
        results_root=paths.results_root(args.results), device=args.device, batch_size=args.batch_size,
        workers=args.workers, tolerance=args.tolerance, methods=comma_list(args.methods), dry_run=args.dry_run,
        progress=not args.no_progress,
    )
    report = reproduce(published, settings)
    text = render_report(report)
    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    compared, beyond = len(report.comparisons), len(report.beyond_tolerance)
    print(f"{compared - beyond}/{compared} published numbers reproduced, {beyond} beyond tolerance, "
          f"{len(report.with_status('missing'))} missing weights or data, "
          f"{len(report.with_status('not runnable'))} not runnable, {len(report.with_status('error'))} errors; "
          f"report in {out}")
    return report.exit_code(strict=args.strict)


def cmd_predict(args: argparse.Namespace) -> int:
    from benchmark.data import read_image
    from benchmark.protocol import load_protocol
    from benchmark.visualize import parse_classes, predict_image, save_overlay

    classes = parse_classes(args.classes)
    if not classes:
        raise BenchmarkError("--classes: give at least one class name, e.g. --classes 'cat,dog,grass'")
    protocol = load_protocol(args.protocol)
    image = read_image(Path(args.image))
    run = method_run(args)
    prediction, names = predict_image(run.method, protocol, image, classes, args.benchmark, args.threshold,
                                      args.device, args.batch_size)
    out = save_overlay(image, prediction, names, Path(args.out), args.alpha)
    print(f"wrote {out} ({args.method} on {image.shape[1]}x{image.shape[0]}, protocol {protocol.name} settings)")
    return 0


def cmd_check_published(args: argparse.Namespace) -> int:
    from benchmark.published import load_published, published_files

    files = [Path(f) for f in args.files] if args.files else published_files()
    published = load_published(files)
    for file in published.files:
        print(f"{file.path}: {len(file.entries)} entries, tolerance {file.tolerance}")
    for warning in published.warnings:
        print(f"warning: {warning}")
    return 0


def _table_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", help="only this protocol (name or YAML path); columns = its benchmarks")
    parser.add_argument("--benchmarks", help="comma-separated subset and order of columns")
    parser.add_argument("--format", choices=["md", "latex", "csv", "html", "json"],
                        help="output format (default: from --out's suffix, else md)")
    parser.add_argument("--out", help="file to write (default: standard output)")
    parser.add_argument("--per-class", action="store_true", help="per-class IoU tables")
    parser.add_argument("--published", action="store_true",
                        help="paper numbers and differences beside measured ones (leaderboard/published*.yaml)")
    parser.add_argument("--published-file", action="append", default=[], metavar="FILE",
                        help="published file(s) to use instead of leaderboard/published*.yaml (implies --published)")
    parser.add_argument("--partial", action="store_true", help="also show partial records (rows of their own)")
    parser.add_argument("--plot", metavar="PNG", help="also write a bar chart of mIoU per dataset per method")
    parser.add_argument("--title", default="zsseg-bench leaderboard", help="page title (md, html, json)")


def add_leaderboard_command(commands: argparse._SubParsersAction) -> None:
    board = commands.add_parser("leaderboard", help="tables of the records in results folders")
    board.add_argument("--results", action="append", metavar="DIR",
                       help="results folder (repeatable; default: $ZSSEG_RESULTS or ./results)")
    _table_options(board)
    board.set_defaults(func=cmd_leaderboard)


def add_build_command(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser("build", help="merge records from several folders or machines into one table")
    build.add_argument("sources", nargs="+", metavar="RESULTS", help="results folders or record files")
    _table_options(build)
    build.set_defaults(func=cmd_build)


def add_reproduce_command(commands: argparse._SubParsersAction) -> None:
    repro = commands.add_parser("reproduce", help="run published entries whose weights and data are present")
    repro.add_argument("--published", action="append", metavar="FILE",
                       help="published file(s) (default: leaderboard/published*.yaml)")
    repro.add_argument("--report", default=str(paths.LEADERBOARD_DIR / "REPRODUCTION.md"), help="report to write")
    repro.add_argument("--tolerance", type=float, help="override the files' tolerance (mIoU points)")
    repro.add_argument("--methods", help="only entries of these methods (comma-separated)")
    repro.add_argument("--dry-run", action="store_true", help="list what would run and what is missing")
    repro.add_argument("--strict", action="store_true", help="also fail when an entry is missing or not runnable")
    running = add_running_group(repro)
    running.add_argument("--batch-size", type=int, default=16)
    running.add_argument("--workers", type=int, default=2)
    add_roots_group(repro, "data", "weights", "results")
    repro.set_defaults(func=cmd_reproduce)


def add_predict_command(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="segment one image with given class names; colour overlay")
    add_method_group(predict, opt_help="method option")
    predict.add_argument("--image", required=True)
    predict.add_argument("--classes", required=True, help='comma-separated names, | for synonyms: "cat,dog|puppy"')
    predict.add_argument("--out", required=True, help="overlay PNG to write")
    predict.add_argument("--protocol", default="tcl8", help="resize, window and prompt settings (default tcl8)")
    predict.add_argument("--benchmark", help="the protocol benchmark whose settings apply (default: its first)")
    predict.add_argument("--threshold", type=float,
                         help="add a background class: a constant channel at this score (TCL: 0.5, 0.4 with PAMR)")
    predict.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    add_running_group(predict, progress=False).add_argument("--batch-size", type=int, default=16)
    add_roots_group(predict, "weights")
    predict.set_defaults(func=cmd_predict)


def add_check_published_command(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser("check-published", help="validate leaderboard/published*.yaml")
    check.add_argument("files", nargs="*", help="files to check (default: leaderboard/published*.yaml)")
    check.set_defaults(func=cmd_check_published)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Registers the table commands on the `zsbench` parser."""
    for add_command in (add_leaderboard_command, add_build_command, add_reproduce_command, add_predict_command,
                        add_check_published_command):
        add_command(commands)
