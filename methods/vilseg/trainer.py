"""`zsbench train vilseg`: its flags, and the call of `train_vilseg` they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmark.registry import Trainer, register_trainer
from benchmark.trainer_options import CAPTIONS_HELP, add_common_arguments, common_kwargs


def add_vilseg_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "--data", CAPTIONS_HELP)


def train_vilseg_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from methods.vilseg.train import train_vilseg

    return train_vilseg(Path(args.data), Path(args.out), init=args.clip_pretrained, model=args.clip_model,
                        **common_kwargs(args))


TRAINER = register_trainer(
    Trainer("vilseg", "train ViL-Seg on image-caption pairs", add_vilseg_arguments, train_vilseg_from_args)
)
