"""Contrastive training of the tiny CLIP on the synthetic world's caption split.

Symmetric InfoNCE with a learnable logit scale (as CLIP), AdamW, linear warmup then cosine decay.
The whole caption set is decoded once into memory (64x64 images are small), augmented in batches
on the fly (random resized crop that keeps most of the image, horizontal flip), so a run is
deterministic for a seed on a given machine and thread count. The number of steps is fixed
(``DEFAULT_STEPS`` batches of ``DEFAULT_BATCH_SIZE`` take about 90 s on 2 idle CPU cores);
``seconds`` is an optional wall-clock cap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import ImageOps
from tqdm import tqdm

from benchmark.atomic import replace_atomically, save_torch_atomically
from benchmark.captions import CaptionDataset
from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip, tiny_clip_tokenizer
from benchmark.training import autocast, decay_groups, warmup_cosine, warmup_steps

DEFAULT_STEPS = 500
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 1e-3
WEIGHT_DECAY = 0.1
WARMUP_FRACTION = 0.05
MIN_CROP_AREA = 0.7
MAX_LOGIT_SCALE = 100.0


def load_pairs(data: Path, image_size: int, progress: bool = False) -> tuple[torch.Tensor, list[str]]:
    """All pairs of a caption source: uint8 images [N, 3, S, S] (centre-cropped, resized) and captions."""
    dataset = CaptionDataset(data)
    if len(dataset) == 0:
        raise ValueError(f"no image-caption pairs in {data}")
    images = torch.empty((len(dataset), 3, image_size, image_size), dtype=torch.uint8)
    for index in tqdm(range(len(dataset)), desc="decode", disable=not progress, leave=False):
        image = dataset.load_image(index)
        if image.size != (image_size, image_size):
            image = ImageOps.fit(image, (image_size, image_size), method=3)
        images[index] = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    return images, dataset.captions


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop (area >= MIN_CROP_AREA, aspect 3/4..4/3) and horizontal flip of a float batch."""
    n = images.shape[0]
    area = MIN_CROP_AREA + (1 - MIN_CROP_AREA) * torch.rand(n, generator=generator)
    log_ratio = (torch.rand(n, generator=generator) * 2 - 1) * math.log(4 / 3)
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1)
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1)
    centre_x = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 255] float images -> CLIP-normalised floats."""
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(OPENAI_DATASET_STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching pairs (features L2-normalised)."""
    logits = logit_scale * image_features.float() @ text_features.float().t()
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def spared_from_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases, norms, embeddings and the logit scale."""
    return param.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def train_clip(
    data: Path,
    out: Path,
    seed: int = 0,
    seconds: float | None = None,
    max_steps: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    device: str = "cpu",
    progress: bool = True,
    augmentation: bool = True,
    bf16: bool = True,
    threads: int | None = None,
) -> dict:
    """Train the tiny CLIP on a caption source (see ``benchmark.captions``) and save it to ``out``.

    ``out`` is the checkpoint file (an open_clip state dict); a JSON sidecar with the run's
    summary is written next to it (same name, ``.json``). ``max_steps`` defaults to
    ``DEFAULT_STEPS``; ``seconds`` stops earlier if the wall clock runs out (the run is then
    not reproducible step for step, and the summary says ``"stopped_by": "seconds"``).
    Returns the summary.
    """
    data, out = Path(data), Path(out)
    steps = DEFAULT_STEPS if max_steps is None else max_steps
    if steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {steps}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        model = create_tiny_clip(seed, device=device).train()
        image_size = model.visual.image_size[0]
        images, captions = load_pairs(data, image_size, progress=progress)
        if len(captions) < batch_size:
            raise ValueError(f"{data} holds {len(captions)} pairs, fewer than batch_size={batch_size}")
        tokens = tiny_clip_tokenizer()(captions)
        train_started = time.perf_counter()
        deadline = None if seconds is None else started + seconds
        losses, stopped_by = _train_steps(model, images, tokens, steps, batch_size, lr, seed, device, augmentation,
                                          bf16, deadline, progress)
        train_seconds = time.perf_counter() - train_started
        tail = losses[-max(1, len(losses) // 20) :]
        summary = {
            "model": MODEL_NAME,
            "checkpoint": str(out),
            "data": str(data),
            "pairs": len(captions),
            "seed": seed,
            "steps": len(losses),
            "planned_steps": steps,
            "stopped_by": stopped_by,
            "batch_size": batch_size,
            "lr": lr,
            "augmentation": augmentation,
            "bf16": bf16,
            "initial_loss": losses[0],
            "final_loss": sum(tail) / len(tail),
            "logit_scale": model.logit_scale.detach().exp().item(),
            "train_seconds": round(train_seconds, 2),
            "seconds": round(time.perf_counter() - started, 2),
            "steps_per_s": round(len(losses) / train_seconds, 3),
            "cpu_seconds": round(time.process_time() - cpu_started, 2),
            "threads": torch.get_num_threads(),
            "device": str(device),
            "torch": str(torch.__version__),
            "open_clip": str(open_clip.__version__),
        }
        state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
        save_torch_atomically(out, state)
        summary["sha256"] = _sha256(out)
        replace_atomically(sidecar_path(out), lambda path: path.write_text(json.dumps(summary, indent=2) + "\n"))
        return summary
    finally:
        torch.set_num_threads(previous_threads)


def _train_steps(
    model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, steps: int, batch_size: int, lr: float,
    seed: int, device: str, augmentation: bool, bf16: bool, deadline: float | None, progress: bool,
) -> tuple[list[float], str]:
    """The optimiser steps over shuffled epochs of the pairs; the loss of each step and what stopped them."""
    optimizer = torch.optim.AdamW(
        decay_groups(model.named_parameters(), WEIGHT_DECAY, spared_from_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6
    )
    generator = torch.Generator().manual_seed(seed)
    mixed = autocast("bf16" if bf16 else "fp32", torch.device(device).type)
    warmup = warmup_steps(steps, WARMUP_FRACTION)
    per_epoch = len(tokens) // batch_size
    losses: list[float] = []
    stopped_by = "steps"
    order = torch.empty(0, dtype=torch.long)
    bar = tqdm(range(steps), desc="train tiny CLIP", disable=not progress)
    for step in bar:
        if step % per_epoch == 0:
            order = torch.randperm(len(tokens), generator=generator)
        index = order[(step % per_epoch) * batch_size : (step % per_epoch + 1) * batch_size]
        batch = images[index].float()
        if augmentation:
            batch = augment(batch, generator)
        batch = normalise(batch).to(device)
        text = tokens[index].to(device)
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, steps, warmup, lr)
        with mixed:
            image_features = model.encode_image(batch, normalize=True)
            text_features = model.encode_text(text, normalize=True)
        loss = contrastive_loss(image_features, text_features, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if deadline is not None and time.perf_counter() > deadline and step + 1 < steps:
            stopped_by = "seconds"
            break
    bar.close()
    return losses, stopped_by
