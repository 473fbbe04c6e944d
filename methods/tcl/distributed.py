"""The one collective TCL's losses need: concatenate a tensor from every rank, gradients included."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from benchmark.distributed import rank_and_world


class _GatherCat(torch.autograd.Function):
    """Forward: all_gather + cat. Backward: each rank's slice of the gradient summed over ranks."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        rank, world = rank_and_world()
        size = grad.shape[0] // world
        return grad[rank * size:(rank + 1) * size]


def gather_cat(x: Tensor) -> Tensor:
    """x [n, ...] of every rank, concatenated in rank order along dim 0; single-process runs return x."""
    _, world = rank_and_world()
    if world == 1:
        return x
    return _GatherCat.apply(x.contiguous())
