"""Pieces every trainer shares: the learning-rate schedule, AdamW's weight-decay groups, the autocast of a precision.

Each trainer keeps its reference's rule (which parameters skip weight decay, where the warm-up starts,
the floor of the cosine) by passing it here; the arithmetic is written once, in the order each
trainer has always used, so that its weights stay bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from benchmark.numerics import AUTOCAST_DTYPES

PRECISIONS = ("fp32", *AUTOCAST_DTYPES)


def warmup_steps(total: int, fraction: float) -> int:
    """The warm-up length of a schedule that warms up over `fraction` of `total` steps (at least one step)."""
    return max(1, int(fraction * total))


def warmup_cosine(step: int, total: int, warmup: int, peak: float = 1.0, floor: float = 0.0,
                  warmup_start: float | None = None) -> float:
    """Linear warm-up over `warmup` steps, then half a cosine from `peak` down to `floor` at step `total`.

    The warm-up reaches peak * (step + 1) / warmup at step `step`; with `warmup_start`, it is torch's
    LinearLR instead, from warmup_start * peak at step 0 to `peak` at step `warmup`. peak=1 gives the
    factor of a LambdaLR. Past `total` the rate stays at `floor`.
    """
    if step < warmup:
        if warmup_start is None:
            return peak * (step + 1) / warmup
        return peak * (warmup_start + (1 - warmup_start) * step / warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (peak - floor) * (1 + math.cos(math.pi * progress)) / 2


def decay_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    exempt: Callable[[str, nn.Parameter], bool],
    **extra: Any,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: the parameters that decay, then those `exempt(name, parameter)` spares.

    Parameters keep the order they are given in (the optimizer's state follows it); a group with no
    parameters is left out; `extra` (such as a group's own base learning rate) goes into each group.
    """
    decay: list[nn.Parameter] = []
    spared: list[nn.Parameter] = []
    for name, parameter in named_parameters:
        (spared if exempt(name, parameter) else decay).append(parameter)
    return [
        {"params": params, **extra, "weight_decay": value}
        for params, value in ((decay, weight_decay), (spared, 0.0))
        if params
    ]


def data_parallel(module: nn.Module, device: torch.device, world: int, **options: Any) -> nn.Module:
    """The module as DistributedDataParallel runs it under torchrun (one device per rank); itself in one process."""
    if world == 1:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **options)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")


def autocast(precision: str, device_type: str) -> AbstractContextManager:
    """Autocast to the precision's type on that kind of device; fp32 runs as it is."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device_type=device_type, dtype=dtype) if dtype is not None else nullcontext()
