"""SCLIP (Wang et al., ECCV 2024): correlative self-attention in the last block (wangf3014/SCLIP).

clip/model.py VisionTransformer.forward/custom_attn(csa=True): attention
softmax(q q^T s) + softmax(k k^T s); the block keeps its residual and feed-forward branch
(``x = x + custom_attn(...); x = x + mlp(ln_2(x))``); ln_post and proj on every token. Crops
that are not a multiple of the patch lose their remainder to the patch convolution and the
patch-grid scores are upsampled to the crop (clip_segmentor.py forward_feature); positional
embeddings resized with scale_factor (h + 0.1) / 14 (interpolate_pos_encoding).
"""

from __future__ import annotations

from benchmark.demo_assets import register_demo_options
from benchmark.registry import register_method
from methods.clip_baseline import ClipBaseline, tiny_clip_options
from methods.clip_dense import DenseRecipe


@register_method()
class SCLIP(ClipBaseline):
    """SCLIP (Wang et al., ECCV 2024): correlative self-attention (q-q + k-k) in CLIP's last block."""

    name = "sclip"
    recipe = DenseRecipe(attention="qq+kk", residual=True, ffn=True, patch_rule="drop", position_rule="scale_factor")


register_demo_options(SCLIP.name, tiny_clip_options)
