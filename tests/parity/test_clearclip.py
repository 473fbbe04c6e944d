"""ClearCLIP against its authors' code (fixture: tests/parity/fixtures/clearclip, made by
tools/parity/make_clearclip.py)."""

from __future__ import annotations

import pytest

from benchmark.protocol import load_protocol
from methods.clearclip import ClearCLIP
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec

META, ARRAYS = harness.read_fixture("clearclip")
DENSE = [case for case in META["cases"] if case["kind"] == "dense"]
WHOLE = [case for case in META["cases"] if case["kind"] == "whole"]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory):
    return checks.rebuilt_weights_file(META, tmp_path_factory.mktemp("clearclip"))


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("clearclip")


@pytest.mark.parametrize("case", DENSE, ids=[case["case"] for case in DENSE])
def test_dense_scores_equal_the_references(case, weights_file, protocol):
    method = ClearCLIP(model=None, pretrained=str(weights_file))
    method.setup(protocol, protocol.benchmarks["context59"])  # logit scale 50: undone below
    bank = method.encode_classes(harness.class_names(harness.CLASS_LINES), protocol.text)
    crops = harness.crop_batch(case["seed"], tuple(case["shape"]), case["count"])
    scores = method.predict_masks(crops, bank) / method.logit_scale
    ours = checks.at_fixture_points(scores, crops, case)
    expected = ARRAYS[case["case"]]
    checks.assert_dense_equal(ours, expected)
    assert case["classes_predicted"] > 1  # the fixture's weights are perturbed enough to tell classes apart


@pytest.mark.parametrize("case", WHOLE, ids=[case["case"] for case in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(case, weights_file, protocol):
    method = ClearCLIP(model=None, pretrained=str(weights_file))
    lines = harness.BACKGROUND_CLASS_LINES if case["benchmark"] == "voc21" else harness.CLASS_LINES
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(lines), short=case["short"])
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    ours = engine_label_map(method, protocol, spec, protocol.text, image)
    checks.assert_whole_equal(ours, case, ARRAYS)

