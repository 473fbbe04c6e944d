"""TCL (Cha et al., CVPR 2023) behind the SegMethod interface: frozen CLIP + learned masker.

Settings, strongest first: the protocol's ``method_settings`` (``pamr``: bool or
``{steps, dilations}``; ``kp_w``: number), then the constructor options, then TCL's own values in
``defaults.yaml``. tcl8 fixes ``pamr: true``
(Table 2), tcl8_nopamr ``pamr: false`` (appendix Table 3).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
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
from methods.pamr import PamrSettings, pamr_settings
from methods.tcl.checkpoint import load_masker_state, read_checkpoint
from methods.tcl.inference import EncodedCrops, encode_crops, masks_from_encoded
from methods.tcl.model import TCLMasker
from methods.training_facts import training_facts

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")


@lru_cache(maxsize=1)
def tcl_defaults() -> dict[str, Any]:
    """methods/tcl/defaults.yaml: TCL's PAMR, kp_w and background values, and the demo's recipe."""
    return yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8"))


def tcl_pamr() -> PamrSettings:
    """TCL's own PAMR (models/tcl/tcl.py apply_pamr), what `pamr: true` means for TCL."""
    return pamr_settings(tcl_defaults()["pamr"], PamrSettings())


@register_method()
class TCL(ClipTextMethod):
    """TCL (CVPR 2023): text-grounded masks from a masker trained on a frozen CLIP ViT."""

    name = "tcl"
    score_kind: ClassVar[str] = "probs"

    def __init__(
        self,
        model: str | None = None,
        pretrained: str | None = None,
        checkpoint: str | None = "tcl.pth",
        weights_root: str | None = None,
        pamr: bool | dict | None = True,
        kp_w: float | None = None,
        text_cache: str | bool | None = None,
        backbone: ClipBackbone | None = None,
        allow_torchscript: bool = False,
    ) -> None:
        """model / pretrained: the CLIP; by default the one the checkpoint records it was trained with
        (its sidecar's clip_model, clip_pretrained and clip_sha256), else ViT-B-16 / openai."""
        self.checkpoint_path: Path | None = None
        self.checkpoint_meta: dict[str, Any] = {}
        state: dict[str, Tensor] | None = None
        if checkpoint is None:
            warnings.warn("TCL without a checkpoint: the masker is TCL's untrained initialisation", stacklevel=2)
        else:
            self.checkpoint_path = resolve_checkpoint(checkpoint, weights_root)
            state, self.checkpoint_meta = read_checkpoint(self.checkpoint_path)
        if backbone is None:
            model, pretrained = clip_of_checkpoint(self.checkpoint_meta, model, pretrained, weights_root)
            backbone = load_clip(model, pretrained, weights_root, allow_torchscript)
        self.clip = backbone
        self.net = self.clip.model
        visual = self.net.visual
        self.last_block = len(visual.transformer.resblocks) - 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # decoder convolutions of an untrained masker
            self.masker = TCLMasker.from_clip(visual).eval().requires_grad_(False)
        if state is not None:
            self._load(state)
        self.pamr_default = pamr_settings(pamr, tcl_pamr())
        self.kp_w_default = float(tcl_defaults()["kp_w"] if kp_w is None else kp_w)
        self.pamr, self.kp_w = self.pamr_default, self.kp_w_default
        self.text_store = text_bank_store(text_cache, weights_root)

    def _load(self, state: dict[str, Tensor]) -> None:
        path, meta = self.checkpoint_path, self.checkpoint_meta
        load_masker_state(self.masker, state, self.last_block, str(path))
        trained_on = meta.get("clip_sha256")
        if trained_on and self.clip.weights_sha256 and trained_on != self.clip.weights_sha256:
            raise CheckpointError(
                f"{path} was trained on CLIP weights with sha256 {trained_on} ({meta.get('clip_pretrained')}), "
                f"but the loaded CLIP {self.clip.describe()} has sha256 {self.clip.weights_sha256}"
            )
        self._checkpoint_sha256 = file_sha256(path)

    def settings_for(self, benchmark: BenchmarkSpec) -> tuple[PamrSettings | None, float]:
        """PAMR and kp_w in force on a benchmark: its method_settings over the constructor's."""
        settings = benchmark.method_settings
        pamr = pamr_settings(settings["pamr"], tcl_pamr()) if "pamr" in settings else self.pamr_default
        kp_w = float(settings["kp_w"]) if settings.get("kp_w") is not None else self.kp_w_default
        return pamr, kp_w

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        self.pamr, self.kp_w = self.settings_for(benchmark)

    def background_value(self, protocol: Protocol, benchmark: BenchmarkSpec, rule: str) -> float | None:
        if rule != "threshold":
            return None
        pamr, _ = self.settings_for(benchmark)
        background = tcl_defaults()["background"]
        return float(background["with_pamr" if pamr is not None else "without_pamr"])

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> EncodedCrops:
        return encode_crops(self.net.visual, crops)

    @torch.no_grad()
    def score(self, features: EncodedCrops, bank: TextBank) -> Tensor:
        return masks_from_encoded(self.net.visual, self.masker, features, bank.embeddings, self.pamr, self.kp_w)

    def config(self) -> dict[str, Any]:
        return {
            "backbone": self.clip.name,
            "clip_sha256": self.clip.weights_sha256,
            "trained": training_facts(self.checkpoint_meta, ("steps", "seed", "data")),
            "pamr": asdict(self.pamr_default) if self.pamr_default else None,
            "kp_w": self.kp_w_default,
            "background": dict(tcl_defaults()["background"]),
        }

