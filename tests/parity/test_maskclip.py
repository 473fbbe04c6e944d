"""MaskCLIP against its authors' code and against the ClearCLIP repository's re-implementation (fixtures:
tests/parity/fixtures/maskclip and maskclip_clearclip, made by tools/parity/make_maskclip.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmark.protocol import InferenceSpec, load_protocol
from methods.maskclip import MaskCLIP
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec

FIXTURES = {variant: harness.read_fixture(folder)
            for variant, folder in (("authors", "maskclip"), ("clearclip", "maskclip_clearclip"))}
PROTOCOLS = {"authors": FIXTURES["authors"][0]["protocol"], "clearclip": "clearclip"}


def cases_of(kind: str) -> list[tuple[str, dict]]:
    return [(variant, case) for variant, (meta, _) in FIXTURES.items()
            for case in meta["cases"] if case["kind"] == kind]


DENSE, WHOLE = cases_of("dense"), cases_of("whole")


def case_id(entry: tuple[str, dict]) -> str:
    return f"{entry[0]}-{entry[1]['case']}"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory):
    meta = FIXTURES["authors"][0]
    assert FIXTURES["clearclip"][0]["weights"] == meta["weights"]
    weights = harness.random_openai_clip(meta["weights"]["seed"], meta["weights"]["perturbation"])
    assert list(weights) == meta["weights"]["keys"]
    assert harness.weights_digest(weights) == meta["weights"]["sha256"]
    return harness.save_weights(weights, tmp_path_factory.mktemp("maskclip") / "clip.pt")


@pytest.fixture(scope="module")
def methods(weights_file):
    return {variant: MaskCLIP(model=None, pretrained=str(weights_file), variant=variant) for variant in FIXTURES}


def whole_spec(variant: str, case: dict):
    """The case's benchmark as the fixture script ran it: the protocol's, with the fixture's names and resize, and
    for the authors' cases the mode and threshold the case records (the reference's test_cfg and rule)."""
    protocol = load_protocol(PROTOCOLS[variant])
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(harness.CLASS_LINES), short=case["short"])
    if case.get("inference") == "whole":
        spec = replace(spec, inference=InferenceSpec(mode="whole", crop=None, stride=None))
    if case.get("threshold") is not None:
        spec = replace(spec, background=replace(spec.background, value=case["threshold"]))
    return protocol, spec


def test_the_authors_head_read_the_suites_text_bank(methods):
    """The authors' head took its text embeddings from the suite's bank (the repository's own needs CUDA)."""
    protocol = load_protocol(PROTOCOLS["authors"])
    bank = methods["authors"].encode_classes(harness.class_names(harness.CLASS_LINES), protocol.text)
    np.testing.assert_allclose(bank.embeddings.numpy(), FIXTURES["authors"][1]["text_CLASS_LINES"], atol=1e-6)


@pytest.mark.parametrize("entry", DENSE, ids=[case_id(entry) for entry in DENSE])
def test_dense_scores_equal_the_references(entry, methods):
    variant, case = entry
    method, protocol = methods[variant], load_protocol(PROTOCOLS[variant])
    method.setup(protocol, protocol.benchmarks["context59"])  # logit scale: undone below
    bank = method.encode_classes(harness.class_names(harness.CLASS_LINES), protocol.text)
    crops = harness.crop_batch(case["seed"], tuple(case["shape"]), case["count"])
    scores = method.predict_masks(crops, bank) / method.logit_scale
    ours = checks.at_fixture_points(scores, crops, case)
    expected = FIXTURES[variant][1][case["case"]]
    checks.assert_dense_equal(ours, expected)
    assert case["classes_predicted"] > 1  # the fixture's weights are perturbed enough to tell classes apart
    if variant == "authors":  # mmseg's LayerNorm eps 1e-6 (CLIP's 1e-5) moves these scores by 2e-6 to 5e-6 only
        assert np.abs(ours - expected).max() < 1e-6


@pytest.mark.parametrize("entry", WHOLE, ids=[case_id(entry) for entry in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(entry, methods):
    variant, case = entry
    protocol, spec = whole_spec(variant, case)
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    ours = engine_label_map(methods[variant], protocol, spec, protocol.text, image)
    assert tuple(ours.shape) == tuple(case["size"]) != tuple(case["resized"])
    arrays = FIXTURES[variant][1]
    decided = ~arrays[f"{case['case']}_ties"]
    np.testing.assert_array_equal(ours[decided], arrays[case["case"]][decided])
    assert case["classes_predicted"] > 1 and case["tie_pixels"] < 0.001 * ours.size


def test_each_variant_has_a_background_case_that_decides_pixels_both_ways():
    variants = set()
    for variant, case in WHOLE:
        if case.get("threshold") is not None:
            below = case["pixels_below_threshold"]
        elif "prob_thd" in case.get("settings", {}):
            below = case["pixels_below_prob_thd"]
        else:
            continue
        assert 0 < below < np.prod(case["size"]), (variant, case["case"])
        variants.add(variant)
    assert variants == set(FIXTURES)


def test_fixture_weights_are_rebuilt_bit_for_bit():
    meta = FIXTURES["authors"][0]
    weights = harness.random_openai_clip(meta["weights"]["seed"], meta["weights"]["perturbation"])
    assert all(torch.equal(value, value.half().float()) for value in weights.values())
