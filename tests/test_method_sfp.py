"""SFP's own behaviour beyond the parity fixture: options, block positions on other depths, the decided
behaviour where the reference fails (non-square grids, purify=False, batches), and the tiny CLIP."""

from __future__ import annotations

import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.synthetic.tinyclip import create_tiny_clip
from methods.clip_backbone import backbone_from_model
from methods.sfp import SFP
from methods.sfp_features import block_positions
from methods.sfp_outliers import purify, salient_outliers
from tests.factories import make_text

TEXT = make_text(["a photo of a {}.", "a sketch of the {}."], "mean_normalised")
NAMES = [["sky", "wall"], ["cat"], ["dog", "puppy"]]


@pytest.fixture(scope="module")
def backbone():
    """The demo's tiny CLIP: 8 px patches, 64 px input, 4 blocks."""
    return backbone_from_model(create_tiny_clip(seed=0).eval(), "tiny-clip")


def crops(seed: int, shape: tuple[int, int], count: int = 2) -> torch.Tensor:
    return torch.randn((count, 3, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("options, message", [
    ({"outlier_detector": "DBSCAN"}, "outlier_detector"),
    ({"purify": "yes"}, "purify"),
    ({"state_blocks": [5, 3]}, "state_blocks"),
    ({"state_blocks": 3}, "state_blocks"),
    ({"lof_contamination": 1.5}, "lof_contamination"),
    ({"pm": "SOM"}, "no option"),
])
def test_bad_options_are_refused_with_the_option_named(backbone, options, message):
    with pytest.raises(BenchmarkError, match=message):
        SFP(backbone=backbone, text_cache=False, **options)


def test_block_positions_are_the_references_on_deep_towers_and_stretched_on_shallow_ones(backbone):
    settings = SFP(backbone=backbone, text_cache=False).settings
    for depth in (12, 24):  # ViT-B/16, ViT-L/14: hidden_states[3:10], [8], [3] as they are
        positions = block_positions(settings, depth)
        assert positions.state == tuple(range(3, 10)) and (positions.reference, positions.auxiliary) == (8, 3)
        assert positions.purified == depth - 2
    shallow = block_positions(settings, 4)  # intermediate blocks 0..10 of 12 stretched onto 0..2
    assert (shallow.state, shallow.reference, shallow.auxiliary, shallow.purified) == ((1, 2), 2, 1, 2)
    with pytest.raises(ValueError, match="at least two blocks"):
        block_positions(settings, 1)


def test_runs_on_the_tiny_clip_with_its_own_patch_size_and_grid(backbone):
    method = SFP(backbone=backbone, text_cache=False)
    bank = method.encode_classes(NAMES, TEXT)
    for shape, grid in (((64, 64), (8, 8)), ((64, 92), (8, 11))):  # 92 = 11 patches + a dropped remainder
        batch = crops(1, shape)
        scores = method.predict_masks(batch, bank)
        assert scores.shape == (2, 5, *grid) and torch.isfinite(scores).all()
        assert torch.equal(method.score(method.encode_crops(batch), bank), scores)
    assert method.config()["block_positions"] == {"state": [1, 2], "reference": 2, "auxiliary": 1, "purified": 2}


def test_each_crop_of_a_batch_is_computed_alone(backbone):
    """The reference handles a batch of one: outliers and similarity means are per crop here."""
    method = SFP(backbone=backbone, text_cache=False)
    batch = crops(2, (64, 72), count=3)
    together = method.encode_crops(batch).features
    alone = torch.cat([method.encode_crops(crop[None]).features for crop in batch])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_purify_false_keeps_every_token(backbone):
    """The reference raises there (outlier_index unset); here it means no outliers."""
    batch = crops(3, (64, 64))
    unpurified = SFP(backbone=backbone, text_cache=False, purify=False).encode_crops(batch).features
    no_outliers = SFP(backbone=backbone, text_cache=False, outlier_count=0).encode_crops(batch).features
    purified = SFP(backbone=backbone, text_cache=False).encode_crops(batch).features
    assert torch.equal(unpurified, no_outliers)
    assert not torch.allclose(unpurified, purified)


def test_outliers_on_a_non_square_grid_are_replaced_at_their_row_major_place():
    """Token i of a 3 x 5 grid sits at (i // 5, i % 5); the reference's (i // 3, i % 3) is decided against."""
    grid = (3, 5)
    patches = torch.arange(15, dtype=torch.float32).reshape(1, 15, 1) ** 2
    outliers = torch.zeros(1, 15, dtype=torch.bool)
    outliers[0, 7] = outliers[0, 8] = True  # (1, 2) and (1, 3), neighbours of each other
    result = purify(patches, outliers, grid)[0, :, 0]
    kept = [index for index in range(15) if not outliers[0, index]]
    assert torch.equal(result[kept], patches[0, kept, 0])
    neighbours_of_7 = [1, 2, 3, 6, 11, 12, 13]  # 8 is an outlier too: left out of the mean
    neighbours_of_8 = [2, 3, 4, 9, 12, 13, 14]
    assert result[7] == patches[0, neighbours_of_7, 0].mean()
    assert result[8] == patches[0, neighbours_of_8, 0].mean()
    lonely = torch.ones(1, 15, dtype=torch.bool)
    assert torch.equal(purify(patches, lonely, grid), torch.zeros_like(patches))  # no kept neighbour: zero


def test_salient_outliers_are_the_strongest_class_attended_patches_above_their_self_attention():
    attention = torch.zeros(1, 2, 5, 5)  # class token + 4 patches, two heads
    attention[:, :, 0, 1:] = torch.tensor([0.2, 0.5, 0.1, 0.4])
    attention[:, :, 1:, 1:] = torch.diag(torch.tensor([0.1, 0.6, 0.5, 0.3]))
    # scaled class attention 0.3, 0.75, 0.15, 0.6 against self 0.1, 0.6, 0.5, 0.3: patches 0, 1, 3 salient
    assert salient_outliers(attention, count=2, class_scale=1.5).tolist() == [[False, True, False, True]]
    assert salient_outliers(attention, count=10, class_scale=1.5).tolist() == [[True, True, False, True]]
    assert salient_outliers(attention, count=10, class_scale=0.1).tolist() == [[False, False, False, False]]


def test_a_zeroed_outlier_token_gives_finite_maps_where_the_reference_gives_nan():
    from methods.sfp_features import _cosine_map, _similarity_attention

    patches = torch.randn(1, 6, 8)
    patches[0, 2] = 0  # purify zeroes an outlier with no kept neighbour
    similarity = _cosine_map(patches, threshold=0.4)
    assert torch.isfinite(similarity).all() and torch.equal(similarity[0, 2], torch.zeros(6))
    attention = _similarity_attention(similarity, sharpness=3.0)
    assert torch.isfinite(attention).all()
    assert torch.equal(attention[0, 2], torch.nn.functional.one_hot(torch.tensor(2), 6).float())  # attends itself
    others = [row for row in range(6) if row != 2]
    assert attention[0, others][:, 2].abs().max() == 0  # no kept token attends to the zeroed one
