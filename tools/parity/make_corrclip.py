"""Makes tests/parity/fixtures/corrclip from CorrCLIP's own code (zdk258/CorrCLIP), run with mmseg stubbed: the dense
scores of single crops with given region maps (the tower: `forward_feature(crop, masks)`), and whole images through
`predict` with region maps read from .npz files as the authors' pre-generated masks are (map correction included).

    python tools/parity/make_corrclip.py --repo /path/to/CorrCLIP/.git --dino-repo /path/to/dino/.git

Needs scikit-learn (open_clip/transformer.py imports sklearn's DBSCAN).

Both repositories are unpacked at their commits into temporary folders and run from there on the CPU, CorrCLIP with
its own open_clip copy. `CorrCLIPSegmentation.__init__` builds CLIP with `create_model('ViT-B-16-quickgelu',
pretrained='metaclip_fullcc', precision='fp16')` and DINO with `torch.hub.load('facebookresearch/dino:main',
'dino_vitb8')`; here `create_model` is the repository's own `open_clip.load_openai_model(<state-dict file>,
precision='fp32')` (QuickGELU, as ViT-B-16-quickgelu) on a 6-block fixture CLIP (WEIGHTS), and `torch.hub.load`
builds DINO's own `vision_transformer.VisionTransformer` (patch 8, the fixture's width and depth) with the fixture's
random DINO weights. `.half()` casts are no-ops (float32 throughout). `transformers`
(imported for the Mask2Former generator) and `openpyxl` are stubbed; the mask generators are not used: the region
maps are given.
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

REPOSITORY = "zdk258/CorrCLIP"
COMMIT = "181ad57"
DINO_REPOSITORY = "facebookresearch/dino"
DINO_COMMIT = "7c446df"
SEED = 12
# harness.sharpened_deep_clip: 6 blocks (the spatial branch averages num_layers - 4 = 2 below 12 layers; the usual 3
# leave it none, which the reference cannot run), attention kept sharp so that crops do not predict one class.
WEIGHTS = {"vision_layers": 6, "perturbation": 0.5, "query_key_scale": 4.0, "last_out_proj_scale": 64.0}
# Whole images at logit scale 100 (the protocol's 40 leaves the fixture's probabilities near 1 / n_classes, below
# VOC21's prob_thd everywhere).
LOGIT_SCALE = 100.0
DINO_SEED = 4
DINO_PERTURBATION = 0.0  # no bias offsets: the regions' mean DINO features differ enough to merge into several groups
SUBSAMPLE = 8

# case: (crop seed, crop shape, region-map seed, regions drawn, share of the crop left unsegmented)
CASES = {
    "crops_336_regions": (2, (336, 336), 11, 6, 0.2),
    "crops_224_regions": (1, (224, 224), 12, 4, 0.3),
    "crops_224_two_regions": (5, (224, 224), 13, 1, 0.4),  # one segment and the unsegmented area: no merging
    "crops_336_all_segmented": (6, (336, 336), 14, 5, 0.0),  # the smallest segment plays the unsegmented area
}
# case: (benchmark of the corrclip protocol, image seed, original size, region-map seed, regions, unsegmented share)
WHOLE_CASES = {
    "whole_voc21": ("voc21", 3, (300, 420), 21, 8, 0.2),
    "whole_context59": ("context59", 4, (260, 380), 22, 6, 0.3),
    "whole_cityscapes": ("cityscapes", 6, (240, 480), 23, 10, 0.1),  # 224 px windows
}

REFERENCE_DID = (
    "corrclip_segmentor.create_model replaced by the repository's open_clip.load_openai_model(state-dict file, "
    "precision='fp32', device='cpu') on the fixture CLIP with 6 vision blocks (harness.sharpened_deep_clip; QuickGELU, "
    "as ViT-B-16-quickgelu); "
    "torch.hub.load('facebookresearch/dino:main', 'dino_vitb8') replaced by DINO's own vision_transformer."
    "VisionTransformer(patch_size=8, embed_dim=64, depth=2, num_heads=2, qkv_bias=True, LayerNorm eps 1e-6, "
    "num_classes=0) from facebookresearch/dino@7c446df with the fixture's random DINO weights (strict); "
    "logit_scale 100 for the whole images. torch.Tensor.half and nn.Module.half made no-ops, so CLIP, DINO and their "
    "inputs stay float32; transformers and openpyxl stubbed (unused). "
    "Per crop: forward_feature(crop[None], region_map[None, None]) -> cosines against the "
    "name embeddings on the DINO grid, bilinear to the crop (every 8th pixel stored). Whole images: the engine's "
    "resize and normalisation (mmcv's equal) feed predict with instance_mask_path a folder holding <stem>.npz "
    "(key instance_mask, the region map at the original size, as the authors' pre-generated masks), slide_crop / "
    "slide_stride and prob_thd of the protocol's benchmark: forward_slide, postprocess_result (softmax(40 x logits), "
    "background names max, prob_thd, map correction) -> pred_sem_seg; ties from its seg_logit. Text: "
    "prompts/imagenet_template.py openai_imagenet_template (80), each embedding normalised, mean, normalised."
)


def region_map(seed: int, shape: tuple[int, int], regions: int, unsegmented: float) -> np.ndarray:
    """[h, w] int32 region ids of blob-shaped regions 1..regions, 0 where unsegmented (a share of the crop)."""
    generator = np.random.default_rng(seed)
    coarse = generator.random((regions + 1, max(2, shape[0] // 48), max(2, shape[1] // 48)))
    fields = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None], size=shape, mode="bilinear",
                                             align_corners=False)[0].numpy()
    ids = fields[1:].argmax(axis=0).astype(np.int32) + 1
    if unsegmented > 0:
        ids[fields[0] < np.quantile(fields[0], unsegmented)] = 0
    return ids


def spec_short(protocol: Any, benchmark: str) -> int:
    """The protocol's short side for a benchmark (the fixture keeps it)."""
    return protocol.benchmarks[benchmark].image.resize_short


def stub_unreached_imports() -> None:
    sys.modules["openpyxl"] = types.ModuleType("openpyxl")
    transformers = types.ModuleType("transformers")
    transformers.AutoImageProcessor = transformers.Mask2FormerForUniversalSegmentation = None
    sys.modules["transformers"] = transformers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of zdk258/CorrCLIP")
    parser.add_argument("--dino-repo", type=Path, required=True, help="git directory of facebookresearch/dino")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--dino-commit", default=DINO_COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "corrclip")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parity-corrclip-"))
    weights = harness.sharpened_deep_clip(SEED, **WEIGHTS)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    dino_weights = harness.random_dino(DINO_SEED, DINO_PERTURBATION)

    reference.install_stubs()
    stub_unreached_imports()
    dino_source = reference.checkout(args.dino_repo, args.dino_commit)
    source = reference.checkout(args.repo, args.commit)
    open_clip = reference.own_open_clip(source)
    import corrclip_segmentor  # the reference, from the checkout

    corrclip_segmentor.create_model = lambda *_, **__: open_clip.load_openai_model(
        str(clip_path), precision="fp32", device="cpu")
    torch.hub.load = reference.dino_factory(dino_source, dino_weights, "dino_vitb8", harness.DINO_CONFIG)
    reference.float32_halves()

    names_file = work / "cls_plain.txt"
    names_file.write_text("\n".join(line.replace(", ", "; ") for line in harness.CLASS_LINES) + "\n")
    model = corrclip_segmentor.CorrCLIPSegmentation("metaclip_fullcc", "ViT-B-16-quickgelu", "dino_vitb8",
                                                    str(names_file), device="cpu")
    arrays: dict[str, np.ndarray] = {}
    cases = []
    for case, (seed, shape, map_seed, regions, unsegmented) in CASES.items():
        crops = harness.crop_batch(seed, shape)
        maps = [region_map(map_seed + number, shape, regions, unsegmented) for number in range(len(crops))]
        logits = torch.cat([model.forward_feature(crop[None], torch.from_numpy(ids)[None, None])
                            for crop, ids in zip(crops, maps, strict=True)]).float()
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        arrays[f"{case}_regions"] = np.stack(maps).astype(np.int16)
        cases.append({"case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": len(crops),
                      "classes": "CLASS_LINES", "subsample": SUBSAMPLE, "regions": regions,
                      "unsegmented": unsegmented, "region_seed": map_seed,
                      "reference": "forward_feature(crop, region map): cosines on the DINO grid, bilinear to the crop",
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})

    protocol = load_protocol("corrclip")
    lines = harness.LEADING_SYNONYM_LINES  # the reference max-pools background names only (class 0)
    whole_names = work / "cls_whole.txt"
    whole_names.write_text("\n".join(line.replace(", ", "; ") for line in lines) + "\n")
    for case, (benchmark, seed, size, map_seed, regions, unsegmented) in WHOLE_CASES.items():
        spec = fixture_spec(protocol, benchmark, harness.class_names(lines), short=spec_short(protocol, benchmark))
        settings: dict[str, Any] = {"logit_scale": LOGIT_SCALE,
                                    "slide_crop": spec.inference.crop, "slide_stride": spec.inference.stride}
        if spec.background.rule == "prob_thd":
            settings["prob_thd"] = spec.background.value
        masks = work / case
        masks.mkdir()
        ids = region_map(map_seed, size, regions, unsegmented)
        np.savez_compressed(masks / "image.npz", instance_mask=ids)
        segmentor = corrclip_segmentor.CorrCLIPSegmentation(
            "metaclip_fullcc", "ViT-B-16-quickgelu", "dino_vitb8", str(whole_names), device="cpu",
            instance_mask_path=str(masks), **settings)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        sample = reference.sample(size)
        sample.img_path = str(masks / "image.png")  # generate_mask reads <instance_mask_path>/<stem>.npz
        result = segmentor.predict(inputs, [sample])[0]
        prediction = result.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[case] = prediction
        arrays[f"{case}_regions"] = ids.astype(np.int16)
        arrays[f"{case}_ties"] = harness.decision_ties(result.seg_logit.data, settings.get("prob_thd"))
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "settings": settings, "region_seed": map_seed,
                      "regions": regions, "unsegmented": unsegmented, "classes": "LEADING_SYNONYM_LINES",
                      "reference": "CorrCLIPSegmentation.predict(resized image), region map from <stem>.npz",
                      "ties_from": "postprocess_result's seg_logit (class probabilities, before map correction)",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})

    meta = {
        "method": "corrclip", "repository": REPOSITORY, "commit": args.commit,
        "dino_repository": DINO_REPOSITORY, "dino_commit": args.dino_commit,
        "script": "tools/parity/make_corrclip.py",
        "weights": {"seed": SEED, **WEIGHTS, "sha256": harness.weights_digest(weights), "keys": list(weights),
                    "recipe": "tests/parity/harness.py sharpened_deep_clip(seed, vision_layers, perturbation, "
                              "query_key_scale, last_out_proj_scale)"},
        "dino_weights": {"seed": DINO_SEED, "perturbation": DINO_PERTURBATION, "config": harness.DINO_CONFIG,
                         "sha256": harness.weights_digest(dino_weights), "keys": list(dino_weights)},
        "reference_did": REFERENCE_DID,
        "templates": "protocols/templates/imagenet80.txt",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source}) and {DINO_REPOSITORY}@{args.dino_commit}")
    for entry in cases:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted, ties {entry.get('tie_pixels')}")


if __name__ == "__main__":
    main()
