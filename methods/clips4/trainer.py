"""`zsbench train clips4`: its flags (the common ones, the known classes, `--set` for defaults.yaml) and the call
of `train_clips4` they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmark.registry import Trainer, register_trainer
from benchmark.trainer_options import add_common_arguments, common_kwargs, parse_settings


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


def add_clips4_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "--images", "a folder of unlabeled images")
    parser.add_argument("--classes", required=True,
                        help="known class names 'a,b,c', or PROTOCOL:BENCHMARK for that benchmark's (seen) names")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training setting of methods/clips4/defaults.yaml, e.g. image_size=448 or teacher.scale=2 "
                             "(repeatable)")


def train_clips4_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from methods.clips4.train import train_clips4

    return train_clips4(Path(args.images), Path(args.out), clip_model=args.clip_model,
                        clip_pretrained=args.clip_pretrained, known_classes=known_class_names(args.classes),
                        settings=parse_settings(args.set), **common_kwargs(args))


TRAINER = register_trainer(
    Trainer("clips4", "train CLIP-S4 on unlabeled images", add_clips4_arguments, train_clips4_from_args)
)
