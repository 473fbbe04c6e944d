"""CASS against its authors' code (fixture: tests/parity/fixtures/cass, made by tools/parity/make_cass.py from
MICV-yonsei/CASS with the repository's own DINO; each crop's svd_lowrank draws seeded with 42 on both sides).

CASS pairs DINO's heads with CLIP's by a Hungarian assignment whose costs are often additive, so that every pairing
costs the same and float rounding picks one. The fixture records the pairing the reference chose for each crop;
the tests replay it (`replayed_pairings`) after checking that it is an optimal assignment of the adapter's own
costs (within PAIRING_TOLERANCE): everything else is compared as computed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import methods.cass_spectral
from benchmark.protocol import load_protocol
from methods.cass import CASS
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec, resized_input

META, ARRAYS = harness.read_fixture("cass")
DENSE = [case for case in META["cases"] if case["kind"] == "dense"]
WHOLE = [case for case in META["cases"] if case["kind"] == "whole"]
PAIRING_TOLERANCE = 1e-5


@pytest.fixture
def replayed_pairings(monkeypatch):
    """Makes the adapter take, crop by crop, the pairings of a case's `<case>_assignments`; returns the setter and
    a counter of the crops whose own optimal pairing differed (ties broken otherwise)."""
    state = {"queue": [], "differed": 0}

    def replay(costs: np.ndarray):
        recorded = np.asarray(state["queue"].pop(0), dtype=np.int64)
        rows, own = linear_sum_assignment(costs)
        best = costs[rows, own].sum()
        assert costs[rows, recorded].sum() <= best + PAIRING_TOLERANCE  # the reference's pairing is optimal here too
        state["differed"] += int(not np.array_equal(own, recorded))
        return rows, recorded

    monkeypatch.setattr(methods.cass_spectral, "linear_sum_assignment", replay)

    def use(case: str) -> None:
        state["queue"] = list(ARRAYS[f"{case}_assignments"])

    return use, state


@pytest.fixture(scope="module")
def method_options(tmp_path_factory: pytest.TempPathFactory):
    """The method's options per vision model of the fixture (dino_type "dino_vitb8", "dinov2_vitb14")."""
    folder = tmp_path_factory.mktemp("cass")
    recipe = META["weights"]
    keys = ("seed", "vision_layers", "perturbation", "query_key_scale", "last_out_proj_scale")
    clip = str(checks.rebuilt_weights_file(META, folder, harness.sharpened_deep_clip(*(recipe[key] for key in keys))))
    options = {}
    for dino_type, name, draw, config in (
        ("dino_vitb8", "dino_weights", harness.random_dino, harness.CASS_DINO_CONFIG),
        ("dinov2_vitb14", "dinov2_weights", harness.random_dinov2_official, harness.CASS_DINOV2_CONFIG),
    ):
        recorded = META[name]
        weights = draw(recorded["seed"], recorded["perturbation"], recorded["config"])
        config_file, weights_file = checks.rebuilt_vfm_files(recorded, weights, config, folder / dino_type)
        options[dino_type] = {"model": None, "pretrained": clip, "vfm": str(config_file),
                              "vfm_weights": str(weights_file), "text_cache": False, "seed": META["random_seed"]}
    return options


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("cass")


@pytest.mark.parametrize("case", DENSE, ids=[case["case"] for case in DENSE])
def test_dense_scores_equal_the_references(case, method_options, protocol, replayed_pairings):
    use, state = replayed_pairings
    use(case["case"])
    method = CASS(**method_options[case["dino_type"]])
    names = harness.class_names(case["classes"])
    spec = fixture_spec(protocol, case["benchmark"], names, short=case["short"])
    method.setup(protocol, spec)
    bank = method.encode_classes(names, protocol.text)
    image = resized_input(harness.whole_image(case["seed"], tuple(case["size"])), spec)[0]
    crops = torch.stack([image[:, y:y + side, x:x + side] for y, x, side in case["windows"]])
    context = method.encode_image(image)
    scores = method.predict_masks(crops, bank, contexts=[context] * len(crops)) / method.logit_scale
    checks.assert_dense_equal(checks.at_fixture_points(scores, crops, case), ARRAYS[case["case"]])
    assert case["classes_predicted"] > 1 and not state["queue"]


@pytest.mark.parametrize("case", WHOLE, ids=[case["case"] for case in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(case, method_options, protocol,
                                                                         replayed_pairings):
    use, state = replayed_pairings
    use(case["case"])
    method = CASS(**method_options[case["dino_type"]])
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(case["classes"]), short=case["short"])
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    ours = engine_label_map(method, protocol, spec, protocol.text, image)
    checks.assert_whole_equal(ours, case, ARRAYS)
    assert not state["queue"]  # one recorded pairing per crop, all used
