"""SC-CLIP beyond its parity fixture: the tiny CLIP (8 px patches, 4 blocks), layer options, and the adapter's
decisions where the reference fails (non-square grids, batches, crops with few patches)."""

from __future__ import annotations

import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from benchmark.errors import BenchmarkError
from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip
from methods.clip_backbone import backbone_from_model
from methods.outlier_tokens import local_outlier_factors, lof_outliers, replace_with_neighbour_mean, squared_distances
from methods.scclip import SCCLIP
from tests.factories import make_protocol, make_spec, make_text

TEXT = make_text(["a photo of a {}.", "a sketch of the {}."], "mean_normalised")
PROTOCOL = make_protocol(text=TEXT)
NAMES = [["sky", "wall"], ["cat"], ["dog", "puppy"]]


@pytest.fixture(scope="module")
def tiny_backbone():
    return backbone_from_model(create_tiny_clip(seed=0).eval(), MODEL_NAME)


@pytest.fixture(scope="module")
def tiny(tiny_backbone):
    method = SCCLIP(backbone=tiny_backbone, text_cache=False)
    method.setup(PROTOCOL, make_spec(dataset="voc20"))
    return method


def shallow_clip(layers: int) -> CLIP:
    torch.manual_seed(0)
    return CLIP(
        64, vision_cfg=CLIPVisionCfg(layers=layers, width=64, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True,
    ).eval()


def test_runs_on_the_tiny_clip_with_its_own_patch_size_and_layers(tiny):
    assert tiny.options["pre_adjust_idx"] == 1 and tiny.options["multi_end_idx"] == 2  # clip_settings `models`
    bank = tiny.encode_classes(NAMES, TEXT)
    square = tiny.predict_masks(torch.randn(2, 3, 64, 64), bank)
    wide = tiny.predict_masks(torch.randn(1, 3, 64, 100), bank)  # 8 x 12 patches, 4 px dropped
    assert square.shape == (2, 5, 8, 8) and wide.shape == (1, 5, 8, 12)
    assert torch.isfinite(square).all() and torch.isfinite(wide).all()
    assert tiny.config()["options"]["pre_adjust_idx"] == 1 and tiny.config()["recipe"]["patch_rule"] == "drop"


def test_a_batch_scores_as_its_crops_one_by_one(tiny):
    """The reference's outlier search and similarity prior hold for a batch of one; here they are per crop."""
    bank = tiny.encode_classes(NAMES, TEXT)
    crops = torch.randn(3, 3, 64, 80)
    together = tiny.predict_masks(crops, bank)
    alone = torch.cat([tiny.predict_masks(crop[None], bank) for crop in crops])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_crop_features_do_not_depend_on_setup(tiny_backbone):
    method = SCCLIP(backbone=tiny_backbone, text_cache=False)
    crops = torch.randn(1, 3, 64, 64)
    before = method.encode_crops(crops).features
    method.setup(PROTOCOL, make_spec(dataset="voc21", method_settings={"logit_scale": 10.0}))
    assert torch.equal(before, method.encode_crops(crops).features)


def test_crops_with_fewer_patches_than_neighbours_take_every_other_patch(tiny):
    """A 24 x 40 crop has 15 patches, fewer than the 31 lof_pytorch's topk needs; the reference raises."""
    scores = tiny.predict_masks(torch.randn(1, 3, 24, 40), tiny.encode_classes(NAMES, TEXT))
    assert scores.shape == (1, 5, 3, 5) and torch.isfinite(scores).all()


def test_explicit_options_win_over_the_per_model_values(tiny_backbone):
    method = SCCLIP(backbone=tiny_backbone, text_cache=False, pre_adjust_idx=2, res_cls=0.0)
    assert method.options["pre_adjust_idx"] == 2 and method.options["post_adjust_idx"] == 0
    assert method.tower.res_cls == 0.0


def test_a_tower_too_shallow_for_the_layer_indices_is_refused():
    backbone = backbone_from_model(shallow_clip(layers=3), "shallow-test")
    with pytest.raises(BenchmarkError, match="pre_adjust_idx=8 is not a mid-layer output"):
        SCCLIP(backbone=backbone, text_cache=False)  # ViT-B/16's indices on 3 blocks
    with pytest.raises(BenchmarkError, match="multi_start_idx=1, multi_end_idx=1"):
        SCCLIP(backbone=backbone, text_cache=False, pre_adjust_idx=1, post_adjust_idx=0, multi_start_idx=1,
               multi_end_idx=1)
    SCCLIP(backbone=backbone, text_cache=False, pre_adjust_idx=1, post_adjust_idx=0, multi_start_idx=0,
           multi_end_idx=2)


def test_unknown_options_are_refused(tiny_backbone):
    with pytest.raises(BenchmarkError, match="no option"):
        SCCLIP(backbone=tiny_backbone, text_cache=False, gaussian_std=5.0)


def test_background_values_follow_the_repository_configs(tiny):
    protocol = make_protocol()
    assert tiny.background_value(protocol, make_spec(dataset="voc21"), "prob_thd") == 0.15
    assert tiny.background_value(protocol, make_spec(dataset="coco_object"), "prob_thd") == 0.35
    assert tiny.background_value(protocol, make_spec(dataset="ade20k"), "prob_thd") == 0.0


# --- the tower's parts ------------------------------------------------------------------------

def test_an_anomaly_on_a_non_square_grid_is_replaced_at_its_own_place():
    """Token 7 of a 2 x 5 grid (row-major) is row 1, col 2; the reference would put it at (7 // 2, 7 % 2)."""
    tokens = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1).repeat(1, 1, 3)
    anomalous = torch.zeros(1, 10, dtype=torch.bool)
    anomalous[0, 7] = True
    resolved = replace_with_neighbour_mean(tokens, anomalous, (2, 5), isolated="keep")
    neighbours = [1, 2, 3, 6, 8]  # row 0 cols 1-3, row 1 cols 1 and 3
    assert torch.allclose(resolved[0, 7], torch.full((3,), sum(neighbours) / len(neighbours)))
    assert torch.equal(resolved[0, torch.arange(10) != 7], tokens[0, torch.arange(10) != 7])


def test_an_anomaly_whose_neighbours_are_all_anomalous_stays():
    tokens = torch.randn(1, 9, 4)
    anomalous = torch.ones(1, 9, dtype=torch.bool)
    assert torch.equal(replace_with_neighbour_mean(tokens, anomalous, (3, 3), isolated="keep"), tokens)


def test_the_far_token_is_the_anomaly():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(40, 8, generator=generator)
    tokens[13] += 25.0
    flagged = lof_outliers(tokens, neighbours=30, contamination=0.05).nonzero().flatten().tolist()
    assert 13 in flagged and len(flagged) == 2  # tokens above the 0.95 quantile of 40: the top two
    assert int(local_outlier_factors(tokens, 30).argmax()) == 13
    few = tokens[:12]  # fewer tokens than neighbours + 1: every other token is a neighbour
    flagged = lof_outliers(few, neighbours=30, contamination=0.1).nonzero().flatten().tolist()
    assert sorted(flagged) == sorted(local_outlier_factors(few, 11).topk(2).indices.tolist())


def test_distances_in_row_blocks_equal_the_whole_product(monkeypatch):
    tokens = torch.randn(50, 16)
    whole = torch.norm(tokens[:, None] - tokens[None, :], dim=2, p=2) ** 2
    monkeypatch.setattr("methods.outlier_tokens.DISTANCE_CHUNK_ELEMENTS", 7 * 50 * 16)
    assert torch.equal(squared_distances(tokens), whole)
