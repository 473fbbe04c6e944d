"""CorrCLIP's dense tower against its authors' code (fixture: tests/parity/fixtures/corrclip, made by
tools/parity/make_corrclip.py from zdk258/CorrCLIP with DINO's own ViT from facebookresearch/dino): single crops with
given region maps, through region merging, scope attention, the region tokens and the three branches.

Scope reconstruction lets a token of the unsegmented area attend where DINO's similarity exceeds its mean, a step:
DINO's q + k similarities agree with those of DINO's own code to ~1e-7-1e-6, so a similarity within 1e-6 of
the mean may fall on either side. Scores are compared at every point that no such borderline row reaches.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.protocol import load_protocol
from methods.clip_backbone import load_clip
from methods.clip_text import build_text_bank
from methods.corrclip import CorrCLIP
from methods.corrclip_tower import CorrSettings, corrclip_features, dino_query_key, merged_regions, nearest
from methods.vfm_backbone import load_vfm
from methods.vfm_method import CLIP_MEAN, CLIP_STD
from tests.parity import checks, harness
from tests.parity.engine import engine_label_map, fixture_spec

META, ARRAYS = harness.read_fixture("corrclip")
DENSE = [case for case in META["cases"] if case["kind"] == "dense"]
WHOLE = [case for case in META["cases"] if case["kind"] == "whole"]
BORDERLINE = 1e-6
# open_clip/transformer.py VisionTransformer.forward: ALPHA, BETA, NUM_SPATIAL (num_layers - 4 below 12 layers),
# TAU, DBSCAN eps
SETTINGS = CorrSettings(alpha=1.0, beta=0.5, spatial_layers=META["weights"]["vision_layers"] - 4, temperature=4.0,
                        merge_eps=0.2)
MASK_FOLDERS = {"voc21": "voc", "context59": "context", "cityscapes": "city"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):
    """The fixture CLIP and DINO rebuilt from their seeds, as files."""
    folder = tmp_path_factory.mktemp("corrclip")
    recorded = META["weights"]
    keys = ("seed", "vision_layers", "perturbation", "query_key_scale", "last_out_proj_scale")
    weights = harness.sharpened_deep_clip(*(recorded[key] for key in keys))
    clip = checks.rebuilt_weights_file(META, folder, weights)
    dino = META["dino_weights"]
    config, dino_file = checks.rebuilt_vfm_files(dino, harness.random_dino(dino["seed"], dino["perturbation"]),
                                                 harness.DINO_CONFIG, folder / "dino")
    return {"folder": folder, "clip": clip, "dino": config, "dino_weights": dino_file}


@pytest.fixture(scope="module")
def models(files):
    clip = load_clip(None, str(files["clip"]))
    protocol = load_protocol("corrclip")  # the 80 OpenAI templates, each normalised, mean, normalised
    bank = build_text_bank(clip, harness.class_names(harness.CLASS_LINES), list(protocol.text.templates),
                           protocol.text.aggregation)
    return clip, load_vfm(str(files["dino"]), str(files["dino_weights"])), bank


@pytest.mark.parametrize("case", WHOLE, ids=[case["case"] for case in WHOLE])
def test_whole_image_predictions_through_the_engine_equal_the_references(case, files):
    protocol = load_protocol("corrclip")
    benchmark = case["benchmark"]
    spec = fixture_spec(protocol, benchmark, harness.class_names(harness.LEADING_SYNONYM_LINES),
                        short=protocol.benchmarks[benchmark].image.resize_short)
    spec = replace(spec, method_settings={**spec.method_settings, "logit_scale": case["settings"]["logit_scale"]})
    masks = files["folder"] / case["case"]
    (masks / MASK_FOLDERS[benchmark]).mkdir(parents=True)
    name = Path("parity" + spec.dataset.img_suffix).stem  # engine_label_map's stem, with the card's file suffix
    regions = ARRAYS[f"{case['case']}_regions"]
    np.savez_compressed(masks / MASK_FOLDERS[benchmark] / f"{name}.npz", instance_mask=regions)
    method = CorrCLIP(model=None, pretrained=str(files["clip"]), vfm=str(files["dino"]),
                      vfm_weights=str(files["dino_weights"]), region_masks=str(masks), text_cache=False)
    image = harness.whole_image(case["seed"], tuple(case["size"]))
    ours = engine_label_map(method, protocol, spec, protocol.text, image)
    decided = ~ARRAYS[f"{case['case']}_ties"]
    assert tuple(ours.shape) == tuple(case["size"]) != tuple(case["resized"])
    np.testing.assert_array_equal(ours[decided], ARRAYS[case["case"]][decided])
    assert case["classes_predicted"] > 1 and case["tie_pixels"] < checks.TIE_SHARE * ours.size


@pytest.mark.parametrize("case", DENSE, ids=[case["case"] for case in DENSE])
def test_dense_scores_with_region_maps_equal_the_references(case, models):
    clip, dino, bank = models
    crops = harness.crop_batch(case["seed"], tuple(case["shape"]), case["count"])
    regions = torch.from_numpy(ARRAYS[f"{case['case']}_regions"]).long()
    scores, borderline = [], []
    with torch.no_grad():
        for crop, ids in zip(crops, regions, strict=True):
            unit, grid = dino_query_key(dino, dino.renormalised(crop[None], CLIP_MEAN, CLIP_STD))
            features = corrclip_features(clip.model.visual, crop, unit[0], grid, ids, SETTINGS)
            features = F.normalize(features.float(), dim=-1)
            scores.append((features @ bank.embeddings.T).permute(2, 0, 1))
            borderline.append(borderline_rows(unit[0], merged_regions(nearest(ids, grid), unit[0], 0.2), grid))
    ours, expected = checks.at_fixture_points(torch.stack(scores), crops, case), ARRAYS[case["case"]]
    clear = ~(checks.at_fixture_points(torch.stack(borderline), crops, case)[:, 0] > 0)
    assert clear.mean() > 0.95
    for mine, theirs in ((ours, expected), (harness.centred(ours), harness.centred(expected))):
        assert np.abs(mine - theirs).max(axis=1)[clear].max() < checks.DENSE_TOLERANCE


def borderline_rows(unit: torch.Tensor, regions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1, h', w'] 1.0 at tokens whose attention row has an entry decided by S > mean(S) within BORDERLINE."""
    similarity = unit @ unit.T
    ids = regions.reshape(-1)
    unsegmented = ids == ids.min()
    decided = unsegmented[:, None] | unsegmented[None, :]
    close = decided & ((similarity - similarity.mean()).abs() < BORDERLINE)
    return close.any(dim=-1).float().reshape(1, *grid)
