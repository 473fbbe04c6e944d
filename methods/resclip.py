"""ResCLIP (Yang et al., CVPR 2025): residual attention on NACLIP's last block (yvhangyang/ResCLIP@0e085f7).

What the reference computes (clip/model.py VisionTransformer.forward with arch 'wo_resi' and
attn_strategy 'resclip', as resclip_segmentor.py ResCLIPSegmentation.forward_feature calls it):

- every block but the last runs as CLIP runs it (custom_attn without use_custom_attn:
  softmax(q s k^T) v, residual, FFN), and its attention weights are kept;
- RCS: the mean of the attention weights of blocks 6 to 9 (indices 5 to 8, `range(5, 9)`; the same
  indices for every backbone), per head;
- the last block is NACLIP's (attention output alone, no residual, no FFN; ln_post and proj on
  every token) with custom_attn's 'resclip' attention:
  A = softmax(tau_sfr ((1 - l_sfr) k k^T s + l_sfr S) + G), then tau_rcs ((1 - l_rcs) A + l_rcs R),
  G NACLIP's Gaussian of the patches' grid distance (std 5), R the RCS mean and S the SFR prior;
- SFR (create_logit_temp, create_patch_matrix, generate_attention_sfr; methods/resclip_feedback.py):
  the last block is first run without S; its patch cosines with every name, bilinear to the crop,
  refined by PAMR (10 steps, dilations 8 and 16) guided by the crop, softmax(logit_scale x), give a
  first segmentation (argmax over names, index 0 below temp_thd); S is drawn from it, divided by its
  maximum and rounded to float16 (`attn_sfr.to(torch.float16)`, also in a float32 run);
- scores: cosines of the patch features with the names (forward_feature), upsampled to the crop.
Crops that are not a multiple of the patch lose their remainder (the patch convolution; the first
segmentation's pixels past the last whole patch are not counted); positional embeddings resized with
scale_factor (h + 0.1) / 14 (interpolate_pos_encoding).

Decided here, where the reference does not carry over:
- the reference takes one crop at a time (create_logit_temp's softmax loop and create_patch_matrix's
  squeeze fail for a batch of two); each crop of a batch gets its own first segmentation and prior;
- the first segmentation's PAMR sits in try/except RuntimeError (on a GPU out of memory it is skipped
  with an empty warning); here it always runs;
- a CLIP with fewer blocks than the RCS indices (the demo's tiny CLIP has 3 before its last): the
  indices it has are used, all of its blocks before the last where it has none of them, with a warning;
  `config()` names the blocks used (`rcs_blocks`), so such runs never share an id with the reference's;
- `use_rcs` / `use_sfr` are not options: the segmentor stores them as one-element tuples
  (`self.use_rcs=use_rcs,`), always true, so the reference always runs both modules.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.demo_assets import register_demo_options
from benchmark.errors import BenchmarkError
from benchmark.registry import register_method
from methods.clip_attention import neighbourhood_prior, project_heads
from methods.clip_baseline import ClipBaseline, tiny_clip_options
from methods.clip_dense import (
    CropFeatures,
    DenseRecipe,
    block_mlp,
    check_supported,
    embed_patches,
    feature_cosines,
    layer_norm,
)
from methods.clip_text import TextBank
from methods.pamr import PamrSettings, pamr, pamr_settings
from methods.resclip_feedback import feedback_prior, patch_labels

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol

# Per-benchmark settings: the protocol's method_settings, else clip_settings/resclip.yaml's for the dataset,
# else its top level.
FEEDBACK_KEYS = ("temp_thd", "attn_rcs_weights", "attn_sfr_weights", "delete_same_entity", "temp_pamr")


@dataclass(frozen=True)
class ResidualSettings:
    """How the last block mixes its attention, and how the first segmentation is made."""

    temp_thd: float  # first segmentation: name index 0 where the top probability is below it
    rcs_weights: tuple[float, float]  # (tau, lambda) of the RCS mix
    sfr_weights: tuple[float, float]  # (tau, lambda) of the SFR mix
    separate_entities: bool  # delete_same_entity: decay same-name pairs whose straight path leaves the name
    temp_pamr: PamrSettings | None  # PAMR of the first segmentation


def _pair(value: Any, key: str) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise BenchmarkError(f"resclip setting {key} must be a pair [tau, lambda], got {value!r}")
    return float(value[0]), float(value[1])


def residual_settings(values: dict[str, Any]) -> ResidualSettings:
    missing = [key for key in FEEDBACK_KEYS if key not in values]
    if missing:
        raise BenchmarkError(f"resclip settings lack {missing} (methods/clip_settings/resclip.yaml)")
    if values["temp_thd"] is None:
        raise BenchmarkError("resclip setting temp_thd must be a number (the reference raises without one)")
    return ResidualSettings(
        temp_thd=float(values["temp_thd"]),
        rcs_weights=_pair(values["attn_rcs_weights"], "attn_rcs_weights"),
        sfr_weights=_pair(values["attn_sfr_weights"], "attn_sfr_weights"),
        separate_entities=bool(values["delete_same_entity"]),
        temp_pamr=pamr_settings(values["temp_pamr"]),
    )


def rcs_blocks_of(requested: Sequence[int], depth: int) -> tuple[int, ...]:
    """The blocks whose attention RCS averages, for a tower of `depth` blocks (see the module doc)."""
    available = depth - 1
    if available < 1:
        raise BenchmarkError(f"resclip needs a CLIP with at least 2 image blocks, this one has {depth}")
    requested = tuple(int(index) for index in requested)
    if not requested:
        raise BenchmarkError("resclip option rcs_blocks is empty")
    kept = tuple(index for index in requested if 0 <= index < available) or tuple(range(available))
    if kept != requested:
        warnings.warn(
            f"resclip: this CLIP has {available} blocks before its last, not the RCS blocks {list(requested)}; "
            f"averaging the attention of blocks {list(kept)}",
            stacklevel=3,
        )
    return kept


@dataclass(frozen=True)
class ResidualTokens:
    """The image side of ResCLIP's scores: what the last block needs, independent of names and settings."""

    tokens: Tensor  # [B, 1 + h*w, D] the last block's input
    rcs: Tensor  # [B, heads, 1 + h*w, 1 + h*w] mean attention weights of the RCS blocks
    crops: Tensor  # [B, 3, H, W] the normalised crops: PAMR's guide for the first segmentation
    grid: tuple[int, int]


def block_with_attention(block: nn.Module, x: Tensor, recipe: DenseRecipe) -> tuple[Tensor, Tensor]:
    """An unchanged CLIP block on batch-first x, and its attention weights softmax(q s k^T) [B, heads, L, L]."""
    attn = block.attn
    q, k, v = project_heads(attn, layer_norm(block.ln_1, x, recipe.layer_norm_eps))
    weights = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    batch, heads, length, head_dim = v.shape
    mixed = attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, heads * head_dim))
    x = x + block.ls_1(mixed)
    x = x + block.ls_2(block_mlp(block, layer_norm(block.ln_2, x, recipe.layer_norm_eps), recipe.activation))
    return x, weights


def residual_tokens(
    visual: nn.Module, crops: Tensor, recipe: DenseRecipe, rcs_blocks: tuple[int, ...]
) -> ResidualTokens:
    """The last block's input tokens and the RCS mean of the crops (encode_crops)."""
    check_supported(visual)
    x, grid = embed_patches(visual, crops, recipe.position_rule, recipe.layer_norm_eps)
    kept = []
    for index, block in enumerate(visual.transformer.resblocks[:-1]):
        x, weights = block_with_attention(block, x, recipe)
        if index in rcs_blocks:
            kept.append(weights)
    return ResidualTokens(x, torch.stack(kept).mean(dim=0), crops, grid)


def residual_last_block(
    visual: nn.Module, encoded: ResidualTokens, settings: ResidualSettings, std: float, prior: Tensor | None
) -> Tensor:
    """Unit patch features [B, h, w, dim] (float32) of the last block with RCS, and SFR where `prior` is given."""
    block = visual.transformer.resblocks[-1]
    _, k, v = project_heads(block.attn, layer_norm(block.ln_1, encoded.tokens))
    logits = (k @ k.transpose(-2, -1)) * k.shape[-1] ** -0.5
    if prior is not None:
        tau, share = settings.sfr_weights
        logits = tau * ((1 - share) * logits + share * prior)
    logits = logits + neighbourhood_prior(encoded.grid, std, logits)
    tau, share = settings.rcs_weights
    weights = tau * ((1 - share) * logits.softmax(dim=-1) + share * encoded.rcs)
    batch, heads, length, head_dim = v.shape
    mixed = block.attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, heads * head_dim))
    features = (layer_norm(visual.ln_post, block.ls_1(mixed)[:, 1:]) @ visual.proj).float()
    features = features / features.norm(dim=-1, keepdim=True)
    return features.reshape(batch, encoded.grid[0], encoded.grid[1], -1)


@register_method()
class ResCLIP(ClipBaseline):
    """ResCLIP (Yang et al., CVPR 2025): NACLIP's last block with residual cross-layer attention (RCS)
    and an attention prior from its own first segmentation (SFR)."""

    name = "resclip"
    # The last block's base (NACLIP's); residual_last_block adds RCS and SFR to it.
    recipe = DenseRecipe(
        attention="kk+gaussian", residual=False, ffn=False, patch_rule="drop", position_rule="scale_factor",
        gaussian_std=5.0,
    )
    extra_options = ("gaussian_std", "rcs_blocks")

    def configure(self, given: dict[str, Any]) -> None:
        depth = len(self.net.visual.transformer.resblocks)
        self.rcs_blocks = rcs_blocks_of(self.options["rcs_blocks"], depth)
        self.settings = self.default_settings(None)

    def build_recipe(self, options: dict[str, Any]) -> DenseRecipe:
        return replace(self.recipe, gaussian_std=float(options.get("gaussian_std") or self.recipe.gaussian_std))

    def default_settings(self, dataset: str | None) -> ResidualSettings:
        per_dataset = self.defaults.get("datasets", {}).get(dataset, {})
        return residual_settings({key: per_dataset.get(key, self.defaults.get(key)) for key in FEEDBACK_KEYS})

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        super().setup(protocol, benchmark)
        per_dataset = self.defaults.get("datasets", {}).get(benchmark.dataset.name, {})
        given = benchmark.method_settings
        values = {key: given.get(key, per_dataset.get(key, self.defaults.get(key))) for key in FEEDBACK_KEYS}
        self.settings = residual_settings(values)

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> ResidualTokens:
        return residual_tokens(self.net.visual, crops, self.active_recipe, self.rcs_blocks)

    @torch.no_grad()
    def score(self, features: ResidualTokens, bank: TextBank) -> Tensor:
        prior = self.feedback(features, bank)
        final = residual_last_block(self.net.visual, features, self.settings, self.active_recipe.gaussian_std, prior)
        crop_size = tuple(features.crops.shape[-2:])
        return feature_cosines(CropFeatures(final, crop_size), bank.embeddings).float() * self.logit_scale

    def first_segmentation(self, features: ResidualTokens, bank: TextBank) -> Tensor:
        """Patch labels [B, h, w] of the last block's first pass (RCS only): name indices, 0 below temp_thd."""
        crop_size = tuple(features.crops.shape[-2:])
        first = residual_last_block(self.net.visual, features, self.settings, self.active_recipe.gaussian_std, None)
        cosines = feature_cosines(CropFeatures(first, crop_size), bank.embeddings)
        cosines = F.interpolate(cosines, size=crop_size, mode="bilinear", align_corners=False)
        if self.settings.temp_pamr is not None:
            steps, dilations = self.settings.temp_pamr.steps, self.settings.temp_pamr.dilations
            cosines = pamr(features.crops.to(cosines.dtype), cosines, steps, dilations)
        probs = (cosines * self.logit_scale).softmax(dim=1)
        labels = probs.argmax(dim=1)
        labels[probs.amax(dim=1) < self.settings.temp_thd] = 0
        patch = tuple(self.net.visual.patch_size)
        return torch.stack([patch_labels(crop_labels, patch, features.grid) for crop_labels in labels])

    def feedback(self, features: ResidualTokens, bank: TextBank) -> Tensor:
        """SFR prior [B, 1, L, L]: from each crop's first segmentation, over its maximum, in float16."""
        priors = []
        for labels in self.first_segmentation(features, bank):
            prior = feedback_prior(labels, self.active_recipe.gaussian_std, self.settings.separate_entities)
            priors.append(prior / prior.max())
        return torch.stack(priors)[:, None].to(torch.float16)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rcs_blocks": list(self.rcs_blocks)}


register_demo_options(ResCLIP.name, tiny_clip_options)
