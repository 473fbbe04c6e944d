"""Makes tests/parity/fixtures/trident from Trident's own code (YuHengsss/Trident), run with mmseg stubbed.

    python tools/parity/make_trident.py --repo /path/to/Trident/.git --dino-repo /path/to/dino/.git

Needs scikit-image (seg_utils/utils.py imports skimage.measure): `pip install scikit-image`.

Both repositories are unpacked at their commits into temporary folders and run from there on the CPU, Trident with
its own open_clip and segment_anything copies (open_clip/, segment_anything/: the image encoder that keeps its last
block's attention and values). `Trident.__init__` builds CLIP with `create_model('ViT-B/16', pretrained='openai',
precision='fp16')`, DINO with `torch.hub.load('facebookresearch/dino:main', 'dino_vitb16')` and SAM from
`sam_model_registry['vit_b'](checkpoint)`; here `create_model` is the repository's own
`open_clip.load_openai_model(<state-dict file>, precision='fp32')`, `torch.hub.load` builds DINO's own
`vision_transformer.VisionTransformer` (patch 16, the fixture's width and depth) and `sam_model_registry['vit_b']`
the repository's own segment_anything `_build_sam` at the fixture's encoder size, each with the fixture's random
weights. The `.half()` casts are made no-ops (integer tensors become float, as `.half()` would make them
floating), so the reference runs float32. `openpyxl` (imported by myutils.py, unused here) is stubbed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.protocol import load_protocol  # noqa: E402
from tests.parity import harness  # noqa: E402
from tests.parity.engine import fixture_spec, resized_input  # noqa: E402
from tools.parity import reference  # noqa: E402

REPOSITORY = "YuHengsss/Trident"
COMMIT = "a93b346"
DINO_REPOSITORY = "facebookresearch/dino"
DINO_COMMIT = "7c446df"
SEED = 3
DINO_SEED = 4
DINO_PERTURBATION = 0.5
SAM_SEED = 3
SAM_QUERY_KEY_SCALE = 2.0  # harness.sharpened_sam: attention that varies over the image (scale 4 underflows rows)
SAM_REL_POS_SCALE = 4.0
SUBSAMPLE = 8
# The fixture's cosines vary by ~0.01 over an image; at the protocol's 40 every probability sits near 1 / n_classes,
# on top of the refinement's coarse_thresh (0.15-0.2), where a prompt pixel within float rounding of it flips.
LOGIT_SCALE = 100.0

# Class names: harness.LEADING_SYNONYM_LINES (only class 0 has several names, which the reference assumes).
# case: (benchmark of the trident protocol, image seed, original size, short side of the resize, reference settings).
# SAM reads the original file, CLIP the resized tensor: voc21 and cityscapes_halves are resized (VOC's 500 x 375 to
# 597 x 448 as the protocol does), the others are not.
CASES = {
    "voc21": ("voc21", 3, (375, 500), 448, {}),
    "context59": ("context59", 4, (380, 500), 380, {}),
    "voc20_stride112": ("voc20", 5, (336, 450), 336, {}),
    "cityscapes_halves": ("cityscapes", 6, (256, 512), 344, {}),
    "context59_all_masks": ("context59", 7, (400, 520), 400, {"sam_iou_thresh": -1e9}),
}

REFERENCE_DID = (
    "trident.create_model replaced by the repository's open_clip.load_openai_model(state-dict file, precision='fp32', "
    "device='cpu') (create_model's path for pretrained='openai', there with precision 'fp16'; its fp16 rounding of "
    "conv/linear/attention/projection weights is exact on the fixture weights); torch.hub.load('facebookresearch/"
    "dino:main', 'dino_vitb16') replaced by DINO's own vision_transformer.VisionTransformer(patch_size=16, "
    "embed_dim=64, depth=2, num_heads=2, qkv_bias=True, LayerNorm eps 1e-6, num_classes=0) from "
    "facebookresearch/dino@7c446df with the fixture's random DINO weights (strict); sam_model_registry['vit_b'] "
    "replaced by the repository's segment_anything/build_sam.py _build_sam at the fixture's encoder size (32 wide, "
    "2 heads, 2 blocks, global attention in block 1; image size 1024) with the fixture's random SAM weights (strict; "
    "harness.sharpened_sam: the last block's query/key projections x 2, relative positions x 4), "
    "and Trident.sam_heads (hard-coded 12 for vit_b) set to the fixture SAM's 2 heads. torch.Tensor.half and "
    "nn.Module.half made no-ops (integer tensors to float32), so CLIP, DINO, SAM and their inputs stay float32. "
    "Settings: configs/base_config.py and the benchmark's cfg_*.py as methods/clip_settings/trident.yaml holds them "
    "(window 336, stride 224 or 112, cos_fac, refine_neg_cos, coarse_thresh, dataset_type 'CityscapesDataset' for "
    "the halves), sam_iou_thresh 0.8 unless the case says otherwise, minimal_area 225, sam_mask_coff 0.005, "
    "logit_scale 100 (the protocol's 40 leaves the fixture's probabilities near 1 / n_classes, at the "
    "coarse thresholds), prob_thd of the protocol. Each original image is written as a PNG that predict's SAM pass "
    "reads (cv2.imread, img_path); predict receives the engine's resize of it (mmcv's equal) and ori_shape the "
    "original size. Per case: get_trident_seg(resized image) -> logits at the original size (dense); "
    "predict with sam_refinement=False -> pred_sem_seg and seg_logits (ties); predict with sam_refinement=True -> "
    "pred_sem_seg (refined). Text: prompts/imagenet_template.py openai_imagenet_template (80), each embedding "
    "normalised, mean, normalised."
)

def method_settings(benchmark: str) -> dict[str, Any]:
    """The reference's keyword settings for a benchmark, from the adapter's settings file (base + cfg_*.py)."""
    import yaml

    defaults = yaml.safe_load((Path(__file__).resolve().parents[2] / "methods/clip_settings/trident.yaml")
                              .read_text(encoding="utf-8"))
    merged = {**defaults, **defaults["datasets"].get(benchmark, {})}
    settings = {"slide_crop": merged["window_crop"], "slide_stride": merged["window_stride"],
                "cos_fac": merged["cos_fac"], "refine_neg_cos": merged["refine_neg_cos"],
                "coarse_thresh": merged["coarse_thresh"], "minimal_area": merged["minimal_area"],
                "sam_mask_coff": merged["mask_coefficient"], "sam_iou_thresh": merged["iou_thresh"],
                "beta": merged["beta"], "gamma": merged["gamma"]}
    if merged["sam_halves"]:
        settings["dataset_type"] = "CityscapesDataset"
    return settings


def run_reference(trident: Any, names_file: Path, settings: dict[str, Any], image_path: Path, inputs: torch.Tensor,
                  size: tuple[int, int], refine: bool) -> tuple[Any, Any]:
    """The reference segmentor for one case, and its `predict` on the resized image (SAM reads `image_path`; the
    original size is `size`)."""
    model = trident.Trident("openai", "ViT-B/16", "dino", str(names_file), device="cpu", sam_refinement=refine,
                            sam_ckpt=None, **settings)
    model.sam_heads = harness.SAM_CONFIG["sam_kwargs"]["encoder_num_heads"]
    data_sample = reference.sample(size)
    data_sample.img_path = str(image_path)
    return model, model.predict(inputs, [data_sample])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of YuHengsss/Trident")
    parser.add_argument("--dino-repo", type=Path, required=True, help="git directory of facebookresearch/dino")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--dino-commit", default=DINO_COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "trident")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parity-trident-"))
    weights = harness.random_openai_clip(SEED)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    dino_weights = harness.random_dino(DINO_SEED, DINO_PERTURBATION, harness.DINO_B16_CONFIG)
    sam_weights = harness.sharpened_sam(SAM_SEED, SAM_QUERY_KEY_SCALE, SAM_REL_POS_SCALE)
    protocol = load_protocol("trident")

    reference.install_stubs()
    sys.modules["openpyxl"] = types.ModuleType("openpyxl")
    for name in [name for name in sys.modules if name.split(".")[0] == "segment_anything"]:
        del sys.modules[name]
    dino_source = reference.checkout(args.dino_repo, args.dino_commit)
    source = reference.checkout(args.repo, args.commit)
    open_clip = reference.own_open_clip(source)
    import segment_anything  # the repository's copy
    import trident  # the reference, from the checkout

    if not Path(segment_anything.__file__).resolve().is_relative_to(source.resolve()):
        raise RuntimeError(f"segment_anything imported from {segment_anything.__file__}, not from {source}")
    trident.create_model = lambda *_, **__: open_clip.load_openai_model(str(clip_path), precision="fp32", device="cpu")
    torch.hub.load = reference.dino_factory(dino_source, dino_weights, "dino_vitb16", harness.DINO_B16_CONFIG)
    trident.sam_model_registry = reference.sam_factory(sam_weights, harness.SAM_CONFIG)
    reference.float32_halves()

    arrays: dict[str, np.ndarray] = {}
    cases = []
    lines = harness.LEADING_SYNONYM_LINES
    for case, (benchmark, seed, size, short, extra) in CASES.items():
        spec = fixture_spec(protocol, benchmark, harness.class_names(lines), short=short)
        names_file = work / f"cls_{case}.txt"
        names_file.write_text("\n".join(line.replace(", ", "; ") for line in lines) + "\n")
        settings = {**method_settings(benchmark), "logit_scale": LOGIT_SCALE, **extra}
        if spec.background.rule == "prob_thd":
            settings.setdefault("prob_thd", spec.background.value)
        image = harness.whole_image(seed, size)
        image_path = work / f"{case}.png"
        cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        inputs = resized_input(image, spec)

        reference_run = partial(run_reference, trident, names_file, settings, image_path, inputs, size)
        plain_model, plain = reference_run(refine=False)
        logits = plain_model.get_trident_seg(inputs, str(image_path), [{"ori_shape": size}])[0]
        arrays[f"{case}_dense"] = logits[:, ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        unrefined = plain.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[f"{case}_unrefined"] = unrefined
        arrays[f"{case}_ties"] = harness.decision_ties(plain.seg_logits.data, settings.get("prob_thd"))
        _, refined_sample = reference_run(refine=True)
        refined = refined_sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[f"{case}_refined"] = refined
        refined_scores = refined_sample.seg_logits.data  # R_k (0 where no mask decided), or the probabilities
        arrays[f"{case}_refined_ties"] = np.where((refined_scores.sum(dim=0) > 0).numpy(),
                                                  harness.decision_ties(refined_scores), arrays[f"{case}_ties"])
        cases.append({"case": case, "benchmark": benchmark, "seed": seed, "size": list(size), "short": short,
                      "resized": list(inputs.shape[-2:]),
                      "settings": settings, "subsample": SUBSAMPLE,
                      "classes": "LEADING_SYNONYM_LINES",
                      "reference": "get_trident_seg -> logits at the original size (dense, every 8th pixel); predict "
                                   "without and with sam_refinement -> pred_sem_seg",
                      "ties_from": "postprocess_result's seg_logits without refinement (class probabilities); "
                                   "refined_ties: its seg_logits with refinement (R_k where some R_k > 0, the "
                                   "unrefined ties elsewhere)",
                      "classes_predicted": int(len(np.unique(unrefined))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum()),
                      "refined_tie_pixels": int(arrays[f"{case}_refined_ties"].sum()),
                      "pixels_changed_by_refinement": int((refined != unrefined).sum())})

    meta = {
        "method": "trident", "repository": REPOSITORY, "commit": args.commit,
        "dino_repository": DINO_REPOSITORY, "dino_commit": args.dino_commit,
        "script": "tools/parity/make_trident.py",
        "weights": {"seed": SEED, "perturbation": harness.PERTURBATION,
                    "sha256": harness.weights_digest(weights), "keys": list(weights)},
        "dino_weights": {"seed": DINO_SEED, "perturbation": DINO_PERTURBATION, "config": harness.DINO_B16_CONFIG,
                         "sha256": harness.weights_digest(dino_weights), "keys": list(dino_weights)},
        "sam_weights": {"seed": SAM_SEED, "query_key_scale": SAM_QUERY_KEY_SCALE, "rel_pos_scale": SAM_REL_POS_SCALE,
                        "config": harness.SAM_CONFIG, "sha256": harness.weights_digest(sam_weights),
                        "keys": list(sam_weights)},
        "reference_did": REFERENCE_DID,
        "reference_quirks": [
            "postprocess_result max-pools the first n_names - n_classes + 1 probabilities into class 0: only class "
            "0 may have synonyms (true of every case here and of the published class files); with synonyms elsewhere "
            "it pools the wrong names, where the adapter (the engine) pools each class's own.",
            "sam_refinement passes the mask prompt as [1, 256, 256] (no batch dimension): the prompt encoder's "
            "LayerNorm2d then normalises over rows, not channels; the adapter passes the same shape.",
            "SAM reads the image file again (cv2.imread) while CLIP reads the resized tensor (the adapter gets the "
            "decoded file from the engine: needs_original_image).",
        ],
        "templates": "protocols/templates/imagenet80.txt",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source}) and {DINO_REPOSITORY}@{args.dino_commit}")
    for entry in cases:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes, ties {entry['tie_pixels']}, "
              f"refinement changed {entry['pixels_changed_by_refinement']} pixels")


if __name__ == "__main__":
    main()
