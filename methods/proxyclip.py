"""ProxyCLIP (Lan et al., ECCV 2024): CLIP's last attention driven by a vision foundation model's patch affinities.

What the reference computes (mc-lan/ProxyCLIP@e7b767f, proxyclip_segmentor.py and its open_clip/transformer.py):

- forward_slide: each crop is zero-padded around its centre to a multiple of 56 (compute_padsize), scored, and
  the scores cut back to the crop.
- forward_feature: the padded crop, CLIP-normalised, is un-normalised with OpenAI's mean/std (hard-coded) and
  normalised with ImageNet's for the vision model (VFM): DINO ViT-B/8 by default (configs/base_config.py
  vfm_model='dino', torch.hub dino_vitb8), whose proxy features are get_intermediate_layers(x)[0][:, 1:] (the last
  block after the final norm); DINOv2 ViT-B/14 with registers (vfm_model='dinov2') the same through
  get_intermediate_layers; SAM ViT-B (vfm_model='sam'): the image encoder's output on the crop resized to
  1024 x 1024 (64 x 64 tokens).
- VisionTransformer.forward(ex_feats): CLIP's blocks unchanged up to the last, whose output is custom_attn alone
  (no residual, no feed-forward): S = cosines of the L2-normalised proxy features [N_vfm, N_vfm];
  S = (S - mean(S) * beta) * gamma with beta 1.2, gamma 3.0; entries below 0 set to -inf; softmax over keys, one
  map for every head; CLIP's value tokens (ln_1, in-projection; class token dropped) resized bilinearly to the
  VFM grid; weights @ values, out_proj; then ln_post and proj on every token.
- unit features against the unit name embeddings (80 OpenAI templates: each normalised, mean, normalised), scores
  on the VFM grid bilinearly upsampled to the padded crop; stitched, x logit_scale 40, softmax, synonyms max,
  prob_thd (voc21 0.2, context60 0.15, coco_object 0.25).

In the suite the image side does not depend on the class names, so `encode_crops` returns the unit features on
the VFM grid and `score` (ClipBaseline's) takes their cosines; both share the engine's batches of crops.

Decided here, where the reference does not meet the input or cannot be followed:
- crops normalised otherwise than with CLIP's mean/std (tcl8: ImageNet's) are un-normalised with the protocol's
  values, which `setup` reads; a crop's pixels, not its normalisation, reach the VFM. This is the one thing
  `encode_crops` takes from `setup`: it describes the crops themselves, and benchmarks that share crops share
  their image settings (the engine checks), so shared passes stay exact.
- the affinity maps are made one crop at a time (`proxy_last_block`): a batch holds one N x N map.
- mean(S) is taken over each crop's own map: the reference runs one crop at a time (batch 1), where the mean over
  its batch tensor is that crop's mean.
- non-square crops: the reference reshapes CLIP's values with the grid's sides swapped and the VFM features with
  a square grid (it only runs square crops); the adapter uses each side's own grid.
- precision: the reference runs CLIP and the VFM in fp16; the adapter runs float32 and computes the affinity and
  its softmax in float32 with autocast off. A map whose mean affinity exceeds 1 / beta has rows without a
  positive entry, which the reference turns into NaN; the engine stops on them (NumericalError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.registry import register_method
from methods.clip_baseline import checked_number, checked_positive_integer
from methods.clip_dense import CropFeatures, DenseRecipe, check_supported, last_block_input, layer_norm
from methods.vfm_method import CLIP_MEAN, CLIP_STD, VfmClipMethod, crop_normalisation

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol

# The blocks before the last: CLIP's own; positions resized as the repository's open_clip (scale_factor, +0.1).
TOWER = DenseRecipe(attention="qk", residual=True, ffn=True, patch_rule="drop", position_rule="scale_factor")


def proxy_attention_weights(proxy: Tensor, beta: float, gamma: float) -> Tensor:
    """Attention weights [B, N, N] from proxy features [B, C, h, w] (N = h*w), in float32.

    Args:
        proxy: the VFM's patch features of each crop.
        beta, gamma: S = (S - mean(S) * beta) * gamma, mean per crop; entries below 0 masked out.
    Returns:
        softmax over keys of the masked, scaled cosine affinities.
    """
    with torch.autocast(proxy.device.type, enabled=False):
        unit = F.normalize(proxy.float().flatten(2), dim=1)
        similarity = torch.einsum("bcm,bcn->bmn", unit, unit)
        similarity = (similarity - similarity.mean(dim=(1, 2), keepdim=True) * beta) * gamma
        similarity = similarity.masked_fill(similarity < 0.0, float("-inf"))
        return similarity.softmax(dim=-1)


def proxy_last_block(block: nn.Module, x: Tensor, clip_grid: tuple[int, int], proxy: Tensor, beta: float,
                     gamma: float) -> Tensor:
    """The last block's output: the proxy attention over CLIP's values, out-projected (no residual, no FFN).

    Args:
        block: CLIP's last ResidualAttentionBlock.
        x: tokens entering it [B, 1 + h*w, D] (h, w = clip_grid).
        proxy: the VFM's features [B, C, I, J]; their affinity maps are made one crop at a time, so that memory
            holds one [N, N] map (N = I*J: 4096 for SAM's 64 x 64 grid) whatever the batch.
    Returns:
        [B, N, D] tokens on the proxy grid.
    """
    proxy_grid = (proxy.shape[-2], proxy.shape[-1])
    attn = block.attn
    normed = layer_norm(block.ln_1, x)
    dim = normed.shape[-1]
    values = F.linear(normed, attn.in_proj_weight[2 * dim:], attn.in_proj_bias[2 * dim:])[:, 1:]
    values = values.transpose(1, 2).reshape(x.shape[0], dim, clip_grid[0], clip_grid[1])
    values = F.interpolate(values, size=proxy_grid, mode="bilinear", align_corners=False)
    values = values.float().flatten(2).transpose(1, 2)
    with torch.autocast(x.device.type, enabled=False):
        attended = torch.cat([torch.bmm(proxy_attention_weights(proxy[i:i + 1], beta, gamma), values[i:i + 1])
                              for i in range(x.shape[0])])
    return block.ls_1(attn.out_proj(attended.to(x.dtype)))


def center_padding(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding to a multiple, the extra pixel right/bottom (compute_padsize)."""
    pad_h, pad_w = -height % multiple, -width % multiple
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


@register_method()
class ProxyCLIP(VfmClipMethod):
    """ProxyCLIP (Lan et al., ECCV 2024): CLIP's last attention from a vision foundation model's affinities."""

    name = "proxyclip"
    recipe: ClassVar[DenseRecipe] = TOWER
    extra_options = ("vfm", "vfm_weights", "beta", "gamma", "pad_multiple")

    def configure(self, given: dict[str, Any]) -> None:
        options = self.options
        for key in ("beta", "gamma"):
            checked_number("proxyclip", "option", key, options[key])
        checked_positive_integer("proxyclip", "option", "pad_multiple", options["pad_multiple"])
        self.load_vision_model()
        self.crop_normalisation = (CLIP_MEAN, CLIP_STD)  # until setup() reads the benchmark's

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        """Also reads the normalisation the benchmark's crops carry (benchmarks that share crops share it)."""
        super().setup(protocol, benchmark)
        self.crop_normalisation = crop_normalisation(benchmark.image.mean, benchmark.image.std)

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> CropFeatures:
        """Unit features [B, I, J, E] on the VFM grid of each (padded) crop; no class name is needed."""
        visual = self.net.visual
        check_supported(visual)
        height, width = crops.shape[-2:]
        left, right, top, bottom = center_padding(height, width, self.options["pad_multiple"])
        padded = F.pad(crops, (left, right, top, bottom)) if any((left, right, top, bottom)) else crops
        proxy = self.vfm.patch_features(self.vfm.renormalised(padded, *self.crop_normalisation))
        tokens, clip_grid = last_block_input(visual, padded, TOWER)
        proxy_grid = (proxy.shape[-2], proxy.shape[-1])
        x = proxy_last_block(visual.transformer.resblocks[-1], tokens, clip_grid, proxy, self.options["beta"],
                             self.options["gamma"])
        features = (layer_norm(visual.ln_post, x) @ visual.proj).float()
        unit = (features / features.norm(dim=-1, keepdim=True)).reshape(x.shape[0], *proxy_grid, -1)
        if padded is crops:
            return CropFeatures(unit, (height, width))
        return CropFeatures(unit, (height, width), tuple(padded.shape[-2:]), (top, left))
