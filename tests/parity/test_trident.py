"""Trident against its authors' code (fixture: tests/parity/fixtures/trident, made by tools/parity/make_trident.py
from YuHengsss/Trident with DINO's own ViT from facebookresearch/dino and the repository's own segment_anything).

Each case is one whole image (SAM reads the original, CLIP the protocol's resize of it; two cases resize): the dense
logits on the original grid, the label map without the SAM refinement and the label map with it, all through the
engine (the original image handed to `encode_image`, mode whole, one upsample, `refine_labels`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch.nn.functional as F

from benchmark.protocol import load_protocol
from methods.trident import Trident
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec

META, ARRAYS = harness.read_fixture("trident")
CASES = META["cases"]


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("trident")
    clip = str(checks.rebuilt_weights_file(META, folder))
    dino = META["dino_weights"]
    dino_config, dino_weights = checks.rebuilt_vfm_files(
        dino, harness.random_dino(dino["seed"], dino["perturbation"], harness.DINO_B16_CONFIG),
        harness.DINO_B16_CONFIG, folder / "dino")
    sam = META["sam_weights"]
    sam_config, sam_weights = checks.rebuilt_vfm_files(
        sam, harness.sharpened_sam(sam["seed"], sam["query_key_scale"], sam["rel_pos_scale"]), harness.SAM_CONFIG,
        folder / "sam")
    return {"model": None, "pretrained": clip, "vfm": str(dino_config), "vfm_weights": str(dino_weights),
            "sam": str(sam_config), "sam_weights": str(sam_weights), "text_cache": False}


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("trident")


def case_spec(protocol, case):
    lines = getattr(harness, case["classes"])
    spec = fixture_spec(protocol, case["benchmark"], harness.class_names(lines), short=case["short"])
    if "prob_thd" in case["settings"] and spec.background.rule == "prob_thd":
        spec = replace(spec, background=replace(spec.background, value=case["settings"]["prob_thd"]))
    return replace(spec, method_settings={**spec.method_settings, "logit_scale": case["settings"]["logit_scale"]})


def method_for(options, case, refine: bool) -> Trident:
    extra = {"iou_thresh": case["settings"]["sam_iou_thresh"]}
    return Trident(**options, sam_refine=refine, **extra)


@pytest.mark.parametrize("case", CASES, ids=[case["case"] for case in CASES])
def test_dense_logits_and_label_maps_with_and_without_sam_refinement_equal_the_references(case, options, protocol):
    """One engine run: the dense logits are the scores predict_masks hands the engine, the unrefined label map the
    one the engine hands refine_labels, the refined one the engine's result."""
    spec = case_spec(protocol, case)
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    method = method_for(options, case, refine=True)
    seen: dict[str, list] = {"scores": [], "labels": []}
    predict_masks, refine_labels = method.predict_masks, method.refine_labels
    method.predict_masks = lambda *args, **kwargs: seen["scores"].append(predict_masks(*args, **kwargs)) or \
        seen["scores"][-1]
    method.refine_labels = lambda probs, labels, context: seen["labels"].append(labels.clone()) or \
        refine_labels(probs, labels, context)
    refined = engine_label_map(method, protocol, spec, protocol.text, image)
    (dense,), (unrefined,) = seen["scores"], seen["labels"]
    dense = F.interpolate(dense / method.logit_scale, size=tuple(case["size"]), mode="bilinear", align_corners=False)[0]
    step = case["subsample"]
    checks.assert_dense_equal(dense[:, ::step, ::step].numpy(), ARRAYS[f"{case['case']}_dense"])
    for ours, key, ties in ((unrefined.numpy(), "unrefined", "ties"), (refined, "refined", "refined_ties")):
        assert tuple(ours.shape) == tuple(case["size"])
        decided = ~ARRAYS[f"{case['case']}_{ties}"]
        np.testing.assert_array_equal(ours[decided], ARRAYS[f"{case['case']}_{key}"][decided], err_msg=key)
        assert (~decided).mean() < checks.TIE_SHARE
    assert case["classes_predicted"] > 1 and not np.array_equal(unrefined.numpy(), refined)
