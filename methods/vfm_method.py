"""The base of the training-free methods that pair CLIP with a vision foundation model (ProxyCLIP, CASS)."""

from __future__ import annotations

from typing import Any

from methods.clip_baseline import ClipBaseline
from methods.vfm_backbone import VfmBackbone, load_vfm


class VfmClipMethod(ClipBaseline):
    """A CLIP baseline that also loads a vision model (options `vfm`, `vfm_weights`, in the method's settings) and
    names it in every record: `config()["vfm"]` (architecture, config, weights sha256) and `backbone()`."""

    def load_vision_model(self) -> None:
        """From `configure`: the vision model named by the options, as `self.vfm` (its module `self.vfm_net`)."""
        self.vfm: VfmBackbone = load_vfm(self.options["vfm"], self.options["vfm_weights"], self.weights_root)
        self.vfm_net = self.vfm.model

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["vfm"] = {"name": self.vfm.name, "config": self.vfm.config, "weights_sha256": self.vfm.weights_sha256}
        return config

    def backbone(self) -> str | None:
        return f"{self.clip.describe()} + {self.vfm.describe()}"
