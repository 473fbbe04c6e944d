"""Makes tests/parity/fixtures/proxyclip from ProxyCLIP's own code (mc-lan/ProxyCLIP), run with mmseg stubbed.

    python tools/parity/make_proxyclip.py --repo /path/to/ProxyCLIP/.git --dino-repo /path/to/dino/.git

Both repositories are unpacked at their commits into temporary folders and run from there on the CPU, ProxyCLIP
with its own open_clip copy (open_clip/). `ProxyCLIPSegmentation.__init__` builds CLIP with
`create_model('ViT-B/16', pretrained='openai', precision='fp16')` and DINO with
`torch.hub.load('facebookresearch/dino:main', 'dino_vitb8')`, both downloads; here the segmentor module's
`create_model` is the repository's own `open_clip.load_openai_model(<state-dict file>, precision='fp32')` (what
create_model calls for pretrained='openai'; its fp16 rounding of weights is exact on the fixture's
fp16-representable weights) and `torch.hub.load` builds DINO's own `vision_transformer.VisionTransformer` (from the
DINO checkout: patch 8, the fixture's width and depth) with the fixture's random DINO weights. The segmentor's
`.half()` casts (VFM, its inputs, CLIP's input) are made no-ops, so the reference runs float32, as the adapter.
Imports no CLIP+DINO run reaches (segment_anything, the MAE model, openpyxl, einops) are stubbed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.protocol import load_protocol  # noqa: E402
from tests.parity import harness  # noqa: E402
from tests.parity.engine import fixture_spec, resized_input  # noqa: E402
from tools.parity import reference  # noqa: E402

REPOSITORY = "mc-lan/ProxyCLIP"
COMMIT = "e7b767f"
DINO_REPOSITORY = "facebookresearch/dino"
DINO_COMMIT = "7c446df"
SEED = 3
DINO_SEED = 4
DINO_PERTURBATION = 0.5
SAM_SEED = 2  # mean affinity ~0.65 < 1 / beta on the fixture's crops (seeds 1 and 3 come near 0.8)
SUBSAMPLE = 8

# case: (seed, crop shape); every crop runs alone (batch 1), as forward_slide runs them. crops_padded: a 200 x 200
# window, padded to 224 x 224 around its centre (compute_padsize with 56) and cut back.
DENSE_CASES = {"crops_224": (1, (224, 224)), "crops_336": (2, (336, 336)), "crops_padded": (5, (200, 200)),
               "crops_224_sam": (1, (224, 224))}
# case: (benchmark of the proxyclip protocol, class lines, image seed, original size, short side)
WHOLE_CASES = {
    "whole_voc21": ("voc21", harness.BACKGROUND_CLASS_LINES, 3, (300, 420), 336),
    "whole_context59": ("context59", harness.CLASS_LINES, 4, (260, 380), 336),
    "whole_cityscapes": ("cityscapes", harness.CLASS_LINES, 6, (240, 480), 448),
    "whole_context59_sam": ("context59", harness.CLASS_LINES, 4, (260, 380), 336),
}

REFERENCE_DID = (
    "proxyclip_segmentor.create_model replaced by the repository's open_clip.load_openai_model(state-dict file, "
    "precision='fp32', device='cpu') (create_model's path for pretrained='openai', there with precision 'fp16'; "
    "its fp16 rounding of conv/linear/attention/projection weights is exact on the fixture weights); "
    "sam_model_registry['vit_b'] (cases *_sam, vfm_model='sam') replaced by segment-anything's own _build_sam at the "
    "fixture's encoder size (32 wide, 2 heads, 2 blocks, global attention in block 1) with the fixture's random SAM "
    "weights (strict): the image encoder's output on the crop resized to 1024 x 1024. "
    "torch.hub.load('facebookresearch/dino:main', 'dino_vitb8') replaced by DINO's own vision_transformer."
    "VisionTransformer(patch_size=8, embed_dim=64, depth=2, num_heads=2, qkv_bias=True, LayerNorm eps 1e-6, "
    "num_classes=0) from facebookresearch/dino@7c446df with the fixture's random DINO weights (strict load); "
    "torch.Tensor.half and nn.Module.half made no-ops, so CLIP, DINO and their inputs stay float32. "
    "vfm_model='dino', beta 1.2, gamma 3.0. Dense: forward_feature(crop) one crop at a time (cosines on the DINO "
    "grid, bilinear to the crop); crops_padded: forward_slide with one window the size of the crop (centre "
    "padding to 56, scores cut back). Whole images: the engine's resize and normalisation (mmcv's equal) feed "
    "predict (forward_slide with slide_crop/slide_stride of the protocol's benchmark, bilinear to the original "
    "size, postprocess_result: softmax(40 x logits), synonyms max, prob_thd). Text: prompts/imagenet_template.py "
    "openai_imagenet_template (80), each embedding normalised, mean, normalised."
)


def stub_unreached_imports() -> None:
    for name in ("mae", "mae.models_vit", "mae.pos_embed", "openpyxl", "einops"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["mae.pos_embed"].interpolate_pos_embed = None
    sys.modules["mae"].models_vit = sys.modules["mae.models_vit"]
    sys.modules["einops"].rearrange = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of mc-lan/ProxyCLIP")
    parser.add_argument("--dino-repo", type=Path, required=True, help="git directory of facebookresearch/dino")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--dino-commit", default=DINO_COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "proxyclip")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parity-proxyclip-"))
    weights = harness.random_openai_clip(SEED)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    dino_weights = harness.random_dino(DINO_SEED, DINO_PERTURBATION)
    sam_weights = harness.random_sam(SAM_SEED)
    protocol = load_protocol("proxyclip")

    reference.install_stubs()
    stub_unreached_imports()
    dino_source = reference.checkout(args.dino_repo, args.dino_commit)
    source = reference.checkout(args.repo, args.commit)
    open_clip = reference.own_open_clip(source)
    import proxyclip_segmentor  # the reference, from the checkout

    proxyclip_segmentor.create_model = lambda *_, **__: open_clip.load_openai_model(
        str(clip_path), precision="fp32", device="cpu")
    torch.hub.load = reference.dino_factory(dino_source, dino_weights, "dino_vitb8", harness.DINO_CONFIG)
    proxyclip_segmentor.sam_model_registry = reference.sam_factory(sam_weights, harness.SAM_CONFIG)
    reference.float32_halves()

    def segmentor(names_file: Path, vfm: str = "dino", **settings: Any):
        return proxyclip_segmentor.ProxyCLIPSegmentation("openai", "ViT-B/16", vfm, str(names_file),
                                                         device="cpu", **settings)

    arrays: dict[str, np.ndarray] = {}
    cases = []
    names_file = work / "cls_plain.txt"
    names_file.write_text("\n".join(line.replace(", ", "; ") for line in harness.CLASS_LINES) + "\n")
    plain = {"dino": segmentor(names_file), "sam": segmentor(names_file, "sam")}
    for case, (seed, shape) in DENSE_CASES.items():
        vfm = "sam" if case.endswith("_sam") else "dino"
        crops = harness.crop_batch(seed, shape)
        if shape[0] % 56 or shape[1] % 56:
            logits = torch.cat([plain[vfm].forward_slide(crop[None], [{"ori_shape": shape}], stride=shape,
                                                         crop_size=shape) for crop in crops])
            how = "forward_slide(crop, one window of the crop's size): centre padding to 56, scores cut back"
        else:
            logits = torch.cat([plain[vfm].forward_feature(crop[None]) for crop in crops])
            how = "forward_feature(crop): cosines on the DINO grid, bilinear to the crop"
        logits = logits.float()
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        cases.append({"case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": crops.shape[0],
                      "classes": "CLASS_LINES", "subsample": SUBSAMPLE, "reference": how, "vfm": vfm,
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})

    for case, (benchmark, lines, seed, size, short) in WHOLE_CASES.items():
        spec = fixture_spec(protocol, benchmark, harness.class_names(lines), short=short)
        names_file = work / f"cls_{case}.txt"
        names_file.write_text("\n".join(line.replace(", ", "; ") for line in lines) + "\n")
        settings: dict[str, Any] = {"logit_scale": spec.method_settings["logit_scale"],
                                    "slide_crop": spec.inference.crop, "slide_stride": spec.inference.stride}
        if spec.background.rule == "prob_thd":
            settings["prob_thd"] = spec.background.value
        vfm = "sam" if case.endswith("_sam") else "dino"
        model = segmentor(names_file, vfm, **settings)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        sample = model.predict(inputs, [reference.sample(size)])[0]
        prediction = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[case] = prediction
        arrays[f"{case}_ties"] = harness.decision_ties(sample.seg_logits.data, settings.get("prob_thd"))
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": short, "settings": settings, "vfm": vfm,
                      "reference": "ProxyCLIPSegmentation.predict(resized image) -> pred_sem_seg",
                      "ties_from": "postprocess_result's seg_logits (class probabilities)",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})

    meta = {
        "method": "proxyclip", "repository": REPOSITORY, "commit": args.commit,
        "dino_repository": DINO_REPOSITORY, "dino_commit": args.dino_commit,
        "script": "tools/parity/make_proxyclip.py",
        "weights": {"seed": SEED, "perturbation": harness.PERTURBATION,
                    "sha256": harness.weights_digest(weights), "keys": list(weights)},
        "dino_weights": {"seed": DINO_SEED, "perturbation": DINO_PERTURBATION, "config": harness.DINO_CONFIG,
                         "sha256": harness.weights_digest(dino_weights), "keys": list(dino_weights)},
        "sam_weights": {"seed": SAM_SEED, "perturbation": harness.PERTURBATION, "config": harness.SAM_CONFIG,
                        "sha256": harness.weights_digest(sam_weights), "keys": list(sam_weights)},
        "reference_did": REFERENCE_DID,
        "reference_quirks": [
            "custom_attn takes mean(S) over its whole batch tensor; the reference runs one crop at a time, so it is "
            "each crop's own mean (the adapter takes it per crop).",
            "forward_feature reshapes DINO's tokens to a square grid (both sides from the height) and CLIP's values "
            "with the grid's sides swapped: only square crops run, as every case here.",
        ],
        "templates": "protocols/templates/imagenet80.txt",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source}) and {DINO_REPOSITORY}@{args.dino_commit}")
    for entry in cases:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted, ties {entry.get('tie_pixels')}")


if __name__ == "__main__":
    main()
