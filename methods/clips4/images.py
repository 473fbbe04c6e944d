"""Unlabeled training images: a folder searched recursively, a deterministic resumable batch order."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"training image folder {folder} not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def listing_digest(folder: Path, files: list[Path]) -> str:
    """Identifies the image set by relative names and sizes (cheap; contents are not read)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder)}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()


class ImageFolder(Dataset):
    """uint8 [3,S,S] RGB images, centre-cropped to square and resized (bicubic); optionally kept in memory."""

    def __init__(self, files: list[Path], size: int, preload: bool = False) -> None:
        self.files = files
        self.size = size
        self.cache: Tensor | None = None
        if preload:
            self.cache = torch.stack([self._decode(i) for i in range(len(files))])

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, index: int) -> Tensor:
        with Image.open(self.files[index]) as image:
            image = image.convert("RGB")
            if image.size != (self.size, self.size):
                image = ImageOps.fit(image, (self.size, self.size), method=Image.Resampling.BICUBIC)
            return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    def __getitem__(self, index: int) -> Tensor:
        return self.cache[index] if self.cache is not None else self._decode(index)


def batch_indices(step: int, n_images: int, global_batch: int, seed: int) -> Tensor:
    """The image indices of a step's global batch: a fresh permutation per epoch, fixed by (seed, epoch)."""
    per_epoch = max(n_images // global_batch, 1)
    epoch, position = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_images, generator=generator)
    if n_images < global_batch:
        order = order.repeat(-(-global_batch // n_images))
    return order[position * global_batch:(position + 1) * global_batch]
