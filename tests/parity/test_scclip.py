"""SC-CLIP against its authors' code (fixture: tests/parity/fixtures/scclip, made by tools/parity/make_scclip.py).

The fixture CLIP has 3 blocks, so both sides run with the layer indices the fixture records (the
repository's ViT-B/16 indices need 12). Non-square crops are compared with the reference whose outlier
positions are mapped to the token grid (the adapter's decision; the reference as it is raises there,
as meta.json records).
"""

from __future__ import annotations

import pytest

from benchmark.protocol import load_protocol
from methods.scclip import SCCLIP
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec

META, ARRAYS = harness.read_fixture("scclip")
DENSE = [case for case in META["cases"] if case["kind"] == "dense"]
WHOLE = [case for case in META["cases"] if case["kind"] == "whole"]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory):
    return checks.rebuilt_weights_file(META, tmp_path_factory.mktemp("scclip"))


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("scclip")


@pytest.fixture(scope="module")
def method(weights_file):
    layers = META["cases"][0]["layers"]
    assert all(case["layers"] == layers for case in META["cases"])
    # a text cache beside the weights: the dense cases and whole_context59 share one bank
    return SCCLIP(model=None, pretrained=str(weights_file), text_cache=weights_file.parent / "text", **layers)


@pytest.fixture(scope="module")
def plain_bank(method, protocol):
    return method.encode_classes(harness.class_names(harness.CLASS_LINES), protocol.text)


@pytest.mark.parametrize("case", DENSE, ids=[case["case"] for case in DENSE])
def test_dense_scores_equal_the_references(case, method, plain_bank, protocol):
    method.setup(protocol, protocol.benchmarks["context59"])  # logit scale 40: undone below
    crops = harness.crop_batch(case["seed"], tuple(case["shape"]), case["count"])
    scores = method.predict_masks(crops, plain_bank) / method.logit_scale
    ours = checks.at_fixture_points(scores, crops, case)
    expected = ARRAYS[case["case"]]
    checks.assert_dense_equal(ours, expected)
    assert case["classes_predicted"] > 1  # the fixture's weights are perturbed enough to tell classes apart


def test_the_reference_fails_where_the_adapter_decides():
    """What the fixture records of the reference as it is: non-square grids and batches raise there."""
    non_square = [case for case in DENSE if case["shape"][0] != case["shape"][1]]
    assert non_square and all(case["reference_as_is"].startswith("IndexError") for case in non_square)
    square = [case for case in DENSE if case["shape"][0] == case["shape"][1]]
    assert square and all(not case["reference_on_a_batch_of_two"].startswith("ran") for case in square)


@pytest.mark.parametrize("case", WHOLE, ids=[case["case"] for case in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(case, method, protocol):
    lines = harness.BACKGROUND_CLASS_LINES if case["benchmark"] == "voc21" else harness.CLASS_LINES
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(lines), short=case["short"])
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    ours = engine_label_map(method, protocol, spec, protocol.text, image)
    checks.assert_whole_equal(ours, case, ARRAYS)

