"""ViL-Seg (Liu et al., ECCV 2022) behind the SegMethod interface.

A trained network comes from a ViL-Seg weights file (``checkpoint``, written by ``train_vilseg``).
Without one, the network is ViL-Seg's untrained initialisation: a CLIP (``model`` +
``pretrained``, see methods/clip_backbone.py) with freshly initialised heads (``seed``), the
baseline a training run has to beat.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import yaml
from torch import Tensor

from benchmark.errors import CheckpointError
from benchmark.paths import resolve_checkpoint
from benchmark.registry import register_method
from methods.clip_backbone import backbone_from_model, file_sha256, load_clip
from methods.clip_text import TextBank, text_bank_store
from methods.clip_text_method import ClipTextMethod
from methods.training_facts import training_facts
from methods.vilseg.checkpoint import load_weights
from methods.vilseg.inference import EncodedGroups, encode_groups, group_cosines
from methods.vilseg.model import ViLSegModel, build_model, clip_arch, tokenizer_for
from methods.vilseg.recipe import TrainRecipe

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol

BACKGROUND_FILE = Path(__file__).with_name("background.yaml")


@lru_cache(maxsize=1)
def cosine_margin() -> float:
    return float(yaml.safe_load(BACKGROUND_FILE.read_text(encoding="utf-8"))["cosine_margin"])


def margin_probability(logit_scale: float, num_classes: int, margin: float) -> float:
    """Softmax probability of the best of `num_classes` logits when it leads each other by `margin` cosine."""
    return 1.0 / (1.0 + (num_classes - 1) * math.exp(-logit_scale * margin))


@register_method()
class ViLSeg(ClipTextMethod):
    """ViL-Seg (ECCV 2022): image-caption contrasting + online clustering of patch embeddings."""

    name = "vilseg"
    score_kind: ClassVar[str] = "logits"

    def __init__(
        self,
        checkpoint: str | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        num_clusters: int = TrainRecipe.num_clusters,
        seed: int = 0,
        logit_scale: float | None = None,
        background: float | None = None,
        weights_root: str | None = None,
        text_cache: str | bool | None = None,
    ) -> None:
        self.checkpoint_path: Path | None = None
        self.trained: dict[str, Any] = {}
        self._checkpoint_sha256: str | None = None
        if checkpoint is not None:
            if model is not None or pretrained is not None:
                raise ValueError("vilseg: a checkpoint holds the whole network; give it without model/pretrained")
            self.checkpoint_path = resolve_checkpoint(checkpoint, weights_root)
            self.net, meta = load_weights(self.checkpoint_path)
            self._checkpoint_sha256 = file_sha256(self.checkpoint_path)
            self.trained = {key: meta[key] for key in ("steps", "seed", "data", "init") if key in meta}
            identity = self._checkpoint_sha256
        elif model is not None:
            self.net, identity = self._untrained(model, pretrained, num_clusters, seed, weights_root)
        else:
            raise CheckpointError(
                "vilseg needs --checkpoint (a file written by `zsbench train vilseg`; no official ViL-Seg weights "
                "exist), or --opt model=<open_clip name> [--opt pretrained=<CLIP weights>] for its untrained "
                "initialisation"
            )
        self.net.eval().requires_grad_(False)
        arch = self.net.config.clip
        self.clip = backbone_from_model(self.net.clip, arch.name, tokenizer_for(self.net.clip), identity)
        self.pretrained = pretrained
        self.seed = seed
        self.logit_scale_option = logit_scale
        self.background_option = background
        self.text_store = text_bank_store(text_cache, weights_root)

    @staticmethod
    def _untrained(model: str, pretrained: str | None, num_clusters: int, seed: int,
                   weights_root: str | None) -> tuple[ViLSegModel, str | None]:
        warnings.warn("vilseg without a checkpoint: ViL-Seg's untrained initialisation", stacklevel=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backbone = load_clip(model, pretrained, weights_root)
        config = TrainRecipe(num_clusters=num_clusters).network(clip_arch(backbone))
        return build_model(config, backbone.model, seed=seed), backbone.weights_sha256

    def modules(self) -> list[torch.nn.Module]:
        return [self.net]

    @property
    def logit_scale(self) -> float:
        if self.logit_scale_option is not None:
            return float(self.logit_scale_option)
        return float(self.net.clip.logit_scale.exp())

    def background_value(self, protocol: Protocol, benchmark: BenchmarkSpec, rule: str) -> float | None:
        """`threshold` / `prob_thd`: the option if given, else the cosine-margin rule of background.yaml."""
        if rule not in ("threshold", "prob_thd"):
            return None
        if self.background_option is not None:
            return float(self.background_option)
        return margin_probability(self.logit_scale, len(benchmark.class_names), cosine_margin())

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> EncodedGroups:
        return encode_groups(self.net, crops)

    @torch.no_grad()
    def score(self, features: EncodedGroups, bank: TextBank) -> Tensor:
        return group_cosines(features, bank.embeddings).float() * self.logit_scale

    def config(self) -> dict[str, Any]:
        network = self.net.config
        return {
            "backbone": network.clip.name,
            "clip_sha256": self.clip.weights_sha256 if self.checkpoint_path is None else None,
            "heads_seed": self.seed if self.checkpoint_path is None else None,
            "trained": training_facts(self.trained, ("steps", "seed", "data", "init")),
            "num_clusters": network.num_clusters,
            "pooling": network.pooling,
            "logit_scale": self.logit_scale,
            "background": ({"value": self.background_option} if self.background_option is not None else
                           {"cosine_margin": cosine_margin(),
                            "rule": "1 / (1 + (n_classes - 1) exp(-logit_scale * cosine_margin))",
                            "source": "methods/vilseg/background.yaml (this suite's choice)"}),
        }

    def backbone(self) -> str | None:
        return self.net.config.clip.name
