"""Trident's own behaviour that the parity test does not cover: options, the picture size, the SAM affinity's
form, the refinement's no-op paths and windows that are not the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.errors import BenchmarkError
from benchmark.protocol import TextSpec
from methods.clip_backbone import backbone_from_model
from methods.trident import Trident, picture_size
from methods.trident_sam import PromptSettings, encode_picture, refine_with_prompts, sam_affinity
from tests.factories import write_tiny_sam, write_tiny_vfm
from tests.test_clip_baselines import tiny_clip

TEXT = TextSpec(("a photo of a {}.",), "mean_normalised")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trident")
    return {"dino": write_tiny_vfm(folder / "dino"), "sam": write_tiny_sam(folder / "sam")}


@pytest.fixture(scope="module")
def backbone():
    return backbone_from_model(tiny_clip(image_size=64, patch=8), "tiny-8px")


def make(files, backbone, **options) -> Trident:
    (dino, dino_weights), (sam, sam_weights) = files["dino"], files["sam"]
    defaults = {"vfm": str(dino), "vfm_weights": str(dino_weights), "sam": str(sam), "sam_weights": str(sam_weights),
                "window_crop": 32, "window_stride": 16}
    return Trident(backbone=backbone, **{**defaults, **options}).eval()


@pytest.mark.parametrize("size,expected", [
    ((448, 597), (464, 608)),  # VOC 500 x 375 at short 448 (trident_spec: 608 x 464)
    ((576, 768), (576, 768)),  # already multiples of 16
    ((688, 1376), (688, 1376)),  # Cityscapes at short 688
    ((200, 250), (336, 336)),  # at least one window on each side
])
def test_picture_size_is_preprocess_image(size, expected):
    assert picture_size(*size, 16, 336) == expected


def test_bad_options_name_the_option(files, backbone):
    with pytest.raises(BenchmarkError, match="window_crop 36 and window_stride 16 must be multiples of CLIP's patch"):
        make(files, backbone, window_crop=36).encode_image(torch.zeros(3, 40, 40))
    with pytest.raises(BenchmarkError, match="trident option sam_refine must be true or false"):
        make(files, backbone, sam_refine="yes")
    with pytest.raises(BenchmarkError, match="trident option minimal_area must be a positive integer"):
        make(files, backbone, minimal_area=0)
    with pytest.raises(BenchmarkError, match="is a SAM"):
        make(files, backbone, vfm=str(files["sam"][0]), vfm_weights=str(files["sam"][1]))
    with pytest.raises(BenchmarkError, match="is not a SAM"):
        make(files, backbone, sam=str(files["dino"][0]), sam_weights=str(files["dino"][1]))


def test_sam_affinity_keeps_attention_where_values_agree_and_rows_sum_to_one(files, backbone):
    method = make(files, backbone)
    picture = encode_picture(method.predictor, np.random.default_rng(0).integers(0, 256, (48, 80, 3), np.uint8))
    grid = picture.grid(16)
    assert grid == (1024 * 48 // 80 // 16, 64) and picture.original_size == (48, 80)
    encoder = method.sam_net.image_encoder
    weights = sam_affinity(encoder, picture, cos_factor=1.2, refine_negative=True)
    assert weights.shape == (grid[0] * grid[1],) * 2
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]))
    assert (weights.diagonal() > 0).all()  # a token's own value always agrees with itself
    # cos_factor 1e6: each row's threshold is 0.9 where its mean cosine is positive, 0.6 (refine_negative off) else
    strict = sam_affinity(encoder, picture, cos_factor=1e6, refine_negative=False)
    block = encoder.blocks[-1]
    x = block.norm1(picture.block_input)
    values = block.attn.qkv(x).reshape(-1, 3, block.attn.num_heads, x.shape[-1] // block.attn.num_heads)[:, 2]
    values = values.reshape(64, 64, block.attn.num_heads, -1)[:grid[0], :grid[1]].reshape(-1, block.attn.num_heads,
                                                                                         values.shape[-1])
    unit = F.normalize(values, dim=-1)
    cosines = torch.einsum("mhc,nhc->hmn", unit, unit)
    threshold = torch.where(cosines.mean(dim=(0, 2)) > 0, 0.9, 0.6)[None, :, None]
    agree = (cosines > threshold).any(dim=0)
    assert 0 < agree.float().mean() < 0.5 and torch.equal(strict > 0, agree)


def test_refinement_leaves_labels_where_no_mask_is_kept_or_no_class_qualifies(files, backbone):
    method = make(files, backbone)
    image = torch.randn(3, 40, 52, generator=torch.Generator().manual_seed(1))
    context = method.encode_image(image)
    coarse = torch.rand(1, 3, 3, 4, generator=torch.Generator().manual_seed(2)) * 4  # a few regions per class
    probs = F.interpolate(coarse, size=(40, 52), mode="bilinear", align_corners=False)[0].softmax(0)
    labels = probs.argmax(0)
    for settings in (PromptSettings(0.2, 4, 0.005, 1e9), PromptSettings(1.1, 4, 0.005, -1e9)):
        assert torch.equal(refine_with_prompts(method.predictor, context.sam, probs, labels, settings), labels)
    kept = refine_with_prompts(method.predictor, context.sam, probs, labels, PromptSettings(0.0, 4, 0.005, -1e9))
    assert kept.shape == labels.shape and kept.dtype == torch.int64 and int(kept.max()) < 3
    assert (kept != labels).any()  # every mask kept: the random SAM's masks move some labels
    method.settings["sam_refine"] = False
    assert method.refine_labels(probs, labels, None) is labels


def test_a_window_smaller_than_its_image_is_a_picture_of_its_own(files, backbone):
    method = make(files, backbone, sam_refine=False)
    bank = method.encode_classes([["cat"], ["dog", "puppy"], ["sky"]], TEXT)
    image = torch.randn(3, 48, 80, generator=torch.Generator().manual_seed(3))
    context = method.encode_image(image)
    assert context.sam is None and context.features is not None
    whole = method.predict_masks(image[None], bank, contexts=[context])
    assert whole.shape == (1, 4, 38, 64)  # SAM's grid of a 48 x 80 picture: 1024 x 614 (608 x 1024 / 16)
    crop = image[:, :48, :48]
    alone = method.predict_masks(crop[None], bank, contexts=[context])
    assert alone.shape == (1, 4, 64, 64)
    assert torch.allclose(alone, method.predict_masks(crop[None], bank))  # from the crop alone, not the image
