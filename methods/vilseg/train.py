"""Train ViL-Seg on image-caption pairs: ``train_vilseg`` (what ``zsbench train vilseg`` calls).

Runs on CPU (tests, the synthetic demo) or GPUs, one process or many under torchrun (DDP:
embeddings are gathered across ranks for the cross-modal loss, the clustering joint distribution
and DINO's centre are summed / averaged over ranks). fp32, bf16 or fp16 autocast (fp16 with a
gradient scaler). A training state is saved atomically every ``save_every`` steps next to the
output (``<out>.state.pt``) and a run started again with ``resume=True`` continues from it,
seeing the same batches and views as an uninterrupted run. At the end the weights file ``out``
and a JSON summary (``out`` with suffix ``.json``) are written and the state is removed.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import open_clip
import torch
from tqdm import tqdm

from benchmark.distributed import init_distributed
from benchmark.errors import CheckpointError
from benchmark.training import (
    autocast,
    check_precision,
    data_parallel,
    decay_groups,
    warmup_cosine,
    warmup_steps,
)
from methods.clip_backbone import file_sha256, load_clip
from methods.vilseg.checkpoint import (
    STATE_KIND,
    WEIGHTS_KIND,
    cpu_state,
    load_state_into,
    read_file,
    save_train_state,
    save_weights,
    state_path,
)
from methods.vilseg.data import PairBatches
from methods.vilseg.model import ViLSegModel, arch_from_name, build_clip, build_model, clip_arch, tokenizer_for
from methods.vilseg.objective import step_loss
from methods.vilseg.recipe import TrainRecipe
from methods.vilseg.teacher import EmaTeacher, teacher_momentum
from methods.vilseg.views import make_views

LOSS_NAMES = ("total", "cross_modal", "vision", "clustering")


def spared_from_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases, norms, embeddings and scales."""
    return param.ndim < 2 or "ln" in name or name.endswith(".bias") or "embedding" in name


def param_groups(model: ViLSegModel, recipe: TrainRecipe) -> list[dict[str, Any]]:
    """Encoders at `lr`, heads at `head_lr`; no weight decay on biases, norms, embeddings and scales."""
    trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    encoders = [(name, param) for name, param in trainable if name.startswith("clip.")]
    heads = [(name, param) for name, param in trainable if not name.startswith("clip.")]
    return [
        *decay_groups(encoders, recipe.weight_decay, spared_from_decay, base_lr=recipe.lr),
        *decay_groups(heads, recipe.weight_decay, spared_from_decay, base_lr=recipe.head_lr),
    ]


def _initial_model(init: str | None, model_name: str, recipe: TrainRecipe, seed: int,
                   weights_root: str | None) -> tuple[ViLSegModel, str | None]:
    if init is None:
        arch = arch_from_name(model_name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = build_clip(arch)
        return build_model(recipe.network(arch), clip, seed=seed), None
    backbone = load_clip(model_name, init, weights_root)
    clip = backbone.model.requires_grad_(True)
    return build_model(recipe.network(clip_arch(backbone)), clip, seed=seed), backbone.weights_sha256


def _identity(data: Path, init: str | None, init_sha256: str | None, model: str, seed: int, steps: int,
              batch_size: int, world: int, precision: str, recipe: TrainRecipe) -> dict[str, Any]:
    """What makes two runs the same run: a state or output is only reused when this matches."""
    return {
        "data": str(Path(data).resolve()), "init": init, "init_sha256": init_sha256, "model": model, "seed": seed,
        "steps": steps, "batch_size": batch_size, "world": world, "precision": precision,
        "recipe": recipe.to_dict(),
    }


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [key for key in sorted(set(stored) | set(wanted)) if stored.get(key) != wanted.get(key)]


def _finished_summary(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    if not out.is_file():
        return None
    try:
        meta = read_file(out, WEIGHTS_KIND).get("vilseg") or {}
    except CheckpointError:
        return None
    if meta.get("identity") != identity:
        return None
    return dict(meta.get("summary") or {}, reused=True)


def train_vilseg(
    data: Path,
    out: Path,
    init: str | None,
    seed: int = 0,
    steps: int | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = True,
    resume: bool = True,
    model: str = "ViT-B-16",
    recipe: TrainRecipe | dict[str, Any] | None = None,
    workers: int = 4,
    save_every: int = 1000,
    threads: int | None = None,
    weights_root: str | None = None,
) -> dict[str, Any]:
    """Train ViL-Seg on a caption source and write its weights file ``out``; returns the run's summary.

    data: a caption folder (captions.jsonl + images), a .jsonl file, or webdataset shards
    (``benchmark.captions``). init: CLIP weights to start both encoders from (a pinned tag such
    as ``openai`` or a weights file, see methods/clip_backbone.py), or None to start from
    scratch; model: the open_clip architecture (``ViT-B-16``, ``TinyCLIP-Synth-ViT-8``).
    batch_size is per process. steps defaults to the recipe's. With ``resume`` a finished
    ``out`` from the same settings is reused as is and a saved state continues.
    """
    data, out = Path(data), Path(out)
    check_precision(precision)
    recipe = recipe if isinstance(recipe, TrainRecipe) else TrainRecipe.from_dict(recipe)
    total = int(steps if steps is not None else recipe.steps)
    if total < 1:
        raise ValueError(f"steps must be >= 1, got {total}")
    shard, device = init_distributed(device)
    previous_threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    try:
        return _train(data, out, init, seed, total, batch_size, device, precision, progress, resume, model, recipe,
                      workers, save_every, weights_root, shard.rank, shard.world)
    finally:
        torch.set_num_threads(previous_threads)


class _Learner:
    """What training changes: the student, its EMA teacher, the optimiser and scaler, DINO's centre, the losses."""

    def __init__(self, model: ViLSegModel, recipe: TrainRecipe, total: int, device: str, precision: str) -> None:
        self.recipe, self.total, self.device = recipe, total, device
        self.model = model.to(device).train()
        self.teacher = EmaTeacher(model).to(device) if recipe.teacher_momentum > 0 else None
        self.optimizer = torch.optim.AdamW(param_groups(model, recipe), lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6)
        device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")
        self.center = torch.zeros(1, recipe.head_out, device=device)
        self.history: list[list[float]] = []
        self.start_step = 0
        self.warmup = warmup_steps(total, recipe.warmup)
        self.mixed = autocast(precision, device_type)

    def resume(self, path: Path, identity: dict[str, Any]) -> None:
        self.start_step, self.center, self.history = _resume(
            path, identity, self.model, self.teacher, self.optimizer, self.scaler, self.device
        )

    def state(self, identity: dict[str, Any], done: int) -> dict[str, Any]:
        """The resumable training state after `done` steps."""
        return {
            "identity": identity, "step": done, "model": cpu_state(self.model),
            "teacher": cpu_state(self.teacher) if self.teacher is not None else None,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "center": self.center.cpu(),
            "history": self.history, "config": self.model.config.to_dict(),
        }

    def step(self, network: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, step: int,
             generator: torch.Generator) -> dict[str, float]:
        """One optimiser step on a batch of pairs; returns the step's losses."""
        model, teacher, recipe, optimizer = self.model, self.teacher, self.recipe, self.optimizer
        views = make_views(images.to(self.device, non_blocking=True), recipe.views, model.config.image_mean,
                           model.config.image_std, generator)
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, self.total, self.warmup, group["base_lr"])
        with self.mixed:
            outputs = network(views.global_images, views.local_images, tokens.to(self.device), teacher is None)
            teacher_scores = teacher(views.global_images) if teacher is not None else outputs["global_scores"]
        loss = step_loss(outputs, teacher_scores.float(), views.local_theta, self.center, recipe)
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.total).backward()
        if recipe.grad_clip > 0:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        self.center = loss.center
        with torch.no_grad():
            model.clip.logit_scale.clamp_(0, math.log(recipe.max_logit_scale))
            if teacher is not None:
                teacher.update(model, teacher_momentum(recipe.teacher_momentum, step, self.total))
        values = loss.values(recipe)
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"ViL-Seg loss is not finite at step {step}: {values}")
        self.history.append([values[name] for name in LOSS_NAMES])
        return values


def _train(data: Path, out: Path, init: str | None, seed: int, total: int, batch_size: int, device: str,
           precision: str, progress: bool, resume: bool, model_name: str, recipe: TrainRecipe, workers: int,
           save_every: int, weights_root: str | None, rank: int, world: int) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    load_at_start = os.getloadavg()
    model, init_sha256 = _initial_model(init, model_name, recipe, seed, weights_root)
    identity = _identity(data, init, init_sha256, model_name, seed, total, batch_size, world, precision, recipe)
    if resume:
        finished = _finished_summary(out, identity)
        if finished is not None:
            return finished
    learner = _Learner(model, recipe, total, device, precision)
    state_file = state_path(out)
    if resume and state_file.is_file():
        learner.resume(state_file, identity)
    start_step = learner.start_step
    network = data_parallel(model, torch.device(device), world)
    batches = PairBatches(data, recipe.views.global_size, tokenizer_for(model.clip), batch_size,
                          seed, rank, world, workers, progress and rank == 0)
    train_started = time.perf_counter()
    bar = tqdm(total=total, initial=start_step, desc="train ViL-Seg", disable=not progress or rank != 0)
    for step, (images, tokens) in enumerate(batches(start_step, total), start=start_step):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step * 7919 + rank)
        values = learner.step(network, images, tokens, step, generator)
        bar.update(1)
        bar.set_postfix({name[:5]: f"{values[name]:.3f}" for name in LOSS_NAMES}, refresh=False)
        done = step + 1
        if rank == 0 and save_every > 0 and done % save_every == 0 and done < total:
            save_train_state(state_file, learner.state(identity, done))
    bar.close()
    train_seconds = time.perf_counter() - train_started
    summary = _summary(identity, learner.history, start_step, total, model, train_seconds,
                       time.perf_counter() - started, time.process_time() - cpu_started, load_at_start, device,
                       precision, out, batches.in_memory)
    summary = json.loads(json.dumps(summary))  # plain types only: weights files are read with weights_only
    if rank == 0:
        save_weights(out, model.cpu(), {"identity": identity, "summary": reproducible_part(summary),
                                        "steps": total, "seed": seed, "data": str(data), "init": init})
        summary["sha256"] = file_sha256(out)
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
        state_file.unlink(missing_ok=True)
    return summary


def _resume(path: Path, identity: dict[str, Any], model: ViLSegModel, teacher: EmaTeacher | None,
            optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            device: str) -> tuple[int, torch.Tensor, list[list[float]]]:
    state = read_file(path, STATE_KIND)
    stored = state.get("identity") or {}
    differ = _differences(stored, identity)
    if differ:
        raise CheckpointError(
            f"{path}: key 'identity' differs from this run in {differ}; resume with the same settings, "
            "or start over with resume=False (which overwrites it)"
        )
    load_state_into(model, state["model"], path)
    if teacher is not None:
        if not isinstance(state.get("teacher"), dict):
            raise CheckpointError(f"{path}: key 'teacher' is missing")
        load_state_into(teacher, state["teacher"], path, key="teacher")
    try:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: key 'optimizer' or 'scaler' does not fit: {error}") from error
    return int(state["step"]), state["center"].to(device), [list(row) for row in state["history"]]


RUN_CIRCUMSTANCES = ("checkpoint", "train_seconds", "seconds", "steps_per_s", "cpu_seconds", "load_average",
                     "threads", "device", "data_in_memory")


def reproducible_part(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without where, when and how fast the run happened: what the weights file stores, so that equal
    weights make equal files."""
    return {key: value for key, value in summary.items() if key not in RUN_CIRCUMSTANCES}


def _summary(identity: dict[str, Any], history: list[list[float]], start_step: int, total: int, model: ViLSegModel,
             train_seconds: float, seconds: float, cpu_seconds: float, load_at_start: tuple[float, float, float],
             device: str, precision: str, out: Path, in_memory: bool) -> dict[str, Any]:
    ran = total - start_step
    tail = history[-max(1, len(history) // 20):]
    return {
        "checkpoint": str(out),
        "model": model.config.clip.name,
        "init": identity["init"],
        "data": identity["data"],
        "seed": identity["seed"],
        "steps": total,
        "resumed_at": start_step,
        "batch_size": identity["batch_size"],
        "world": identity["world"],
        "precision": precision,
        "num_clusters": model.config.num_clusters,
        "initial_loss": dict(zip(LOSS_NAMES, history[0], strict=True)) if history else None,
        "final_loss": {name: sum(row[i] for row in tail) / len(tail) for i, name in enumerate(LOSS_NAMES)},
        "logit_scale": float(model.clip.logit_scale.detach().exp()),
        "train_seconds": round(train_seconds, 2),
        "seconds": round(seconds, 2),
        "steps_per_s": round(ran / train_seconds, 3) if train_seconds > 0 else None,
        "cpu_seconds": round(cpu_seconds, 2),  # this process's CPU time, all threads: a load-free cost
        "load_average": {"start": [round(v, 2) for v in load_at_start],
                         "end": [round(v, 2) for v in os.getloadavg()]},
        "threads": torch.get_num_threads(),
        "device": str(device),
        "data_in_memory": in_memory,
        "torch": str(torch.__version__),
        "open_clip": str(open_clip.__version__),
    }
