"""ResCLIP against its authors' code (fixture: tests/parity/fixtures/resclip, made by tools/parity/make_resclip.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmark.protocol import load_protocol
from methods.resclip import ResCLIP
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec

META, ARRAYS = harness.read_fixture("resclip")
DENSE = [case for case in META["cases"] if case["kind"] == "dense"]
WHOLE = [case for case in META["cases"] if case["kind"] == "whole"]
RESCLIP_SETTINGS = ("temp_thd", "attn_rcs_weights", "attn_sfr_weights", "delete_same_entity")


def fixture_weights():
    spec = META["weights"]
    assert tuple(spec["branch_keys"]) == harness.RESIDUAL_BRANCH_KEYS
    return harness.damped_deep_clip(spec["seed"], spec["perturbation"], spec["vision_layers"], spec["branch_scale"])


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory):
    return checks.rebuilt_weights_file(META, tmp_path_factory.mktemp("resclip"), fixture_weights())


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("resclip")


@pytest.fixture(scope="module")
def method(weights_file):
    """One method for the module (its text banks are the slow part); every test sets it up for its case."""
    return ResCLIP(model=None, pretrained=str(weights_file), text_cache=weights_file.parent / "text")


@pytest.fixture(scope="module")
def plain_bank(method, protocol):
    return method.encode_classes(harness.class_names(harness.CLASS_LINES), protocol.text)


def with_case_settings(spec, settings):
    """The benchmark with the case's ResCLIP settings (the fixture's temp_thd) as method_settings."""
    chosen = {key: settings[key] for key in RESCLIP_SETTINGS}
    return replace(spec, method_settings={**spec.method_settings, **chosen})


@pytest.mark.parametrize("case", DENSE, ids=[case["case"] for case in DENSE])
def test_dense_scores_and_first_segmentation_equal_the_references(case, method, plain_bank, protocol, monkeypatch):
    method.setup(protocol, with_case_settings(protocol.benchmarks[case["dataset"]], case["settings"]))
    assert method.logit_scale == case["logit_scale"]
    first_segmentations = []

    def recording(*args):
        labels = ResCLIP.first_segmentation(method, *args)
        first_segmentations.append(labels)
        return labels

    monkeypatch.setattr(method, "first_segmentation", recording)
    crops = harness.crop_batch(case["seed"], tuple(case["shape"]), case["count"])
    scores = method.predict_masks(crops, plain_bank) / method.logit_scale
    (labels,) = first_segmentations
    np.testing.assert_array_equal(labels.numpy(), ARRAYS[f"{case['case']}_patch_labels"])
    ours = checks.at_fixture_points(scores, crops, case)
    expected = ARRAYS[case["case"]]
    checks.assert_dense_equal(ours, expected)
    # the weights tell classes apart, and the first segmentation feeds the SFR prior several labels
    assert case["classes_predicted"] > 1 and max(case["first_segmentation_labels"]) > 1


@pytest.mark.parametrize("case", WHOLE, ids=[case["case"] for case in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(case, method, protocol):
    lines = harness.BACKGROUND_CLASS_LINES if case["benchmark"] == "voc21" else harness.CLASS_LINES
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(lines), short=case["short"])
    spec = with_case_settings(spec, case["settings"])
    assert spec.inference.mode == ("whole" if case["settings"]["slide_crop"] == 0 else "slide")
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    ours = engine_label_map(method, protocol, spec, protocol.text, image)
    checks.assert_whole_equal(ours, case, ARRAYS)


def test_fixture_weights_are_rebuilt_bit_for_bit():
    weights = fixture_weights()
    assert all(torch.equal(value, value.half().float()) for value in weights.values())
