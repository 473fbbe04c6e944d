"""torchrun helpers shared by evaluation and training: join the group, who am I, gather, leave."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's place among the ranks of a run."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def indices(self, count: int) -> list[int]:
        """The positions [0, count) this rank evaluates: every world-th one, from its rank."""
        return list(range(self.rank, count, self.world))


SINGLE_PROCESS = Shard()


def group_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the joined group; (0, 1) without one."""
    if group_active():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[Shard, str]:
    """Under torchrun (WORLD_SIZE > 1): join the group; each rank gets its own CUDA device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard(), device
    rank = int(os.environ["RANK"])
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Shard(rank, world), device


def gather_lists(items: list[Any], shard: Shard) -> list[Any]:
    """Every rank's list, concatenated in rank order (picklable items)."""
    if shard.world == 1:
        return list(items)
    gathered: list[list[Any]] = [[] for _ in range(shard.world)]
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]


def max_over_ranks(values: list[float], device: torch.device, shard: Shard) -> list[float]:
    """Element-wise maximum over the ranks (the slowest rank's seconds, the largest peak memory)."""
    if shard.world == 1:
        return list(values)
    stats = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    return stats.tolist()


def barrier(shard: Shard) -> None:
    if shard.world > 1:
        dist.barrier()


def leave_process_group() -> None:
    """Tear the group down before exit (left to the interpreter, gloo can abort a rank)."""
    if group_active():
        dist.destroy_process_group()
