"""SC-CLIP's image tower (SuleBai/SC-CLIP clip/model.py VisionTransformer.forward): CLIP's blocks up to the
last, then anomaly-token resolution, self-adjustment by mid-layer similarities and multi-level fusion.

Tokens are batch-first here ([B, L, D], class token first); the reference runs one crop at a time in
sequence-first layout, and everything it computes over "the batch" (the outlier search, the mean of the
similarity prior) is computed here per crop, which is what it computes for its batch of one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from methods.clip_attention import project_heads
from methods.clip_dense import DenseRecipe, check_supported, clip_block, embed_patches, layer_norm
from methods.outlier_tokens import lof_outliers, replace_with_neighbour_mean

# custom_attn: (mid_simi - mean(mid_simi)) * 3.0, negatives to -inf, then softmax.
PRIOR_SHARPNESS = 3.0
# adaptively_aggregate: corrs / (corrs.sum(-1) + 1e-6).
AGGREGATION_EPS = 1e-6


@dataclass(frozen=True)
class TowerSettings:
    """SCCLIPForSegmentation's constructor options and the constants of clip/model.py.

    Layer indices count the outputs of the blocks before the last (index 0: the first block's output),
    as the reference's feats_list does.
    """

    pre_adjust_idx: int  # mid-layer whose (outlier-resolved) similarities adjust the tokens before the last block
    post_adjust_idx: int  # mid-layer whose similarities adjust the last block's output
    multi_start_idx: int  # layers [multi_start_idx, multi_end_idx) are summed for the second pass
    multi_end_idx: int
    res_cls: float  # weight of the class token added to the last block's attention output
    beta: float  # similarities below it are dropped before aggregation
    lof_neighbours: int  # local outlier factor: neighbours ...
    lof_contamination: float  # ... and the share of tokens called anomalous

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TowerSettings:
        return cls(
            pre_adjust_idx=int(options["pre_adjust_idx"]), post_adjust_idx=int(options["post_adjust_idx"]),
            multi_start_idx=int(options["multi_start_idx"]), multi_end_idx=int(options["multi_end_idx"]),
            res_cls=float(options["res_cls"]), beta=float(options["beta"]),
            lof_neighbours=int(options["lof_neighbours"]), lof_contamination=float(options["lof_contamination"]),
        )

    def problems(self, depth: int) -> list[str]:
        """What keeps these settings from a tower of `depth` blocks (depth - 1 mid-layer outputs)."""
        mid_layers = depth - 1
        found = [
            f"{name}={value} is not a mid-layer output (0 to {mid_layers - 1})"
            for name, value in (("pre_adjust_idx", self.pre_adjust_idx), ("post_adjust_idx", self.post_adjust_idx))
            if not 0 <= value < mid_layers
        ]
        if not 0 <= self.multi_start_idx < self.multi_end_idx <= mid_layers:
            found.append(f"multi_start_idx={self.multi_start_idx}, multi_end_idx={self.multi_end_idx} is not a "
                         f"non-empty range of mid-layer outputs (0 <= start < end <= {mid_layers})")
        if self.lof_neighbours < 1:
            found.append(f"lof_neighbours={self.lof_neighbours} must be at least 1")
        if not 0 < self.lof_contamination < 1:
            found.append(f"lof_contamination={self.lof_contamination} must lie in (0, 1)")
        return found

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def unit_similarities(tokens: Tensor) -> Tensor:
    """[B, N, D] -> cosine similarities [B, N, N]."""
    unit = tokens / tokens.norm(dim=2, keepdim=True)
    return unit @ unit.transpose(1, 2)


def aggregate(tokens: Tensor, similarities: Tensor, beta: float) -> Tensor:
    """adaptively_aggregate with similarities below beta dropped: each token becomes the similarity-weighted
    mean of all tokens. tokens [B, N, D], similarities [B, N, N]."""
    weights = similarities.masked_fill(similarities < beta, 0.0)
    weights = weights / (weights.sum(dim=-1, keepdim=True) + AGGREGATION_EPS)
    return weights @ tokens


def calibrated_attention(attn: nn.MultiheadAttention, x: Tensor, similarities: Tensor) -> Tensor:
    """custom_attn: (softmax(prior) + softmax(k k^T s)) / 2 applied to v, out-projection included.

    The prior is the mid-layer similarity, centred on its mean over the crop, sharpened, and -inf where it
    falls below that mean; every head shares it. x: normalised patch tokens [B, N, D]."""
    q, k, v = project_heads(attn, x)
    prior = (similarities - similarities.mean(dim=(-2, -1), keepdim=True)) * PRIOR_SHARPNESS
    prior = prior.masked_fill(prior < 0.0, float("-inf"))
    scale = k.shape[-1] ** -0.5
    weights = prior.softmax(dim=-1).unsqueeze(1) + (k @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    mixed = (weights / 2) @ v
    batch, heads, count, head_dim = mixed.shape
    return attn.out_proj(mixed.transpose(1, 2).reshape(batch, count, heads * head_dim))


def scclip_features(visual: nn.Module, images: Tensor, recipe: DenseRecipe, settings: TowerSettings) -> Tensor:
    """[B, 3, H, W] normalised images -> patch features [B, h, w, embed_dim] after ln_post and proj.

    1. CLIP's blocks except the last; each output kept (feats_list).
    2. Anomalous patch tokens of the last of them found by LOF and replaced by their neighbours' mean;
       the same positions resolved in layer pre_adjust_idx, whose similarities (mid) weight an
       aggregation of the resolved tokens.
    3. The last block's attention alone (no residual, no FFN) with the mid-similarity prior, plus
       res_cls times the class token; aggregated by the similarities of layer post_adjust_idx.
    4. Layers [multi_start_idx, multi_end_idx) summed, through the same attention and aggregation, added.
    """
    check_supported(visual)
    x, grid = embed_patches(visual, images, recipe.position_rule, recipe.layer_norm_eps)
    blocks = visual.transformer.resblocks
    mid_layers = []
    for block in blocks[:-1]:
        x = clip_block(block, x, recipe)
        mid_layers.append(x)
    class_token = x[:, :1]
    anomalous = torch.stack([
        lof_outliers(tokens, settings.lof_neighbours, settings.lof_contamination) for tokens in x[:, 1:]
    ])
    x = replace_with_neighbour_mean(x[:, 1:], anomalous, grid, isolated="keep")
    mid = unit_similarities(
        replace_with_neighbour_mean(mid_layers[settings.pre_adjust_idx][:, 1:], anomalous, grid, isolated="keep")
    )
    x = aggregate(x, mid, settings.beta)

    last = blocks[-1]
    eps = recipe.layer_norm_eps
    x = calibrated_attention(last.attn, layer_norm(last.ln_1, x, eps), mid) + settings.res_cls * class_token
    after = unit_similarities(mid_layers[settings.post_adjust_idx][:, 1:])
    x = aggregate(x, after, settings.beta)

    fused = torch.zeros_like(mid_layers[0])
    for layer in mid_layers[settings.multi_start_idx:settings.multi_end_idx]:
        fused = fused + layer
    second = calibrated_attention(last.attn, layer_norm(last.ln_1, fused[:, 1:], eps), mid)
    x = x + aggregate(second + settings.res_cls * fused[:, :1], after, settings.beta)

    features = layer_norm(visual.ln_post, x, eps) @ visual.proj
    return features.reshape(x.shape[0], grid[0], grid[1], -1)
