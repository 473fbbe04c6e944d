"""SC-CLIP (Bai et al., IEEE TIP 2025): self-calibrated CLIP (SuleBai/SC-CLIP).

clip/model.py VisionTransformer.forward(return_all=True), as scclip_segmentor.py SCCLIPForSegmentation
sets it up (pre_adjust_idx, post_adjust_idx, multi_start_idx, multi_end_idx, res_cls; beta 0.4):
CLIP's blocks up to the last; anomalous patch tokens of the last of them found by a local outlier
factor (lof_pytorch, 30 neighbours, 5% contamination) and replaced by the mean of their normal 3x3
neighbours (mean_interpolation); the tokens aggregated by the mid-layer similarities of layer
pre_adjust_idx; the last block's attention alone (custom_attn: a softmax of those similarities,
centred and sharpened, averaged with softmax(k k^T s); no residual, no FFN) plus res_cls times the
class token, aggregated by the similarities of layer post_adjust_idx (adaptively_aggregate); a second
pass of the same attention over the sum of layers [multi_start_idx, multi_end_idx) added; ln_post and
proj on the patch tokens (scclip_tower.py). Scores: cosines with the text bank; crops that are not a
multiple of the patch lose their remainder to the patch convolution and the patch-grid scores are
upsampled to the crop (scclip_segmentor.py forward_feature); positional embeddings resized with
scale_factor (h + 0.1) / 14 (interpolate_pos_encoding). No PAMR (pamr_steps=0).

Where the reference fails or goes wrong, the adapter decides (tests/parity/fixtures/scclip/meta.json
records what the reference did):
- non-square patch grids: the reference places outlier k at (k // rows, k % rows) where the token order
  is row-major over `cols` columns, so a crop such as 224x288 raises an IndexError or resolves the wrong
  tokens; here outlier k is at (k // cols, k % cols), the token itself (equal on square grids, the
  only grids the reference gets right);
- several crops at once: the reference's outlier search and similarity prior assume a batch of one
  (it slides one crop at a time); here both are per crop, so batches equal crops run one by one;
- fewer patches than lof_neighbours + 1: the neighbours are all other patches (scikit-learn's clamp;
  the reference's torch port raises).
Layer indices are the reference's values for ViT-B/16 (12 blocks); clip_settings/scclip.yaml names the
values for other towers under `models`, and a tower too shallow for the indices it gets is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from benchmark.demo_assets import register_demo_options
from benchmark.errors import BenchmarkError
from benchmark.registry import register_method
from methods.clip_baseline import ClipBaseline, tiny_clip_options
from methods.clip_dense import CropFeatures, DenseRecipe
from methods.scclip_tower import TowerSettings, scclip_features

TOWER_OPTIONS = (
    "pre_adjust_idx", "post_adjust_idx", "multi_start_idx", "multi_end_idx", "res_cls", "beta",
    "lof_neighbours", "lof_contamination",
)
# Recipe fields the SC-CLIP tower reads (its blocks before the last are CLIP's own; its last block is its own).
RECIPE_FIELDS = ("patch_rule", "position_rule")


@register_method()
class SCCLIP(ClipBaseline):
    """SC-CLIP (Bai et al., IEEE TIP 2025): anomaly-token resolution, mid-layer self-adjustment, multi-level fusion."""

    name = "scclip"
    recipe = DenseRecipe(attention="qk", residual=False, ffn=False, patch_rule="drop", position_rule="scale_factor")
    extra_options: ClassVar[tuple[str, ...]] = TOWER_OPTIONS

    def configure(self, given: dict[str, Any]) -> None:
        self.tower = TowerSettings.from_options(self.options)
        depth = len(self.net.visual.transformer.resblocks)
        problems = self.tower.problems(depth)
        if problems:
            raise BenchmarkError(
                f"scclip on {self.clip.name} ({depth} blocks): {'; '.join(problems)}; set the layers with "
                f"--opt (e.g. --opt pre_adjust_idx=...) or under `models` in clip_settings/scclip.yaml"
            )

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> CropFeatures:
        features = scclip_features(self.net.visual, crops, self.active_recipe, self.tower).float()
        return CropFeatures(features / features.norm(dim=-1, keepdim=True), tuple(crops.shape[-2:]))

    def config(self) -> dict[str, Any]:
        config = super().config()
        recipe = self.active_recipe.as_dict()
        config["recipe"] = {key: recipe[key] for key in RECIPE_FIELDS}
        return config


register_demo_options(SCCLIP.name, tiny_clip_options)
