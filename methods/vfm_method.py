"""The base of the training-free methods that pair CLIP with a vision foundation model (ProxyCLIP, CASS)."""

from __future__ import annotations

from typing import Any

from methods.clip_baseline import ClipBaseline
from methods.vfm_backbone import VfmBackbone, load_vfm

# OpenAI's CLIP normalisation on a 0-1 scale, as the references' myutils.UnNormalize hard-codes it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def crop_normalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std (0-1 scale) that un-normalise the crops: OpenAI's constants where the protocol gives CLIP's
    normalisation on 0-255 (as the reference hard-codes them), else the protocol's own values (tcl8: ImageNet's)."""
    given = tuple(value / 255 for value in mean), tuple(value / 255 for value in std)
    if all(abs(a - b) < 1e-4 for pair in zip(given, (CLIP_MEAN, CLIP_STD), strict=True)
           for a, b in zip(*pair, strict=True)):
        return CLIP_MEAN, CLIP_STD
    return given


class VfmClipMethod(ClipBaseline):
    """A CLIP baseline that also loads a vision model (options `vfm`, `vfm_weights`, in the method's settings) and
    names it in every record: `config()["vfm"]` (architecture, config, weights sha256) and `backbone()`."""

    def load_vision_model(self) -> None:
        """From `configure`: the vision model named by the options, as `self.vfm` (its module `self.vfm_net`)."""
        self.vfm: VfmBackbone = load_vfm(self.options["vfm"], self.options["vfm_weights"], self.weights_root)
        self.vfm_net = self.vfm.model

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["vfm"] = self.vfm.identity()
        return config

    def backbone(self) -> str | None:
        return f"{self.clip.describe()} + {self.vfm.describe()}"
