"""Makes tests/parity/fixtures/scclip from SC-CLIP's own code (SuleBai/SC-CLIP), run with mmseg stubbed.

    python tools/parity/make_scclip.py --repo /path/to/SC-CLIP/.git [--commit 0417ba9]

The repository is unpacked at the commit into a temporary folder and run from there on the CPU.
Its `clip.load` builds the model with OpenAI's `build_model`, which rounds conv/linear/attention/
projection weights through fp16 (`convert_weights`) and, on the CPU, runs in float32: the fixture
weights are fp16-representable, so that rounding changes nothing and the adapter loads the same values.

The fixture CLIP has 3 blocks (2 mid-layer outputs), too few for the repository's ViT-B/16 layer
indices (configs/base_config.py: 8, 3, 3, 10), so both sides get LAYERS through the segmentor's own
constructor arguments. The reference slides one crop at a time (its outlier search and similarity
prior assume a batch of one), so dense crops go through it one by one; what it does on a batch of two
and on non-square crops is recorded, and for non-square crops the fixture also holds the reference
with its outlier positions mapped to the token grid (row-major over the grid's columns), the adapter's
decided behaviour (methods/scclip.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.protocol import load_protocol  # noqa: E402
from tests.parity import harness  # noqa: E402
from tests.parity.engine import fixture_spec, resized_input  # noqa: E402
from tools.parity import reference  # noqa: E402

REPOSITORY = "SuleBai/SC-CLIP"
COMMIT = "0417ba9"
SEED = 1
# LayerNorm/bias perturbation: harness.PERTURBATION (0.5) leaves the SC-CLIP aggregation one class on these crops.
PERTURBATION = 0.2
SUBSAMPLE = 8  # dense scores are stored every 8th pixel of the crop
# SCCLIPForSegmentation's layer arguments for the fixture's 3-block CLIP (feats_list holds 2 outputs).
LAYERS = {"pre_adjust_idx": 1, "post_adjust_idx": 0, "multi_start_idx": 0, "multi_end_idx": 2, "res_cls": 0.3}
DENSE_CASES = {"crops_square": (1, (224, 224)), "crops_wide": (2, (224, 288)), "crops_tall": (5, (288, 224))}


def grid_positions(mean_interpolation):
    """The reference's mean_interpolation with each outlier moved to its token's (row, col).

    forward() hands it (k // rows, k % rows) for token k of a grid stored row-major over `cols` columns;
    k = row * rows + col undoes that, and (k // cols, k % cols) is the token's place. Identity on square grids.
    """

    def remapped(feature_map, top_indices):
        rows, cols = feature_map.shape[-2:]
        tokens = [int(row) * rows + int(col) for row, col in top_indices]
        return mean_interpolation(feature_map, [(token // cols, token % cols) for token in tokens])

    return remapped


def dense_scores(segmentor, crops: torch.Tensor) -> torch.Tensor:
    """forward_feature one crop at a time, as forward_slide calls it."""
    return torch.cat([segmentor.forward_feature(crop[None]).float() for crop in crops])


def error_text(call) -> str | None:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - recorded in meta.json, whatever it is
        frame = traceback.extract_tb(error.__traceback__)[-1]
        return f"{type(error).__name__}: {error} ({Path(frame.filename).name}:{frame.lineno} {frame.line})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of the fetched repository")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "scclip")
    args = parser.parse_args()

    reference.install_stubs()
    source = reference.checkout(args.repo, args.commit)
    from scclip_segmentor import SCCLIPForSegmentation  # the reference, from the checkout

    work = Path(tempfile.mkdtemp(prefix="parity-scclip-"))
    weights = harness.random_openai_clip(SEED, PERTURBATION)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    protocol = load_protocol("scclip")
    arrays: dict[str, np.ndarray] = {}
    cases = []

    # Dense scores of crops: square and non-square, names with synonyms; raw cosines upsampled to the crop.
    names_file = work / "cls_plain.txt"
    names_file.write_text("\n".join(harness.CLASS_LINES) + "\n")
    segmentor = SCCLIPForSegmentation(str(clip_path), str(names_file), device="cpu", **LAYERS)
    visual = segmentor.net.visual
    own_interpolation = visual.mean_interpolation
    for case, (seed, shape) in DENSE_CASES.items():
        crops = harness.crop_batch(seed, shape)
        entry = {"case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": crops.shape[0],
                 "classes": "CLASS_LINES", "subsample": SUBSAMPLE, "layers": LAYERS,
                 "reference": "SCCLIPForSegmentation.forward_feature(crop) per crop: cosines, bilinear to the crop"}
        square = shape[0] == shape[1]
        if not square:
            entry["reference_as_is"] = error_text(lambda crops=crops: dense_scores(segmentor, crops)) or "ran"
            if entry["reference_as_is"] == "ran":
                entry["reference_as_is_max_diff_to_grid_positions"] = None  # filled below
            visual.mean_interpolation = grid_positions(own_interpolation)
            entry["reference"] += ("; mean_interpolation wrapped by grid_positions (outlier k at (k // cols, k % cols)"
                                   ", the adapter's decision)")
        logits = dense_scores(segmentor, crops)
        if not square and entry["reference_as_is"] == "ran":
            visual.mean_interpolation = own_interpolation
            entry["reference_as_is_max_diff_to_grid_positions"] = float(
                (dense_scores(segmentor, crops) - logits).abs().max())
        visual.mean_interpolation = own_interpolation
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        entry["classes_predicted"] = int(len(np.unique(logits.argmax(1).numpy())))
        if square:
            batched = error_text(lambda crops=crops: segmentor.forward_feature(crops))
            if batched is None:
                difference = (segmentor.forward_feature(crops).float() - logits).abs().max()
                batched = f"ran; max abs difference to one crop at a time: {float(difference):.3g}"
            entry["reference_on_a_batch_of_two"] = batched
        cases.append(entry)

    # Whole images through the reference's predict (slide 224/112, postprocess), from the engine's resize.
    for case, (benchmark, lines, seed, size) in {
        "whole_voc21": ("voc21", harness.BACKGROUND_CLASS_LINES, 3, (300, 420)),
        "whole_context59": ("context59", harness.CLASS_LINES, 4, (260, 230)),
    }.items():
        spec = fixture_spec(protocol, benchmark, harness.class_names(lines), short=224)
        names_file = work / f"cls_{case}.txt"
        names_file.write_text("\n".join(lines) + "\n")
        settings = {"logit_scale": spec.method_settings.get("logit_scale", 40.0)}
        if spec.background.rule == "prob_thd":
            settings.update(prob_thd=spec.background.value, area_thd=spec.background.area_thd)
        segmentor = SCCLIPForSegmentation(str(clip_path), str(names_file), device="cpu", slide_crop=224,
                                          slide_stride=112, **LAYERS, **settings)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        sample = segmentor.predict(inputs, [reference.sample(size)])[0]
        prediction = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[case] = prediction
        arrays[f"{case}_ties"] = harness.decision_ties(sample.seg_logits.data, settings.get("prob_thd"))
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": 224, "settings": settings, "layers": LAYERS,
                      "reference": "SCCLIPForSegmentation.predict(resized image) -> pred_sem_seg",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})

    meta = {
        "method": "scclip", "repository": REPOSITORY, "commit": args.commit,
        "script": "tools/parity/make_scclip.py",
        "weights": {"seed": SEED, "perturbation": PERTURBATION,
                    "sha256": harness.weights_digest(weights), "keys": list(weights)},
        "reference_did": (
            "clip.load(state dict file, device='cpu', jit=False): build_model + convert_weights (fp16 rounding of "
            "conv/linear/attention/projection weights; the fixture weights are fp16-representable, so the rounding "
            "is exact), then model.float(): float32 on the CPU. SCCLIPForSegmentation(**layers): "
            "encode_image(return_all=True) through clip/model.py VisionTransformer.forward (lof_pytorch 30 "
            "neighbours / 5% contamination, mean_interpolation, adaptively_aggregate with beta 0.4, custom_attn), "
            "nn.MultiheadAttention in the blocks before the last. Dense crops one at a time through forward_feature. "
            "Text: the repository's 80 ImageNet templates, each embedding normalised, mean, normalised. Whole "
            "images: the engine's resize and normalisation (mmcv's equal) feed predict(); the reference's slide "
            "inference (224/112, one crop at a time), bilinear resize to the original size, "
            "softmax(logit_scale * logits), max over synonyms, area_thd, prob_thd."
        ),
        "templates": "protocols/templates/imagenet80.txt",
        "torch": torch.__version__,
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source})")
    for entry in cases:
        extra = {key: entry[key] for key in ("reference_as_is", "reference_as_is_max_diff_to_grid_positions",
                                             "reference_on_a_batch_of_two", "tie_pixels") if key in entry}
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted {extra}")


if __name__ == "__main__":
    main()
