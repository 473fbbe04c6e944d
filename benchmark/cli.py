"""The `zsbench` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from benchmark import paths
from benchmark.errors import BenchmarkError


def _options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchmarkError(f"--opt {pair!r}: expected key=value")
        options[key] = yaml.safe_load(value)
    return options


def _settings(pairs: list[str]) -> dict[str, Any]:
    """`--set a=1 --set views.flip=0` -> {"a": 1, "views": {"flip": 0}} (values read as YAML)."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        parts = key.split(".")
        if not sep or not all(parts) or len(parts) > 2:
            raise BenchmarkError(f"--set {pair!r}: expected key=value or section.key=value")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise BenchmarkError(f"--set {pair!r}: the value is not YAML ({error})") from None
        if len(parts) == 1:
            settings[key] = parsed
        else:
            section = settings.setdefault(parts[0], {})
            if not isinstance(section, dict):
                raise BenchmarkError(f"--set {pair!r}: {parts[0]!r} was already given a value")
            section[parts[1]] = parsed
    return settings


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.data import list_cards, load_card
    from benchmark.protocol import list_protocols, load_protocol
    from benchmark.registry import get_method_class, list_methods

    if args.what == "methods":
        for name in list_methods():
            cls = get_method_class(name)
            doc = (cls.__doc__ or "").strip().splitlines()
            print(f"{name:16s} {doc[0] if doc else ''}")
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
        cards = {name: load_card(name) for name in (_csv(args.datasets) or list_cards())}
    root = paths.data_root(args.data_root)
    print(f"data root: {root}")
    worst = 0
    for card in cards.values():
        check = check_dataset(card, root, read_files=args.read)
        line = f"{card.name:16s} {check.status:10s} {check.found}/{check.expected}"
        if check.status != "found":
            worst = 1
            line += f"  -> {check.remedy}"
        print(line)
        for file in check.missing[:3]:
            print(f"    missing: {file}")
        for file in check.unreadable[:3]:
            print(f"    unreadable: {file}")
    return worst


def make_method_run(args: argparse.Namespace):
    from benchmark.registry import build_method, get_method_class
    from benchmark.runner import MethodRun

    cls = get_method_class(args.method)
    options = _options(args.opt)
    weights_root = str(paths.weights_root(args.weights_root))
    method = build_method(cls, args.checkpoint, options, weights_root)
    return MethodRun(method, options, args.checkpoint)


def cmd_eval(args: argparse.Namespace) -> int:
    from benchmark.leaderboard import miou_table
    from benchmark.protocol import load_protocol
    from benchmark.runner import EvalSettings, evaluate, init_distributed

    protocol = load_protocol(args.protocol)
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
    )
    run = make_method_run(args)
    records = evaluate(run, protocol, _csv(args.benchmarks), settings, shard)
    if shard.is_main:
        benchmarks = [spec.name for spec in protocol.select(_csv(args.benchmarks))]
        print(f"protocol {protocol.name} ({protocol.short_hash}), results in {settings.results_root}")
        if records:
            print(miou_table(records, benchmarks))
        else:
            print("nothing evaluated (all records existed; --skip-existing)")
    return 0


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
    info = generate_world(out, args.seed, args.n_captions, args.n_val, args.workers)
    print(f"synthetic world in {out}: {info.get('n_captions')} caption pairs, {info.get('n_val')} val images")
    return 0


def cmd_train_clip(args: argparse.Namespace) -> int:
    from benchmark.synthetic.train_clip import train_clip

    summary = train_clip(
        Path(args.data), Path(args.out), seed=args.seed, seconds=args.seconds, max_steps=args.steps,
        device=args.device, progress=not args.no_progress,
    )
    print(yaml.safe_dump(summary, sort_keys=False).strip())
    return 0


def _train_common(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "seed": args.seed, "steps": args.steps, "device": args.device, "precision": args.precision,
        "progress": not args.no_progress, "resume": not args.no_resume,
        **({"batch_size": args.batch_size} if args.batch_size else {}),
    }


def cmd_train_tcl(args: argparse.Namespace) -> int:
    from methods.tcl.train import train_tcl

    summary = train_tcl(Path(args.data), Path(args.out), clip_model=args.clip_model,
                        clip_pretrained=args.clip_pretrained, **_train_common(args))
    print(yaml.safe_dump(summary, sort_keys=False, default_flow_style=None).strip())
    return 0


def cmd_train_vilseg(args: argparse.Namespace) -> int:
    from methods.vilseg.train import train_vilseg

    summary = train_vilseg(Path(args.data), Path(args.out), init=args.clip_pretrained, model=args.clip_model,
                           **_train_common(args))
    print(yaml.safe_dump(summary, sort_keys=False, default_flow_style=None).strip())
    return 0


def known_class_names(spec: str) -> list[str]:
    """"a,b,c", or PROTOCOL:BENCHMARK for that benchmark's prompted names (its seen classes under a split)."""
    if ":" not in spec:
        return [name.strip() for name in spec.split(",") if name.strip()]
    from benchmark.protocol import load_protocol

    protocol_name, _, benchmark = spec.rpartition(":")
    (bench,) = load_protocol(protocol_name).select([benchmark])
    classes = list(range(len(bench.class_names)))
    if bench.split is not None:
        offset = 1 if bench.background.rule == "threshold" else 0
        classes = [k - offset for k in bench.split.seen if k - offset >= 0]
    return [bench.class_names[k][0] for k in classes]


def cmd_train_clips4(args: argparse.Namespace) -> int:
    from methods.clips4.train import train_clips4

    summary = train_clips4(Path(args.images), Path(args.out), clip_model=args.clip_model,
                           clip_pretrained=args.clip_pretrained, known_classes=known_class_names(args.classes),
                           settings=_settings(args.set), **_train_common(args))
    print(yaml.safe_dump(summary, sort_keys=False, default_flow_style=None).strip())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from benchmark.demo import run_demo

    table = run_demo(
        paths.data_root(args.data_root), paths.weights_root(args.weights_root), paths.results_root(args.results),
        seed=args.seed, device=args.device, batch_size=args.batch_size, workers=args.workers,
        progress=not args.no_progress,
    )
    print(table)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmark.bench import BenchSettings, bench_table, run_bench
    from benchmark.protocol import load_protocol
    from benchmark.results import write_json_atomic

    protocol = load_protocol(args.protocol)
    settings = BenchSettings(
        images=args.n, device=args.device, precision=args.precision, batch_size=args.batch_size,
        workers=args.workers, warmup=args.warmup, repeat=args.repeat, seed=args.seed,
        profile_dir=Path(args.profile) if args.profile else None, compile=args.compile,
    )
    result = run_bench(make_method_run(args), protocol, args.benchmark, settings)
    print(bench_table(result))
    if args.json:
        write_json_atomic(Path(args.json), result)
    if result["identical_required"] and not result["confusion_identical"]:
        print("error: the engine and the reference loop gave different confusion matrices at fp32", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zsbench", description="Zero-shot semantic segmentation benchmark suite")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="list methods, protocols or datasets")
    listing.add_argument("what", choices=["methods", "protocols", "datasets"])
    listing.set_defaults(func=cmd_list)

    check = commands.add_parser("check-data", help="report found / missing / incomplete datasets")
    check.add_argument("--protocol", help="check the datasets of this protocol (name or YAML path)")
    check.add_argument("--datasets", help="comma-separated card names (default: all cards)")
    check.add_argument("--data-root", help="data root (default: $ZSSEG_DATA or ./data)")
    check.add_argument("--read", action="store_true", help="also decode every file")
    check.set_defaults(func=cmd_check_data)

    run = commands.add_parser("eval", help="evaluate a method on a protocol's benchmarks")
    run.add_argument("--method", required=True, help="registered name or package.module:ClassName")
    run.add_argument("--protocol", required=True, help="protocol name or path to a YAML file")
    run.add_argument("--benchmarks", help="comma-separated subset of the protocol's benchmarks")
    run.add_argument("--checkpoint", help="weights file for the method")
    run.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="method option (repeatable)")
    run.add_argument("--batch-size", type=int, default=16, help="crops per forward pass")
    run.add_argument("--device", default="cpu")
    run.add_argument("--workers", type=int, default=2, help="DataLoader workers for decoding and resizing")
    run.add_argument("--limit", type=int, help="only the first N images of each benchmark (record is partial)")
    run.add_argument("--allow-incomplete", action="store_true", help="evaluate an incomplete dataset (partial)")
    run.add_argument("--skip-existing", action="store_true", help="skip benchmarks whose record exists")
    run.add_argument("--skip-bad", action="store_true",
                     help="skip unreadable or inconsistent files, list them in the record, and mark it partial")
    run.add_argument("--save-vis", type=int, default=0, metavar="N",
                     help="keep N examples per benchmark (image | ground truth | prediction) beside the records")
    run.add_argument("--data-root", help="data root (default: $ZSSEG_DATA or ./data)")
    run.add_argument("--weights-root", help="weights root (default: $ZSSEG_WEIGHTS or ~/.cache/zsseg)")
    run.add_argument("--results", help="results folder (default: $ZSSEG_RESULTS or ./results)")
    run.add_argument("--save-every", type=float, default=60.0, help="seconds between saves of partial state")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--no-shared-pass", action="store_true",
                     help="evaluate benchmarks that share images one at a time (default: one pass, where the "
                          "method has encode_crops/score hooks; the numbers are the same)")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the method's forward pass (recorded in each record; fp32 rounding changes)")
    run.set_defaults(func=cmd_eval)

    bench = commands.add_parser("bench", help="throughput of the engine against a reference-style loop")
    bench.add_argument("--method", required=True, help="registered name or package.module:ClassName")
    bench.add_argument("--protocol", required=True, help="protocol name or path to a YAML file")
    bench.add_argument("--benchmark", required=True, help="one benchmark of the protocol (its sizes and classes)")
    bench.add_argument("--n", type=int, default=20, help="synthetic images")
    bench.add_argument("--checkpoint", help="weights file for the method")
    bench.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="method option (repeatable)")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                       help="the engine's precision (default: the protocol's); the reference loop runs fp32")
    bench.add_argument("--batch-size", type=int, default=16, help="crops per forward pass of the engine")
    bench.add_argument("--workers", type=int, default=0, help="DataLoader workers, for both loops")
    bench.add_argument("--compile", action="store_true",
                       help="torch.compile the engine's forward (the reference stays eager; matrices may differ)")
    bench.add_argument("--warmup", type=int, default=1, help="images through each loop before timing")
    bench.add_argument("--repeat", type=int, default=1,
                       help="time each loop this many times, alternating, and report the fastest run")
    bench.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and labels")
    bench.add_argument("--weights-root", help="weights root (default: $ZSSEG_WEIGHTS or ~/.cache/zsseg)")
    bench.add_argument("--json", metavar="OUT", help="also write the result to this JSON file")
    bench.add_argument("--profile", metavar="DIR",
                       help="after timing, run each loop once more under cProfile: DIR/engine.prof, reference.prof")
    bench.set_defaults(func=cmd_bench)

    from benchmark.prepare import NAMES

    prepare = commands.add_parser("prepare", help="convert official downloads into the layout the cards expect")
    prepare.add_argument("dataset", choices=NAMES, help="a download set or a card name")
    prepare.add_argument("--src", required=True, help="the download, a folder of downloads, or an unpacked folder")
    prepare.add_argument("--data-root", help="data root (default: $ZSSEG_DATA or ./data)")
    prepare.add_argument("--workers", type=int, default=1)
    prepare.add_argument("--no-verify", action="store_true", help="skip checksums of the official archives")
    prepare.add_argument("--no-progress", action="store_true")
    prepare.set_defaults(func=cmd_prepare)

    synth = commands.add_parser("synth", help="generate the synthetic open world")
    synth.add_argument("--out", help="output folder (default: <data root>/synthetic, where its cards look)")
    synth.add_argument("--data-root", help="data root (default: $ZSSEG_DATA or ./data)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--n-captions", type=int, default=6000, help="image-caption pairs for training")
    synth.add_argument("--n-val", type=int, default=300, help="densely labelled val images (the cards expect 300)")
    synth.add_argument("--workers", type=int, default=1)
    synth.set_defaults(func=cmd_synth)

    train = commands.add_parser("train", help="train a model")
    trainers = train.add_subparsers(dest="model", required=True)
    clip = trainers.add_parser("clip", help="train the tiny CLIP on image-caption pairs")
    clip.add_argument("--data", required=True, help="caption folder (captions.jsonl + images) or tar shards")
    clip.add_argument("--out", required=True, help="checkpoint file to write (open_clip state dict)")
    clip.add_argument("--seed", type=int, default=0)
    clip.add_argument("--steps", type=int, help="optimizer steps (default: the tuned budget)")
    clip.add_argument("--seconds", type=float, help="stop early after this many seconds")
    clip.add_argument("--device", default="cpu")
    clip.add_argument("--no-progress", action="store_true")
    clip.set_defaults(func=cmd_train_clip)

    def trainer(name: str, help_text: str, data_flag: str, data_help: str) -> argparse.ArgumentParser:
        command = trainers.add_parser(name, help=help_text)
        command.add_argument(data_flag, required=True, help=data_help)
        command.add_argument("--out", required=True, help="checkpoint file to write (resumed if it exists)")
        command.add_argument("--clip-model", default="ViT-B-16", help="open_clip model name")
        command.add_argument("--clip-pretrained", default="openai", help="pinned tag or weights file")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--steps", type=int, help="optimizer steps (default: the method's schedule)")
        command.add_argument("--batch-size", type=int)
        command.add_argument("--device", default="cpu")
        command.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
        command.add_argument("--no-resume", action="store_true", help="start over even if --out exists")
        command.add_argument("--no-progress", action="store_true")
        return command

    captions_help = "captions.jsonl folder or webdataset tar shards (e.g. 'cc3m-{0000..0331}.tar')"
    trainer("tcl", "train TCL on image-caption pairs", "--data", captions_help).set_defaults(func=cmd_train_tcl)
    trainer("vilseg", "train ViL-Seg on image-caption pairs", "--data", captions_help).set_defaults(
        func=cmd_train_vilseg
    )
    clips4 = trainer("clips4", "train CLIP-S4 on unlabeled images", "--images", "a folder of unlabeled images")
    clips4.add_argument("--classes", required=True,
                        help="known class names 'a,b,c', or PROTOCOL:BENCHMARK for that benchmark's (seen) names")
    clips4.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training setting of methods/clips4/defaults.yaml, e.g. image_size=448 or teacher.scale=2 "
                             "(repeatable)")
    clips4.set_defaults(func=cmd_train_clips4)

    demo = commands.add_parser("demo", help="offline demo: synthetic world, tiny CLIP, every method, leaderboard")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--workers", type=int, default=0)
    demo.add_argument("--data-root", help="data root (default: $ZSSEG_DATA or ./data)")
    demo.add_argument("--weights-root", help="weights root (default: $ZSSEG_WEIGHTS or ~/.cache/zsseg)")
    demo.add_argument("--results", help="results folder (default: $ZSSEG_RESULTS or ./results)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=cmd_demo)

    from benchmark import cli_tables

    cli_tables.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: partial state saved; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Under torchrun: tear the group down before exit (left to the interpreter, gloo can abort a rank)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
