"""The pixel-embedding network: a backbone, a dense head, one unit vector per output pixel.

Backbones (``NetworkConfig.backbone``):
- ``clip_vit``: a trainable copy of the CLIP image tower, run the MaskCLIP way (methods/clip_dense.py
  with MaskCLIP's recipe), so the network starts from the dense CLIP features it distils;
- ``resnet18`` / ``resnet34`` / ``resnet50`` / ``resnet101``: a torchvision ResNet (dilated to
  stride 8 where torchvision allows it) with a 1x1 projection to the CLIP embedding width.

The dense head upsamples the backbone's features to ``out_stride`` and adds a residual computed
from them and a small convolutional stem on the image (low-level detail the patch grid lacks). Its
last layer starts at zero, so an untrained head passes the backbone's features through.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.clip_dense import dense_features
from methods.maskclip import VARIANTS

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
BACKBONES = ("clip_vit", *RESNETS)
TEACHER_RECIPE = VARIANTS["authors"]


@dataclass(frozen=True)
class NetworkConfig:
    backbone: str = "clip_vit"
    embed_dim: int = 512  # the CLIP joint space: pixel embeddings are scored against text embeddings
    out_stride: int = 2
    low_channels: int = 32
    head_channels: int = 64
    trainable_blocks: int = 2  # clip_vit: the last N transformer blocks train, earlier ones stay CLIP's

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.out_stride < 1:
            raise ValueError(f"out_stride must be >= 1, got {self.out_stride}")

    def as_dict(self) -> dict:
        return asdict(self)


class ClipViTTrunk(nn.Module):
    """CLIP's image tower with MaskCLIP's last block: patch features [B,D,h,w] in the joint space."""

    def __init__(self, visual: nn.Module, trainable_blocks: int) -> None:
        super().__init__()
        self.visual = copy.deepcopy(visual).float()
        self.visual.requires_grad_(False)
        blocks = self.visual.transformer.resblocks
        trainable = list(blocks)[len(blocks) - trainable_blocks:] if trainable_blocks > 0 else []
        for block in trainable:
            block.requires_grad_(True)
        if trainable_blocks > 0:
            for module in (self.visual.ln_post,):
                module.requires_grad_(True)
            self.visual.proj.requires_grad_(True)
        self.patch = tuple(self.visual.patch_size) if hasattr(self.visual, "patch_size") else None

    def forward(self, images: Tensor) -> Tensor:
        return dense_features(self.visual, images, TEACHER_RECIPE).permute(0, 3, 1, 2)


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without its pooling and classifier, projected to the embedding width."""

    def __init__(self, name: str, embed_dim: int) -> None:
        super().__init__()
        import torchvision

        dilate = name in ("resnet50", "resnet101")
        network = getattr(torchvision.models, name)(
            weights=None, replace_stride_with_dilation=[False, True, True] if dilate else None
        )
        self.body = nn.Sequential(*list(network.children())[:-2])
        self.proj = nn.Conv2d(network.fc.in_features, embed_dim, 1)
        self.patch = None

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(self.body(images))


class DenseHead(nn.Module):
    def __init__(self, embed_dim: int, out_stride: int, low_channels: int, head_channels: int) -> None:
        super().__init__()
        self.out_stride = out_stride
        self.stem = nn.Sequential(
            nn.Conv2d(3, low_channels, 3, stride=out_stride, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(low_channels, low_channels, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.reduce = nn.Conv2d(embed_dim, head_channels, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(head_channels + low_channels, head_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, embed_dim, 1),
        )
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    def forward(self, coarse: Tensor, images: Tensor) -> Tensor:
        low = self.stem(images)
        up = F.interpolate(coarse, size=low.shape[-2:], mode="bilinear", align_corners=False)
        residual = self.fuse(torch.cat([self.reduce(up), low], dim=1))
        return F.normalize(up + residual, dim=1)


class PixelEmbedder(nn.Module):
    """Images [B,3,H,W] (normalised) -> unit pixel embeddings [B,D,ceil(H/s),ceil(W/s)]."""

    def __init__(self, config: NetworkConfig, clip_visual: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        if config.backbone == "clip_vit":
            if clip_visual is None:
                raise ValueError("the clip_vit backbone needs the CLIP image tower to copy")
            self.trunk: nn.Module = ClipViTTrunk(clip_visual, config.trainable_blocks)
        else:
            self.trunk = ResNetTrunk(config.backbone, config.embed_dim)
        self.head = DenseHead(config.embed_dim, config.out_stride, config.low_channels, config.head_channels)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        multiple = self.trunk.patch[0] if self.trunk.patch else self.config.out_stride
        multiple = math.lcm(multiple, self.config.out_stride)
        pad_h, pad_w = -height % multiple, -width % multiple
        padded = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        embeddings = self.head(self.trunk(padded), padded)
        stride = self.config.out_stride
        return embeddings[..., : -(-height // stride), : -(-width // stride)]

