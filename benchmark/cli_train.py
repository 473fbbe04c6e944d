"""`zsbench train`: the synthetic world's tiny CLIP, and the trainer every method family registers.

A family offers `zsbench train NAME` by registering a `benchmark.registry.Trainer` from its own package
(methods/tcl/trainer.py, for one); its flags, and the summary it returns (printed here as YAML), are its own.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import yaml

from benchmark.devices import device_name
from benchmark.registry import Trainer, list_trainers


def cmd_train_clip(args: argparse.Namespace) -> int:
    from benchmark.synthetic.train_clip import train_clip

    summary = train_clip(
        Path(args.data), Path(args.out), seed=args.seed, seconds=args.seconds, max_steps=args.steps,
        device=args.device, progress=not args.no_progress,
    )
    print(yaml.safe_dump(summary, sort_keys=False).strip())
    return 0


def run_trainer(trainer: Trainer, args: argparse.Namespace) -> int:
    summary = trainer.run(args)
    print(yaml.safe_dump(summary, sort_keys=False, default_flow_style=None).strip())
    return 0


def add_commands(commands: argparse._SubParsersAction, with_trainers: bool = True) -> None:
    """Registers `train clip` and (with_trainers) `train NAME` for every registered trainer on the parser."""
    train = commands.add_parser("train", help="train a model")
    trainers = train.add_subparsers(dest="model", required=True)
    clip = trainers.add_parser("clip", help="train the tiny CLIP on image-caption pairs")
    clip.add_argument("--data", required=True, help="caption folder (captions.jsonl + images) or tar shards")
    clip.add_argument("--out", required=True, help="checkpoint file to write (open_clip state dict)")
    clip.add_argument("--seed", type=int, default=0)
    clip.add_argument("--steps", type=int, help="optimizer steps (default: the tuned budget)")
    clip.add_argument("--seconds", type=float, help="stop early after this many seconds")
    clip.add_argument("--device", default="cpu", type=device_name, help="cpu, cuda, cuda:N or mps")
    clip.add_argument("--no-progress", action="store_true")
    clip.set_defaults(func=cmd_train_clip)

    for trainer in list_trainers() if with_trainers else []:
        command = trainers.add_parser(trainer.name, help=trainer.help)
        trainer.add_arguments(command)
        command.set_defaults(func=partial(run_trainer, trainer))
