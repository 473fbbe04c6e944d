"""Vanilla dense CLIP: the last block unchanged, every patch token through ln_post and proj.

There is no repository of its own; this is the `vanilla` model type of the ClearCLIP repository
(open_clip/transformer.py custom_attn, q-k attention with residual and FFN kept), with its
centre padding and its positional-embedding resize.
"""

from __future__ import annotations

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


register_demo_options(VanillaCLIP.name, tiny_clip_options)
