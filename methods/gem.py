"""GEM (Bousselham et al., CVPR 2024): the Grounding Everything Module (WalBouss/GEM).

gem/gem_wrapper.py GEMWrapper with gem/gem_utils.py SelfSelfAttention and GEMResidualBlock: the last
``gem_depth - 1`` blocks (6 of ViT-B/16's 12) carry a parallel path that adds, block by block,
the self-self attention of the CLIP path's normalised tokens (q-q, k-k and v-v clusterings, each
L2-normalised and iterated ``ss_attn_iter`` times, at an adaptive temperature, mixing v; see
gem_attention.py) to a residual stream that has no feed-forward branch; ln_post and proj on that
path give the patch features (modified_vit_forward, see gem_tower.py). Scores are the cosines of
the unit patch features with the text bank, upsampled to the crop; positional embeddings are
resampled bicubically with antialiasing (resample_abs_pos_embed).

GEM's repository has no evaluation harness; the 8 benchmarks are run by ClearCLIP's
(mc-lan/ClearCLIP, model_type='GEM', which carries GEM's code with one edit, ``ignore_residual``:
the GEM path keeps only the last block's self-self attention). That harness pads crops off the
patch size around the centre (gem_tower.py) and sets logit scale and background thresholds.

Decided where the reference cannot run: a tower with fewer than ``gem_depth - 1`` blocks (the demo's
tiny CLIP, or 3 blocks at the default 7) makes GEMWrapper.apply_gem fail on blocks[-i]; here every
block then carries the GEM path (`GemRecipe.gem_blocks`), the reading of gem_depth nearest to it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from benchmark.demo_assets import register_demo_options
from benchmark.errors import BenchmarkError
from benchmark.registry import register_method
from methods.clip_baseline import ClipBaseline, tiny_clip_options
from methods.clip_dense import CropFeatures
from methods.gem_tower import GemRecipe, gem_crop_features


@register_method()
class GEM(ClipBaseline):
    """GEM (Bousselham et al., CVPR 2024): a self-self attention path through CLIP's last blocks."""

    name = "gem"
    recipe: ClassVar[GemRecipe] = GemRecipe()  # type: ignore[assignment]
    extra_options = ("gem_depth", "ss_attn_iter", "ss_attn_temp", "ignore_residual")

    def build_recipe(self, options: dict[str, Any]) -> GemRecipe:  # type: ignore[override]
        try:
            given = {key: value for key, value in options.items() if value is not None or key == "ss_attn_temp"}
            return GemRecipe(**given)
        except (TypeError, ValueError) as error:
            raise BenchmarkError(f"gem: {error}") from None

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> CropFeatures:
        return gem_crop_features(self.net.visual, crops, self.active_recipe)

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["gem_blocks"] = self.active_recipe.gem_blocks(len(self.net.visual.transformer.resblocks))
        return config


register_demo_options(GEM.name, tiny_clip_options)
