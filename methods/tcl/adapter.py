"""TCL (Cha et al., CVPR 2023) behind the SegMethod interface: frozen CLIP + learned masker.

Settings, strongest first: the protocol's ``method_settings`` (``pamr``: bool or
``{steps, dilations}``; ``kp_w``: number), then the constructor options. tcl8 fixes ``pamr: true``
(Table 2), tcl8_nopamr ``pamr: false`` (appendix Table 3).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from benchmark.errors import CheckpointError
from benchmark.paths import resolve_checkpoint
from benchmark.registry import register_method
from methods.base import SegMethod
from methods.clip_backbone import ClipBackbone, file_sha256, load_clip
from methods.clip_text import TextBank, build_text_bank, text_bank_store
from methods.pamr import PamrSettings
from methods.tcl.checkpoint import load_masker_state, read_checkpoint
from methods.tcl.inference import EncodedCrops, encode_crops, masks_from_encoded
from methods.tcl.model import TCLMasker

if TYPE_CHECKING:
    from benchmark.demo import DemoAssets
    from benchmark.protocol import BenchmarkSpec, Protocol

# models/tcl/tcl.py apply_pamr: PAMR(10, [1, 2, 4, 8, 12, 24]).
TCL_PAMR = PamrSettings(steps=10, dilations=(1, 2, 4, 8, 12, 24))
KP_W = 0.3  # configs/tcl.yml, configs/eval.yml evaluate.kp_w
# The constant background channel: README "Evaluation" (0.4 with PAMR, 0.5 without, "since PAMR tends
# to reduce the foreground area"); configs/eval.yml evaluate.bg_thresh 0.4; tcl_seg.py puts it first.
BACKGROUND = {True: 0.4, False: 0.5}
BACKGROUND_SOURCE = "kakaobrain/tcl README (Evaluation), configs/eval.yml bg_thresh, segmentation/evaluation/tcl_seg.py"
DEFAULT_AGGREGATION = "mean_unnormalised"  # models/tcl/tcl.py build_text_embedding


def pamr_setting(value: Any) -> PamrSettings | None:
    """None/False: off; True: TCL's PAMR; a mapping {steps, dilations} over TCL's defaults."""
    if value is None or value is False:
        return None
    if value is True:
        return TCL_PAMR
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"steps", "dilations"})
        if unknown:
            raise ValueError(f"pamr settings take steps and dilations, not {unknown}")
        steps = int(value.get("steps", TCL_PAMR.steps))
        dilations = tuple(int(d) for d in value.get("dilations", TCL_PAMR.dilations))
        return PamrSettings(steps, dilations) if steps > 0 else None
    raise ValueError(f"pamr must be a boolean or a mapping {{steps, dilations}}, got {value!r}")


@register_method()
class TCL(SegMethod):
    """TCL (CVPR 2023): text-grounded masks from a masker trained on a frozen CLIP ViT."""

    name = "tcl"
    score_kind: ClassVar[str] = "probs"

    def __init__(
        self,
        model: str | None = "ViT-B-16",
        pretrained: str | None = "openai",
        checkpoint: str | None = "tcl.pth",
        weights_root: str | None = None,
        pamr: bool | dict | None = True,
        kp_w: float = KP_W,
        text_cache: str | bool | None = None,
        backbone: ClipBackbone | None = None,
        allow_torchscript: bool = False,
    ) -> None:
        self.clip = backbone if backbone is not None else load_clip(model, pretrained, weights_root, allow_torchscript)
        self.net = self.clip.model
        visual = self.net.visual
        self.last_block = len(visual.transformer.resblocks) - 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # decoder convolutions of an untrained masker
            self.masker = TCLMasker.from_clip(visual).eval().requires_grad_(False)
        self.checkpoint_path: Path | None = None
        self.checkpoint_meta: dict[str, Any] = {}
        self._checkpoint_sha256: str | None = None
        if checkpoint is None:
            warnings.warn("TCL without a checkpoint: the masker is TCL's untrained initialisation", stacklevel=2)
        else:
            self._load(resolve_checkpoint(checkpoint, weights_root))
        self.pamr_default = pamr_setting(pamr)
        self.kp_w_default = float(kp_w)
        self.pamr, self.kp_w = self.pamr_default, self.kp_w_default
        self.aggregation = DEFAULT_AGGREGATION
        self.text_store = text_bank_store(text_cache, weights_root)

    def _load(self, path: Path) -> None:
        state, meta = read_checkpoint(path)
        load_masker_state(self.masker, state, self.last_block, str(path))
        trained_on = meta.get("clip_sha256")
        if trained_on and self.clip.weights_sha256 and trained_on != self.clip.weights_sha256:
            raise CheckpointError(
                f"{path} was trained on CLIP weights with sha256 {trained_on} ({meta.get('clip_pretrained')}), "
                f"but the loaded CLIP {self.clip.describe()} has sha256 {self.clip.weights_sha256}"
            )
        self.checkpoint_path, self.checkpoint_meta = path, meta
        self._checkpoint_sha256 = file_sha256(path)

    @classmethod
    def demo_options(cls, assets: DemoAssets) -> dict[str, Any] | None:
        from methods.tcl.demo import tiny_tcl_options

        return tiny_tcl_options(assets)

    def settings_for(self, benchmark: BenchmarkSpec) -> tuple[PamrSettings | None, float]:
        """PAMR and kp_w in force on a benchmark: its method_settings over the constructor's."""
        settings = getattr(benchmark, "method_settings", None) or {}
        pamr = pamr_setting(settings["pamr"]) if "pamr" in settings else self.pamr_default
        kp_w = float(settings["kp_w"]) if settings.get("kp_w") is not None else self.kp_w_default
        return pamr, kp_w

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        text = getattr(protocol, "text", None)
        self.aggregation = getattr(text, "aggregation", None) or DEFAULT_AGGREGATION
        self.pamr, self.kp_w = self.settings_for(benchmark)

    def background_value(self, protocol: Protocol, benchmark: BenchmarkSpec, rule: str) -> float | None:
        if rule != "threshold":
            return None
        pamr, _ = self.settings_for(benchmark)
        return BACKGROUND[pamr is not None]

    def encode_classes(self, names: list[list[str]], templates: list[str]) -> TextBank:
        return build_text_bank(self.clip, names, templates, self.aggregation, self.text_store)

    @torch.no_grad()
    def predict_masks(self, crops: Tensor, bank: TextBank) -> Tensor:
        return self.score(self.encode_crops(crops), bank)

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> EncodedCrops:
        return encode_crops(self.net.visual, crops)

    @torch.no_grad()
    def score(self, features: EncodedCrops, bank: TextBank) -> Tensor:
        return masks_from_encoded(self.net.visual, self.masker, features, bank.embeddings, self.pamr, self.kp_w)

    def config(self) -> dict[str, Any]:
        return {
            "backbone": self.clip.describe(),
            "clip_sha256": self.clip.weights_sha256,
            "checkpoint": self.checkpoint_path.name if self.checkpoint_path else None,
            "trained": {k: v for k, v in self.checkpoint_meta.items() if k in ("steps", "seed", "data")} or None,
            "pamr": asdict(self.pamr_default) if self.pamr_default else None,
            "kp_w": self.kp_w_default,
            "background": {"with_pamr": BACKGROUND[True], "without_pamr": BACKGROUND[False],
                           "source": BACKGROUND_SOURCE},
        }

    def checkpoint_sha256(self) -> str | None:
        return self._checkpoint_sha256

    def backbone(self) -> str | None:
        return self.clip.describe()

