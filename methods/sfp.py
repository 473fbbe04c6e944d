"""SFP (Jin et al., ICCV 2025): self-adaptive feature purification (Kimsure/SFP, folder SFP_ICCV/).

SFP_segmentor.py SFPForSegmentation.forward_feature: encode_image(return_each=True), each patch
feature normalised, cosines with the text bank, bilinear to the crop. clip/model.py
VisionTransformer.forward (sfp_features.py): the blocks before the last run unchanged; outlier
patch tokens of the last of them are found (sfp_outliers.py: SOM by default, or L2 / LOF) and
replaced by their neighbours' mean; the last block's projections run on patch tokens alone with
an attention of q-q, k-k and a similarity map of block 8's purified tokens, then the outputs are
smoothed by the similarity map of block 3; the sum of blocks 3..9 goes through the similarity
attention too and is added; ln_post and proj. Text: 80 ImageNet templates, each embedding
normalised, mean, normalised (__init__). Crops that are not a multiple of the patch lose their
remainder to the patch convolution (forward_feature reshapes to H // patch x W // patch);
positional embeddings resized with scale_factor (h + 0.1) / 14 (interpolate_pos_encoding).

Decided where the reference fails or misbehaves:
- non-square patch grids: the reference turns an outlier's token index i into (i // grid height,
  i % grid height) (feat_w is the height), right only on square grids; on others it purifies the
  wrong tokens or raises IndexError (224x288 crops, 14x18 patches). This adapter takes the token's
  row-major position (i // grid width, i % grid width), the one the reference means and takes on
  square grids;
- purify false: the reference raises UnboundLocalError (outlier_index and patch_token are only set by
  the purifying branch); here it means no outliers (every token kept as it is);
- a batch of several crops: the reference handles one (its SOM averages attention over the batch,
  its similarity means run over the batch); here each crop is computed alone, as slide inference
  feeds the reference one crop at a time;
- towers with fewer blocks than block positions 3..9 need: see sfp_features.block_positions;
- an outlier with no kept neighbour: purification zeroes it (as the reference does), and the reference's
  cosines then divide by its zero norm, turning every token of the crop NaN (seen on the demo's 8 x 8
  grids); here a zero token has cosine 0 with every token and attends to itself in the similarity
  attention (sfp_features._cosine_map, _similarity_attention). Tokens with a norm are computed bit for
  bit as in the reference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from benchmark.demo_assets import register_demo_options
from benchmark.errors import BenchmarkError
from benchmark.registry import register_method
from methods.clip_baseline import ClipBaseline, tiny_clip_options
from methods.clip_dense import CropFeatures, DenseRecipe
from methods.sfp_features import SFPSettings, block_positions, sfp_features

_INTEGERS = ("outlier_count", "lof_neighbours", "reference_block", "auxiliary_block", "block_depth")
_FLOATS = ("outlier_scale", "cls_residual", "lof_contamination", "similarity_threshold", "similarity_sharpness")


def sfp_settings(options: dict[str, Any]) -> SFPSettings:
    """The method's options (clip_settings/sfp.yaml, --opt) checked and typed."""
    try:
        if not isinstance(options["purify"], bool):
            raise TypeError(f"purify must be true or false, got {options['purify']!r}")
        state = options["state_blocks"]
        if not isinstance(state, list | tuple) or len(state) != 2:
            raise TypeError(f"state_blocks must be [start, end], got {state!r}")
        values: dict[str, Any] = {key: int(options[key]) for key in _INTEGERS}
        values.update({key: float(options[key]) for key in _FLOATS})
        return SFPSettings(
            purify=options["purify"], outlier_detector=str(options["outlier_detector"]),
            state_blocks=(int(state[0]), int(state[1])), **values,
        )
    except (TypeError, ValueError) as error:
        raise BenchmarkError(f"sfp: {error}") from None


@register_method()
class SFP(ClipBaseline):
    """SFP (Jin et al., ICCV 2025): outlier purification and similarity-guided attention in CLIP's last block."""

    name = "sfp"
    # What SFP shares with the dense baselines: remainders dropped, positions resized by scale factor,
    # the intermediate blocks unchanged. Its last block is its own (sfp_features.py).
    recipe = DenseRecipe(attention="qq+kk", residual=False, ffn=False, patch_rule="drop", position_rule="scale_factor")
    extra_options = (
        "purify", "outlier_detector", "cls_residual", "outlier_scale", "outlier_count", "lof_neighbours",
        "lof_contamination", "similarity_threshold", "similarity_sharpness", "state_blocks", "reference_block",
        "auxiliary_block", "block_depth",
    )

    def configure(self, given: dict[str, Any]) -> None:
        self.settings = sfp_settings(self.options)
        self.positions = block_positions(self.settings, len(self.net.visual.transformer.resblocks))

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> CropFeatures:
        features = sfp_features(self.net.visual, crops, self.active_recipe, self.settings).float()
        return CropFeatures(features / features.norm(dim=-1, keepdim=True), tuple(crops.shape[-2:]))

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["options"] = self.settings.as_dict()
        config["block_positions"] = {
            "state": list(self.positions.state), "reference": self.positions.reference,
            "auxiliary": self.positions.auxiliary, "purified": self.positions.purified,
        }
        return config


register_demo_options(SFP.name, tiny_clip_options)
