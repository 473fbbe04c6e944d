"""Makes tests/parity/fixtures/pearl from PEARL's own code (PGSmall/PEARL), run with mmseg stubbed.

    python tools/parity/make_pearl.py --repo /path/to/PEARL/.git [--commit c26062b]

The repository is unpacked at the commit into a temporary folder and run from there on the CPU.
Its `clip.load` builds the model with OpenAI's `build_model`, which rounds conv/linear/attention/
projection weights through fp16 (`convert_weights`) and, on the CPU, runs in float32: the fixture
weights are fp16-representable, so that rounding changes nothing and the adapter loads the same values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.protocol import load_protocol  # noqa: E402
from tests.parity import harness  # noqa: E402
from tests.parity.engine import fixture_spec, resized_input  # noqa: E402
from tools.parity import reference  # noqa: E402

REPOSITORY = "PGSmall/PEARL"
COMMIT = "c26062b"
SEED = 1  # seed 0 leaves some cases with one class predicted (reference and adapter alike)
SUBSAMPLE = 8  # dense scores are stored every 8th pixel of the crop
DEFAULT_ALPHA_KK = 0.08  # pearl_ovss.py PEARL(alpha_kk=0.08)
DEFAULT_GRID = 80  # pearl_ovss.py PEARL(grid=80)

DENSE_CASES = {  # case: (seed, crop shape, alpha_kk)
    "crops_square": (1, (224, 224), DEFAULT_ALPHA_KK),
    "crops_wide": (2, (224, 288), DEFAULT_ALPHA_KK),
    "crops_wide_alpha_0.3": (5, (224, 288), 0.3),  # cfg_ade20k.py / cfg_city_scapes.py alpha_kk=0.3
}
# case: (benchmark of the pearl protocol, class lines, image seed, original size). context59's 280 x 360 makes
# TLP pool by round(3.5) x round(4.5) = 4 x 4 (half to even); cityscapes' grid 224 pools 1 x 2.
WHOLE_CASES = {
    "whole_voc21": ("voc21", harness.BACKGROUND_CLASS_LINES, 3, (300, 420)),
    "whole_context59": ("context59", harness.CLASS_LINES, 4, (280, 360)),
    "whole_cityscapes": ("cityscapes", harness.CLASS_LINES, 6, (260, 520)),
}


def class_probabilities(logits: torch.Tensor, lines: list[str], logit_scale: float) -> torch.Tensor:
    """[C_names,H,W] logits -> [C,H,W]: softmax(logit_scale * logits) over names, max over each class's names."""
    probs = torch.softmax(logits.float() * logit_scale, dim=0)
    bounds = np.cumsum([0] + [len(names) for names in harness.class_names(lines)])
    return torch.stack([probs[a:b].amax(dim=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of the fetched repository")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "pearl")
    args = parser.parse_args()

    reference.install_stubs()
    source = reference.checkout(args.repo, args.commit)
    from pearl_ovss import PEARL  # the reference, from the checkout

    work = Path(tempfile.mkdtemp(prefix="parity-pearl-"))
    weights = harness.random_openai_clip(SEED)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    protocol = load_protocol("pearl")
    arrays: dict[str, np.ndarray] = {}
    cases = []

    # Dense scores of crops: square and non-square, names with synonyms; raw cosines upsampled to the crop.
    names_file = work / "cls_plain.txt"
    names_file.write_text("\n".join(harness.CLASS_LINES) + "\n")
    for case, (seed, shape, alpha_kk) in DENSE_CASES.items():
        segmentor = PEARL(str(clip_path), str(names_file), device="cpu", alpha_kk=alpha_kk)
        crops = harness.crop_batch(seed, shape)
        logits = segmentor.forward_feature(crops).float()
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        cases.append({"case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": crops.shape[0],
                      "classes": "CLASS_LINES", "subsample": SUBSAMPLE, "alpha_kk": alpha_kk,
                      "reference": "PEARL.forward_feature(crops): cosines, bilinear to the crop",
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})

    # Whole images through the reference's predict (slide or whole, bilinear to the original size, TLP,
    # postprocess), from the engine's resize.
    for case, (benchmark, lines, seed, size) in WHOLE_CASES.items():
        spec = fixture_spec(protocol, benchmark, harness.class_names(lines), short=224)
        names_file = work / f"cls_{case}.txt"
        names_file.write_text("\n".join(lines) + "\n")
        method_settings = spec.method_settings
        settings = {
            "logit_scale": method_settings["logit_scale"],
            "alpha_kk": method_settings.get("alpha_kk", DEFAULT_ALPHA_KK),
            "grid": method_settings.get("propagation_grid", DEFAULT_GRID),
            "slide_crop": 0 if spec.inference.mode == "whole" else spec.inference.crop,
            "slide_stride": spec.inference.stride or 112,
        }
        threshold = spec.background.value if spec.background.rule == "prob_thd" else None
        if threshold is not None:
            settings["prob_thd"] = threshold
        segmentor = PEARL(str(clip_path), str(names_file), device="cpu", **settings)
        final_logits = []
        postprocess = segmentor.postprocess_result

        def capture(seg_logits, data_samples, postprocess=postprocess, final_logits=final_logits):
            final_logits.append(seg_logits.clone())  # after TLP, before softmax: the reference's final scores
            return postprocess(seg_logits, data_samples)

        segmentor.postprocess_result = capture
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        sample = segmentor.predict(inputs, [reference.sample(size)])[0]
        prediction = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        probs = class_probabilities(final_logits[0][0], lines, settings["logit_scale"])
        arrays[case] = prediction
        arrays[f"{case}_ties"] = harness.decision_ties(probs, threshold)
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": 224, "settings": settings,
                      "inference": spec.inference.mode,
                      "reference": "PEARL.predict(resized image) -> pred_sem_seg (TLP on, use_prop='on')",
                      "ties_from": "softmax(logit_scale * postprocess_result's input), max over each class's names",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})

    meta = {
        "method": "pearl", "repository": REPOSITORY, "commit": args.commit,
        "script": "tools/parity/make_pearl.py",
        "weights": {"seed": SEED, "perturbation": harness.PERTURBATION,
                    "sha256": harness.weights_digest(weights), "keys": list(weights)},
        "reference_did": (
            "clip.load(state dict file, device='cpu', jit=False): build_model + convert_weights (fp16 rounding of "
            "conv/linear/attention/projection weights; the fixture weights are fp16-representable, so the rounding "
            "is exact), then model.float(): float32 on the CPU. PEARL(arch='reduced', attn_strategy='pearl', "
            "use_kk=True, align_solver='polar', polar_iters=5, use_prop='on'): encode_image(return_all=True) with "
            "the last block = custom_attn -> pearl/attn.py pa_attn (float32) alone. Text: the repository's 80 "
            "ImageNet templates, each embedding normalised, mean, normalised. Whole images: the engine's resize and "
            "normalisation (mmcv's equal) feed predict(); the reference's slide (or whole-image, slide_crop=0) "
            "inference, bilinear resize to the original size, pearl/prop.py TLP(grid) on the cosines with the input "
            "resized bilinearly to that size, softmax(logit_scale * logits), synonyms max, prob_thd."
        ),
        "reference_quirks": [
            "pearl/prop.py applies the text affinity S with einsum('cc,bcij->bcij', S, probs), which reads only "
            "S's diagonal: TLP's agreement and edge gains use S_kk alone. The adapter computes the same.",
            "TLP's pooling factor is Python's round(H / grid) (half to even): 280 / 80 -> 4, 360 / 80 -> 4.",
            "Non-square crops (224 x 288) and whole images (224 x 314) run through pa_attn and TLP without error: "
            "neither assumes a square token grid.",
        ],
        "templates": "protocols/templates/imagenet80.txt",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source})")
    for entry in cases:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted, ties {entry.get('tie_pixels')}")


if __name__ == "__main__":
    main()
