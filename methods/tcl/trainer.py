"""`zsbench train tcl`: its flags, and the call of `train_tcl` they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmark.registry import Trainer, register_trainer
from benchmark.trainer_options import CAPTIONS_HELP, add_common_arguments, common_kwargs


def add_tcl_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "--data", CAPTIONS_HELP)


def train_tcl_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from methods.tcl.train import train_tcl

    return train_tcl(Path(args.data), Path(args.out), clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                     **common_kwargs(args))


TRAINER = register_trainer(Trainer("tcl", "train TCL on image-caption pairs", add_tcl_arguments, train_tcl_from_args))
