"""PEARL's own behaviour that the parity test does not cover: options, per-benchmark settings, the image side's
independence from them, TLP's pieces, and a run on a CLIP with 8 px patches."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.protocol import load_protocol
from methods.clip_backbone import backbone_from_model
from methods.pearl import PEARL
from methods.pearl_attention import polar_factor
from methods.pearl_propagation import pooling_factors, propagate, text_trust
from tests.test_clip_baselines import tiny_clip

NAMES = [["sky", "wall"], ["cat"], ["dog", "puppy"]]


@pytest.fixture(scope="module")
def backbone():
    return backbone_from_model(tiny_clip(image_size=64, patch=8), "tiny-8px")


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("pearl")


def with_names(spec, names=NAMES):
    return replace(spec, class_names=tuple(tuple(synonyms) for synonyms in names))


@pytest.mark.parametrize("options", [
    {"arch": "full"}, {"attn_strategy": "qq"}, {"align_solver": "qr"}, {"polar_iters": 0}, {"use_kk": "yes"},
    {"propagation": 1}, {"propagation_grid": 0}, {"alpha_kk": "high"}, {"gaussian_std": 5.0},
])
def test_bad_options_are_refused(backbone, options):
    with pytest.raises(BenchmarkError):
        PEARL(backbone=backbone, text_cache=False, **options)


def test_per_benchmark_settings_follow_protocol_then_option_then_dataset(backbone, protocol):
    method = PEARL(backbone=backbone, text_cache=False)
    method.setup(protocol, protocol.benchmarks["context59"])
    assert (method.alpha_kk, method.propagation_grid) == (0.08, 80)
    method.setup(protocol, protocol.benchmarks["cityscapes"])
    assert (method.alpha_kk, method.propagation_grid) == (0.3, 224)
    chosen = PEARL(backbone=backbone, text_cache=False, alpha_kk=0.5)
    chosen.setup(protocol, protocol.benchmarks["voc21"])
    assert chosen.alpha_kk == 0.5 and chosen.config()["options"]["alpha_kk"] == 0.5
    chosen.setup(protocol, protocol.benchmarks["ade20k"])  # the protocol's value wins
    assert chosen.alpha_kk == 0.3
    assert "alpha_kk" not in method.config()["options"]


def test_runs_on_8px_patches_and_score_shares_crop_features_across_settings(backbone, protocol):
    method = PEARL(backbone=backbone, text_cache=False)
    crops = torch.randn(2, 3, 64, 72)  # 8 x 9 patches, a non-square grid
    context = with_names(protocol.benchmarks["context59"])
    ade = with_names(protocol.benchmarks["ade20k"])
    bank = method.encode_classes(NAMES, protocol.text)
    features = method.encode_crops(crops)
    method.setup(protocol, context)
    shared = method.score(features, bank)
    assert shared.shape == (2, 5, 8, 9) and torch.isfinite(shared).all()  # the patch grid; the engine upsamples
    torch.testing.assert_close(shared, method.predict_masks(crops, bank), rtol=0, atol=0)
    method.setup(protocol, ade)  # another alpha_kk: same features, other scores
    assert not torch.allclose(method.score(features, bank), shared)


def test_refine_needs_setup_and_propagates_at_label_size(backbone, protocol):
    method = PEARL(backbone=backbone, text_cache=False)
    scores = torch.randn(5, 90, 130) * 40
    image = torch.randn(3, 64, 90)
    with pytest.raises(BenchmarkError, match="setup"):
        method.refine(image, scores)
    method.setup(protocol, with_names(protocol.benchmarks["context59"]))
    refined = method.refine(image, scores)  # no bank encoded yet: refine encodes the class set itself
    assert refined.shape == scores.shape and not torch.allclose(refined, scores)
    off = PEARL(backbone=backbone, text_cache=False, propagation=False)
    off.setup(protocol, with_names(protocol.benchmarks["context59"]))
    assert torch.equal(off.refine(image, scores), scores)


def test_polar_factor_is_orthogonal_and_matches_the_svd():
    orthogonal = torch.linalg.qr(torch.randn(3, 8, 8, dtype=torch.float64))[0]
    matrix = orthogonal @ torch.diag(torch.linspace(1.0, 1.5, 8, dtype=torch.float64))
    left, _, right = torch.linalg.svd(matrix)
    rotation = polar_factor(matrix, 20)
    torch.testing.assert_close(rotation, left @ right, atol=1e-5, rtol=0)
    torch.testing.assert_close(rotation.transpose(-2, -1) @ rotation, torch.eye(8, dtype=torch.float64).expand(3, 8, 8),
                               atol=1e-5, rtol=0)


def test_pooling_rounds_half_to_even_and_text_trust_is_the_affinity_diagonal():
    assert pooling_factors(280, 360, 80) == (4, 4) and pooling_factors(50, 60, 80) == (1, 1)
    text = torch.randn(4, 16)
    trust = text_trust(text)
    assert trust.shape == (4,) and bool(((trust > 10 / 11 - 1e-6) & (trust < 1)).all())
    logits = torch.zeros(1, 4, 12, 12)
    assert torch.equal(propagate(torch.zeros(1, 3, 12, 12), logits, trust, 80), logits)  # constant stays
