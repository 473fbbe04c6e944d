"""The dense CLIP teacher: CLIP's image tower run the MaskCLIP way (methods/maskclip.py, authors' recipe).

The teacher looks at the image magnified ``scale`` times, through windows of CLIP's own input size
(MaskCLIP's sliding-window inference), so CLIP never sees an interpolated position embedding and
small textures cover several patches. Windows step by a fraction ``step`` of the window, rounded to
whole patches; a patch covered by several windows takes the mean of their features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.errors import ConfigError
from benchmark.inference import slide_windows
from methods.clip_dense import dense_features
from methods.maskclip import VARIANTS

RECIPE = VARIANTS["authors"]
WINDOWS_PER_FORWARD = 256  # bounds the teacher's activation memory at real scale


class MaskClipTeacher(nn.Module):
    """Frozen; normalised images [B,3,H,W] -> unit patch features [B,D,h,w] of the image magnified `scale` times.

    Windows step by `step` times CLIP's input size, rounded to whole patches (1: no overlap)."""

    def __init__(self, visual: nn.Module, scale: float = 1.0, step: float = 1.0) -> None:
        super().__init__()
        self.visual = visual
        self.visual.requires_grad_(False)
        self.patch = int(visual.patch_size[0])
        self.window = int(visual.image_size[0])
        try:
            scale, step = float(scale), float(step)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"CLIP-S4 settings teacher.scale and teacher.step take numbers: {error}") from None
        if not scale > 0:
            raise ConfigError(f"CLIP-S4 setting teacher.scale must be positive, got {scale}")
        if not 0 < step <= 1:
            raise ConfigError(f"CLIP-S4 setting teacher.step must be in (0, 1] (a fraction of the window), got {step}")
        self.scale = scale
        self.stride = max(self.patch, round(self.window * step / self.patch) * self.patch)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        scaled_h = max(self.patch, round(height * self.scale / self.patch) * self.patch)
        scaled_w = max(self.patch, round(width * self.scale / self.patch) * self.patch)
        if (scaled_h, scaled_w) != (height, width):
            images = F.interpolate(images, size=(scaled_h, scaled_w), mode="bilinear", align_corners=False)
        if scaled_h <= self.window and scaled_w <= self.window:
            return self._encode(images)
        patch = self.patch
        windows = slide_windows(scaled_h, scaled_w, self.window, self.stride)
        crops = torch.stack([images[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in windows], dim=1)
        batch = images.shape[0]
        chunks = crops.flatten(0, 1).split(WINDOWS_PER_FORWARD)
        features = torch.cat([self._encode(chunk) for chunk in chunks]).unflatten(0, (batch, len(windows)))
        sums = features.new_zeros(batch, features.shape[2], scaled_h // patch, scaled_w // patch)
        counts = features.new_zeros(1, 1, scaled_h // patch, scaled_w // patch)
        for index, (y1, y2, x1, x2) in enumerate(windows):
            cells = (slice(None), slice(None), slice(y1 // patch, y2 // patch), slice(x1 // patch, x2 // patch))
            sums[cells] += features[:, index]
            counts[cells] += 1
        return F.normalize(sums / counts, dim=1)

    def _encode(self, images: Tensor) -> Tensor:
        features = dense_features(self.visual, images, RECIPE).permute(0, 3, 1, 2)
        return F.normalize(features.float(), dim=1)
