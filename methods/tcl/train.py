"""Training TCL's masker on image-caption pairs (kakaobrain/tcl main.py do_training, configs/tcl.yml).

Defaults are the reference's: 50k steps, 64 pairs per GPU, AdamW (betas 0.9/0.999, eps 1e-6,
weight decay 0.05 on every parameter except 1-d ones and biases), learning rate 3e-4 and floor
4e-5 both scaled by global batch / 4096, linear warm-up from 1e-4 x over the first 30% of the steps
then cosine to the floor, gradient norm clipped at 5, and the first 60% of the steps training the
decoder only (the masker's copy of CLIP's last block frozen, "UST"). Captions are used whole.

Runs under torchrun (one process per GPU, DistributedDataParallel, losses over the global batch),
with fp16 (gradient scaling) or bf16 autocast, and resume from the state file written next to the
output every ``save_every_s`` seconds: a resumed run ends with the same weights as an
uninterrupted one (data order, augmentation and Gumbel noise are seeded per step).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from benchmark.atomic import save_torch_atomically
from benchmark.distributed import init_distributed
from benchmark.training import autocast, check_precision, data_parallel, decay_groups, warmup_cosine
from methods.clip_backbone import load_clip
from methods.tcl.checkpoint import save_checkpoint
from methods.tcl.clip_features import encode_until_last, global_embedding
from methods.tcl.data import build_transform, step_loader
from methods.tcl.model import TCLMasker
from methods.tcl.objective import TCLObjective

STEPS = 50_000  # configs/tcl.yml train.total_steps
WARMUP_FRACTION = 0.3  # warmup_steps 15000 / 50000
DECODER_ONLY_FRACTION = 0.6  # ust_steps 30000 / 50000
BASE_LR, MIN_LR, LR_BATCH = 3e-4, 4e-5, 4096  # base_lr, min_lr; main.py scales both by global batch / 4096
WARMUP_START = 1e-4  # utils/lr_scheduler.py LinearLR(start_factor=1e-4)
WEIGHT_DECAY, BETAS, EPS = 0.05, (0.9, 0.999), 1e-6
CLIP_GRAD = 5.0
BATCH_SIZE = 64  # per GPU
STATE_FORMAT = 1


def spared_from_decay(name: str, parameter: nn.Parameter) -> bool:
    """1-d parameters and biases; scalars (gates, w, b, temperatures) do decay (utils/optimizer.py)."""
    return parameter.ndim == 1 or name.endswith(".bias")


def _noise(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    material = f"{seed}/{rank}/{step}".encode()
    return torch.Generator(device=device).manual_seed(int.from_bytes(hashlib.sha256(material).digest()[:8], "little"))


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def summary_path(out: Path) -> Path:
    return out.with_suffix(".json")


class _Run:
    """One training run: the trainable objective, its optimiser state, the loop, the files it writes."""

    def __init__(self, settings: dict[str, Any], clip: Any, out: Path, rank: int, world: int,
                 device: torch.device) -> None:
        self.settings, self.clip, self.out = settings, clip, out
        self.rank, self.world, self.device = rank, world, device
        self.visual = clip.model.visual
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings["seed"])
            self.masker = TCLMasker.from_clip(self.visual)
        self.objective = TCLObjective(self.masker).to(device).train()
        self.optimizer = torch.optim.AdamW(
            decay_groups(self.objective.named_parameters(), WEIGHT_DECAY, spared_from_decay), lr=settings["lr"],
            betas=BETAS, eps=EPS,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings["precision"] == "fp16")
        self.step, self.history, self.seconds = 0, [], 0.0

    @property
    def state_file(self) -> Path:
        return state_path(self.out)

    def resume(self) -> None:
        state = torch.load(self.state_file, map_location=self.device, weights_only=True)
        differ = sorted(k for k in self.settings if state["settings"].get(k) != self.settings[k])
        if differ:
            raise ValueError(f"{self.state_file} was written with other settings ({differ}); pass resume=False")
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.history, self.seconds = state["step"], state["history"], state["seconds"]

    def save_state(self) -> None:
        if self.rank == 0:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            save_torch_atomically(self.state_file, {
                "format": STATE_FORMAT, "settings": self.settings, "step": self.step, "history": self.history,
                "seconds": self.seconds, "objective": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            })
        if self.world > 1:
            dist.barrier()

    def model(self, block_frozen: bool) -> nn.Module:
        """The module to call; rebuilt when the phase changes, since DDP only syncs what required grad."""
        self.masker.block.requires_grad_(not block_frozen)
        return data_parallel(self.objective, self.device, self.world, broadcast_buffers=False)

    def train(self, data: Path, workers: int, progress: bool, save_every_s: float,
              max_seconds: float | None) -> dict[str, Any]:
        s = self.settings
        total, decoder_only = s["steps"], s["decoder_only_steps"]
        transform = build_transform(s["augment"], s["image_size"], s["normalisation"])
        loader, facts = step_loader(data, transform, s["batch_size"], self.rank, self.world, s["seed"],
                                    self.step, total, workers)
        mixed = autocast(s["precision"], self.device.type)
        block_frozen = self.step < decoder_only
        model = self.model(block_frozen)
        started = last_save = time.perf_counter()
        seconds_before, stopped_by = self.seconds, "steps"
        bar = tqdm(total=total, initial=self.step, desc="train TCL", disable=not (progress and self.rank == 0),
                   dynamic_ncols=True)
        for images, captions in loader:
            if block_frozen and self.step >= decoder_only:
                block_frozen = False
                model = self.model(block_frozen)
            losses = self.train_step(model, images, captions, mixed)
            self.history.append({k: round(v, 6) for k, v in losses.items()})
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.3f}", refresh=False)
            now = time.perf_counter()
            self.seconds = seconds_before + now - started
            if max_seconds is not None and self.seconds > max_seconds and self.step < total:
                stopped_by = "max_seconds"
                break
            if now - last_save >= save_every_s and self.step < total:
                self.save_state()
                last_save = now
        bar.close()
        return self.finish(facts, stopped_by)

    def train_step(self, model: nn.Module, images: torch.Tensor, captions: list[str],
                   mixed: contextlib.AbstractContextManager) -> dict[str, float]:
        s = self.settings
        images = images.to(self.device, non_blocking=True)
        tokens = self.clip.tokenizer(captions).to(self.device)
        for group in self.optimizer.param_groups:  # LinearLR then CosineAnnealingLR (utils/lr_scheduler.py)
            group["lr"] = warmup_cosine(self.step, s["steps"], s["warmup_steps"], s["lr"], s["min_lr"], WARMUP_START)
        with torch.no_grad(), mixed:
            text = self.clip.model.encode_text(tokens)
            clip_tokens, grid = encode_until_last(self.visual, images)
        with mixed:
            losses = model(clip_tokens, grid, text, images, self.encode_image,
                           _noise(s["seed"], self.rank, self.step, self.device))
        loss = sum(value.float() for value in losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.objective.parameters(), CLIP_GRAD)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return global_embedding(self.visual, images)

    def finish(self, facts: dict[str, Any], stopped_by: str) -> dict[str, Any]:
        tail = self.history[-max(1, len(self.history) // 20):]
        summary = {
            **self.settings, **facts, "checkpoint": str(self.out), "steps_done": self.step, "stopped_by": stopped_by,
            "first_loss": self.history[0]["loss"] if self.history else None,
            "final_losses": {k: round(sum(h[k] for h in tail) / len(tail), 6) for k in (tail[0] if tail else {})},
            "seconds": round(self.seconds, 2), "device": str(self.device), "torch": str(torch.__version__),
        }
        complete = self.step >= self.settings["steps"]
        if not complete:
            self.save_state()
        if self.rank == 0:
            meta = {k: self.settings[k] for k in ("clip_model", "clip_pretrained", "clip_sha256", "seed", "data")}
            save_checkpoint(self.out, self.masker, len(self.visual.transformer.resblocks) - 1,
                            {**meta, "steps": self.step})
            summary_path(self.out).write_text(json.dumps(summary, indent=2) + "\n")
            if complete:
                self.state_file.unlink(missing_ok=True)
        if self.world > 1:
            dist.barrier()
        return summary


def _finished(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a completed run with these settings, if ``out`` holds one."""
    if state_path(out).is_file() or not (out.is_file() and summary_path(out).is_file()):
        return None
    previous = json.loads(summary_path(out).read_text())
    same = all(previous.get(k) == v for k, v in settings.items())
    return previous if same and previous.get("steps_done") == settings["steps"] else None


def train_tcl(
    data: Path,
    out: Path,
    clip_model: str | None = "ViT-B-16",
    clip_pretrained: str = "openai",
    seed: int = 0,
    steps: int | None = None,
    batch_size: int = BATCH_SIZE,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = True,
    resume: bool = True,
    *,
    lr: float | None = None,
    min_lr: float | None = None,
    warmup_steps: int | None = None,
    decoder_only_steps: int | None = None,
    image_size: int | None = None,
    augment: str = "deit",
    normalisation: str = "imagenet",
    workers: int = 4,
    weights_root: str | None = None,
    save_every_s: float = 600.0,
    max_seconds: float | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Trains TCL's masker on a caption source (benchmark.captions: jsonl folder or tar shards).

    Writes ``out`` (the released tcl.pth layout plus a ``tcl`` run description), ``out`` with
    suffix .json (the returned summary) and, while unfinished, ``<out>.state`` to resume from.
    ``lr``/``min_lr`` are absolute (default: the reference's, scaled by the global batch);
    ``max_seconds`` stops early (the summary says so; resuming continues). A finished run with
    the same settings is not trained again.
    """
    data, out = Path(data), Path(out)
    check_precision(precision)
    shard, device = init_distributed(device)
    rank, world, device_ = shard.rank, shard.world, torch.device(device)
    previous_threads = torch.get_num_threads()
    if threads or device_.type == "cpu":
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    try:
        clip = load_clip(clip_model, clip_pretrained, weights_root)
        clip.model.to(device_).eval()
        total = STEPS if steps is None else int(steps)
        scale = batch_size * world / LR_BATCH
        settings = {
            "data": str(data), "clip_model": clip.name, "clip_pretrained": clip_pretrained,
            "clip_sha256": clip.weights_sha256, "seed": seed, "steps": total, "batch_size": batch_size,
            "world_size": world,
            "lr": BASE_LR * scale if lr is None else float(lr),
            "min_lr": MIN_LR * scale if min_lr is None else float(min_lr),
            "warmup_steps": round(WARMUP_FRACTION * total) if warmup_steps is None else int(warmup_steps),
            "decoder_only_steps": (
                round(DECODER_ONLY_FRACTION * total) if decoder_only_steps is None else int(decoder_only_steps)
            ),
            "image_size": image_size or int(clip.model.visual.image_size[0]),
            "augment": augment, "normalisation": normalisation, "precision": precision,
        }
        finished = _finished(out, settings) if resume else None
        if finished is not None:
            return finished
        run = _Run(settings, clip, out, rank, world, device_)
        if resume and run.state_file.is_file():
            run.resume()
        return run.train(data, workers, progress, save_every_s, max_seconds)
    finally:
        torch.set_num_threads(previous_threads)
