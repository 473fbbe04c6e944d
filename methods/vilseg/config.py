"""What a ViL-Seg network is made of: the open_clip CLIP it wraps and the sizes of its heads.

A config is stored in every checkpoint, so a checkpoint rebuilds its network without the weights
it started from and without open_clip knowing its config name: the CLIP carries its name (for
people), its constructor arguments and whether it uses QuickGELU (OpenAI's weights do; open_clip's
plain configs do not say so).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class ClipArch:
    name: str
    quick_gelu: bool
    config: dict[str, Any]  # open_clip CLIP(**config): embed_dim, vision_cfg, text_cfg


@dataclass(frozen=True)
class ViLSegConfig:
    clip: ClipArch
    num_clusters: int = 32
    cluster_hidden: int = 0  # 0: the image encoder's width
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_out: int = 4096
    pooling: str = "mean"  # how patch tokens become the image embedding: mean of patches, or class token
    image_mean: tuple[float, ...] = field(default=(0.48145466, 0.4578275, 0.40821073))
    image_std: tuple[float, ...] = field(default=(0.26862954, 0.26130258, 0.27577711))

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        for key in ("num_clusters", "head_hidden", "head_bottleneck", "head_out"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        if self.num_clusters < 2:
            raise ValueError(f"num_clusters must be >= 2, got {self.num_clusters}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_mean"], data["image_std"] = list(self.image_mean), list(self.image_std)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ViLSegConfig:
        """Raises KeyError or ValueError naming the offending key."""
        if not isinstance(data, dict):
            raise ValueError(f"config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"unknown config key {unknown[0]!r}")
        if "clip" not in data:
            raise KeyError("config key 'clip' is missing")
        clip = data["clip"]
        if not isinstance(clip, dict) or not isinstance(clip.get("name"), str):
            raise ValueError("config key 'clip' must be a mapping with a string 'name'")
        for key, kind in (("quick_gelu", bool), ("config", dict)):
            if not isinstance(clip.get(key), kind):
                raise KeyError(f"config key 'clip.{key}' is missing or not a {kind.__name__}")
        unknown_clip = sorted(set(clip) - {f.name for f in fields(ClipArch)})
        if unknown_clip:
            raise KeyError(f"unknown config key 'clip.{unknown_clip[0]}'")
        values = dict(data)
        values["clip"] = ClipArch(**clip)
        for key in ("image_mean", "image_std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)
