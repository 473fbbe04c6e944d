"""The suite's DINOv2 (timm's model, DINOv2's positional rule, the official layout converted by timm) against
DINOv2's own code (fixture: tests/parity/fixtures/dinov2, made by tools/parity/make_dinov2.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.vfm_backbone import load_vfm
from tests.parity import checks, harness

META, ARRAYS = harness.read_fixture("dinov2")


@pytest.fixture(scope="module")
def dinov2(tmp_path_factory: pytest.TempPathFactory):
    recorded = META["weights"]
    weights = harness.random_dinov2_official(recorded["seed"], recorded["perturbation"])
    config, weights_file = checks.rebuilt_vfm_files(recorded, weights, harness.DINOV2_CONFIG,
                                                    tmp_path_factory.mktemp("dinov2"))
    return load_vfm(str(config), str(weights_file))


def test_patch_features_equal_dinov2s_own_at_every_size(dinov2):
    generator = torch.Generator().manual_seed(3)  # the fixture's inputs, drawn in its case order
    for case in META["cases"]:
        images = torch.randn(case["count"], 3, *case["shape"], generator=generator)
        with torch.no_grad():
            ours = dinov2.patch_features(images).numpy()
        assert ours.shape == tuple(case["features"])
        assert np.abs(ours - ARRAYS[case["case"]]).max() < checks.DENSE_TOLERANCE, case["case"]
