"""Reference rows that show chance: a uniform-random and a majority-class predictor."""

from __future__ import annotations

import hashlib
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from benchmark.registry import register_method
from methods.base import SegMethod

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol, TextSpec


def _crop_seed(crop: Tensor, seed: int) -> int:
    digest = hashlib.sha256(crop.detach().cpu().float().numpy().tobytes()).digest()
    return (int.from_bytes(digest[:8], "little") + seed) % (2**63)


@register_method("chance-uniform")
class UniformChance(SegMethod):
    """Uniform random scores per pixel: every class equally likely (a chance row)."""

    score_kind = "probs"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def encode_classes(self, names: list[list[str]], text: TextSpec) -> int:
        return sum(len(synonyms) for synonyms in names)

    def predict_masks(self, crops: Tensor, bank: int) -> Tensor:
        scores = []
        for crop in crops:
            generator = torch.Generator().manual_seed(_crop_seed(crop, self.seed))
            scores.append(torch.rand(bank, *crop.shape[-2:], generator=generator))
        return torch.stack(scores).to(crops.device)

    def background_value(self, protocol: Protocol, benchmark: BenchmarkSpec, rule: str) -> float | None:
        """The constant that the max of K-1 uniform scores falls below with probability 1/K."""
        classes = len(benchmark.class_names) + (1 if rule == "threshold" else 0)
        if rule == "threshold":
            return classes ** (-1.0 / (classes - 1))
        return 0.0

    def config(self) -> dict[str, Any]:
        return {"seed": self.seed}


@register_method("chance-majority")
class MajorityClass(SegMethod):
    """One class everywhere: each benchmark's most frequent ground-truth class (a chance row)."""

    score_kind = "probs"

    def __init__(self, majority: dict[str, int]) -> None:
        self.majority = dict(majority)
        self.target_name: int | None = None

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        if benchmark.name not in self.majority:
            raise ValueError(f"chance-majority: no majority class given for benchmark {benchmark.name!r}")
        class_id = self.majority[benchmark.name]
        prompted = class_id - 1 if benchmark.background.rule == "threshold" else class_id
        first_names = [0, *accumulate(len(s) for s in benchmark.class_names)]
        self.target_name = None if prompted < 0 else first_names[prompted]

    def encode_classes(self, names: list[list[str]], text: TextSpec) -> int:
        return sum(len(synonyms) for synonyms in names)

    def predict_masks(self, crops: Tensor, bank: int) -> Tensor:
        scores = torch.zeros(crops.shape[0], bank, 1, 1, device=crops.device)
        if self.target_name is not None:
            scores[:, self.target_name] = 1.0
        return scores

    def background_value(self, protocol: Protocol, benchmark: BenchmarkSpec, rule: str) -> float | None:
        return 0.5

    def config(self) -> dict[str, Any]:
        return {"majority": self.majority}
