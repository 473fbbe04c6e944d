"""TCL against its authors' code (fixture: tests/parity/fixtures/tcl, made by tools/parity/make_tcl.py).

The fixture's weights are rebuilt here: the harness's random CLIP and TCL's learned masker drawn by
`released_masker_weights` (the released tcl.pth layout), saved as the two files the adapter loads.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.protocol import load_protocol
from methods.tcl import TCL
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec
from tests.parity.tcl_checkpoint import released_masker_weights

META, ARRAYS = harness.read_fixture("tcl")
DENSE = [case for case in META["cases"] if case["kind"] == "dense"]
WHOLE = [case for case in META["cases"] if case["kind"] == "whole"]
# harness.crop_batch / whole_image round float32 bilinear values to uint8; PyTorch's float32 bilinear can differ
# by one ulp with the thread setup (e.g. OMP_NUM_THREADS=1), which moves a pixel at x.5 by one level.
INPUT_DRIFT = "the rebuilt input differs from the one the reference was given (thread-dependent rounding)"


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tcl")
    weights = harness.random_openai_clip(META["weights"]["seed"], META["weights"]["perturbation"])
    assert list(weights) == META["weights"]["keys"]
    assert harness.weights_digest(weights) == META["weights"]["sha256"]
    masker = released_masker_weights(weights, META["masker"]["seed"])
    assert list(masker) == META["masker"]["keys"]
    assert harness.weights_digest(masker) == META["masker"]["sha256"]
    torch.save({"model": masker}, folder / "tcl.pth")
    return harness.save_weights(weights, folder / "clip.pt"), folder / "tcl.pth"


@pytest.fixture(scope="module")
def protocols():
    return {name: load_protocol(name) for name in ("tcl8", "tcl8_nopamr")}


def adapter(weights_files, kp_w: float) -> TCL:
    clip, checkpoint = weights_files
    return TCL(model=None, pretrained=str(clip), checkpoint=str(checkpoint), kp_w=kp_w, text_cache=False)


@pytest.mark.parametrize("case", DENSE, ids=[case["case"] for case in DENSE])
def test_dense_masks_equal_the_references(case, weights_files, protocols):
    method = adapter(weights_files, case["kp_w"])
    protocol = protocols[case["protocol"]]
    method.setup(protocol, protocol.benchmarks["context59"])
    assert (method.pamr is not None) == case["pamr"] and method.kp_w == case["kp_w"]
    bank = method.encode_classes(harness.class_names(harness.CLASS_LINES), protocol.text)
    crops = harness.crop_batch(case["seed"], tuple(case["shape"]), case["count"])
    assert harness.input_digest(crops) == case["input_sha256"], INPUT_DRIFT
    masks = method.predict_masks(crops, bank)
    assert masks.shape[-2:] == crops.shape[-2:]
    ours = masks[..., :: case["subsample"], :: case["subsample"]].numpy()
    expected = ARRAYS[case["case"]]
    checks.assert_dense_equal(ours, expected)
    assert case["classes_predicted"] > 1  # the fixture's weights are perturbed enough to tell classes apart


@pytest.mark.parametrize("case", WHOLE, ids=[case["case"] for case in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(case, weights_files, protocols):
    method = adapter(weights_files, case["settings"]["kp_w"])
    protocol = protocols[case["protocol"]]
    background = case["settings"]["with_bg"]
    lines = harness.BACKGROUND_CLASS_LINES[1:] if background else harness.CLASS_LINES
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(lines), short=case["short"])
    assert (spec.background.rule == "threshold") == background
    if background:
        assert method.background_value(protocol, spec, "threshold") == case["settings"]["bg_thresh"]
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    assert harness.input_digest(image) == case["input_sha256"], INPUT_DRIFT
    ours = engine_label_map(method, protocol, spec, protocol.text, image)
    checks.assert_whole_equal(ours, case, ARRAYS)


def test_fixture_weights_are_rebuilt_bit_for_bit():
    weights = harness.random_openai_clip(META["weights"]["seed"], META["weights"]["perturbation"])
    masker = released_masker_weights(weights, META["masker"]["seed"])
    assert all(torch.equal(value, value.half().float()) for value in [*weights.values(), *masker.values()])
