"""ClearCLIP (Lan et al., ECCV 2024): self-self attention, no residual, no FFN (mc-lan/ClearCLIP).

open_clip/transformer.py VisionTransformer.forward with ignore_residual=True: the last block's
output is custom_attn(blk.attn, blk.ln_1(x)) alone, attention softmax(q q^T s)
(model_type 'ClearCLIP'); then ln_post and proj. Crops are zero-padded around the centre to a
multiple of the patch and the upsampled scores cut back (clearclip_segmentor.py compute_padsize);
positional embeddings resized with scale_factor (h + 0.1) / 14.
"""

from __future__ import annotations

from benchmark.demo_assets import register_demo_options
from benchmark.registry import register_method
from methods.clip_baseline import ClipBaseline, tiny_clip_options
from methods.clip_dense import DenseRecipe


@register_method()
class ClearCLIP(ClipBaseline):
    """ClearCLIP (Lan et al., ECCV 2024): q-q attention in the last block, without its residual and FFN."""

    name = "clearclip"
    recipe = DenseRecipe(
        attention="qq", residual=False, ffn=False, patch_rule="pad_center", position_rule="scale_factor"
    )


register_demo_options(ClearCLIP.name, tiny_clip_options)
