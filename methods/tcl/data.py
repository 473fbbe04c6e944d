"""Training batches of (augmented image, caption) for TCL, reproducible step by step.

Each step's pairs come from a per-epoch permutation seeded by (seed, epoch); each image is
augmented with RNGs seeded by (seed, epoch, index). A run resumed at step s therefore sees
exactly the batches an uninterrupted run sees, whatever the number of loader workers. With D
ranks a step's global batch is split into D consecutive local batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from benchmark.captions import CaptionDataset

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # us/misc.py DEFAULT_MEAN/STD
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
NORMALISATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}
AUGMENTATIONS = ("deit", "crop_flip", "none")


def build_transform(kind: str, size: int, normalisation: str) -> Callable[[Image.Image], Tensor]:
    """deit: timm's DeiT training transform exactly as TCL configures it (datasets/builder.py,
    configs/default.yml img_aug); crop_flip: random resized crop (scale 0.5-1) and flip;
    none: resize and centre crop."""
    from torchvision import transforms as T

    mean, std = NORMALISATIONS[normalisation]
    if kind == "deit":
        from timm.data import create_transform

        return create_transform(
            input_size=size, is_training=True, color_jitter=0.4, auto_augment="rand-m9-mstd0.5-inc1",
            re_prob=0.25, re_mode="pixel", re_count=1, mean=mean, std=std,
        )
    if kind == "crop_flip":
        steps = [T.RandomResizedCrop(size, scale=(0.5, 1.0)), T.RandomHorizontalFlip()]
    elif kind == "none":
        steps = [T.Resize(size), T.CenterCrop(size)]
    else:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {kind!r}")
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def _mix(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0])


class AugmentedPairs(Dataset):
    """dataset[(epoch, index)] = (augmented image tensor, caption)."""

    def __init__(self, pairs: CaptionDataset, transform: Callable[[Image.Image], Tensor], seed: int) -> None:
        self.pairs, self.transform, self.seed = pairs, transform, seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, str]:
        epoch, index = key
        image = self.pairs.load_image(index)
        item_seed = _mix(self.seed, epoch, index)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            random.seed(item_seed)
            np.random.seed(item_seed)  # timm's RandAugment picks its operations with numpy's global RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed)
                tensor = self.transform(image)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        return tensor, self.pairs.samples[index].caption


class StepBatches(Sampler[list[tuple[int, int]]]):
    """The local batch of every step in [start, stop): keys (epoch, index) for AugmentedPairs."""

    def __init__(self, size: int, batch: int, rank: int, world: int, seed: int, start: int, stop: int) -> None:
        self.per_epoch = size // (batch * world)
        if self.per_epoch < 1:
            raise ValueError(f"{size} pairs are fewer than one global batch of {batch * world}")
        self.size, self.batch, self.rank, self.world = size, batch, rank, world
        self.seed, self.start, self.stop = seed, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, torch.empty(0, dtype=torch.long)
        for step in range(self.start, self.stop):
            step_epoch, position = divmod(step, self.per_epoch)
            if step_epoch != epoch:
                epoch = step_epoch
                order = torch.randperm(self.size, generator=torch.Generator().manual_seed(_mix(self.seed, epoch)))
            first = (position * self.world + self.rank) * self.batch
            yield [(epoch, int(i)) for i in order[first:first + self.batch]]


def collate(items: list[tuple[Tensor, str]]) -> tuple[Tensor, list[str]]:
    return torch.stack([image for image, _ in items]), [caption for _, caption in items]


def step_loader(
    data: str | Path,
    transform: Callable[[Image.Image], Tensor],
    batch: int,
    rank: int,
    world: int,
    seed: int,
    start: int,
    stop: int,
    workers: int,
) -> tuple[DataLoader, dict[str, Any]]:
    """A loader yielding (images [B, 3, S, S], captions) for steps start..stop-1, and facts about the data."""
    pairs = CaptionDataset(data)
    if len(pairs) == 0:
        raise ValueError(f"no image-caption pairs in {data}")
    sampler = StepBatches(len(pairs), batch, rank, world, seed, start, stop)
    loader = DataLoader(
        AugmentedPairs(pairs, transform, seed), batch_sampler=sampler, num_workers=workers, collate_fn=collate,
    )
    return loader, {"pairs": len(pairs), "steps_per_epoch": sampler.per_epoch}
