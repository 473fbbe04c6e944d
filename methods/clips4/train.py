"""`train_clips4`: CLIP-S4 on a folder of unlabeled images, a CLIP, and the known class names.

Runs on one CPU or GPU, or under torchrun (DDP, one process per device; ``batch_size`` is per process).
Mixed precision through autocast (``bf16``, or ``fp16`` with a gradient scaler on CUDA). A resumable
training state is written atomically every ``save_every`` steps next to the weights file
(``<out>.state``); running the same command again continues from it and ends with the same weights
as an uninterrupted run on the same machine and thread count. A completed weights file whose run
matches is returned as it is.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmark.atomic import save_torch_atomically
from benchmark.errors import CheckpointError
from methods.clip_backbone import load_clip
from methods.clip_text import encode_names
from methods.clips4.checkpoint import FORMAT, META_KEY, load_state, read_checkpoint, weights_content
from methods.clips4.images import ImageFolder, batch_indices, list_images, listing_digest
from methods.clips4.network import NetworkConfig, PixelEmbedder
from methods.clips4.prototypes import PrototypeBank
from methods.clips4.settings import read_templates, resolve_settings
from methods.clips4.step import StepSettings, training_step
from methods.clips4.teacher import MaskClipTeacher
from methods.clips4.views import ViewSettings

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRELOAD_BYTES = 1 << 30
MAX_LOGIT_SCALE = 100.0


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def _run_key(meta: dict[str, Any]) -> str:
    keys = ("network", "clip_model", "clip_sha256", "known_classes", "templates", "settings", "seed", "steps",
            "batch_size", "world_size", "images_digest")
    material = json.dumps({key: meta[key] for key in keys}, sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


def _schedule(total: int, warmup_fraction: float):
    warmup = max(1, int(total * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class _StepBatches:
    """Index lists for steps start..total-1, this rank's share of each global batch."""

    def __init__(self, start: int, total: int, n_images: int, batch: int, rank: int, world: int, seed: int) -> None:
        self.start, self.total, self.n_images = start, total, n_images
        self.batch, self.rank, self.world, self.seed = batch, rank, world, seed

    def __iter__(self):
        for step in range(self.start, self.total):
            indices = batch_indices(step, self.n_images, self.batch * self.world, self.seed)
            yield indices[self.rank * self.batch:(self.rank + 1) * self.batch].tolist()

    def __len__(self) -> int:
        return self.total - self.start


def train_clips4(
    images: Path,
    out: Path,
    clip_model: str,
    clip_pretrained: str | None,
    known_classes: list[str],
    seed: int = 0,
    steps: int | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = True,
    resume: bool = True,
    weights_root: str | None = None,
    settings: dict[str, Any] | None = None,
    workers: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Trains CLIP-S4 and writes its weights to ``out``; returns the run's summary (also ``<out>.json``).

    images: folder of unlabeled images (searched recursively). clip_model / clip_pretrained: an open_clip
    model name and a pinned tag or weights file (methods/clip_backbone.py). known_classes: the class names
    given to training; unknown classes get learned prototypes. steps / batch_size: None takes
    methods/clips4/defaults.yaml; settings overrides any other key of that file.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if not known_classes:
        raise ValueError("give at least one known class name")
    images, out = Path(images), Path(out)
    config = resolve_settings(settings)
    config["steps"] = int(steps if steps is not None else config["steps"])
    config["batch_size"] = int(batch_size if batch_size is not None else config["batch_size"])
    total_steps, batch = config["steps"], config["batch_size"]
    if total_steps < 1 or batch < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {total_steps} and {batch}")
    from benchmark.runner import init_distributed

    shard, device = init_distributed(device)
    rank, world = shard.rank, shard.world
    previous_threads = torch.get_num_threads()
    if not device.startswith("cuda"):
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    try:
        return _train(images, out, clip_model, clip_pretrained, list(known_classes), seed, config, device, precision,
                      progress, resume, weights_root, workers, rank, world)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    images: Path, out: Path, clip_model: str, clip_pretrained: str | None, known_classes: list[str], seed: int,
    config: dict[str, Any], device: str, precision: str, progress: bool, resume: bool, weights_root: str | None,
    workers: int, rank: int, world: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    total_steps, batch = config["steps"], config["batch_size"]
    files = list_images(images)
    clip = load_clip(clip_model, clip_pretrained, weights_root)
    templates = read_templates(config["templates"])
    known = encode_names(clip, known_classes, templates, "mean_normalised")
    network_config = NetworkConfig(embed_dim=known.shape[1], **config["network"])
    logit_scale = config["semantic_logit_scale"]
    if logit_scale is None:
        logit_scale = min(float(clip.model.logit_scale.exp()), MAX_LOGIT_SCALE)
    meta: dict[str, Any] = {
        "format": FORMAT, "network": network_config.as_dict(), "clip_model": clip.name,
        "clip_pretrained": clip_pretrained, "clip_sha256": clip.weights_sha256, "known_classes": known_classes,
        "templates": templates, "settings": config, "seed": seed, "steps": total_steps, "batch_size": batch,
        "world_size": world, "images": str(images), "n_images": len(files),
        "images_digest": listing_digest(images, files), "semantic_logit_scale": logit_scale,
        "mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD), "precision": precision,
    }
    meta["run_key"] = _run_key(meta)
    if resume and out.is_file():
        done = _completed_run(out, meta["run_key"])
        if done is not None:
            return done

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = PixelEmbedder(network_config, clip.visual).to(device)
    teacher = MaskClipTeacher(clip.visual, **config["teacher"]).to(device).eval()
    bank = PrototypeBank(
        known, config["unknown_prototypes"], config["prototype_momentum"], unknown_margin=config["unknown_margin"]
    ).to(device)
    trunk_params = [p for p in network.trunk.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": trunk_params, "lr": config["lr"]},
         {"params": list(network.head.parameters()), "lr": config["head_lr"]}],
        weight_decay=config["weight_decay"],
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total_steps, config["warmup_fraction"]))
    use_scaler = precision == "fp16" and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    generator = torch.Generator()
    start = 0
    if resume and state_path(out).is_file():
        start = _restore(state_path(out), meta["run_key"], network, bank, optimizer, scheduler, scaler)
    trained = network
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[torch.device(device).index] if device.startswith("cuda") else None
        )

    step_settings = StepSettings(
        view_size=config["view_size"], views=ViewSettings(**config["views"]),
        n_superpixels=config["superpixels"]["n_segments"], compactness=config["superpixels"]["compactness"],
        slic_iterations=config["superpixels"]["iterations"], segments_per_image=config["segments_per_image"],
        kmeans_iterations=config["kmeans_iterations"], kappa=config["kappa"],
        contrast_pixels=config["contrast_pixels"], weights=config["loss_weights"],
        embedding_loss=config["embedding_loss"],
        semantic_targets=config["semantic_targets"],
        semantic_logit_scale=logit_scale, mean=tuple(OPENAI_DATASET_MEAN), std=tuple(OPENAI_DATASET_STD),
    )
    preload = len(files) * 3 * config["image_size"] ** 2 <= PRELOAD_BYTES and workers == 0
    dataset = ImageFolder(files, config["image_size"], preload=preload)
    loader = DataLoader(
        dataset, batch_sampler=_StepBatches(start, total_steps, len(files), batch, rank, world, seed),
        num_workers=workers, collate_fn=torch.stack,
    )
    dtype = PRECISIONS[precision]
    device_type = torch.device(device).type

    def autocast():
        return torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext()

    network.train()
    stats: dict[str, float] = {}
    bar = tqdm(total=total_steps, initial=start, desc="clips4", disable=not progress or rank != 0, leave=False)
    loop_started = time.perf_counter()
    step = start
    for step, images_batch in enumerate(loader, start=start):
        generator.manual_seed((seed * 1_000_003 + step) * 64 + rank)
        loss, stats = training_step(
            images_batch.to(device), trained, teacher, bank, step_settings, generator, autocast()
        )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        bar.update(1)
        bar.set_postfix({key: f"{value:.3f}" for key, value in stats.items()})
        done = step + 1
        if rank == 0 and done % config["save_every"] == 0 and done < total_steps:
            _save_state(state_path(out), meta, network, bank, optimizer, scheduler, scaler, done)
    bar.close()
    loop_seconds = time.perf_counter() - loop_started
    ran = total_steps - start
    summary = {
        "out": str(out), "steps": total_steps, "resumed_from": start, "batch_size": batch, "world_size": world,
        "n_images": len(files), "known_classes": known_classes, "last_losses": stats,
        "seconds": round(time.perf_counter() - started, 2), "train_seconds": round(loop_seconds, 2),
        "steps_per_s": round(ran / loop_seconds, 3) if loop_seconds > 0 and ran else None,
        "load_average": list(os.getloadavg()), "threads": torch.get_num_threads(), "device": device,
        "precision": precision,
    }
    if rank == 0:
        final = {**meta, "completed": True, "summary": summary}
        save_torch_atomically(out, weights_content(final, network, bank))
        out.with_name(out.name + ".json").write_text(json.dumps(summary, indent=2))
        state_path(out).unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    return summary


def _completed_run(out: Path, run_key: str) -> dict[str, Any] | None:
    try:
        meta = read_checkpoint(out)[META_KEY]
    except CheckpointError:
        return None
    if meta.get("completed") and meta.get("run_key") == run_key:
        return {**meta.get("summary", {}), "cached": True}
    return None


def _save_state(path: Path, meta: dict[str, Any], network, bank, optimizer, scheduler, scaler, step: int) -> None:
    save_torch_atomically(path, {
        **weights_content({**meta, "completed": False}, network, bank), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
    })


def _restore(path: Path, run_key: str, network, bank, optimizer, scheduler, scaler) -> int:
    state = read_checkpoint(path)
    if state[META_KEY].get("run_key") != run_key:
        raise CheckpointError(
            f"{path}: key '{META_KEY}.run_key' belongs to a different run (other settings, images or CLIP); "
            "delete it or pass resume=False to start over"
        )
    for key in ("optimizer", "scheduler", "step"):
        if key not in state:
            raise CheckpointError(f"{path}: key {key!r} is missing; not a resumable CLIP-S4 training state")
    load_state(network, state["model"], str(path), "model")
    load_state(bank, state["prototypes"], str(path), "prototypes")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["step"])
