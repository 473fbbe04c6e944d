"""SFP against its authors' code (fixture: tests/parity/fixtures/sfp, made by tools/parity/make_sfp.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.protocol import load_protocol
from methods.clip_backbone import load_clip
from methods.sfp import SFP
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec

META, ARRAYS = harness.read_fixture("sfp")
DENSE = [case for case in META["cases"] if case["kind"] == "dense"]
WHOLE = [case for case in META["cases"] if case["kind"] == "whole"]
REFERENCE_ERRORS = {case["case"]: case for case in META["cases"] if "reference_error" in case}
# the reference's constructor options as the adapter's
OPTION_NAMES = {"pm": "outlier_detector", "purify": "purify"}


def fixture_weights() -> dict[str, torch.Tensor]:
    recipe = META["weights"]
    keys = ("seed", "vision_layers", "perturbation", "query_key_scale", "last_out_proj_scale")
    return harness.sharpened_deep_clip(*(recipe[key] for key in keys))


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory):
    return checks.rebuilt_weights_file(META, tmp_path_factory.mktemp("sfp"), fixture_weights())


@pytest.fixture(scope="module")
def backbone(weights_file):
    return load_clip(None, str(weights_file))


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory: pytest.TempPathFactory):
    """One text bank per class list for the module (80 templates through the text tower are the slow part)."""
    return str(tmp_path_factory.mktemp("sfp_text_banks"))


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("sfp")


def dense_scores(method: SFP, protocol, case) -> np.ndarray:
    method.setup(protocol, protocol.benchmarks["context59"])  # logit scale 40: undone below
    bank = method.encode_classes(harness.class_names(harness.CLASS_LINES), protocol.text)
    crops = harness.crop_batch(case["seed"], tuple(case["shape"]), case["count"])
    scores = method.predict_masks(crops, bank) / method.logit_scale
    scores = F.interpolate(scores, size=crops.shape[-2:], mode="bilinear", align_corners=False)
    return scores[..., :: case["subsample"], :: case["subsample"]].numpy()


@pytest.mark.parametrize("case", DENSE, ids=[case["case"] for case in DENSE])
def test_dense_scores_equal_the_references(case, backbone, text_cache, protocol):
    options = {OPTION_NAMES[key]: value for key, value in case["options"].items()}
    method = SFP(backbone=backbone, text_cache=text_cache, **options)
    ours = dense_scores(method, protocol, case)
    expected = ARRAYS[case["case"]]
    checks.assert_dense_equal(ours, expected)
    assert case["classes_predicted"] > 1  # the fixture's weights are made to tell classes apart
    assert min(case["outliers_per_crop"]) > 0  # purification had tokens to replace


def test_the_reference_fails_where_the_adapter_decides():
    """Non-square grids: the reference's outlier coordinates run off its grid (IndexError), so the wide
    crops' reference ran with row-major coordinates, the adapter's rule; purify=False: it never sets them."""
    wide = REFERENCE_ERRORS["crops_wide"]
    assert wide["reference_error"].startswith("IndexError") and "row-major" in wide["reference_patched"]
    assert wide["shape"][0] != wide["shape"][1]
    assert "outlier_index" in REFERENCE_ERRORS["crops_square_unpurified"]["reference_error"]


@pytest.mark.parametrize("case", WHOLE, ids=[case["case"] for case in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(case, backbone, text_cache, protocol):
    method = SFP(backbone=backbone, text_cache=text_cache)
    lines = harness.BACKGROUND_CLASS_LINES if case["benchmark"] == "voc21" else harness.CLASS_LINES
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(lines), short=case["short"])
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    ours = engine_label_map(method, protocol, spec, protocol.text, image)
    checks.assert_whole_equal(ours, case, ARRAYS)


def test_fixture_weights_are_rebuilt_bit_for_bit():
    weights = fixture_weights()
    assert all(torch.equal(value, value.half().float()) for value in weights.values())
    assert len([key for key in weights if key.endswith("attn.in_proj_weight") and key.startswith("visual.")]) == 12
