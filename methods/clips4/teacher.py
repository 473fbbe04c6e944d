"""The dense CLIP teacher: CLIP's image tower run the MaskCLIP way (methods/maskclip.py, authors' recipe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.clip_dense import dense_features
from methods.maskclip import VARIANTS

RECIPE = VARIANTS["authors"]


class MaskClipTeacher(nn.Module):
    """Frozen; images whose sides are multiples of the patch size -> unit patch features [B,D,h,w]."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.visual.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        features = dense_features(self.visual, images, RECIPE).permute(0, 3, 1, 2)
        return F.normalize(features.float(), dim=1)
