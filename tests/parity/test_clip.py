"""Vanilla dense CLIP against the ClearCLIP repository's `vanilla` model type (fixture: tests/parity/fixtures/clip,
made by tools/parity/make_clip.py), with ignore_residual false (the method's default) and true (the repository's
default: cases *_ignore_residual).
"""

from __future__ import annotations

import pytest

from benchmark.protocol import load_protocol
from methods.clip_baseline import baseline_defaults
from methods.clip_vanilla import VanillaCLIP
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec

META, ARRAYS = harness.read_fixture("clip")
DENSE = [case for case in META["cases"] if case["kind"] == "dense"]
WHOLE = [case for case in META["cases"] if case["kind"] == "whole"]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory):
    return checks.rebuilt_weights_file(META, tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("clearclip")  # the method has no protocol of its own; the fixture used this one's settings


def method_for(case, weights_file) -> VanillaCLIP:
    """The adapter as `zsbench eval` builds it for the case: no option where the case runs the method's default
    (clip_settings/clip.yaml), `--opt ignore_residual=true` where it runs the repository's default."""
    options = {key: value for key, value in case["options"].items() if value != baseline_defaults("clip").get(key)}
    method = VanillaCLIP(model=None, pretrained=str(weights_file), **options)
    assert method.options == case["options"]
    return method


@pytest.mark.parametrize("case", DENSE, ids=[case["case"] for case in DENSE])
def test_dense_scores_equal_the_references(case, weights_file, protocol):
    method = method_for(case, weights_file)
    method.setup(protocol, protocol.benchmarks["context59"])  # logit scale 50 (the protocol's): undone below
    bank = method.encode_classes(harness.class_names(harness.CLASS_LINES), protocol.text)
    crops = harness.crop_batch(case["seed"], tuple(case["shape"]), case["count"])
    scores = method.predict_masks(crops, bank) / method.logit_scale
    ours = checks.at_fixture_points(scores, crops, case)
    expected = ARRAYS[case["case"]]
    checks.assert_dense_equal(ours, expected)
    assert case["classes_predicted"] > 1  # the fixture's weights are perturbed enough to tell classes apart


@pytest.mark.parametrize("case", WHOLE, ids=[case["case"] for case in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(case, weights_file, protocol):
    method = method_for(case, weights_file)
    lines = harness.BACKGROUND_CLASS_LINES if case["benchmark"] == "voc21" else harness.CLASS_LINES
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(lines), short=case["short"])
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    ours = engine_label_map(method, protocol, spec, protocol.text, image)
    checks.assert_whole_equal(ours, case, ARRAYS)

