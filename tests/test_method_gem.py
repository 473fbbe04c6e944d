"""GEM's own behaviour beyond the parity fixture: options, shorter towers, the tiny CLIP's 8 px patches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmark.errors import BenchmarkError
from benchmark.protocol import TextSpec, load_protocol
from benchmark.synthetic.tinyclip import create_tiny_clip
from methods.clip_backbone import backbone_from_model
from methods.gem import GEM
from methods.gem_tower import resample_positional_embedding

TEXT = TextSpec(("a photo of a {}.",), "mean_normalised")
NAMES = [["sky"], ["tree", "forest"], ["car"]]


@pytest.fixture(scope="module")
def backbone():
    return backbone_from_model(create_tiny_clip(seed=3).eval(), "tiny")


def make(backbone, **options) -> GEM:
    return GEM(backbone=backbone, text_cache=False, **options)


def crops(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randn((2, 3, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("options", [
    {"gem_depth": 1}, {"gem_depth": 2.5}, {"ss_attn_iter": -1}, {"ss_attn_temp": 0}, {"ignore_residual": "yes"},
    {"depth": 7},
])
def test_bad_options_are_refused_in_one_line(backbone, options):
    with pytest.raises(BenchmarkError, match="gem"):
        make(backbone, **options)


def test_scores_follow_the_tiny_clips_8px_patches_and_its_grid(backbone):
    method = make(backbone)
    bank = method.encode_classes(NAMES, TEXT)
    assert method.predict_masks(crops((64, 64)), bank).shape == (2, 4, 8, 8)
    assert method.predict_masks(crops((64, 96)), bank).shape == (2, 4, 8, 12)
    # off the patch size: padded around the centre, scores cut back to the crop
    assert method.predict_masks(crops((70, 61)), bank).shape == (2, 4, 70, 61)


def test_a_crop_off_the_patch_size_is_the_centre_of_its_padded_crop(backbone):
    method = make(backbone)
    bank = method.encode_classes(NAMES, TEXT)
    crop = crops((62, 60), seed=1)
    padded = F.pad(crop, (2, 2, 1, 1))
    whole = F.interpolate(method.predict_masks(padded, bank), size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(method.predict_masks(crop, bank), whole[..., 1:63, 2:62])


def test_a_depth_beyond_the_tower_runs_every_block_through_gem(backbone):
    blocks = len(backbone.model.visual.transformer.resblocks)
    deep, exact = make(backbone, gem_depth=7), make(backbone, gem_depth=blocks + 1)
    assert deep.config()["gem_blocks"] == exact.config()["gem_blocks"] == blocks
    x = crops((64, 64))
    torch.testing.assert_close(deep.encode_crops(x).features, exact.encode_crops(x).features, rtol=0, atol=0)
    assert make(backbone, gem_depth=2).config()["gem_blocks"] == 1


@pytest.mark.parametrize("options", [{"ignore_residual": True}, {"ss_attn_iter": 2}, {"ss_attn_temp": 3.0},
                                     {"gem_depth": 3}])
def test_each_variant_option_changes_the_features(backbone, options):
    x = crops((64, 64))
    plain = make(backbone).encode_crops(x).features
    assert not torch.allclose(plain, make(backbone, **options).encode_crops(x).features, atol=1e-4)


def test_crop_features_do_not_depend_on_setup(backbone):
    protocol = load_protocol("gem")
    method = make(backbone)
    x = crops((64, 80))
    before = method.encode_crops(x).features
    method.setup(protocol, protocol.benchmarks["cityscapes"])
    torch.testing.assert_close(method.encode_crops(x).features, before, rtol=0, atol=0)


def test_settings_come_from_the_harness_that_evaluates_gem(backbone):
    protocol = load_protocol("gem")
    method = make(backbone)
    method.setup(protocol, protocol.benchmarks["voc20"])
    assert method.logit_scale == 50.0 and method.pamr is None
    assert method.background_value(protocol, protocol.benchmarks["voc21"], "prob_thd") == 0.5
    assert method.background_value(protocol, protocol.benchmarks["context60"], "prob_thd") == 0.15
    assert method.config()["recipe"]["position_rule"] == "size_antialias"


def test_positional_embedding_is_kept_on_the_trained_grid_and_antialiased_elsewhere():
    positional = torch.randn(1 + 8 * 8, 16, generator=torch.Generator().manual_seed(0))
    assert resample_positional_embedding(positional, (8, 8), (8, 8)) is positional
    # same token count, other shape: resampled (GEM compares grids, not token counts)
    assert not torch.equal(resample_positional_embedding(positional, (8, 8), (4, 16))[1:], positional[1:])
    resized = resample_positional_embedding(positional, (8, 8), (12, 10))
    grid = positional[1:].reshape(1, 8, 8, 16).permute(0, 3, 1, 2)
    plain = F.interpolate(grid, size=(12, 10), mode="bicubic", align_corners=False)
    assert resized.shape == (1 + 120, 16) and torch.equal(resized[0], positional[0])
    assert not torch.allclose(resized[1:], plain.permute(0, 2, 3, 1).reshape(120, 16), atol=1e-4)
