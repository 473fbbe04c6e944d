"""NACLIP (Hajimiri et al., WACV 2025): neighbourhood-aware attention (sinahmr/NACLIP).

clip/model.py with arch 'reduced' and attn_strategy 'naclip': attention
softmax(k k^T s + G), G a Gaussian (std 5) of the patches' grid distance, zero for the class
token; the last block's output is the attention output alone (no residual, no FFN); ln_post
and proj. Remainders dropped as in SCLIP; positional embeddings resized with scale_factor
(h + 0.1) / 14. PAMR (10 steps, dilations 8 and 16) refines the stitched scores.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from benchmark.demo_assets import register_demo_options
from benchmark.registry import register_method
from methods.clip_baseline import ClipBaseline, tiny_clip_options
from methods.clip_dense import DenseRecipe


@register_method()
class NACLIP(ClipBaseline):
    """NACLIP (Hajimiri et al., WACV 2025): neighbourhood-aware k-k attention, no residual or FFN, PAMR."""

    name = "naclip"
    recipe = DenseRecipe(
        attention="kk+gaussian", residual=False, ffn=False, patch_rule="drop", position_rule="scale_factor",
        gaussian_std=5.0,
    )
    extra_options = ("gaussian_std",)

    def build_recipe(self, options: dict[str, Any]) -> DenseRecipe:
        return replace(self.recipe, gaussian_std=float(options.get("gaussian_std") or self.recipe.gaussian_std))


register_demo_options(NACLIP.name, tiny_clip_options)
