"""Training hyper-parameters of ViL-Seg. Defaults are for fine-tuning a CLIP ViT-B/16 on CC12M-scale data;
methods/vilseg/README.md says which the paper fixes and why the others were chosen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from methods.vilseg.config import ClipArch, ViLSegConfig
from methods.vilseg.views import ViewSettings


@dataclass(frozen=True)
class TrainRecipe:
    steps: int = 30_000
    lr: float = 2e-5  # encoders (both start from CLIP)
    head_lr: float = 5e-4  # projection and clustering heads (start from scratch)
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of the steps with a linear learning-rate warmup; cosine decay after
    grad_clip: float = 3.0  # max global gradient norm; 0: off
    cross_modal_weight: float = 1.0
    vision_weight: float = 1.0
    clustering_weight: float = 1.0
    student_temperature: float = 0.1
    teacher_temperature: float = 0.04
    center_momentum: float = 0.9
    teacher_momentum: float = 0.996  # 0: the student scores its own global views (no EMA copy)
    max_logit_scale: float = 100.0
    num_clusters: int = 32
    cluster_hidden: int = 0
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_out: int = 4096
    pooling: str = "mean"
    views: ViewSettings = field(default_factory=ViewSettings)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0 <= self.teacher_momentum < 1:
            raise ValueError(f"teacher_momentum must be in [0, 1), got {self.teacher_momentum}")

    def network(self, clip: ClipArch) -> ViLSegConfig:
        return ViLSegConfig(
            clip=clip, num_clusters=self.num_clusters, cluster_hidden=self.cluster_hidden,
            head_hidden=self.head_hidden, head_bottleneck=self.head_bottleneck, head_out=self.head_out,
            pooling=self.pooling,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["views"] = {key: list(value) if isinstance(value, tuple) else value
                         for key, value in data["views"].items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainRecipe:
        """A recipe from plain data (YAML); unknown keys are an error naming them."""
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown ViL-Seg training setting(s) {unknown}")
        views = dict(data.pop("views", None) or {})
        unknown = sorted(set(views) - {f.name for f in fields(ViewSettings)})
        if unknown:
            raise ValueError(f"unknown view setting(s) {unknown}")
        views = {key: tuple(value) if isinstance(value, list) else value for key, value in views.items()}
        return cls(**data, views=ViewSettings(**views))
