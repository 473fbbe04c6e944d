"""SFP's dense image features (Kimsure/SFP, SFP_ICCV/clip/model.py VisionTransformer.forward, return_each=True).

With blocks 0..L-1, h_i the output of block i (class token first) and x = h_{L-2}:

1. outliers among x's patch tokens (sfp_outliers.py; SOM reads block L-2's own attention weights);
2. pre_sim: cosines between the patch tokens of h_reference, purified; entries below the
   similarity threshold (0.4) set to 0. post_sim: the same for h_auxiliary, not purified;
3. patch = aggregate(purify(x's patch tokens), pre_sim), aggregate(f, S) = (S / (S 1 + 1e-6)) f;
4. patch = custom_attn(ln_1(patch)) + res_cls * x's class token, with the last block's projections,
   its attention (softmax(k k^T s) + softmax(q q^T s) + softmax(S')) / 3 over the patch tokens
   alone, S' = (pre_sim - mean(pre_sim)) * 3 with negative entries -inf; then aggregate(., post_sim);
5. state = sum of h_i over the state blocks; sinkhorn_attn: softmax(S') v of ln_1(its patch tokens),
   out_proj, + res_cls * its class token; aggregate(., post_sim); added to patch;
6. ln_post(patch) @ proj. No residual or feed-forward branch in the last block.

The reference indexes its list of block outputs with fixed positions (hidden_states[3:10], [8],
[3]) set for ViT-B/16's 12 blocks, and uses them unchanged on deeper towers (ViT-L/14). A tower too
shallow for them (the reference fails there: IndexError, or an empty sum) gets them stretched:
position p of the 12-block tower's intermediate blocks 0..10 becomes round(p (L-2) / 10), and the
state blocks are the distinct results (`block_positions`). Each crop of a batch is computed alone
(means over its own similarity map, its own outliers), as the reference computes its batch of one.

The thresholds (pre_sim < 0.4, S' < 0) turn float32 differences of 1e-6 in the block outputs into
discrete changes, so the intermediate blocks run the block's own nn.MultiheadAttention with
need_weights=True, as the reference runs them (the same kernels; clip_dense.clip_block computes the
same sum with scaled_dot_product_attention, in another order), which also gives SOM its weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.clip_attention import attention_weights, project_heads
from methods.clip_dense import DenseRecipe, block_mlp, check_supported, embed_patches, layer_norm
from methods.sfp_outliers import (
    OUTLIER_DETECTORS,
    local_outlier_factor_outliers,
    norm_outliers,
    purify,
    salient_outliers,
)


@dataclass(frozen=True)
class SFPSettings:
    """What SFP's forward fixes; defaults and sources in clip_settings/sfp.yaml."""

    purify: bool
    outlier_detector: str
    outlier_count: int
    outlier_scale: float
    cls_residual: float
    lof_neighbours: int
    lof_contamination: float
    similarity_threshold: float
    similarity_sharpness: float
    state_blocks: tuple[int, int]  # [start, end) of the summed block outputs
    reference_block: int
    auxiliary_block: int
    block_depth: int  # the tower depth the block positions were set for

    def __post_init__(self) -> None:
        if self.outlier_detector not in OUTLIER_DETECTORS:
            raise ValueError(f"outlier_detector must be one of {OUTLIER_DETECTORS}, got {self.outlier_detector!r}")
        start, end = self.state_blocks
        if not 0 <= start < end:
            raise ValueError(f"state_blocks must be [start, end) with 0 <= start < end, got {list(self.state_blocks)}")
        if self.reference_block < 0 or self.auxiliary_block < 0:
            raise ValueError("reference_block and auxiliary_block must be block indices >= 0")
        if self.outlier_count < 0 or self.lof_neighbours < 1 or not 0 < self.lof_contamination < 1:
            raise ValueError("outlier_count >= 0, lof_neighbours >= 1 and 0 < lof_contamination < 1 are needed")
        if self.block_depth < 3:
            raise ValueError(f"block_depth must be at least 3, got {self.block_depth}")

    def as_dict(self) -> dict:
        values = asdict(self)
        values["state_blocks"] = list(self.state_blocks)
        return values


@dataclass(frozen=True)
class BlockPositions:
    """Which block outputs feed SFP on a tower of a given depth (0-based block indices)."""

    state: tuple[int, ...]
    reference: int
    auxiliary: int
    purified: int  # the last intermediate block, L - 2


def block_positions(settings: SFPSettings, depth: int) -> BlockPositions:
    if depth < 2:
        raise ValueError(f"SFP needs at least two blocks (an intermediate one and the last), the tower has {depth}")
    last = depth - 2
    state = tuple(range(*settings.state_blocks))
    wanted = (*state, settings.reference_block, settings.auxiliary_block)
    if max(wanted) <= last:
        return BlockPositions(state, settings.reference_block, settings.auxiliary_block, last)

    def stretched(position: int) -> int:
        return min(last, math.floor(position * last / (settings.block_depth - 2) + 0.5))

    return BlockPositions(
        tuple(sorted({stretched(p) for p in state})), stretched(settings.reference_block),
        stretched(settings.auxiliary_block), last,
    )


def _cosine_map(patches: Tensor, threshold: float) -> Tensor:
    """[B, N, D] -> [B, N, N] cosines of the tokens, entries below `threshold` set to 0.

    A zero token (an outlier that purification zeroed: no kept neighbour) has cosine 0 with every token,
    where the reference divides by its zero norm and every token of the crop turns NaN.
    """
    unit = patches / patches.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(patches.dtype).tiny)
    similarity = unit @ unit.transpose(1, 2)
    return similarity.masked_fill(similarity < threshold, 0.0)


def _aggregate(features: Tensor, similarity: Tensor) -> Tensor:
    """adaptively_aggregate: each token the similarity-weighted mean of all tokens, [B, N, D]."""
    return (similarity / (similarity.sum(dim=-1, keepdim=True) + 1e-6)) @ features


def _similarity_attention(similarity: Tensor, sharpness: float) -> Tensor:
    """softmax over rows of (S - mean(S)) * sharpness with negative entries -inf; one mean per crop.

    A row with every entry below the mean (only a zeroed token's, whose cosines are all 0) attends to itself,
    where the reference's softmax over -inf alone is NaN.
    """
    means = torch.stack([crop.mean() for crop in similarity])  # torch.mean(sim) of each crop
    logits = (similarity - means[:, None, None]) * sharpness
    logits = logits.masked_fill(logits < 0, float("-inf"))
    empty = torch.isinf(logits).all(dim=-1)
    if empty.any():
        own = torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(empty[..., None] & own, 0.0)
    return logits.softmax(dim=-1)


def _value(attn: nn.MultiheadAttention, x: Tensor) -> Tensor:
    dim = x.shape[-1]
    bias = attn.in_proj_bias[2 * dim:] if attn.in_proj_bias is not None else None
    return F.linear(x, attn.in_proj_weight[2 * dim:], bias)


def enhanced_attention(attn: nn.MultiheadAttention, x: Tensor, guide: Tensor) -> Tensor:
    """custom_attn: (softmax(k k^T s) + softmax(q q^T s) + guide) / 3 per head on tokens x [B, N, D]."""
    q, k, v = project_heads(attn, x)
    weights = (attention_weights(q, k, "qq+kk", (0, 0), 0.0) + guide[:, None]) / 3
    mixed = weights @ v
    batch, heads, length, head_dim = mixed.shape
    return attn.out_proj(mixed.transpose(1, 2).reshape(batch, length, heads * head_dim))


def guided_attention(attn: nn.MultiheadAttention, x: Tensor, guide: Tensor) -> Tensor:
    """sinkhorn_attn: guide [B, N, N] (the same for every head) applied to the values of x [B, N, D]."""
    return attn.out_proj(guide @ _value(attn, x))


def weighted_block(block: nn.Module, x: Tensor, recipe: DenseRecipe) -> tuple[Tensor, Tensor]:
    """An unchanged block on batch-first tokens x [B, L, D], and its attention weights [B, heads, L, L]."""
    eps = recipe.layer_norm_eps
    normed = layer_norm(block.ln_1, x, eps)
    if not block.attn.batch_first:
        normed = normed.transpose(0, 1)
    attended, weights = block.attn(normed, normed, normed, need_weights=True, average_attn_weights=False)
    if not block.attn.batch_first:
        attended = attended.transpose(0, 1)
    x = x + block.ls_1(attended)
    return x + block.ls_2(block_mlp(block, layer_norm(block.ln_2, x, eps), recipe.activation)), weights


def _outliers(block_output: Tensor, weights: Tensor, settings: SFPSettings) -> Tensor:
    patches = block_output[:, 1:]
    if not settings.purify:
        return torch.zeros(patches.shape[:2], dtype=torch.bool, device=patches.device)
    if settings.outlier_detector == "SOM":
        return salient_outliers(weights, settings.outlier_count, settings.cls_residual * settings.outlier_scale)
    if settings.outlier_detector == "L2":
        return norm_outliers(patches, settings.outlier_count)
    return local_outlier_factor_outliers(patches, settings.lof_neighbours, settings.lof_contamination)


def sfp_features(visual: nn.Module, images: Tensor, recipe: DenseRecipe, settings: SFPSettings) -> Tensor:
    """[B, 3, H, W] normalised images -> patch features [B, h, w, embed_dim] after ln_post and proj.

    `recipe` gives what SFP shares with the other dense baselines: positional-embedding resizing
    and the intermediate blocks (clip_dense.clip_block).
    """
    check_supported(visual)
    blocks = visual.transformer.resblocks
    eps = recipe.layer_norm_eps
    positions = block_positions(settings, len(blocks))
    x, grid = embed_patches(visual, images, recipe.position_rule, recipe.layer_norm_eps)
    outputs: list[Tensor] = []
    for index, block in enumerate(blocks[:-1]):
        x, weights = weighted_block(block, x, recipe)
        outputs.append(x)
        if index == positions.purified:
            outliers = _outliers(x, weights, settings)
    class_token = x[:, :1]
    threshold, sharpness, residual = settings.similarity_threshold, settings.similarity_sharpness, settings.cls_residual
    pre_sim = _cosine_map(purify(outputs[positions.reference][:, 1:], outliers, grid), threshold)
    post_sim = _cosine_map(outputs[positions.auxiliary][:, 1:], threshold)
    guide = _similarity_attention(pre_sim, sharpness)

    last = blocks[-1]
    patches = _aggregate(purify(x[:, 1:], outliers, grid), pre_sim)
    patches = enhanced_attention(last.attn, layer_norm(last.ln_1, patches, eps), guide) + residual * class_token
    patches = _aggregate(patches, post_sim)
    state = torch.stack([outputs[index] for index in positions.state]).sum(dim=0)
    state_patches = guided_attention(last.attn, layer_norm(last.ln_1, state[:, 1:], eps), guide)
    patches = patches + _aggregate(state_patches + residual * state[:, :1], post_sim)
    features = layer_norm(visual.ln_post, patches, eps) @ visual.proj
    return features.reshape(images.shape[0], grid[0], grid[1], -1)
