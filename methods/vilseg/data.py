"""Training batches of (image, caption tokens) from any caption source of ``benchmark.captions``.

Images are decoded to a square of the global view's size (shorter side resized bicubically,
centre crop: PIL's ``ImageOps.fit``) and kept as uint8; the views are made later on the device.
Which images make step ``s`` depends only on (seed, s, rank, world size): every epoch is a
seeded permutation, so a resumed run sees exactly the batches an uninterrupted one would.
A small source (the synthetic world) is decoded once into memory; a large one (CC12M shards) is
streamed by DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import ImageOps
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from benchmark.captions import CaptionDataset

Tokenizer = Callable[[list[str]], Tensor]
IN_MEMORY_BYTES = 2 << 30  # sources whose decoded images fit in this many bytes are held in memory


def decode(dataset: CaptionDataset, index: int, size: int) -> Tensor:
    image = ImageOps.fit(dataset.load_image(index), (size, size), method=3)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def steps_per_epoch(count: int, batch_size: int, world: int) -> int:
    per_epoch = count // (batch_size * world)
    if per_epoch < 1:
        raise ValueError(f"the caption source holds {count} pairs, less than one batch ({batch_size} x {world} ranks)")
    return per_epoch


def step_indices(step: int, count: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
    """The pair indices of this rank's share of training step `step`."""
    epoch, position = divmod(step, steps_per_epoch(count, batch_size, world))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    start = (position * world + rank) * batch_size
    return order[start:start + batch_size]


class StepBatches(Sampler[list[int]]):
    """Batch sampler over steps [start, stop) in the deterministic order of `step_indices`."""

    def __init__(self, count: int, batch_size: int, seed: int, start: int, stop: int, rank: int, world: int) -> None:
        self.args = (count, batch_size, seed, rank, world)
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[list[int]]:
        count, batch_size, seed, rank, world = self.args
        for step in range(self.start, self.stop):
            yield step_indices(step, count, batch_size, seed, rank, world).tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class DecodedPairs(Dataset):
    """``dataset[i]`` = (uint8 image [3,S,S], caption tokens [L]), decoded on access."""

    def __init__(self, source: CaptionDataset, size: int, tokenizer: Tokenizer) -> None:
        self.source, self.size, self.tokenizer = source, size, tokenizer

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        tokens = self.tokenizer([self.source.samples[index].caption])[0]
        return decode(self.source, index, self.size), tokens


class PairBatches:
    """Batches for steps [start, stop) of a caption source, in memory or streamed."""

    def __init__(self, data: str | Path, size: int, tokenizer: Tokenizer, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, workers: int = 4, progress: bool = False) -> None:
        self.source = CaptionDataset(data)
        if len(self.source) == 0:
            raise ValueError(f"no image-caption pairs in {data}")
        self.count = len(self.source)
        self.per_epoch = steps_per_epoch(self.count, batch_size, world)
        self.size, self.tokenizer, self.batch_size, self.seed = size, tokenizer, batch_size, seed
        self.rank, self.world, self.workers = rank, world, workers
        self.in_memory = self.count * 3 * size * size <= IN_MEMORY_BYTES
        self.images: Tensor | None = None
        self.tokens: Tensor | None = None
        if self.in_memory:
            self.images = torch.empty((self.count, 3, size, size), dtype=torch.uint8)
            for index in tqdm(range(self.count), desc="decode", disable=not progress, leave=False):
                self.images[index] = decode(self.source, index, size)
            self.tokens = tokenizer(self.source.captions)

    def __call__(self, start: int, stop: int) -> Iterator[tuple[Tensor, Tensor]]:
        if self.in_memory:
            for step in range(start, stop):
                index = step_indices(step, self.count, self.batch_size, self.seed, self.rank, self.world)
                yield self.images[index], self.tokens[index]
            return
        sampler = StepBatches(self.count, self.batch_size, self.seed, start, stop, self.rank, self.world)
        loader = DataLoader(
            DecodedPairs(self.source, self.size, self.tokenizer), batch_sampler=sampler, num_workers=self.workers,
            pin_memory=torch.cuda.is_available(), persistent_workers=False,
        )
        yield from loader
