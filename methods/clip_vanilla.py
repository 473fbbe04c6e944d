"""Vanilla dense CLIP: the last block unchanged, every patch token through ln_post and proj.

There is no repository of its own. By default this is the ClearCLIP repository's `vanilla` model type
(mc-lan/ClearCLIP@ad68a40, open_clip/transformer.py VisionTransformer.forward and custom_attn) run with
``ignore_residual=False``: q-k attention, then the block's residual and feed-forward branch, as CLIP
computes it. That repository's own default is ``ignore_residual=True`` (configs/base_config.py),
which keeps the attention output alone (no residual, no feed-forward): option ``ignore_residual: true``
runs that setting. Both with its centre padding and its positional-embedding resize.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from benchmark.demo_assets import register_demo_options
from benchmark.registry import register_method
from methods.clip_baseline import ClipBaseline, tiny_clip_options
from methods.clip_dense import DenseRecipe


@register_method()
class VanillaCLIP(ClipBaseline):
    """Dense CLIP (Radford et al., ICML 2021): the unchanged last block's patch tokens scored against names."""

    name = "clip"
    recipe = DenseRecipe(
        attention="qk", residual=True, ffn=True, patch_rule="pad_center", position_rule="scale_factor"
    )
    extra_options = ("ignore_residual",)

    def build_recipe(self, options: dict[str, Any]) -> DenseRecipe:
        if options.get("ignore_residual"):
            return replace(self.recipe, residual=False, ffn=False)
        return self.recipe


register_demo_options(VanillaCLIP.name, tiny_clip_options)
