"""MaskCLIP (Zhou et al., ECCV 2022), as its authors' code runs it (chongzhou96/MaskCLIP).

The last block's query-key attention is dropped: every token takes its own value embedding,
v = out_proj(v_proj(ln_1(x))). The authors' ViT keeps the block's residual and feed-forward
branch on that path (mmseg/models/backbones/vit.py TransformerEncoderLayer.forward with
return_qkv: ``v += x; v = ffn(norm2(v), identity=v)``), then the final LayerNorm and CLIP's
projection (decode_heads/maskclip_head.py). Crops are padded right/bottom to a multiple of the
patch (PatchEmbed padding="corner") and positional embeddings resized to the grid's size
(resize_pos_embed: bicubic to size).

The authors run OpenAI's weights in mmseg's own ViT, built from configs/_base_/models/
maskclip_vit16.py: ``act_cfg=dict(type='GELU')`` (mmcv's nn.GELU, the exact erf GELU, not the
QuickGELU CLIP was trained with) in every block's FFN, and ``norm_cfg=dict(type='LN', eps=1e-6)``
for every LayerNorm (ln_pre, ln_1 / ln_2, ln_post; CLIP's are 1e-5). The `authors` variant runs
the tower that way (TOWER below); VARIANTS keeps the last-block recipes alone, which
methods/clips4 imports.

Option ``variant: clearclip`` is the re-implementation in the ClearCLIP repository that later
papers run (``model_type='MaskCLIP', ignore_residual=True``): out_proj(v) alone, no residual,
no FFN, with that repository's centre padding and positional-embedding resize.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from benchmark.demo_assets import register_demo_options
from benchmark.registry import register_method
from methods.clip_baseline import ClipBaseline, tiny_clip_options
from methods.clip_dense import DenseRecipe

VARIANTS = {
    "authors": DenseRecipe(
        attention="identity", residual=True, ffn=True, patch_rule="pad_corner", position_rule="size"
    ),
    "clearclip": DenseRecipe(
        attention="identity", residual=False, ffn=False, patch_rule="pad_center", position_rule="scale_factor"
    ),
}
# Whole-tower settings of each variant's reference: mmseg's ViT for the authors' code; the ClearCLIP
# repository runs open_clip's own CLIP (QuickGELU, eps 1e-5), so nothing changes there.
TOWER: dict[str, dict[str, Any]] = {
    "authors": {"activation": "gelu", "layer_norm_eps": 1e-6},
    "clearclip": {},
}


@register_method()
class MaskCLIP(ClipBaseline):
    """MaskCLIP (Zhou et al., ECCV 2022): the last block's value embeddings as dense CLIP features."""

    name = "maskclip"
    recipe = replace(VARIANTS["authors"], **TOWER["authors"])
    extra_options = ("variant",)

    def build_recipe(self, options: dict[str, Any]) -> DenseRecipe:
        variant = options.get("variant") or "authors"
        if variant not in VARIANTS:
            raise ValueError(f"maskclip variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        return replace(VARIANTS[variant], **TOWER[variant])


register_demo_options(MaskCLIP.name, tiny_clip_options)
