"""The teacher of the vision-based contrasting: an exponential moving average of the image encoder and
projection head (DINO), which scores the global views; the student scores the local views.

Momentum follows DINO's cosine schedule from ``momentum`` at step 0 to 1 at the last step.
A momentum of 0 means no copy: the student scores its own global views without gradient.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from methods.vilseg.encoder import encode_tokens, pool
from methods.vilseg.model import ViLSegModel


class EmaTeacher(nn.Module):
    def __init__(self, model: ViLSegModel) -> None:
        super().__init__()
        self.visual = copy.deepcopy(model.clip.visual)
        self.head = copy.deepcopy(model.vision_head)
        self.pooling = model.config.pooling
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, global_images: Tensor) -> Tensor:
        """Projection-head scores [B,P] (float32) of the global views."""
        cls_token, patches, _ = encode_tokens(self.visual, global_images)
        return self.head(pool(cls_token, patches, self.pooling)).float()

    @torch.no_grad()
    def update(self, model: ViLSegModel, momentum: float) -> None:
        pairs = ((self.visual, model.clip.visual), (self.head, model.vision_head))
        for teacher_part, student_part in pairs:
            for teacher_param, student_param in zip(teacher_part.parameters(), student_part.parameters(), strict=True):
                teacher_param.mul_(momentum).add_(student_param.detach(), alpha=1 - momentum)


def teacher_momentum(base: float, step: int, total: int) -> float:
    """DINO's schedule: base at step 0, rising along a half cosine to 1 at the last step."""
    return 1 - (1 - base) * (math.cos(math.pi * step / max(1, total)) + 1) / 2
