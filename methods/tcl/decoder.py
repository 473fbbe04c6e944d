"""TCL's mask decoder: two residual up-sampling stages of gated, pre-activated 3x3 convolutions.

Each stage doubles the resolution (nearest), then adds two residual branches
``x + tanh(g) * conv3x3(gelu(layernorm2d(x)))`` whose gates g start at zero, so a fresh decoder
is an exact nearest-neighbour x4 up-sampling of its input (kakaobrain/tcl models/tcl/decoders.py
GDecoder, models/tcl/modules.py ResConv / ConvBlock / Gate / LayerNorm2d; configs/tcl.yml).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STAGES = 2  # configs/tcl.yml masker.decoder.n_layers


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] map."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GatedConv(nn.Module):
    """LayerNorm2d -> GELU -> 3x3 conv -> tanh(gate) *, the gate a scalar initialised to 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(channels)
        self.activation = nn.GELU()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.gate) * self.conv(self.activation(self.norm(x)))


class UpsampleStage(nn.Module):
    """Nearest x2, then two residual gated convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = GatedConv(channels)
        self.conv2 = GatedConv(channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = x + self.conv1(x)
        return x + self.conv2(x)


class MaskDecoder(nn.Module):
    """[B, C, h, w] -> [B, C, 4h, 4w]."""

    def __init__(self, channels: int, stages: int = STAGES) -> None:
        super().__init__()
        self.stages = nn.ModuleList(UpsampleStage(channels) for _ in range(stages))

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return x
