"""`zsbench` subcommands that turn records into tables and pictures.

leaderboard  records under results folders -> md | latex | csv | html | json, optionally a PNG plot;
             --view vocabulary: mIoU with a small and a large class list and the drop (vocabulary_scaling.py)
build        merge records from several machines or folders into one table (one hash per protocol); --view as above
reproduce    run the published entries that can run here; write leaderboard/REPRODUCTION.md
predict      one image, a list of class names -> a colour overlay with a legend
check-published  validate leaderboard/published*.yaml
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path
from typing import Any

from benchmark import paths
from benchmark.cli_args import (
    add_method_group,
    add_roots_group,
    add_running_group,
    comma_list,
    finite_float,
    fraction,
    method_run,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from benchmark.errors import BenchmarkError


def _published_entries(args: argparse.Namespace) -> list[Any] | None:
    from benchmark.published import load_published

    if not (args.published or args.published_file):
        return None
    published = load_published([Path(f) for f in args.published_file] if args.published_file else None)
    for warning in published.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return published.entries


def _records(sources: list[Path], strict: bool) -> list[dict[str, Any]]:
    """The records under `sources`; each unusable record file is one warning line (with --strict: an error)."""
    from benchmark.results import read_records

    records, unreadable = read_records(sources)
    for problem in unreadable:
        line = (f"{problem.path}: unusable record, {problem.reason}; rerun the eval that wrote it (with or without "
                "--skip-existing, it is recomputed) or delete the file")
        if strict:
            more = f" ({len(unreadable) - 1} more unusable record(s))" if len(unreadable) > 1 else ""
            raise BenchmarkError(f"{line}{more}; --strict: no table written")
        print(f"warning: {line}; left out of the tables", file=sys.stderr)
    return records


def _unknown(flag: str, asked: list[str], known: list[str], none_such: str) -> str | None:
    """"FLAG 'x': no such thing (did you mean 'y'?)" for the first of `asked` not in `known`; None if all are."""
    for name in asked:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            return f"{flag} {name!r}: {none_such}" + (f" (did you mean {close[0]!r}?)" if close else "")
    return None


def _listing(names: list[str] | set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _select(records: list[dict[str, Any]], args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Records of --protocol (its current hash where the protocol loads), full ones unless --partial.

    A --protocol that is neither a protocol file nor a protocol of the records, and a --benchmarks name that is
    neither in the protocol nor in its records, are errors naming what exists.
    """
    from benchmark.protocol import list_protocols, load_protocol, protocol_path

    benchmarks = comma_list(args.benchmarks)
    in_records = {r["protocol"]["name"] for r in records}
    loads = bool(args.protocol) and protocol_path(args.protocol).exists()
    if args.protocol and not loads and args.protocol not in in_records:
        shipped = list_protocols()
        unknown = _unknown("--protocol", [args.protocol], [*shipped, *in_records], "no such protocol")
        raise BenchmarkError(f"{unknown}; shipped: {_listing(shipped)}; in the records: {_listing(in_records)}")
    protocol = load_protocol(args.protocol) if loads else None
    if benchmarks:
        name = protocol.name if protocol else args.protocol
        of_protocol = set(protocol.benchmarks) if protocol else set()
        in_records = {r["benchmark"] for r in records if not name or r["protocol"]["name"] == name}
        known = sorted(of_protocol | in_records)
        where = f"protocol {name!r}" if name else "the records"
        unknown = _unknown("--benchmarks", benchmarks, known, f"no such benchmark in {where}")
        if unknown and known:
            raise BenchmarkError(f"{unknown}; benchmarks: {_listing(known)}")
    if not args.partial:
        records = [r for r in records if not r.get("partial")]
    if not args.protocol:
        return records, benchmarks
    if protocol is not None:
        others = sorted({r["protocol"]["hash"][:12] for r in records
                         if r["protocol"]["name"] == protocol.name and r["protocol"]["hash"] != protocol.hash})
        if others:
            print(f"note: records of protocol {protocol.name!r} with other hashes ({', '.join(others)}) left out; "
                  f"the current one is {protocol.short_hash}", file=sys.stderr)
        records = [r for r in records if r["protocol"]["hash"] == protocol.hash]
        return records, benchmarks or [spec.name for spec in protocol.benchmarks.values()]
    return [r for r in records if r["protocol"]["name"] == args.protocol], benchmarks


def _write_text(text: str, fmt: str, what: str, args: argparse.Namespace) -> None:
    if args.out:
        out = Path(args.out)
        if fmt == "md" and out.is_file():
            from benchmark.formats.markdown import splice

            text = splice(out.read_text(encoding="utf-8"), text)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out} ({fmt}, {what})", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _write_outputs(boards: list[Any], args: argparse.Namespace) -> None:
    from benchmark.formats import RenderOptions, format_for, render

    fmt = format_for(args.out, args.format)
    options = RenderOptions(per_class=args.per_class or bool(args.per_class_layout), title=args.title,
                            per_class_layout=args.per_class_layout or "auto")
    _write_text(render(boards, fmt, options), fmt, f"{len(boards)} protocol table(s)", args)
    if args.plot:
        from benchmark.formats.plot import save_plot

        print(f"wrote {save_plot(boards, Path(args.plot))}", file=sys.stderr)


def _check_view_options(args: argparse.Namespace) -> None:
    """Options of one view given with the other are errors, not silently ignored."""
    if args.view == "vocabulary":
        options = {"--published": args.published, "--published-file": args.published_file,
                   "--per-class": args.per_class, "--per-class-layout": args.per_class_layout, "--plot": args.plot}
        given = [flag for flag, value in options.items() if value]
        if given:
            raise BenchmarkError(f"{given[0]}: not with --view vocabulary, which shows measured mIoU with a small and "
                                 "a large class list; use the default --view board for it")
    elif args.vocabulary_pairs:
        raise BenchmarkError("--vocabulary-pairs: only with --view vocabulary")


def _vocabulary_boards(records: list[dict[str, Any]], args: argparse.Namespace, one_hash: bool) -> list[Any]:
    """--view vocabulary: boards of the --protocol (else every protocol with a large benchmark) and, for the small
    side, of its base protocol in the pairs file; --benchmarks keeps the pairs with a named benchmark. one_hash
    (build): records of two hashes of one protocol among those are an error, as for the board."""
    from benchmark.leaderboard import check_one_hash_per_protocol
    from benchmark.vocabulary_scaling import build_vocabulary_boards, load_vocabulary_pairs

    pairs = load_vocabulary_pairs(Path(args.vocabulary_pairs) if args.vocabulary_pairs else None)
    named = comma_list(args.benchmarks)
    if named:
        unknown = _unknown("--benchmarks", named, pairs.benchmarks, f"in no pair of {pairs.path}")
        if unknown:
            raise BenchmarkError(f"{unknown}; paired benchmarks: {_listing(pairs.benchmarks)}")
        pairs = pairs.restricted(named)
    selected, _ = _select(records, argparse.Namespace(**{**vars(args), "benchmarks": None}))
    if args.protocol:
        bases = {pairs.base_protocols[name] for name in {r["protocol"]["name"] for r in selected}
                 if name in pairs.base_protocols}
        selected += [r for r in records if r["protocol"]["name"] in bases and (args.partial or not r.get("partial"))]
    if one_hash:
        check_one_hash_per_protocol(selected)
    return build_vocabulary_boards(selected, pairs)


def _write_vocabulary(records: list[dict[str, Any]], args: argparse.Namespace, one_hash: bool = False) -> None:
    from benchmark.formats import RenderOptions, format_for, render_vocabulary

    fmt = format_for(args.out, args.format)
    boards = _vocabulary_boards(records, args, one_hash)
    text = render_vocabulary(boards, fmt, RenderOptions(title=args.title))
    _write_text(text, fmt, f"{len(boards)} vocabulary-scaling table(s)", args)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.leaderboard import build_boards

    _check_view_options(args)
    folders = [Path(f) for f in args.results] if args.results else [paths.results_root()]
    missing = [str(folder) for folder in folders if not folder.exists()]
    if missing and (args.results or os.environ.get("ZSSEG_RESULTS")):
        given = "--results" if args.results else "$ZSSEG_RESULTS"
        raise BenchmarkError(f"{given} {', '.join(missing)}: no such folder (records are where `zsbench eval "
                             "--results` wrote them; default ./results)")
    records = _records([f for f in folders if f.exists()], args.strict)
    if args.view == "vocabulary":
        _write_vocabulary(records, args)
        return 0
    records, benchmarks = _select(records, args)
    published = _published_entries(args)
    boards = build_boards(records, published, benchmarks)
    if published is not None and args.protocol and not records:
        from benchmark.leaderboard import published_board
        from benchmark.protocol import load_protocol, protocol_path

        if protocol_path(args.protocol).exists():
            boards = [published_board(load_protocol(args.protocol), published, benchmarks)]
    _write_outputs(boards, args)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from benchmark.leaderboard import build_boards, check_one_hash_per_protocol

    _check_view_options(args)
    sources = [Path(source) for source in args.sources]
    missing = [str(source) for source in sources if not source.exists()]
    if missing:
        raise BenchmarkError(f"no such results folder or record file: {', '.join(missing)}")
    records = _deduplicated(_records(sources, args.strict))
    if args.view == "vocabulary":
        if not records:
            raise BenchmarkError(f"no records under {', '.join(map(str, sources))}")
        _write_vocabulary(records, args, one_hash=True)
        return 0
    records, benchmarks = _select(records, args)
    if not records:
        raise BenchmarkError(f"no records under {', '.join(map(str, sources))}")
    check_one_hash_per_protocol(records)
    _write_outputs(build_boards(records, _published_entries(args), benchmarks), args)
    return 0


def _deduplicated(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same (protocol hash, run, benchmark, partial) from two places counts once: the newest record."""
    from benchmark.leaderboard import finite_value

    kept: dict[tuple, dict[str, Any]] = {}
    for record in records:
        key = (record["protocol"]["hash"], record["method"]["run_id"], record["benchmark"], record["partial"])
        other = kept.get(key)
        if other is not None and finite_value(other["miou"]) != finite_value(record["miou"]):
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
    named = {entry.method for entry in published.entries} | {e.run.method for e in published.entries if e.run}
    unknown = _unknown("--methods", comma_list(args.methods) or [], sorted(named), "no published entry")
    if unknown:
        raise BenchmarkError(f"{unknown}; published methods: {_listing(named)}")
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
    image_path = Path(args.image)
    if not image_path.is_file():
        what = "is a folder, not an image file" if image_path.is_dir() else "image file is missing"
        raise BenchmarkError(f"{image_path}: {what} (--image); check the path")
    protocol = load_protocol(args.protocol)
    image = read_image(image_path)
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
    parser.add_argument("--view", choices=["board", "vocabulary"], default="board",
                        help="board: mIoU per benchmark (default); vocabulary: each run's mIoU with a small and a "
                        "large class list (context59/context459, ade20k/ade847) and the drop")
    parser.add_argument("--vocabulary-pairs", metavar="FILE",
                        help="pairs file for --view vocabulary (default: leaderboard/vocabulary_pairs.yaml)")
    parser.add_argument("--per-class", action="store_true", help="per-class IoU tables")
    from benchmark.leaderboard import PER_CLASS_LAYOUTS, WIDE_CLASS_LIMIT

    parser.add_argument("--per-class-layout", choices=PER_CLASS_LAYOUTS,
                        help="per-class tables (implies --per-class): wide, a row per class and a column per run; "
                        "long, a row per run, benchmark and class; auto (default): long once a benchmark has more "
                        f"than {WIDE_CLASS_LIMIT} classes")
    parser.add_argument("--published", action="store_true",
                        help="paper numbers and differences beside measured ones (leaderboard/published*.yaml)")
    parser.add_argument("--published-file", action="append", default=[], metavar="FILE",
                        help="published file(s) to use instead of leaderboard/published*.yaml (implies --published)")
    parser.add_argument("--partial", action="store_true", help="also show partial records (rows of their own)")
    parser.add_argument("--plot", metavar="PNG", help="also write a bar chart of mIoU per dataset per method")
    parser.add_argument("--title", default="zsseg-bench leaderboard", help="page title (md, html, json)")
    parser.add_argument("--strict", action="store_true",
                        help="stop (exit 2) at an unusable record file instead of leaving it out with a warning")


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
    repro.add_argument("--tolerance", type=non_negative_float, help="override the files' tolerance (mIoU points)")
    repro.add_argument("--methods", help="only entries of these methods (comma-separated)")
    repro.add_argument("--dry-run", action="store_true", help="list what would run and what is missing")
    repro.add_argument("--strict", action="store_true", help="also fail when an entry is missing or not runnable")
    running = add_running_group(repro)
    running.add_argument("--batch-size", type=positive_int, default=16)
    running.add_argument("--workers", type=non_negative_int, default=2)
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
    predict.add_argument("--threshold", type=finite_float,
                         help="add a background class: a constant channel at this score (TCL: 0.5, 0.4 with PAMR)")
    predict.add_argument("--alpha", type=fraction, default=0.5, help="overlay opacity (0 to 1)")
    add_running_group(predict, progress=False).add_argument("--batch-size", type=positive_int, default=16)
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
