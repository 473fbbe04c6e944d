"""The `zsbench` command."""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path

from benchmark import paths
from benchmark.cli_args import (
    add_method_group,
    add_roots_group,
    add_running_group,
    add_score_memory_option,
    comma_list,
    image_size,
    method_run,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from benchmark.errors import BenchmarkError

CHECK_DATA_SHOWN = 10  # bad files listed per dataset by `check-data --read`


def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.data import list_cards, load_card
    from benchmark.protocol import list_protocols, load_protocol
    from benchmark.registry import get_method_class, list_methods

    if args.what == "methods":
        for name in list_methods():
            cls = get_method_class(name)
            doc = (inspect.getdoc(cls) or "").splitlines()  # a subclass without its own shows its parent's
            print(f"{name:16s} {doc[0] if doc else '(no description: give the class a docstring)'}")
    elif args.what == "protocols":
        for name in list_protocols():
            protocol = load_protocol(name)
            print(f"{name:22s} {protocol.short_hash}  {', '.join(protocol.benchmarks)}")
    else:
        for name in list_cards():
            card = load_card(name)
            print(f"{name:16s} {card.num_classes:4d} classes {card.num_images:6d} images  {card.title}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from benchmark.data import check_dataset, list_cards, load_card
    from benchmark.protocol import load_protocol

    if args.protocol:
        cards = {spec.dataset.name: spec.dataset for spec in load_protocol(args.protocol).benchmarks.values()}
    else:
        cards = {name: load_card(name) for name in (comma_list(args.datasets) or list_cards())}
    root = paths.data_root(args.data_root)
    print(f"data root: {root}")
    worst = 0
    for card in cards.values():
        check = check_dataset(card, root, read_files=args.read)
        line = f"{card.name:16s} {check.status:10s} {check.found}/{check.expected}"
        if check.status != "found":
            worst = 1
            line += "  -> " + (check.remedy if check.status != "bad" else (
                f"eval stops on {len(check.bad)} file(s) below; fix or re-prepare them, "
                "or pass --skip-bad to eval to skip them (the record is marked partial)"))
        print(line)
        for file in check.missing[:3]:
            print(f"    missing: {file}")
        for reason in check.bad[:CHECK_DATA_SHOWN]:
            print(f"    bad: {reason}")
        if len(check.bad) > CHECK_DATA_SHOWN:
            print(f"    ... and {len(check.bad) - CHECK_DATA_SHOWN} more bad file(s)")
    return worst


def cmd_eval(args: argparse.Namespace) -> int:
    from benchmark.distributed import init_distributed
    from benchmark.leaderboard import miou_table
    from benchmark.protocol import load_protocol, parse_overrides
    from benchmark.runner import EvalSettings, evaluate

    protocol = load_protocol(args.protocol, parse_overrides(args.set))
    shard, device = init_distributed(args.device)
    settings = EvalSettings(
        data_root=paths.data_root(args.data_root),
        results_root=paths.results_root(args.results),
        batch_size=args.batch_size,
        device=device,
        limit=args.limit,
        allow_incomplete=args.allow_incomplete,
        skip_existing=args.skip_existing,
        workers=args.workers,
        save_every_s=args.save_every,
        skip_bad=args.skip_bad,
        save_vis=args.save_vis,
        progress=not args.no_progress,
        shared_pass=not args.no_shared_pass,
        compile=args.compile,
        score_memory_mib=args.score_memory,
    )
    run = method_run(args)
    if shard.is_main:
        print(f"{run.method.name} on {settings.device}{f' ({shard.world} ranks)' if shard.world > 1 else ''}, "
              f"{protocol.precision} (protocol {protocol.name} {protocol.short_hash})", flush=True)
    records = evaluate(run, protocol, comma_list(args.benchmarks), settings, shard)
    if shard.is_main:
        benchmarks = [spec.name for spec in protocol.select(comma_list(args.benchmarks))]
        print(f"protocol {protocol.name} ({protocol.short_hash}), results in {settings.results_root}")
        if records:
            print(miou_table(records, benchmarks))
            print()
            print(accuracy_table(records, benchmarks))
        else:
            print("nothing evaluated (all records existed; --skip-existing)")
    return 0


def accuracy_table(records: list[dict], benchmarks: list[str]) -> str:
    """aAcc and mAcc (%) per record, in benchmark order: the numbers beside mIoU that a record holds."""
    from tabulate import tabulate

    from benchmark.leaderboard import format_value

    order = {name: index for index, name in enumerate(benchmarks)}
    rows = [
        [record["method"]["name"] + (" (partial)" if record.get("partial") else ""), record["benchmark"],
         format_value(record.get("aacc")), format_value(record.get("macc"))]
        for record in sorted(records, key=lambda r: order.get(r["benchmark"], len(order)))
    ]
    return tabulate(rows, headers=["method", "benchmark", "aAcc", "mAcc"], tablefmt="github",
                    disable_numparse=True)


def cmd_prepare(args: argparse.Namespace) -> int:
    from benchmark.prepare import prepare_dataset

    report = prepare_dataset(
        args.dataset, Path(args.src), paths.data_root(args.data_root), workers=args.workers,
        progress=not args.no_progress, verify_checksums=not args.no_verify,
    )
    print(report["summary"])
    for name, source in report["sources"].items():
        if source.get("checksum"):
            print(f"  {name}: {source['checksum']}")
    return 0 if report["complete"] else 1


def cmd_synth(args: argparse.Namespace) -> int:
    from benchmark.synthetic import generate_world

    out = Path(args.out) if args.out else paths.data_root(args.data_root) / "synthetic"
    given = {"n_captions": args.n_captions, "n_val": args.n_val}
    counts = {key: value for key, value in given.items() if value is not None}
    workers = args.workers or len(os.sched_getaffinity(0))
    info = generate_world(out, args.seed, workers=workers, **counts)
    print(f"synthetic world in {out}: {info.get('n_captions')} caption pairs, {info.get('n_val')} val images")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from benchmark.demo import run_demo

    outcome = run_demo(
        paths.data_root(args.data_root), paths.weights_root(args.weights_root), paths.results_root(args.results),
        seed=args.seed, device=args.device, batch_size=args.batch_size, workers=args.workers,
        progress=not args.no_progress,
    )
    print(outcome.table)
    print(f"\ntime per phase:\n{outcome.timeline.report()}")
    print(f"\nthe table, a bar chart and examples of every method's predictions: {outcome.page}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmark.atomic import write_json_atomic
    from benchmark.bench import BenchSettings, bench_table, run_bench
    from benchmark.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    settings = BenchSettings(
        images=args.n, device=args.device, precision=args.precision, batch_size=args.batch_size,
        workers=args.workers, warmup=args.warmup, repeat=args.repeat, seed=args.seed,
        profile_dir=Path(args.profile) if args.profile else None, compile=args.compile,
        image_size=args.image_size, score_memory_mib=args.score_memory,
    )
    result = run_bench(method_run(args), protocol, args.benchmark, settings)
    print(bench_table(result))
    if args.json:
        write_json_atomic(Path(args.json), result)
    if result["identical_required"] and not result["confusion_identical"]:
        print("error: the engine and the reference loop gave different confusion matrices at fp32", file=sys.stderr)
        return 1
    return 0


def add_list_command(commands: argparse._SubParsersAction) -> None:
    listing = commands.add_parser("list", help="list methods, protocols or datasets")
    listing.add_argument("what", choices=["methods", "protocols", "datasets"], help="what to list")
    listing.set_defaults(func=cmd_list)


def add_check_data_command(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser("check-data", help="report found / missing / incomplete datasets")
    check.add_argument("--protocol", help="check the datasets of this protocol (name or YAML path)")
    check.add_argument("--datasets", help="comma-separated card names (default: all cards)")
    check.add_argument("--read", action="store_true",
                       help="also read every image and label as eval does (decoding, label values, sizes)")
    add_roots_group(check, "data")
    check.set_defaults(func=cmd_check_data)


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("eval", help="evaluate a method on a protocol's benchmarks")
    add_method_group(run)
    run.add_argument("--protocol", required=True, help="protocol name or path to a YAML file")
    run.add_argument("--benchmarks", help="comma-separated subset of the protocol's benchmarks")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a protocol setting for this run, e.g. method_settings.logit_scale=50, "
                          "background.value=0.3, benchmarks.voc21.inference.stride=112 (repeatable); the run is "
                          "filed under a derived protocol named after the settings, with its own hash")
    run.add_argument("--limit", type=positive_int, help="only the first N images of each benchmark (record is partial)")
    run.add_argument("--allow-incomplete", action="store_true", help="evaluate an incomplete dataset (partial)")
    run.add_argument("--skip-existing", action="store_true", help="skip benchmarks whose record exists")
    run.add_argument("--skip-bad", action="store_true",
                     help="skip unreadable or inconsistent files, list them in the record, and mark it partial")
    run.add_argument("--save-vis", type=non_negative_int, default=0, metavar="N",
                     help="keep N examples per benchmark (image | ground truth | prediction) beside the records")
    run.add_argument("--save-every", type=non_negative_float, default=60.0,
                     help="seconds between saves of partial state (0: after every batch)")
    run.add_argument("--no-shared-pass", action="store_true",
                     help="evaluate benchmarks that share images one at a time (default: one pass, where the "
                          "method has encode_crops/score hooks; the numbers are the same)")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the method's forward pass (recorded in each record; fp32 rounding changes)")
    running = add_running_group(run)
    running.add_argument("--batch-size", type=positive_int, default=16, help="crops per forward pass")
    running.add_argument("--workers", type=non_negative_int, default=2,
                         help="DataLoader workers for decoding and resizing")
    add_score_memory_option(running)
    add_roots_group(run, "data", "weights", "results")
    run.set_defaults(func=cmd_eval)


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="throughput of the engine against a reference-style loop")
    add_method_group(bench)
    bench.add_argument("--protocol", required=True, help="protocol name or path to a YAML file")
    bench.add_argument("--benchmark", required=True, help="one benchmark of the protocol (its sizes and classes)")
    bench.add_argument("--n", type=positive_int, default=20, help="synthetic images")
    bench.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                       help="the engine's precision (default: the protocol's); the reference loop runs fp32")
    bench.add_argument("--compile", action="store_true",
                       help="torch.compile the engine's forward (the reference stays eager; matrices may differ)")
    bench.add_argument("--warmup", type=non_negative_int, default=1, help="images through each loop before timing")
    bench.add_argument("--repeat", type=positive_int, default=1,
                       help="time each loop this many times, alternating, and report the fastest run")
    bench.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and labels")
    bench.add_argument("--image-size", type=image_size, metavar="WxH",
                       help="every synthetic image this size (default: the card's typical sizes, bench_shapes.yaml)")
    bench.add_argument("--json", metavar="OUT", help="also write the result to this JSON file")
    bench.add_argument("--profile", metavar="DIR",
                       help="after timing, run each loop once more under cProfile: DIR/engine.prof, reference.prof")
    running = add_running_group(bench, progress=False)
    running.add_argument("--batch-size", type=positive_int, default=16, help="crops per forward pass of the engine")
    running.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader workers, for both loops")
    add_score_memory_option(running)
    add_roots_group(bench, "weights")
    bench.set_defaults(func=cmd_bench)


def add_prepare_command(commands: argparse._SubParsersAction) -> None:
    from benchmark.prepare import NAMES

    prepare = commands.add_parser("prepare", help="convert official downloads into the layout the cards expect")
    prepare.add_argument("dataset", choices=NAMES, help="a download set or a card name")
    prepare.add_argument("--src", required=True, help="the download, a folder of downloads, or an unpacked folder")
    prepare.add_argument("--no-verify", action="store_true", help="skip checksums of the official archives")
    add_running_group(prepare, device=False).add_argument("--workers", type=int, default=1,
                                                          help="processes converting labels")
    add_roots_group(prepare, "data")
    prepare.set_defaults(func=cmd_prepare)


def add_synth_command(commands: argparse._SubParsersAction) -> None:
    synth = commands.add_parser("synth", help="generate the synthetic open world")
    synth.add_argument("--out", help="output folder (default: <data root>/synthetic, where its cards look)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the world")
    synth.add_argument("--n-captions", type=int, help="image-caption pairs for training (default 6000)")
    synth.add_argument("--n-val", type=int, help="densely labelled val images (default 150, what the cards expect)")
    synth.add_argument("--workers", type=int, help="processes drawing images (default: one per usable core)")
    add_roots_group(synth, "data")
    synth.set_defaults(func=cmd_synth)


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="offline demo: synthetic world, tiny CLIP, every method, leaderboard")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic world and the tiny CLIP")
    running = add_running_group(demo)
    running.add_argument("--batch-size", type=positive_int, default=32, help="crops per forward pass")
    running.add_argument("--workers", type=non_negative_int, default=0,
                         help="DataLoader workers for decoding and resizing")
    add_roots_group(demo, "data", "weights", "results")
    demo.set_defaults(func=cmd_demo)


# Help for flags that commands define in several places (shared groups, trainers registered by method packages)
# without a text of their own.
SHARED_FLAG_HELP = {
    "--device": "cpu, cuda, cuda:N or mps",
    "--no-progress": "no progress bars",
    "--seed": "random seed",
    "--workers": "worker processes",
    "--batch-size": "batch size",
    "--precision": "numeric precision",
    "--image": "the image file (PNG, JPEG, ...)",
}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each flag's default, where it has one and the help text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False or default == []
                or default is argparse.SUPPRESS or "default" in text.lower()):
            return text
        return f"{text} (default: %(default)s)"


def version_text() -> str:
    """The suite's version, its git commit where it runs from a checkout, and the versions that decide numbers."""
    from benchmark.records import git_commit, versions

    found = versions()
    suite = found.pop("zsseg-bench", "unknown (not installed)")
    commit = git_commit()
    where = f" (commit {commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''})" if commit else ""
    return f"zsbench {suite}{where}; " + ", ".join(f"{name} {value}" for name, value in found.items())


class VersionAction(argparse.Action):
    """--version: prints `version_text()` and exits (computed only when asked: it runs git)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def _finish_help(parser: argparse.ArgumentParser) -> None:
    """Every parser, subcommands included, shows defaults; a flag without help gets the shared text for it."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _finish_help(command)
        elif action.help is None:
            action.help = next((SHARED_FLAG_HELP[flag] for flag in action.option_strings
                                if flag in SHARED_FLAG_HELP), None)


def build_parser(with_trainers: bool = True) -> argparse.ArgumentParser:
    """The `zsbench` parser; without trainers, `train` lists only `clip` (the method packages, which register
    the other trainers, are then not imported: every other command starts faster)."""
    from benchmark import cli_protocol, cli_sensitivity, cli_tables, cli_train

    parser = argparse.ArgumentParser(prog="zsbench", description="Zero-shot semantic segmentation benchmark suite")
    parser.add_argument("--version", action=VersionAction, help="print the suite's version and git commit, and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (add_list_command, add_check_data_command, add_eval_command, add_bench_command,
                        add_prepare_command, add_synth_command):
        add_command(commands)
    cli_train.add_commands(commands, with_trainers)
    add_demo_command(commands)
    cli_tables.add_commands(commands)
    cli_protocol.add_commands(commands)
    cli_sensitivity.add_commands(commands)
    _finish_help(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(with_trainers="train" in words).parse_args(argv)
    try:
        return args.func(args)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: partial state saved; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        from benchmark.distributed import leave_process_group

        leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
