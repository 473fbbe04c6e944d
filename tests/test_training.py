"""The trainers' shared helpers (benchmark/training.py), their common flags and the `zsbench train` commands."""

from __future__ import annotations

import argparse
import contextlib

import pytest
import torch
from torch import nn

from benchmark.errors import BenchmarkError
from benchmark.training import autocast, check_precision, data_parallel, decay_groups, warmup_cosine, warmup_steps


def test_warmup_cosine_by_hand():
    # warm-up: peak * (step + 1) / warmup; then half a cosine from peak to 0 over total - warmup steps
    assert [warmup_cosine(s, 10, 4, peak=2.0) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    assert warmup_cosine(4, 10, 4, peak=2.0) == 2.0
    assert warmup_cosine(7, 10, 4, peak=2.0) == pytest.approx(1.0)  # progress 1/2: cos = 0
    assert warmup_cosine(5, 10, 4, peak=2.0) == pytest.approx(1 + 3**0.5 / 2)  # progress 1/6: cos = sqrt(3)/2
    assert warmup_cosine(10, 10, 4, peak=2.0) == 0.0
    assert warmup_cosine(13, 10, 4, peak=2.0) == 0.0  # stays at the floor past the end
    # a floor, and torch LinearLR's warm-up from warmup_start * peak at step 0 to peak at step `warmup`
    assert [warmup_cosine(s, 10, 4, 2.0, 0.5, warmup_start=0.5) for s in range(5)] == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert warmup_cosine(7, 10, 4, 2.0, 0.5, warmup_start=0.5) == pytest.approx(1.25)
    assert warmup_cosine(10, 10, 4, 2.0, 0.5, warmup_start=0.5) == 0.5
    # no warm-up at all: the cosine from step 0
    assert warmup_cosine(0, 4, 0, 1.0, 0.0, warmup_start=1e-4) == 1.0
    assert warmup_cosine(2, 4, 0, 1.0, 0.0, warmup_start=1e-4) == pytest.approx(0.5)


def test_warmup_steps_is_the_fraction_rounded_down_and_at_least_one():
    assert warmup_steps(150, 0.05) == 7 and warmup_steps(30_000, 0.05) == 1500
    assert warmup_steps(12, 0.05) == 1 and warmup_steps(5, 0.0) == 1


def test_warmup_cosine_factor_under_lambda_lr_gives_peak_times_factor():
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, 8, 2))
    for step in range(8):
        assert optimizer.param_groups[0]["lr"] == 0.3 * warmup_cosine(step, 8, 2)
        optimizer.step()
        scheduler.step()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 2)
        self.ln = nn.LayerNorm(2)
        self.gate = nn.Parameter(torch.zeros(()))
        self.head = nn.Linear(2, 2)


def test_decay_groups_keep_the_order_of_the_parameters_and_follow_the_rule():
    net = _Net()
    names = {id(p): n for n, p in net.named_parameters()}
    groups = decay_groups(net.named_parameters(), 0.1, lambda name, p: p.ndim == 1 or name.endswith(".bias"))
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [names[id(p)] for p in groups[0]["params"]] == ["gate", "proj.weight", "head.weight"]  # scalars decay
    assert [names[id(p)] for p in groups[1]["params"]] == ["proj.bias", "ln.weight", "ln.bias", "head.bias"]
    assert list(groups[0]) == ["params", "weight_decay"]


def test_decay_groups_carry_extra_keys_and_leave_empty_groups_out():
    net = _Net()
    heads = [(n, p) for n, p in net.named_parameters() if n.startswith("head.")]
    groups = decay_groups(heads, 0.05, lambda name, p: p.ndim < 2, base_lr=1e-3)
    assert [list(g) for g in groups] == [["params", "base_lr", "weight_decay"]] * 2
    assert [(g["base_lr"], g["weight_decay"], len(g["params"])) for g in groups] == [(1e-3, 0.05, 1), (1e-3, 0.0, 1)]
    assert decay_groups([("gate", net.gate)], 0.05, lambda name, p: True) == [
        {"params": [net.gate], "weight_decay": 0.0}
    ]


def test_precision_autocast_and_one_process_data_parallel():
    check_precision("fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision("fp64")
    assert isinstance(autocast("fp32", "cpu"), contextlib.nullcontext)
    with autocast("bf16", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    net = _Net()
    assert data_parallel(net, torch.device("cpu"), 1) is net


# --- the `zsbench train` commands -----------------------------------------------------------------


def _train_parser() -> argparse.ArgumentParser:
    from benchmark import cli_train

    parser = argparse.ArgumentParser(prog="zsbench")
    cli_train.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_each_family_registers_its_trainer_and_gets_a_train_command():
    from benchmark.registry import list_trainers

    names = [trainer.name for trainer in list_trainers()]
    assert names == sorted(names) and {"clips4", "tcl", "vilseg"} <= set(names)
    parser = _train_parser()
    args = parser.parse_args(["train", "tcl", "--data", "d", "--out", "o.pt", "--batch-size", "8", "--no-resume"])
    assert (args.data, args.clip_model, args.clip_pretrained, args.batch_size, args.no_resume) == (
        "d", "ViT-B-16", "openai", 8, True
    )
    args = parser.parse_args(["train", "clips4", "--images", "i", "--out", "o.pt", "--classes", "a,b",
                              "--set", "lr=1", "--set", "views.flip=0"])
    assert args.set == ["lr=1", "views.flip=0"] and args.precision == "fp32"
    args = parser.parse_args(["train", "clip", "--data", "d", "--out", "o.pt", "--seconds", "5"])
    assert args.seconds == 5.0 and args.func.__name__ == "cmd_train_clip"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "vilseg", "--out", "o.pt"])  # --data is required


def test_common_flags_become_the_trainers_keyword_arguments():
    from benchmark.trainer_options import common_kwargs

    parser = _train_parser()
    args = parser.parse_args(["train", "vilseg", "--data", "d", "--out", "o.pt"])
    assert common_kwargs(args) == {"seed": 0, "steps": None, "device": "cpu", "precision": "fp32", "progress": True,
                                   "resume": True}
    args = parser.parse_args(["train", "vilseg", "--data", "d", "--out", "o.pt", "--steps", "3", "--batch-size", "2",
                              "--precision", "bf16", "--no-progress", "--no-resume", "--seed", "4"])
    assert common_kwargs(args) == {"seed": 4, "steps": 3, "device": "cpu", "precision": "bf16", "progress": False,
                                   "resume": False, "batch_size": 2}


def test_set_pairs_are_read_as_yaml_into_sections():
    from benchmark.trainer_options import parse_settings

    assert parse_settings(["a=1", "views.flip=0", "t=[x, y]", "n=null"]) == {
        "a": 1, "views": {"flip": 0}, "t": ["x", "y"], "n": None
    }
    for bad, message in (("image_size", "expected key=value"), ("a.b.c=1", "expected key=value"),
                         ("a=[1", "not YAML")):
        with pytest.raises(BenchmarkError, match=message):
            parse_settings([bad])
    with pytest.raises(BenchmarkError, match="already given a value"):
        parse_settings(["views=1", "views.flip=0"])


def test_clips4_known_classes_from_a_list_or_a_benchmarks_seen_names():
    from methods.clips4.trainer import known_class_names

    assert known_class_names(" sky, grass,,sea ") == ["sky", "grass", "sea"]
    seen = known_class_names("zs_zs3net_voc2:voc21")  # background (threshold rule) and the 2 unseen left out
    assert len(seen) == 18 and "cow" not in seen and "motorbike" not in seen and seen[0] == "aeroplane"
    assert len(known_class_names("tcl8:voc21")) == 20
