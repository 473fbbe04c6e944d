"""TCL's mask generation for a batch of crops (kakaobrain/tcl models/tcl/tcl.py generate_masks).

1. zero-pad the crop, split evenly left/right and top/bottom, to a multiple of the patch size;
2. soft masks sigmoid(w * cos + b) from the masker, at 4x the patch grid;
3. optional PAMR on the masks, guided by the padded image resized to the masks (bilinear,
   align_corners=True);
4. optional blend ``kp_w * sigmoid((cos_clip - 0.25) * 10) + (1 - kp_w) * mask``, cos_clip the
   frozen MaskCLIP-style map up-sampled to the masks (bilinear);
5. bilinear up-sampling to the padded crop, then the crop is cut back out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.pamr import PamrSettings, pamr
from methods.tcl.clip_features import dense_embeddings, encode_until_last
from methods.tcl.model import TCLMasker, normalize

KP_CENTRE, KP_SCALE = 0.25, 10.0  # models/tcl/tcl.py kp_branch


def centred_padding(height: int, width: int, patch: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zeros up to a multiple of the patch (h, w), the odd one right/bottom."""
    pad_h, pad_w = -height % patch[0], -width % patch[1]
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def clip_mask(dense: Tensor, text: Tensor) -> Tensor:
    """The frozen CLIP branch: sigmoid((cos - 0.25) * 10) per text, [B, N, h, w]."""
    cosines = torch.einsum("bchw,nc->bnhw", normalize(dense, 1), normalize(text, -1))
    return torch.sigmoid((cosines - KP_CENTRE) * KP_SCALE)


@dataclass(frozen=True)
class EncodedCrops:
    """The image side of generate_masks: the padded crops and CLIP's tokens before the last block."""

    padded: Tensor
    tokens: Tensor
    grid: tuple[int, int]
    crop_size: tuple[int, int]
    offset: tuple[int, int]  # (top, left) of the crop in the padded input


@torch.no_grad()
def encode_crops(visual: nn.Module, crops: Tensor) -> EncodedCrops:
    """Steps 1 and the CLIP tower up to its last block: everything that does not depend on the text."""
    height, width = crops.shape[-2:]
    left, right, top, bottom = centred_padding(height, width, tuple(visual.patch_size))
    padded = F.pad(crops, (left, right, top, bottom))
    tokens, grid = encode_until_last(visual, padded)
    return EncodedCrops(padded, tokens, grid, (height, width), (top, left))


@torch.no_grad()
def masks_from_encoded(
    visual: nn.Module,
    masker: TCLMasker,
    encoded: EncodedCrops,
    text: Tensor,
    pamr_settings: PamrSettings | None,
    kp_w: float,
) -> Tensor:
    """Steps 2-5 for encoded crops and text [N, C] -> masks [B, N, H, W] in [0, 1]."""
    padded, tokens, grid = encoded.padded, encoded.tokens, encoded.grid
    text = text.to(device=padded.device, dtype=tokens.dtype)
    masks = masker(tokens, grid, text)
    if pamr_settings is not None:
        guide = F.interpolate(padded, size=masks.shape[-2:], mode="bilinear", align_corners=True)
        masks = pamr(guide, masks, pamr_settings.steps, pamr_settings.dilations)
    if kp_w:
        clip = clip_mask(dense_embeddings(visual, tokens, grid), text)
        clip = F.interpolate(clip, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        masks = kp_w * clip + (1.0 - kp_w) * masks
    masks = F.interpolate(masks, size=padded.shape[-2:], mode="bilinear", align_corners=False)
    (top, left), (height, width) = encoded.offset, encoded.crop_size
    return masks[..., top:top + height, left:left + width]


def generate_masks(
    visual: nn.Module,
    masker: TCLMasker,
    crops: Tensor,
    text: Tensor,
    pamr_settings: PamrSettings | None,
    kp_w: float,
) -> Tensor:
    """crops [B, 3, H, W] normalised, text [N, C] -> masks [B, N, H, W] in [0, 1]."""
    return masks_from_encoded(visual, masker, encode_crops(visual, crops), text, pamr_settings, kp_w)
