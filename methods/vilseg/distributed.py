"""Collectives the losses need under torchrun, and the identity with one process.

``gather_with_grad`` and ``sum_with_grad`` give every rank the whole batch's value with gradients
flowing only into this rank's share (open_clip's default for CLIP's loss): each rank then computes
the same global loss, and its gradient with respect to its own share is exact; DDP averages the
parameter gradients over ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from benchmark.distributed import rank_and_world


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Every rank's [N,...] concatenated in rank order; this rank's share keeps its gradient."""
    rank, world = rank_and_world()
    if world == 1:
        return tensor
    shares = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(shares, tensor.detach().contiguous())
    shares[rank] = tensor
    return torch.cat(shares, dim=0)


def sum_with_grad(tensor: Tensor) -> Tensor:
    """Sum over ranks; this rank's term keeps its gradient."""
    if rank_and_world()[1] == 1:
        return tensor
    others = tensor.detach().clone()
    dist.all_reduce(others)
    return tensor + (others - tensor.detach())


def mean_no_grad(tensor: Tensor) -> Tensor:
    """Mean over ranks of a tensor that needs no gradient (DINO's centre)."""
    _, world = rank_and_world()
    if world == 1:
        return tensor
    tensor = tensor.detach().clone()
    dist.all_reduce(tensor)
    return tensor / world
