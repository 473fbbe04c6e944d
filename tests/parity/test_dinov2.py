"""The suite's DINOv2 (timm's model, DINOv2's positional rule, the official layout converted by timm) against
DINOv2's own code (fixture: tests/parity/fixtures/dinov2, made by tools/parity/make_dinov2.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from methods.vfm_backbone import load_vfm
from tests.parity import checks, harness

META, ARRAYS = harness.read_fixture("dinov2")


@pytest.fixture(scope="module")
def dinov2(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("dinov2")
    recorded = META["weights"]
    weights = harness.random_dinov2_official(recorded["seed"], recorded["perturbation"])
    assert list(weights) == recorded["keys"] and harness.weights_digest(weights) == recorded["sha256"]
    assert recorded["config"] == harness.DINOV2_CONFIG
    config = folder / "fixture_dinov2.json"
    config.write_text(json.dumps(harness.DINOV2_CONFIG))
    torch.save(weights, folder / "dinov2_official_layout.pth")
    return load_vfm(str(config), str(folder / "dinov2_official_layout.pth"))


def test_patch_features_equal_dinov2s_own_at_every_size(dinov2):
    generator = torch.Generator().manual_seed(3)  # the fixture's inputs, drawn in its case order
    for case in META["cases"]:
        images = torch.randn(case["count"], 3, *case["shape"], generator=generator)
        with torch.no_grad():
            ours = dinov2.patch_features(images).numpy()
        assert ours.shape == tuple(case["features"])
        assert np.abs(ours - ARRAYS[case["case"]]).max() < checks.DENSE_TOLERANCE, case["case"]
