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
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmark.atomic import save_torch_atomically
from benchmark.distributed import Shard, barrier, init_distributed
from benchmark.errors import CheckpointError
from benchmark.training import autocast, check_precision, data_parallel, warmup_cosine, warmup_steps
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
    """The LambdaLR factor: linear warm-up, then cosine decay to 0."""
    warmup = warmup_steps(total, warmup_fraction)
    return lambda step: warmup_cosine(step, total, warmup)


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
    check_precision(precision)
    if not known_classes:
        raise ValueError("give at least one known class name")
    images, out = Path(images), Path(out)
    config = resolve_settings(settings)
    config["steps"] = int(steps if steps is not None else config["steps"])
    config["batch_size"] = int(batch_size if batch_size is not None else config["batch_size"])
    total_steps, batch = config["steps"], config["batch_size"]
    if total_steps < 1 or batch < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {total_steps} and {batch}")
    shard, device = init_distributed(device)
    previous_threads = torch.get_num_threads()
    if not device.startswith("cuda"):
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    try:
        return _train(images, out, clip_model, clip_pretrained, list(known_classes), seed, config, device, precision,
                      progress, resume, weights_root, workers, shard)
    finally:
        torch.set_num_threads(previous_threads)


@dataclass
class _Learner:
    """A run's modules (the pixel embedder, its frozen teacher, the prototype bank), optimiser, schedule and scaler."""

    network: PixelEmbedder
    teacher: MaskClipTeacher
    bank: PrototypeBank
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler

    @classmethod
    def build(cls, network_config: NetworkConfig, clip: Any, known: torch.Tensor, config: dict[str, Any],
              seed: int, device: str, precision: str) -> _Learner:
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
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config["steps"], config["warmup_fraction"]))
        scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.startswith("cuda"))
        return cls(network, teacher, bank, optimizer, scheduler, scaler)

    def save_state(self, path: Path, meta: dict[str, Any], step: int) -> None:
        _save_state(path, meta, self.network, self.bank, self.optimizer, self.scheduler, self.scaler, step)

    def restore(self, path: Path, run_key: str) -> int:
        return _restore(path, run_key, self.network, self.bank, self.optimizer, self.scheduler, self.scaler)


def _run_meta(images: Path, files: list[Path], clip: Any, clip_pretrained: str | None, known_classes: list[str],
              templates: list[str], network_config: NetworkConfig, logit_scale: float, config: dict[str, Any],
              seed: int, world: int, precision: str) -> dict[str, Any]:
    """The run's description, stored with its weights; its run_key decides whether a file belongs to this run."""
    meta: dict[str, Any] = {
        "format": FORMAT, "network": network_config.as_dict(), "clip_model": clip.name,
        "clip_pretrained": clip_pretrained, "clip_sha256": clip.weights_sha256, "known_classes": known_classes,
        "templates": templates, "settings": config, "seed": seed, "steps": config["steps"],
        "batch_size": config["batch_size"], "world_size": world, "images": str(images), "n_images": len(files),
        "images_digest": listing_digest(images, files), "semantic_logit_scale": logit_scale,
        "mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD), "precision": precision,
    }
    meta["run_key"] = _run_key(meta)
    return meta


def _step_settings(config: dict[str, Any], logit_scale: float) -> StepSettings:
    return StepSettings(
        view_size=config["view_size"], views=ViewSettings(**config["views"]),
        n_superpixels=config["superpixels"]["n_segments"], compactness=config["superpixels"]["compactness"],
        slic_iterations=config["superpixels"]["iterations"], segments_per_image=config["segments_per_image"],
        kmeans_iterations=config["kmeans_iterations"], kappa=config["kappa"],
        contrast_pixels=config["contrast_pixels"], weights=config["loss_weights"],
        embedding_loss=config["embedding_loss"],
        semantic_targets=config["semantic_targets"],
        semantic_logit_scale=logit_scale, mean=tuple(OPENAI_DATASET_MEAN), std=tuple(OPENAI_DATASET_STD),
    )


def _loader(files: list[Path], config: dict[str, Any], start: int, shard: Shard, seed: int,
            workers: int) -> DataLoader:
    """This rank's batches of the steps from `start` on."""
    preload = len(files) * 3 * config["image_size"] ** 2 <= PRELOAD_BYTES and workers == 0
    dataset = ImageFolder(files, config["image_size"], preload=preload)
    batches = _StepBatches(start, config["steps"], len(files), config["batch_size"], shard.rank, shard.world, seed)
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=torch.stack)


def _train(
    images: Path, out: Path, clip_model: str, clip_pretrained: str | None, known_classes: list[str], seed: int,
    config: dict[str, Any], device: str, precision: str, progress: bool, resume: bool, weights_root: str | None,
    workers: int, shard: Shard,
) -> dict[str, Any]:
    started = time.perf_counter()
    files = list_images(images)
    clip = load_clip(clip_model, clip_pretrained, weights_root)
    templates = read_templates(config["templates"])
    known = encode_names(clip, known_classes, templates, "mean_normalised")
    network_config = NetworkConfig(embed_dim=known.shape[1], **config["network"])
    logit_scale = config["semantic_logit_scale"]
    if logit_scale is None:
        logit_scale = min(float(clip.model.logit_scale.exp()), MAX_LOGIT_SCALE)
    meta = _run_meta(images, files, clip, clip_pretrained, known_classes, templates, network_config, logit_scale,
                     config, seed, shard.world, precision)
    if resume and out.is_file():
        done = _completed_run(out, meta["run_key"])
        if done is not None:
            return done

    learner = _Learner.build(network_config, clip, known, config, seed, device, precision)
    start = learner.restore(state_path(out), meta["run_key"]) if resume and state_path(out).is_file() else 0
    trained = data_parallel(learner.network, torch.device(device), shard.world)
    loader = _loader(files, config, start, shard, seed, workers)
    loop_started = time.perf_counter()
    stats = _train_steps(learner, trained, loader, _step_settings(config, logit_scale), out, meta, start, seed,
                         device, precision, progress, shard.rank)
    loop_seconds = time.perf_counter() - loop_started
    ran = config["steps"] - start
    outcome = {  # stored with the weights: nothing here depends on where or when the run happened
        "steps": config["steps"], "resumed_from": start, "batch_size": config["batch_size"],
        "world_size": shard.world, "n_images": len(files), "known_classes": known_classes, "last_losses": stats,
        "precision": precision,
    }
    summary = {
        **outcome, "out": str(out), "seconds": round(time.perf_counter() - started, 2),
        "train_seconds": round(loop_seconds, 2),
        "steps_per_s": round(ran / loop_seconds, 3) if loop_seconds > 0 and ran else None,
        "load_average": list(os.getloadavg()), "threads": torch.get_num_threads(), "device": device,
    }
    if shard.is_main:
        final = {**meta, "completed": True, "summary": outcome}
        save_torch_atomically(out, weights_content(final, learner.network, learner.bank))
        out.with_name(out.name + ".json").write_text(json.dumps(summary, indent=2))
        state_path(out).unlink(missing_ok=True)
    barrier(shard)
    return summary


def _train_steps(learner: _Learner, trained: torch.nn.Module, loader: DataLoader, step_settings: StepSettings,
                 out: Path, meta: dict[str, Any], start: int, seed: int, device: str, precision: str, progress: bool,
                 rank: int) -> dict[str, float]:
    """The optimiser steps from `start` on, saving a resumable state every `save_every` steps; the last losses."""
    total_steps, save_every = meta["steps"], meta["settings"]["save_every"]
    device_type = torch.device(device).type
    generator = torch.Generator()
    learner.network.train()
    stats: dict[str, float] = {}
    bar = tqdm(total=total_steps, initial=start, desc="clips4", disable=not progress or rank != 0, leave=False)
    for step, images_batch in enumerate(loader, start=start):
        generator.manual_seed((seed * 1_000_003 + step) * 64 + rank)
        loss, stats = training_step(
            images_batch.to(device), trained, learner.teacher, learner.bank, step_settings, generator,
            autocast(precision, device_type),
        )
        learner.optimizer.zero_grad(set_to_none=True)
        learner.scaler.scale(loss).backward()
        learner.scaler.step(learner.optimizer)
        learner.scaler.update()
        learner.scheduler.step()
        bar.update(1)
        bar.set_postfix({key: f"{value:.3f}" for key, value in stats.items()})
        done = step + 1
        if rank == 0 and done % save_every == 0 and done < total_steps:
            learner.save_state(state_path(out), meta, done)
    bar.close()
    return stats


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
