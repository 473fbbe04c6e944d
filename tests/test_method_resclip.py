"""ResCLIP's own behaviour beyond the parity fixture: options and settings, the RCS blocks of a shallow
CLIP, the SFR prior on hand-made label maps, batches, and the tiny CLIP with 8 px patches."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from benchmark.demo_assets import demo_options_for
from benchmark.errors import BenchmarkError
from benchmark.synthetic.tinyclip import create_tiny_clip
from methods.clip_backbone import backbone_from_model
from methods.resclip import ResCLIP, rcs_blocks_of
from methods.resclip_feedback import feedback_prior, patch_labels
from tests.factories import make_protocol, make_spec, make_text

TEXT = make_text(["a photo of a {}.", "a sketch of the {}."])
PROTOCOL = make_protocol(text=TEXT)
NAMES = [["sky", "wall"], ["cat"], ["dog", "puppy"]]


@pytest.fixture(scope="module")
def backbone():
    return backbone_from_model(create_tiny_clip(seed=0).eval(), "tiny-clip")


def make(backbone, **options) -> ResCLIP:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny CLIP has none of the RCS blocks 5..8
        return ResCLIP(backbone=backbone, text_cache=False, **options)


def test_runs_on_the_tiny_clip_with_8px_patches_square_or_not(backbone):
    method = make(backbone)
    method.setup(PROTOCOL, make_spec(dataset="voc20"))
    bank = method.encode_classes(NAMES, TEXT)
    torch.manual_seed(0)
    for shape, grid in (((64, 64), (8, 8)), ((64, 84), (8, 10))):
        crops = torch.randn(2, 3, *shape)
        scores = method.predict_masks(crops, bank)
        assert scores.shape == (2, 5, *grid) and torch.isfinite(scores).all()
        assert scores.abs().max() <= method.logit_scale * (1 + 1e-5)
        assert torch.equal(scores, method.score(method.encode_crops(crops), bank))


def test_each_crop_of_a_batch_gets_its_own_prior_as_if_alone(backbone):
    """The reference takes one crop at a time; a batch must give each crop the scores it gets alone."""
    method = make(backbone)
    method.setup(PROTOCOL, make_spec(dataset="voc20", method_settings={"temp_thd": 0.0}))
    bank = method.encode_classes(NAMES, TEXT)
    crops = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    together = method.predict_masks(crops, bank)
    alone = torch.cat([method.predict_masks(crop[None], bank) for crop in crops])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_crop_features_ignore_setup_and_scores_follow_the_benchmark_settings(backbone):
    method = make(backbone)
    crops = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    before = method.encode_crops(crops)
    method.setup(PROTOCOL, make_spec(dataset="ade20k"))
    after = method.encode_crops(crops)
    assert torch.equal(before.tokens, after.tokens) and torch.equal(before.rcs, after.rcs)
    assert method.settings.temp_thd == 0.25 and method.settings.sfr_weights == (2.1, 0.7)  # cfg_ade20k.py
    bank = method.encode_classes(NAMES, TEXT)
    ade = method.score(after, bank)
    method.setup(PROTOCOL, make_spec(dataset="ade20k", method_settings={"attn_rcs_weights": [1.0, 0.9]}))
    assert method.settings.rcs_weights == (1.0, 0.9) and method.settings.temp_thd == 0.25
    assert not torch.allclose(ade, method.score(after, bank))


def test_a_dataset_without_a_config_takes_the_coco_stuff_values(backbone):
    method = make(backbone)
    method.setup(PROTOCOL, make_spec(dataset="synthetic"))
    settings = method.settings
    assert (settings.temp_thd, settings.rcs_weights, settings.sfr_weights) == (0.11, (2.0, 0.4), (1.8, 0.7))
    assert settings.separate_entities and settings.temp_pamr is not None


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"attn_sfr_weights": [2.0]}, "pair"), ({"attn_rcs_weights": "2, 0.3"}, "pair"), ({"temp_thd": None}, "number")],
)
def test_bad_benchmark_settings_are_refused(backbone, settings, message):
    method = make(backbone)
    with pytest.raises(BenchmarkError, match=message):
        method.setup(PROTOCOL, make_spec(dataset="voc20", method_settings=settings))


def test_unknown_options_are_refused(backbone):
    with pytest.raises(BenchmarkError, match="no option"):
        make(backbone, use_sfr=False)


def test_rcs_blocks_a_shallow_clip_lacks_fall_back_loudly(backbone):
    with pytest.warns(UserWarning, match="blocks"):
        method = ResCLIP(backbone=backbone, text_cache=False)
    assert method.rcs_blocks == (0, 1, 2) and method.config()["rcs_blocks"] == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ResCLIP(backbone=backbone, text_cache=False, rcs_blocks=[1]).rcs_blocks == (1,)
    assert rcs_blocks_of([5, 6, 7, 8], depth=12) == (5, 6, 7, 8)
    with pytest.warns(UserWarning):
        assert rcs_blocks_of([5, 6, 7, 8], depth=8) == (5, 6)
    with pytest.raises(BenchmarkError, match="at least 2"):
        rcs_blocks_of([0], depth=1)


def test_patch_labels_take_each_patch_mode_and_drop_the_remainder():
    pixels = torch.tensor([
        [1, 1, 2, 2, 9],
        [1, 3, 2, 3, 9],
        [4, 4, 0, 5, 9],
        [4, 5, 5, 0, 9],
        [9, 9, 9, 9, 9],
    ])
    # patch (1, 1): 0, 5, 5, 0 is a tie; torch.mode takes the smaller
    assert patch_labels(pixels, (2, 2), (2, 2)).tolist() == [[1, 2], [4, 0]]


def test_feedback_prior_decays_same_label_pairs_split_by_another_label():
    """One row of three patches labelled 1, 0, 1: patches 0 and 2 share a label, but the sample halfway
    (t = 1/2 of a Chebyshev distance 2, the grid's longest) is patch 1, labelled 0: decay exp(-2 / 2)."""
    labels = torch.tensor([[1, 0, 1]])
    tiny_blur = 0.05  # a Gaussian this narrow leaves the rows as they are
    kept = feedback_prior(labels, tiny_blur, separate_entities=False)
    decayed = feedback_prior(labels, tiny_blur, separate_entities=True)
    assert kept.shape == (4, 4) and torch.equal(kept[0], torch.zeros(4)) and torch.equal(kept[:, 0], torch.zeros(4))
    torch.testing.assert_close(kept[1, 1:], torch.tensor([0.5, 0.0, 0.5]))
    share = math.exp(-1) / (1 + math.exp(-1))
    torch.testing.assert_close(decayed[1, 1:], torch.tensor([1 - share, 0.0, share]))
    torch.testing.assert_close(decayed[2, 1:], torch.tensor([0.0, 1.0, 0.0]))


def test_feedback_prior_blurs_rows_along_the_patch_order():
    labels = torch.zeros(4, 4, dtype=torch.long)
    prior = feedback_prior(labels, 5.0, separate_entities=True)
    rows = prior[1:, 1:]
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(16))
    # width min(16, 31) -> 17: zero padding weighs the middle of each row above its ends
    assert rows[0, 8] > rows[0, 0] and np.allclose(rows[0, :8].numpy(), rows[0, 8:].flip(0).numpy(), atol=1e-3)


def test_resclip_joins_the_demo():
    assert demo_options_for("resclip") is not None
