"""Trident (Shi et al., ICCV 2025): CLIP and DINO on sub-images, spliced and mixed by SAM's global attention.

What the reference computes (YuHengsss/Trident@a93b346, trident.py, open_clip/transformer.py, seg_utils/utils.py):

- the resized, CLIP-normalised image is resized once more so that both sides are multiples of CLIP's patch (and at
  least the window: preprocess_image) and cut into windows (336, stride 224; mmseg's slide arithmetic);
- per window: DINO ViT-B/16's last block after the final norm (ImageNet normalisation); CLIP's blocks up to the
  last (positions resized with scale_factor (n + 0.1) / 14), whose output is DINO-guided attention alone (custom_attn:
  S = cosines of DINO's tokens, S = (S - mean(S) * beta) * gamma with the mean over every window of the image, beta
  1.2, gamma 3, entries below 0 masked, one softmax map for every head, over CLIP's value tokens, out_proj; no
  residual, no feed-forward);
- the windows' tokens are spliced onto the whole image's patch grid (overlaps averaged), resized bilinearly to SAM's
  grid and mixed by SAM ViT-B's last global attention (guidance_attn: `trident_sam.sam_affinity`), then ln_post and
  proj; SAM sees the image with each side rounded up to a multiple of 16 (OpenCV bilinear), long side 1024; on
  Cityscapes the left and right halves go through SAM separately and are mixed each on its own;
- unit features against the name embeddings (80 OpenAI templates: each normalised, mean, normalised), the logits on
  SAM's grid resized bilinearly to the original size in one step, x 40, softmax, synonyms max, prob_thd;
- SAM refinement of the label map (eval.py --sam_refine, which dist_test.sh and the README pass): prompts from each
  class's regions (`trident_sam.refine_with_prompts`).

In the suite Trident is a whole-image method (protocol `trident`: inference mode whole, `single_upsample`):
`encode_image` runs the image side above on the engine's resized image, `predict_masks` scores its features, and
`refine_labels` runs the SAM refinement on the engine's label map with the image's SAM embedding. Under a slide
protocol (tcl8) each engine window is taken as a picture of its own (its sub-images, its own SAM pass) and
the refinement still sees the whole image. It has no `encode_crops`/`score`: the image side depends on per-benchmark
settings (window stride, cos_fac, refine_neg_cos, the Cityscapes halves), so it is never shared across benchmarks.

Decided here:
- SAM sees the decoded image before the protocol's resize (the engine hands it over: `needs_original_image`), as the
  reference reads the file again; callers without the file (benches of crops, tools) give the resized image,
  un-normalised to uint8, and an engine window smaller than its image (slide protocols) is SAM's picture itself.
- every window is cut from a picture at least one window wide, so the reference's padding to 56 never applies and
  is not reproduced; DINO's grid must be a multiple of CLIP's (B/16 and B/8 both are).
- precision: the reference runs CLIP, DINO and SAM's encoder in fp16; the affinities here are float32 with autocast
  off, the towers follow the protocol's precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from torch import Tensor

from benchmark.errors import BenchmarkError
from benchmark.inference import slide_windows
from benchmark.registry import register_method
from methods.base import SegMethod
from methods.clip_baseline import checked_flag, checked_number, checked_positive_integer
from methods.clip_dense import CropFeatures, DenseRecipe, check_supported, feature_cosines, last_block_input, layer_norm
from methods.clip_text import TextBank
from methods.trident_sam import (
    PromptSettings,
    SamPicture,
    encode_picture,
    padded_to_multiple,
    refine_with_prompts,
    sam_affinity,
)
from methods.vfm_backbone import load_vfm
from methods.vfm_method import CLIP_MEAN, CLIP_STD, VfmClipMethod, crop_normalisation

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol

TOWER = DenseRecipe(attention="qk", residual=True, ffn=True, patch_rule="drop", position_rule="scale_factor")
PER_BENCHMARK = ("window_crop", "window_stride", "cos_fac", "refine_neg_cos", "sam_halves", "sam_refine",
                 "coarse_thresh")
FLAGS = ("refine_neg_cos", "sam_halves", "sam_refine")
INTEGERS = ("window_crop", "window_stride", "minimal_area")


@dataclass
class TridentImage:
    """What `encode_image` keeps of one image: its size, its unit features on SAM's grid (None until a window the
    size of the image asks for them) and its SAM pass for the refinement (None when the refinement is off)."""

    size: tuple[int, int]
    features: Tensor | None
    sam: SamPicture | None


def picture_size(height: int, width: int, patch: int, window: int) -> tuple[int, int]:
    """preprocess_image: a size whose sides are multiples of `patch`, at least `window`, the longer side rounded up
    first and the shorter scaled with it (unchanged when both sides already are multiples)."""
    if height % patch == 0 and width % patch == 0:
        return height, width
    longer = max(height, width)
    target = -(-longer // patch) * patch
    new_h, new_w = int(height * target / longer), int(width * target / longer)
    new_h, new_w = -(-new_h // patch) * patch, -(-new_w // patch) * patch
    return max(new_h, window), max(new_w, window)


def guided_attention_weights(proxy: Tensor, beta: float, gamma: float) -> Tensor:
    """Attention weights [B, N, N] of the windows of one picture from DINO's tokens [B, C, h, w] (custom_attn):
    cosines, S = (S - mean(S) * beta) * gamma with the mean over every window, entries below 0 masked, softmax."""
    with torch.autocast(proxy.device.type, enabled=False):
        unit = F.normalize(proxy.float().flatten(2), dim=1)
        similarity = torch.einsum("bcm,bcn->bmn", unit, unit)
        similarity = (similarity - similarity.mean() * beta) * gamma
        return similarity.masked_fill(similarity < 0.0, float("-inf")).softmax(dim=-1)


def spliced(tokens: Tensor, windows: list[tuple[int, int, int, int]], size: tuple[int, int], scale: int) -> Tensor:
    """Windows' tokens [B, D, h, w] placed on the picture's token grid [D, H, W] (pixel windows / scale), overlaps
    averaged (guidance_attn's dst_v / count_mat)."""
    total = tokens.new_zeros(tokens.shape[1], size[0], size[1])
    count = tokens.new_zeros(1, size[0], size[1])
    for window_tokens, (y1, y2, x1, x2) in zip(tokens, windows, strict=True):
        total[:, y1 // scale:y2 // scale, x1 // scale:x2 // scale] += window_tokens
        count[:, y1 // scale:y2 // scale, x1 // scale:x2 // scale] += 1
    return total / count


@register_method()
class Trident(VfmClipMethod):
    """Trident (Shi et al., ICCV 2025): CLIP+DINO sub-image features mixed by SAM's attention; SAM prompt refinement."""

    name = "trident"
    recipe: ClassVar[DenseRecipe] = TOWER
    single_upsample = True
    needs_original_image = True  # SAM reads the image file again (get_trident_seg: cv2.imread(img_path))
    extra_options = ("vfm", "vfm_weights", "sam", "sam_weights", "beta", "gamma", "minimal_area",
                     "mask_coefficient", "iou_thresh", *PER_BENCHMARK)
    per_benchmark = PER_BENCHMARK
    # No encode_crops/score (ClipBaseline's would score CLIP alone): the image side reads per-benchmark settings.
    encode_crops = SegMethod.encode_crops
    score = SegMethod.score

    def configure(self, given: dict[str, Any]) -> None:
        options = self.options
        for key in ("beta", "gamma", "mask_coefficient", "iou_thresh"):
            checked_number("trident", "option", key, options[key])
        checked_positive_integer("trident", "option", "minimal_area", options["minimal_area"])
        self.settings = {key: self._benchmark_value(key, {}, None) for key in PER_BENCHMARK}
        self.load_vision_model()
        if self.vfm.is_sam:
            raise BenchmarkError(f"trident option vfm={options['vfm']!r} is a SAM; its sub-image guide is a DINO-like "
                                 "ViT (dino_vitb16, the reference's)")
        self.sam = load_vfm(options["sam"], options["sam_weights"], self.weights_root)
        if not self.sam.is_sam:
            raise BenchmarkError(f"trident option sam={options['sam']!r} is not a SAM (known: sam_vit_b)")
        self.sam_net = self.sam.model
        self.predictor = SamPredictor(self.sam_net)
        self.crop_normalisation = (CLIP_MEAN, CLIP_STD)
        self.pixel_normalisation = ((122.771, 116.746, 104.094), (68.501, 66.632, 70.323))
        self.whole_image = True

    def _benchmark_value(self, key: str, settings: dict[str, Any], dataset: str | None) -> Any:
        value, where = self.benchmark_setting(key, settings, dataset)
        if key in FLAGS:
            return checked_flag("trident", where, key, value)
        if key in INTEGERS:
            return checked_positive_integer("trident", where, key, value)
        return checked_number("trident", where, key, value)

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        """Also reads the benchmark's normalisation (to un-normalise pictures) and whether it runs whole images."""
        super().setup(protocol, benchmark)
        self.settings = {key: self._benchmark_value(key, benchmark.method_settings, benchmark.dataset.name)
                         for key in PER_BENCHMARK}
        self.crop_normalisation = crop_normalisation(benchmark.image.mean, benchmark.image.std)
        self.pixel_normalisation = (tuple(benchmark.image.mean), tuple(benchmark.image.std))
        self.whole_image = benchmark.inference.mode == "whole"

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["sam"] = self.sam.identity()
        return config

    def backbone(self) -> str | None:
        return f"{super().backbone()} + {self.sam.describe()}"

    # ---- image side ------------------------------------------------------------------------------

    def _pixels(self, picture: Tensor) -> np.ndarray:
        """A normalised picture [3, H, W] as the RGB uint8 image [H, W, 3] it was made from."""
        mean, std = (torch.tensor(values, device=picture.device).view(3, 1, 1) for values in self.pixel_normalisation)
        pixels = (picture.float() * std + mean).round().clamp(0, 255).to(torch.uint8)
        return np.ascontiguousarray(pixels.permute(1, 2, 0).cpu().numpy())

    def _sam_passes(self, pixels: np.ndarray) -> list[SamPicture]:
        """SAM on the picture with sides rounded up to a multiple of 16, or on its left and right halves."""
        pixels = padded_to_multiple(pixels, self.sam.patch_size[0])
        if not self.settings["sam_halves"]:
            return [encode_picture(self.predictor, pixels)]
        middle = pixels.shape[1] // 2
        return [encode_picture(self.predictor, np.ascontiguousarray(half))
                for half in (pixels[:, :middle], pixels[:, middle:])]

    def _window_tokens(self, picture: Tensor) -> Tensor:
        """The picture's windows through DINO and CLIP's guided last block, spliced: [D, H, W] on its token grid."""
        visual = self.net.visual
        patch = visual.patch_size[0]
        crop, stride = self.settings["window_crop"], self.settings["window_stride"]
        if crop % patch or stride % patch:
            raise BenchmarkError(f"trident window_crop {crop} and window_stride {stride} must be multiples of CLIP's "
                                 f"patch ({patch}): the windows' tokens are spliced onto the picture's patch grid")
        size = picture_size(*picture.shape[-2:], patch, crop)
        if size != tuple(picture.shape[-2:]):
            picture = F.interpolate(picture[None], size, mode="bilinear", align_corners=False)[0]
        windows = slide_windows(size[0], size[1], crop, stride)
        crops = torch.stack([picture[:, a:b, c:d] for a, b, c, d in windows])
        proxy = self.vfm.patch_features(self.vfm.renormalised(crops, *self.crop_normalisation))
        tokens, clip_grid = last_block_input(visual, crops, TOWER)
        ratio = proxy.shape[-1] // clip_grid[1]
        if proxy.shape[-2] != clip_grid[0] * ratio or proxy.shape[-1] != clip_grid[1] * ratio:
            raise BenchmarkError(f"trident: the vision model's grid {tuple(proxy.shape[-2:])} is not a multiple of "
                                 f"CLIP's {clip_grid}; give a DINO whose patch divides CLIP's")
        block = visual.transformer.resblocks[-1]
        normed = layer_norm(block.ln_1, tokens)
        dim = normed.shape[-1]
        values = F.linear(normed, block.attn.in_proj_weight[2 * dim:], block.attn.in_proj_bias[2 * dim:])[:, 1:]
        values = values.transpose(1, 2).reshape(len(windows), dim, *clip_grid)
        values = F.interpolate(values, size=tuple(proxy.shape[-2:]), mode="bilinear", align_corners=False)
        weights = guided_attention_weights(proxy, self.options["beta"], self.options["gamma"])
        with torch.autocast(picture.device.type, enabled=False):
            attended = torch.bmm(weights, values.float().flatten(2).transpose(1, 2))
        out = block.attn.out_proj(attended.to(tokens.dtype)).transpose(1, 2)
        out = out.reshape(len(windows), dim, *proxy.shape[-2:])
        return spliced(out, windows, (size[0] // patch * ratio, size[1] // patch * ratio), patch // ratio)

    def _picture_features(self, picture: Tensor, passes: list[SamPicture]) -> Tensor:
        """Unit features [h, w, E] on SAM's grid of one picture [3, H, W] from its SAM passes."""
        visual = self.net.visual
        check_supported(visual)
        grid_tokens = self._window_tokens(picture)
        encoder = self.sam_net.image_encoder
        middle = grid_tokens.shape[-1] // 2  # guidance_attn: dst_v[..., :W // 2] and dst_v[..., W // 2:]
        parts = (grid_tokens[..., :middle], grid_tokens[..., middle:]) if len(passes) > 1 else (grid_tokens,)
        mixed = []
        for part, sam_pass in zip(parts, passes, strict=True):
            grid = sam_pass.grid(self.sam.patch_size[0])
            resized = F.interpolate(part[None], size=grid, mode="bilinear", align_corners=False)[0]
            weights = sam_affinity(encoder, sam_pass, self.settings["cos_fac"], self.settings["refine_neg_cos"])
            with torch.autocast(picture.device.type, enabled=False):
                tokens = weights @ resized.float().flatten(1).T
            mixed.append(tokens.reshape(*grid, -1))
        heights = {part.shape[0] for part in mixed}
        if len(heights) > 1:
            raise BenchmarkError(f"trident: the SAM halves have different grids {[m.shape[:2] for m in mixed]}")
        tokens = torch.cat(mixed, dim=1).to(grid_tokens.dtype)
        features = (layer_norm(visual.ln_post, tokens) @ visual.proj).float()
        return features / features.norm(dim=-1, keepdim=True)

    def _features(self, picture: Tensor, pixels: np.ndarray | None = None) -> tuple[Tensor, list[SamPicture]]:
        """Unit features on SAM's grid of a normalised picture; SAM sees `pixels` (default: the picture's own)."""
        passes = self._sam_passes(self._pixels(picture) if pixels is None else pixels)
        return self._picture_features(picture, passes), passes

    @torch.no_grad()
    def encode_image(self, image: Tensor, original: Tensor | None = None, stem: str | None = None) -> TridentImage:
        """The image's features on SAM's grid (whole-image protocols) and its SAM pass for `refine_labels`. SAM sees
        the decoded image before the protocol's resize where the engine gives it (`original`), as the reference reads
        the file again; otherwise the resized image, un-normalised."""
        pixels = np.ascontiguousarray(original.cpu().numpy()) if original is not None else self._pixels(image)
        features, passes = self._features(image, pixels) if self.whole_image else (None, [])
        refinement = None
        if self.settings["sam_refine"]:
            whole = len(passes) == 1
            refinement = passes[0] if whole else encode_picture(
                self.predictor, padded_to_multiple(pixels, self.sam.patch_size[0]))
        return TridentImage(tuple(image.shape[-2:]), features, refinement)

    @torch.no_grad()
    def predict_masks(self, crops: Tensor, bank: TextBank, contexts: list[TridentImage] | None = None) -> Tensor:
        """Scores [B, n_names, h, w] on SAM's grid; a crop the size of its image takes the image's features."""
        features = []
        for number, crop in enumerate(crops):
            context = contexts[number] if contexts is not None else None
            if context is not None and context.size == tuple(crop.shape[-2:]) and context.features is not None:
                features.append(context.features)
            else:
                features.append(self._features(crop)[0])
        unit = CropFeatures(torch.stack(features), tuple(crops.shape[-2:]))  # equal crops: equal SAM grids
        return feature_cosines(unit, bank.embeddings).float() * self.logit_scale

    @torch.no_grad()
    def refine_labels(self, probs: Tensor, labels: Tensor, context: TridentImage | None) -> Tensor:
        """SAM prompt refinement of the label map (`trident_sam.refine_with_prompts`), where the settings ask for it."""
        if not self.settings["sam_refine"]:
            return labels
        if context is None or context.sam is None:
            raise BenchmarkError("trident refines the label map with the image's SAM pass: the engine hands it "
                                 "encode_image(image) as the context")
        settings = PromptSettings(self.settings["coarse_thresh"], self.options["minimal_area"],
                                  self.options["mask_coefficient"], self.options["iou_thresh"])
        return refine_with_prompts(self.predictor, context.sam, probs, labels, settings)

