"""PEARL against its authors' code (fixture: tests/parity/fixtures/pearl, made by tools/parity/make_pearl.py)."""

from __future__ import annotations

import pytest

from benchmark.protocol import load_protocol
from methods.pearl import PEARL
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec

META, ARRAYS = harness.read_fixture("pearl")
DENSE = [case for case in META["cases"] if case["kind"] == "dense"]
WHOLE = [case for case in META["cases"] if case["kind"] == "whole"]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory):
    return checks.rebuilt_weights_file(META, tmp_path_factory.mktemp("pearl"))


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory: pytest.TempPathFactory):
    """One text-bank folder for the module: each class set goes through the 80 templates once."""
    return str(tmp_path_factory.mktemp("pearl_text"))


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("pearl")


@pytest.mark.parametrize("case", DENSE, ids=[case["case"] for case in DENSE])
def test_dense_scores_equal_the_references(case, weights_file, text_cache, protocol):
    method = PEARL(model=None, pretrained=str(weights_file), text_cache=text_cache, alpha_kk=case["alpha_kk"])
    method.setup(protocol, protocol.benchmarks["context59"])  # logit scale 40: undone below
    assert method.alpha_kk == case["alpha_kk"]
    bank = method.encode_classes(harness.class_names(harness.CLASS_LINES), protocol.text)
    crops = harness.crop_batch(case["seed"], tuple(case["shape"]), case["count"])
    scores = method.predict_masks(crops, bank) / method.logit_scale
    ours = checks.at_fixture_points(scores, crops, case)
    expected = ARRAYS[case["case"]]
    checks.assert_dense_equal(ours, expected)
    assert case["classes_predicted"] > 1  # the fixture's weights are perturbed enough to tell classes apart


@pytest.mark.parametrize("case", WHOLE, ids=[case["case"] for case in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(case, weights_file, text_cache, protocol):
    method = PEARL(model=None, pretrained=str(weights_file), text_cache=text_cache)
    lines = harness.BACKGROUND_CLASS_LINES if case["benchmark"] == "voc21" else harness.CLASS_LINES
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(lines), short=case["short"])
    assert spec.inference.mode == case["inference"]
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    ours = engine_label_map(method, protocol, spec, protocol.text, image)
    assert (method.alpha_kk, method.propagation_grid) == (case["settings"]["alpha_kk"], case["settings"]["grid"])
    checks.assert_whole_equal(ours, case, ARRAYS)

