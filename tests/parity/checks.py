"""The comparisons every parity test makes against its fixture (tests/parity/fixtures/<method>)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tests.parity import harness

# Dense scores and scores with each class's mean removed must agree to this (cosines, before any logit scale).
DENSE_TOLERANCE = 1e-5
# At most this share of a whole image may be a tie in the reference's own final scores.
TIE_SHARE = 0.001


def rebuilt_weights_file(meta: dict[str, Any], folder: Path, weights: dict[str, Tensor] | None = None) -> Path:
    """The fixture's weights rebuilt from their seed (or as given) and checked against the key list and sha256
    the fixture recorded, saved as a state-dict file in `folder`."""
    if weights is None:
        weights = harness.random_openai_clip(meta["weights"]["seed"], meta["weights"]["perturbation"])
    assert list(weights) == meta["weights"]["keys"]
    assert harness.weights_digest(weights) == meta["weights"]["sha256"]
    assert all(torch.equal(value, value.half().float()) for value in weights.values())  # fp16 rounding is exact
    return harness.save_weights(weights, folder / "clip.pt")


def rebuilt_vfm_files(recorded: dict[str, Any], weights: dict[str, Tensor], config: dict[str, Any],
                      folder: Path) -> tuple[Path, Path]:
    """The fixture's vision model as a method loads it (`--opt vfm=<json> vfm_weights=<file>`): its config and its
    weights rebuilt from their seed, checked against the key list, sha256 and config the fixture recorded."""
    assert list(weights) == recorded["keys"] and harness.weights_digest(weights) == recorded["sha256"]
    assert recorded["config"] == config
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "fixture_vfm.json"
    config_path.write_text(json.dumps(config))
    weights_path = folder / "fixture_vfm.pth"
    torch.save(weights, weights_path)
    return config_path, weights_path


def at_fixture_points(scores: Tensor, crops: Tensor, case: dict[str, Any]) -> np.ndarray:
    """Scores [B, n, h', w'] as the references store them: bilinear to the crop, every `subsample`-th pixel."""
    scores = torch.nn.functional.interpolate(scores, size=crops.shape[-2:], mode="bilinear", align_corners=False)
    return scores[..., :: case["subsample"], :: case["subsample"]].numpy()


def assert_dense_equal(ours: np.ndarray, expected: np.ndarray) -> None:
    assert np.abs(ours - expected).max() < DENSE_TOLERANCE
    assert np.abs(harness.centred(ours) - harness.centred(expected)).max() < DENSE_TOLERANCE


def assert_whole_equal(ours: np.ndarray, case: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The engine's label map at the original size equals the reference's at every pixel that is not a tie."""
    assert tuple(ours.shape) == tuple(case["size"]) != tuple(case["resized"])
    decided = ~arrays[f"{case['case']}_ties"]
    np.testing.assert_array_equal(ours[decided], arrays[case["case"]][decided])
    assert case["classes_predicted"] > 1 and case["tie_pixels"] < TIE_SHARE * ours.size
