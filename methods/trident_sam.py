"""SAM for Trident: its last global attention as an affinity between patches, and its prompt refinement of a label map.

Both use segment-anything's own model and predictor (`SamPredictor`: ResizeLongestSide to the encoder's input size,
normalisation, zero padding; `predict_torch`; `postprocess_masks`); nothing of SAM is copied. Trident's copy of
segment-anything (YuHengsss/Trident@a93b346, segment_anything/modeling/image_encoder.py) keeps the last block's
softmax attention and value tokens; here they are recomputed from that block's input, read by a forward pre-hook,
with the library's `add_decomposed_rel_pos`, one head at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segment_anything import SamPredictor
from segment_anything.modeling.image_encoder import add_decomposed_rel_pos
from torch import Tensor, nn
from torchvision.ops import masks_to_boxes

from benchmark.errors import BenchmarkError


@dataclass
class SamPicture:
    """One picture through SAM's image encoder (SamPredictor.set_image).

    embedding: [1, 256, S, S] the image embedding (the predictor's `features`).
    input_size: the picture's size resized to the encoder's input (long side = input size), before padding.
    original_size: the picture's size.
    block_input: [1, S, S, C] the tokens entering the encoder's last block.
    """

    embedding: Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    block_input: Tensor

    def grid(self, patch: int) -> tuple[int, int]:
        """The patch grid the picture covers on the padded encoder grid (trident.py get_sam_feat: input_size // 16)."""
        return self.input_size[0] // patch, self.input_size[1] // patch


def encode_picture(predictor: SamPredictor, picture: np.ndarray) -> SamPicture:
    """SAM's image encoder on an RGB uint8 picture [H, W, 3], keeping its last block's input."""
    encoder = predictor.model.image_encoder
    last = encoder.blocks[-1]
    if last.window_size != 0:
        raise BenchmarkError("trident reads the SAM image encoder's last block as global attention; this SAM's last "
                             f"block attends in {last.window_size} x {last.window_size} windows")
    captured: list[Tensor] = []
    handle = last.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        predictor.set_image(picture)
    finally:
        handle.remove()
    return SamPicture(predictor.features, tuple(predictor.input_size), tuple(predictor.original_size), captured[0])


def sam_affinity(encoder: nn.Module, picture: SamPicture, cos_factor: float, refine_negative: bool) -> Tensor:
    """Trident's SAM-guided weights [N, N] over the picture's patch grid (N = h*w, h, w = `picture.grid`).

    With P_h the last block's softmax attention of head h (relative positions included, keys over the whole padded
    grid) and c_h the cosines of its value tokens, both cut to the picture's grid (guidance_attn, get_sam_sim):
    tau_m = min(cos_factor * mean over heads and n of c_h[m, n], 0.9) (negative tau_m -> 0.6 first, unless
    `refine_negative`); W = sum_h P_h * [c_h > tau], each row divided by its sum.

    Args:
        encoder: SAM's image encoder.
        picture: from `encode_picture`.
    Returns:
        [N, N] float32, rows summing to 1.
    """
    block = encoder.blocks[-1]
    attention = block.attn
    x = picture.block_input
    side_h, side_w = x.shape[1], x.shape[2]
    grid_h, grid_w = picture.grid(encoder.patch_embed.proj.kernel_size[0])
    heads = attention.num_heads
    with torch.autocast(x.device.type, enabled=False):
        qkv = attention.qkv(block.norm1(x.float())).reshape(side_h * side_w, 3, heads, -1).permute(1, 2, 0, 3)
        query, key, value = qkv[0], qkv[1], qkv[2]  # [heads, S*S, head_dim]
        units = [F.normalize(value[h].reshape(side_h, side_w, -1)[:grid_h, :grid_w].reshape(grid_h * grid_w, -1),
                             dim=-1) for h in range(heads)]
        mean_cosine = torch.stack([unit @ unit.mean(dim=0) for unit in units]).mean(dim=0)
        threshold = cos_factor * mean_cosine
        if not refine_negative:
            threshold = torch.where(threshold < 0.0, 0.6, threshold)
        threshold = threshold.clamp(max=0.9)[:, None]
        weights = torch.zeros(grid_h * grid_w, grid_h * grid_w, device=x.device)
        for h in range(heads):
            logits = (query[h:h + 1] * attention.scale) @ key[h:h + 1].transpose(-2, -1)
            if attention.use_rel_pos:
                logits = add_decomposed_rel_pos(logits, query[h:h + 1], attention.rel_pos_h, attention.rel_pos_w,
                                                (side_h, side_w), (side_h, side_w))
            probs = logits.softmax(dim=-1).reshape(side_h, side_w, side_h, side_w)
            probs = probs[:grid_h, :grid_w, :grid_h, :grid_w].reshape(grid_h * grid_w, grid_h * grid_w)
            weights += torch.where(units[h] @ units[h].T > threshold, probs, 0.0)
        return weights / weights.sum(dim=-1, keepdim=True)


def padded_to_multiple(picture: np.ndarray, multiple: int) -> np.ndarray:
    """The picture resized (OpenCV bilinear) so each side is rounded up to a multiple (trident.py get_trident_seg)."""
    height, width = picture.shape[:2]
    size = (-(-width // multiple) * multiple, -(-height // multiple) * multiple)
    if size == (width, height):
        return picture
    return cv2.resize(picture, size, interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class PromptSettings:
    """Trident's SAM refinement settings (seg_utils/utils.py sam_refinement)."""

    coarse_thresh: float  # pixels whose best probability is below it join no region; classes below it are skipped
    minimal_area: int  # smallest region (pixels at half resolution) that becomes a prompt
    mask_coefficient: float  # the class map, times this, is the mask prompt (sam_mask_coff)
    iou_thresh: float  # masks whose predicted IoU is at most this are dropped


def class_regions(labels: Tensor, probs: Tensor, label: int, minimal_area: int) -> tuple[list[Tensor], list[Tensor]]:
    """8-connected regions of `label` in a label map [h, w] with at least `minimal_area` pixels, in the order of
    their first pixel, and each region's prompt point (x, y): the first maximum of the label's probability in it."""
    components, count = ndimage.label((labels == label).cpu().numpy(), structure=np.ones((3, 3), dtype=bool))
    components = torch.from_numpy(components).to(labels.device)
    regions, points = [], []
    width = probs.shape[-1]
    for number in range(1, count + 1):
        region = components == number
        if int(region.sum()) < minimal_area:
            continue
        best = int(torch.argmax(probs * region))
        regions.append(region)
        points.append(torch.tensor([best % width, best // width]))
    return regions, points


@torch.no_grad()
def refine_with_prompts(predictor: SamPredictor, picture: SamPicture, probs: Tensor, labels: Tensor,
                        settings: PromptSettings) -> Tensor:
    """Trident's SAM refinement of a label map (seg_utils/utils.py sam_refinement, trident.py postprocess_result).

    At half resolution, each label's regions (whose best probability is at least coarse_thresh) become prompts: the
    region's best point, its box, and the label's probability map (x mask_coefficient where above coarse_thresh,
    resized to SAM's 256 grid) as the mask prompt, one mask each (multimask_output=False). Masks whose predicted IoU
    exceeds iou_thresh are kept; R_k = P_k * max over k's masks of sigmoid(mask logits), 0 outside their union;
    the label map becomes argmax_k R_k wherever some R_k > 0.

    The mask prompt is passed as the reference passes it, [1, 256, 256] without a batch dimension: the prompt
    encoder's convolutions then take it as one unbatched image, and its LayerNorm2d normalises over the rows (dim 1)
    instead of the channels; the reference's published numbers come from that.

    Args:
        predictor: segment-anything's predictor of the model that encoded `picture` (its state is set from it).
        picture: the whole image through SAM (`encode_picture`).
        probs: [K, H, W] the probabilities `labels` is the argmax of.
        labels: [H, W] int64.
    Returns:
        [H, W] int64.
    """
    height, width = labels.shape
    half_h, half_w = height // 2, width // 2
    labels_half = F.interpolate(labels[None, None].float(), [half_h, half_w], mode="nearest")[0, 0].long()
    probs_half = F.interpolate(probs[None].float(), [half_h, half_w], mode="bilinear", align_corners=False)[0]
    count = probs.shape[0]
    if settings.coarse_thresh > 0:
        labels_half[probs_half.max(dim=0)[0] < settings.coarse_thresh] = count
    predictor.features = picture.embedding
    predictor.input_size, predictor.original_size = picture.input_size, picture.original_size
    predictor.is_image_set = True
    transform = predictor.transform
    prompt_h, prompt_w = transform.get_preprocess_shape(height, width, 256)
    kept: dict[int, Tensor] = {}
    for label in range(count):
        if probs_half[label].max() < settings.coarse_thresh:
            continue
        regions, points = class_regions(labels_half, probs_half[label], label, settings.minimal_area)
        if not regions:
            continue
        boxes = transform.apply_boxes_torch(masks_to_boxes(torch.stack(regions)).long(), (half_h, half_w)).float()
        points = transform.apply_coords_torch(torch.stack(points).long(), (half_h, half_w))[:, None].float()
        prompt = F.interpolate(probs_half[label][None, None], [prompt_h, prompt_w], mode="bilinear",
                               align_corners=False)[0]
        prompt = F.pad(prompt, (0, 256 - prompt_w, 0, 256 - prompt_h))
        prompt = torch.where(prompt > settings.coarse_thresh, settings.mask_coefficient * prompt, 0.0)
        device = predictor.device
        _, quality, low_res = predictor.predict_torch(
            point_coords=points.to(device), point_labels=torch.ones(len(regions), 1, device=device),
            boxes=boxes.to(device), mask_input=prompt.to(device), multimask_output=False)
        valid = quality[:, 0] > settings.iou_thresh
        if valid.any():
            kept[label] = low_res[valid]
    if not kept:
        return labels
    logits = predictor.model.postprocess_masks(torch.cat(list(kept.values())), picture.input_size,
                                               picture.original_size)
    if tuple(logits.shape[-2:]) != (height, width):
        logits = F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
    refined = torch.zeros(count, height, width, device=labels.device)
    start = 0
    for label, masks in kept.items():
        mask_logits = logits[start:start + len(masks), 0].to(labels.device)
        start += len(masks)
        inside = (mask_logits > predictor.model.mask_threshold).any(dim=0)
        refined[label] = (mask_logits.sigmoid() * probs[label]).max(dim=0)[0] * inside
    return torch.where(refined.sum(dim=0) == 0, labels, refined.argmax(dim=0))
