"""A deterministic toy method for engine tests: scores are a fixed function of each crop alone."""

from __future__ import annotations

import os
import signal
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.protocol import TextSpec
from benchmark.registry import register_method
from methods.base import SegMethod


@register_method("toy")
class ToyMethod(SegMethod):
    """Per-pixel linear map of the crop's colours, scored at half resolution."""

    score_kind = "logits"

    def __init__(self, seed: int = 0, threshold: float = 0.3, nan_after: int | None = None) -> None:
        self.seed = seed
        self.threshold = threshold
        self.nan_after = nan_after
        interrupt = os.environ.get("TOY_INTERRUPT_AFTER")  # simulated Ctrl-C that keeps the run's identity
        self.interrupt_after = int(interrupt) if interrupt else None
        self.delay = float(os.environ.get("TOY_DELAY", "0"))  # seconds per crop, for kill tests
        kill = os.environ.get("TOY_KILL_AFTER")  # SIGKILL to itself after this many crops (fault injection)
        self.kill_after = int(kill) if kill else None
        self.log = os.environ.get("TOY_LOG")  # appends "<pid> <names> <crops>" per batch: who computed what
        self.calls = 0

    def encode_classes(self, names: list[list[str]], text: TextSpec) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        flat = [name for synonyms in names for name in synonyms]
        return torch.randn(len(flat), 3, generator=generator)

    def predict_masks(self, crops: Tensor, bank: Tensor) -> Tensor:
        self.calls += crops.shape[0]
        if self.delay:
            time.sleep(self.delay * crops.shape[0])
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        if self.kill_after is not None and self.calls > self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.log:
            with open(self.log, "a") as handle:
                handle.write(f"{os.getpid()} {bank.shape[0]} {crops.shape[0]}\n")
        pooled = F.avg_pool2d(crops, 2, ceil_mode=True)
        scores = torch.einsum("nc,bchw->bnhw", bank.to(crops), pooled) * 4.0
        if self.nan_after is not None and self.calls > self.nan_after:
            scores[:, 0, 0, 0] = float("nan")
        return scores

    def background_value(self, protocol, benchmark, rule: str) -> float | None:
        return self.threshold

    def config(self) -> dict:
        return {"seed": self.seed, "threshold": self.threshold}
