"""The flags every `zsbench train NAME` command shares, what they mean to a trainer, and `--set KEY=VALUE`."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from benchmark.devices import device_name
from benchmark.errors import BenchmarkError
from benchmark.training import PRECISIONS

CAPTIONS_HELP = "captions.jsonl folder or webdataset tar shards (e.g. 'cc3m-{0000..0331}.tar')"


def add_common_arguments(parser: argparse.ArgumentParser, data_flag: str, data_help: str) -> None:
    """The training data (`data_flag`, required), the output, the CLIP to start from, the run's size and device."""
    parser.add_argument(data_flag, required=True, help=data_help)
    parser.add_argument("--out", required=True, help="checkpoint file to write (resumed if it exists)")
    parser.add_argument("--clip-model", default="ViT-B-16", help="open_clip model name")
    parser.add_argument("--clip-pretrained", default="openai", help="pinned tag or weights file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the method's schedule)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", default="cpu", type=device_name, help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    parser.add_argument("--no-resume", action="store_true", help="start over even if --out exists")
    parser.add_argument("--no-progress", action="store_true")


def common_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The trainer keyword arguments of the common flags; no batch_size unless given (the method's default)."""
    return {
        "seed": args.seed, "steps": args.steps, "device": args.device, "precision": args.precision,
        "progress": not args.no_progress, "resume": not args.no_resume,
        **({"batch_size": args.batch_size} if args.batch_size else {}),
    }


def parse_settings(pairs: list[str]) -> dict[str, Any]:
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
