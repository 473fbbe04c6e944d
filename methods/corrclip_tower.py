"""CorrCLIP's dense features of one crop (Zhang et al., ICCV 2025), given the crop's region map.

What the reference computes (zdk258/CorrCLIP@181ad57: corrclip_segmentor.py forward_feature, open_clip/transformer.py
VisionTransformer.forward), for a crop [3, h, w] and its region ids [h, w] (a mask generator's label map, cut with the
crop; the smallest id is the unsegmented area):

- DINO ViT-B/8's last block: q + k of its attention (all heads side by side), class token dropped, L2-normalised:
  F [N, C] on the DINO grid (h/8, w/8); S = F F^T;
- regions on the DINO grid (nearest); with more than two, the segmented regions' mean features are merged where
  their cosines are within `merge_eps` of the largest (DBSCAN, eps 0.2, min_samples 1: connected components);
- attention (scope reconstruction): token i attends to j when both lie in the same segmented region, or either
  lies in the unsegmented one and S_ij > mean(S); weights softmax(S * temperature) over those;
- CLIP (patch 16; positions resized with scale_factor (n + 0.1) / 14): every block before the last is CLIP's own on
  the image tokens; one region token per region present on the patch grid (copies of the class token after
  ln_pre) runs beside them through every block, attending only to the class token and its region's patches;
- the last block (value path only, no residual, no feed-forward): the main branch (tokens entering it) and the
  spatial branch (the mean of the outputs of `spatial_layers` blocks ending two before the last), each ln_1, value
  projection, class token dropped, resized bilinearly to the DINO grid, mixed by the attention, out_proj; the
  semantic branch: the region tokens through the full last block, each patch taking its region's token;
- ln_post on each branch, main + alpha * spatial + beta * semantic, proj: [h/8, w/8, E].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import connected_components
from torch import Tensor, nn

from methods.clip_attention import project_heads
from methods.clip_dense import DenseRecipe, block_mlp, clip_block, embed_patches, layer_norm
from methods.vfm_backbone import VfmBackbone

TOWER = DenseRecipe(attention="qk", residual=True, ffn=True, patch_rule="drop", position_rule="scale_factor")


@dataclass(frozen=True)
class CorrSettings:
    """CorrCLIP's constants (open_clip/transformer.py VisionTransformer.forward)."""

    alpha: float  # weight of the spatial branch (ALPHA)
    beta: float  # weight of the semantic branch (BETA)
    spatial_layers: int  # blocks averaged by the spatial branch (NUM_SPATIAL)
    temperature: float  # attention temperature (TAU)
    merge_eps: float  # region merging distance (DBSCAN eps)


def dino_query_key(vfm: VfmBackbone, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Unit q + k of DINO's last block per patch [B, N, C] (heads side by side) and the DINO grid."""
    query, key, _, grid = vfm.last_block_qkv(images)
    summed = (query + key).transpose(1, 2).flatten(2)
    return F.normalize(summed, dim=-1), grid


def nearest(ids: Tensor, size: tuple[int, int]) -> Tensor:
    """An integer map [h, w] resized with PyTorch's nearest rule (source pixel floor(i * in / out))."""
    return F.interpolate(ids[None, None].float(), size=size, mode="nearest")[0, 0].to(ids.dtype)


def merged_regions(ids: Tensor, unit: Tensor, eps: float) -> Tensor:
    """Region ids [h, w] on the DINO grid with segmented regions of similar mean DINO features merged.

    With more than two regions, the segmented ones (all but the smallest id) whose unit mean features have a cosine
    within `eps` of the largest cosine among them are joined (transitively: DBSCAN with min_samples 1); each group
    becomes id 10000 + group number, the unsegmented area keeps its id.
    """
    values = torch.unique(ids)
    if len(values) <= 2:
        return ids
    flat = ids.reshape(-1)
    means = torch.stack([unit[flat == value].mean(dim=0) for value in values])
    means = F.normalize(means, dim=1)[1:]
    similarity = means @ means.T
    close = ((similarity.max() - similarity) <= eps).cpu().numpy()
    _, groups = connected_components(close, directed=False)
    merged = ids.clone()
    for value, group in zip(values[1:].tolist(), groups.tolist(), strict=True):
        merged[ids == value] = 10000 + group
    return merged


def scope_attention(similarity: Tensor, ids: Tensor, temperature: float) -> Tensor:
    """Attention weights [N, N] (scope reconstruction) from DINO's similarities [N, N] and region ids [N]."""
    values = torch.unique(ids)
    allowed = torch.zeros_like(similarity, dtype=torch.bool)
    for value in values[1:]:
        member = ids == value
        allowed |= member[:, None] & member[None, :]
    unsegmented = ids == values[0]
    allowed |= (unsegmented[:, None] | unsegmented[None, :]) & (similarity > similarity.mean())
    return (similarity.masked_fill(~allowed, float("-inf")) * temperature).softmax(dim=-1)


def region_token_block(block: nn.Module, regions: Tensor, tokens: Tensor, allowed: Tensor) -> Tensor:
    """The block (attention, residual, FFN) for region tokens [1, R, D] that attend only to `allowed` [R, 1 + T]
    of the image tokens [1, 1 + T, D] entering the same block."""
    count = regions.shape[1]
    q, k, v = project_heads(block.attn, layer_norm(block.ln_1, torch.cat([regions, tokens], dim=1)))
    mixed = F.scaled_dot_product_attention(q[:, :, :count], k[:, :, count:], v[:, :, count:], attn_mask=allowed)
    batch, heads, length, head_dim = mixed.shape
    x = regions + block.ls_1(block.attn.out_proj(mixed.transpose(1, 2).reshape(batch, length, heads * head_dim)))
    return x + block.ls_2(block_mlp(block, layer_norm(block.ln_2, x)))


def value_mix(block: nn.Module, tokens: Tensor, grid: tuple[int, int], dino_grid: tuple[int, int],
              weights: Tensor) -> Tensor:
    """out_proj(weights @ v) for tokens [B, 1 + T, D]: the block's ln_1 and value projection, class token dropped,
    bilinear from CLIP's grid to DINO's, mixed by weights [N, N] -> [B, N, D]."""
    dim = tokens.shape[-1]
    values = F.linear(layer_norm(block.ln_1, tokens), block.attn.in_proj_weight[2 * dim:],
                      block.attn.in_proj_bias[2 * dim:])[:, 1:]
    values = values.transpose(1, 2).reshape(tokens.shape[0], dim, *grid)
    values = F.interpolate(values, size=dino_grid, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    with torch.autocast(tokens.device.type, enabled=False):
        mixed = weights.float() @ values.float()
    return block.attn.out_proj(mixed.to(tokens.dtype))


def corrclip_features(visual: nn.Module, crop: Tensor, dino_unit: Tensor, dino_grid: tuple[int, int], ids: Tensor,
                      settings: CorrSettings) -> Tensor:
    """Dense features [h', w', E] of one crop on the DINO grid (not normalised).

    Args:
        visual: open_clip's VisionTransformer.
        crop: [3, h, w] CLIP-normalised.
        dino_unit: [N, C] unit q + k of DINO's last block on the crop (`dino_query_key`), N = h' * w'.
        dino_grid: (h', w').
        ids: [h, w] integer region ids of the crop's pixels; the smallest is the unsegmented area.
    """
    with torch.autocast(crop.device.type, enabled=False):
        similarity = dino_unit.float() @ dino_unit.float().T
        regions = merged_regions(nearest(ids, dino_grid), dino_unit.float(), settings.merge_eps)
        weights = scope_attention(similarity, regions.reshape(-1), settings.temperature)
    tokens, grid = embed_patches(visual, crop[None], TOWER.position_rule)
    on_grid = nearest(regions, grid)
    values = torch.unique(on_grid)
    members = torch.stack([on_grid == value for value in values])  # [R, h16, w16]
    allowed = torch.cat([torch.ones(len(values), 1, dtype=torch.bool, device=crop.device), members.flatten(1)], 1)
    region_tokens = tokens[:, :1].expand(-1, len(values), -1)
    blocks = visual.transformer.resblocks
    first_spatial = len(blocks) - 2 - settings.spatial_layers
    spatial = []
    for index, block in enumerate(blocks[:-1]):
        tokens, region_tokens = clip_block(block, tokens, TOWER), region_token_block(block, region_tokens, tokens,
                                                                                      allowed)
        if first_spatial <= index <= len(blocks) - 3:
            spatial.append(tokens)
    last = blocks[-1]
    main = value_mix(last, tokens, grid, dino_grid, weights)[0]
    spatial_mix = value_mix(last, torch.stack(spatial).mean(dim=0), grid, dino_grid, weights)[0]
    region_out = region_token_block(last, region_tokens, tokens, allowed)[0]  # [R, D]
    expanded = F.interpolate(members[:, None].to(region_out.dtype), size=dino_grid, mode="nearest").flatten(1)
    semantic = expanded.T @ region_out
    branches = [layer_norm(visual.ln_post, branch) for branch in (main, spatial_mix, semantic)]
    features = (branches[0] + branches[1] * settings.alpha + branches[2] * settings.beta) @ visual.proj
    return features.reshape(*dino_grid, -1)

