"""CLIP-S4 behind the SegMethod interface: pixel embeddings scored against class text embeddings.

Settings, strongest first: the protocol's ``method_settings`` (``logit_scale``), the constructor options,
``inference.yaml``. The CLIP whose text tower encodes class names is the one the checkpoint was trained
with (``model``/``pretrained`` default to what the checkpoint records); a different one is refused.
"""

from __future__ import annotations

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
from methods.clip_backbone import ClipBackbone, clip_of_checkpoint, file_sha256, load_clip
from methods.clip_text import TextBank, text_bank_store
from methods.clip_text_method import ClipTextMethod
from methods.clips4.checkpoint import META_KEY, load_state, read_checkpoint
from methods.clips4.network import NetworkConfig, PixelEmbedder
from methods.training_facts import training_facts

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol

INFERENCE_FILE = Path(__file__).with_name("inference.yaml")
DEFAULT_LOGIT_SCALE = 100.0  # no checkpoint: MaskCLIP's scale (the untrained network is MaskCLIP)


@lru_cache(maxsize=1)
def inference_defaults() -> dict[str, Any]:
    return yaml.safe_load(INFERENCE_FILE.read_text(encoding="utf-8"))


@register_method()
class CLIPS4(ClipTextMethod):
    """CLIP-S4 (CVPR 2023): self-supervised pixel embeddings aligned with CLIP, scored against class names."""

    name = "clips4"
    score_kind: ClassVar[str] = "logits"

    def __init__(
        self,
        checkpoint: str | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        weights_root: str | None = None,
        logit_scale: float | None = None,
        network: dict[str, Any] | None = None,
        text_cache: str | bool | None = None,
        backbone: ClipBackbone | None = None,
    ) -> None:
        content: dict[str, Any] | None = None
        self.checkpoint_path: Path | None = None
        self._checkpoint_sha256: str | None = None
        if checkpoint is not None:
            self.checkpoint_path = resolve_checkpoint(checkpoint, weights_root)
            content = read_checkpoint(self.checkpoint_path)
        self.meta: dict[str, Any] = dict(content[META_KEY]) if content else {}
        if backbone is None:
            model, pretrained = clip_of_checkpoint(self.meta, model, pretrained, weights_root)
            backbone = load_clip(model, pretrained, weights_root)
        self.clip = backbone
        self._check_clip()
        config = NetworkConfig(**(self.meta.get("network") or {"embed_dim": self._embed_dim(), **(network or {})}))
        self.network = PixelEmbedder(config, self.clip.visual if config.backbone == "clip_vit" else None)
        if content is not None:
            self._load(content)
        else:
            warnings.warn("CLIP-S4 without a checkpoint: the untrained network (MaskCLIP's features)", stacklevel=2)
        self.network.eval().requires_grad_(False)
        trained_scale = self.meta.get("semantic_logit_scale")
        configured = inference_defaults().get("logit_scale")
        self.logit_scale_default = float(
            logit_scale if logit_scale is not None else configured or trained_scale or DEFAULT_LOGIT_SCALE
        )
        self.logit_scale = self.logit_scale_default
        self.text_store = text_bank_store(text_cache, weights_root)

    def _embed_dim(self) -> int:
        return int(self.clip.model.text_projection.shape[1])

    def _check_clip(self) -> None:
        trained_on = self.meta.get("clip_sha256")
        if trained_on and self.clip.weights_sha256 and trained_on != self.clip.weights_sha256:
            raise CheckpointError(
                f"{self.checkpoint_path}: key '{META_KEY}.clip_sha256' says it was trained with CLIP weights "
                f"{trained_on} ({self.meta.get('clip_pretrained')}), but the loaded CLIP {self.clip.describe()} "
                f"has sha256 {self.clip.weights_sha256}"
            )

    def _load(self, content: dict[str, Any]) -> None:
        load_state(self.network, content["model"], str(self.checkpoint_path), "model")
        self._checkpoint_sha256 = file_sha256(self.checkpoint_path)

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        scale = benchmark.method_settings.get("logit_scale")
        self.logit_scale = float(scale) if scale is not None else self.logit_scale_default

    def background_value(self, protocol: Protocol, benchmark: BenchmarkSpec, rule: str) -> float | None:
        value = inference_defaults()["background"].get(rule)
        return None if value is None else float(value)

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> Tensor:
        """Unit pixel embeddings [B,D,h,w] of the crops."""
        parameter = next(self.network.parameters())
        return self.network(crops.to(parameter.device, parameter.dtype))

    @torch.no_grad()
    def score(self, features: Tensor, bank: TextBank) -> Tensor:
        text = bank.embeddings.to(features.device, features.dtype)
        return torch.einsum("bdhw,nd->bnhw", features, text).float() * self.logit_scale

    def config(self) -> dict[str, Any]:
        trained = training_facts(
            self.meta, ("known_classes", "steps", "seed", "batch_size", "images", "n_images", "run_key")
        )
        return {
            "backbone": self.clip.name,
            "clip_sha256": self.clip.weights_sha256,
            "network": self.network.config.as_dict(),
            "trained": trained,
            "logit_scale": self.logit_scale_default,
            "background": inference_defaults()["background"],
        }
