"""Makes tests/parity/fixtures/naclip from NACLIP's own code (sinahmr/NACLIP), run with mmseg stubbed.

    python tools/parity/make_naclip.py --repo /path/to/NACLIP/.git [--commit 0cac3a6]

The repository is unpacked at the commit into a temporary folder and run from there on the CPU.
Its `clip.load` builds the model with OpenAI's `build_model`, which rounds conv/linear/attention/
projection weights through fp16 (`convert_weights`) and, on the CPU, runs in float32: the fixture
weights are fp16-representable, so that rounding changes nothing and the adapter loads the same values.

`postprocess_result` stores the class probabilities divided by their sum over classes (after the
prob_thd decision), so the pixels where the reference's decision is a tie are found on the
probabilities it decided on: softmax(logit_scale * logits) over the names, max over each class's names,
computed here from the logits `predict` handed to `postprocess_result`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.protocol import load_protocol  # noqa: E402
from methods.clip_baseline import baseline_defaults  # noqa: E402
from tests.parity import harness  # noqa: E402
from tests.parity.engine import fixture_spec, resized_input  # noqa: E402
from tools.parity import reference  # noqa: E402

REPOSITORY = "sinahmr/NACLIP"
COMMIT = "0cac3a6"
# The harness's seed 0 at perturbation 0.5 leaves NACLIP's attention-only features predicting one class
# almost everywhere; seed 5 at 0.25 (as the ClearCLIP fixtures) predicts several (classes_predicted in meta.json).
SEED = 5
PERTURBATION = 0.25
SUBSAMPLE = 8  # dense scores are stored every 8th pixel of the crop

# case -> (image seed, crop shape). crops_dropped is not a multiple of 16: the patch convolution drops the rest.
DENSE_CASES = {"crops_square": (1, (224, 224)), "crops_wide": (2, (224, 288)), "crops_dropped": (5, (200, 300))}
# case -> (benchmark, class lines, image seed, original size, resize short side, PAMR on). voc21 runs the whole
# resized image through forward_feature (cfg_voc21.py slide_crop=0), context59 slides 224/112 windows.
WHOLE_CASES = {
    "whole_voc21": ("voc21", harness.BACKGROUND_CLASS_LINES, 3, (300, 420), 224, True),
    "whole_context59": ("context59", harness.CLASS_LINES, 4, (260, 230), 336, True),
    "whole_voc21_nopamr": ("voc21", harness.BACKGROUND_CLASS_LINES, 3, (300, 420), 224, False),
    "whole_context59_nopamr": ("context59", harness.CLASS_LINES, 4, (260, 230), 336, False),
}


def class_probabilities(logits: torch.Tensor, logit_scale: float, query_idx: torch.Tensor) -> torch.Tensor:
    """[C, H, W]: softmax over the names [N, H, W] of the scaled logits, max over each class's names."""
    probs = torch.softmax(logits * logit_scale, dim=0)
    return torch.stack([probs[query_idx == index].max(0).values for index in range(int(query_idx.max()) + 1)])


def keep_handed_logits(segmentor: Any) -> dict[str, torch.Tensor]:
    """Wraps the segmentor's postprocess_result so that the logits predict hands it are kept (key 'logits')."""
    handed: dict[str, torch.Tensor] = {}
    postprocess = segmentor.postprocess_result

    def keep(logits: torch.Tensor, samples: Any) -> Any:
        handed["logits"] = logits
        return postprocess(logits, samples)

    segmentor.postprocess_result = keep
    return handed


def protocol_settings(spec, pamr: bool) -> dict[str, Any]:
    """NACLIP's constructor arguments for the benchmark, from the protocol (and the method's gaussian_std)."""
    settings: dict[str, Any] = {
        "logit_scale": spec.method_settings["logit_scale"],
        "gaussian_std": float(baseline_defaults("naclip")["gaussian_std"]),
        "slide_crop": spec.inference.crop if spec.inference.mode == "slide" else 0,
        "slide_stride": spec.inference.stride if spec.inference.mode == "slide" else 112,
    }
    refinement = spec.method_settings["pamr"] if pamr else None
    settings["pamr_steps"] = refinement["steps"] if refinement else 0
    settings["pamr_stride"] = list(refinement["dilations"]) if refinement else [8, 16]
    if spec.background.rule == "prob_thd":
        settings["prob_thd"] = spec.background.value
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of the fetched repository")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "naclip")
    args = parser.parse_args()

    reference.install_stubs()
    source = reference.checkout(args.repo, args.commit)
    from naclip import NACLIP  # the reference, from the checkout

    work = Path(tempfile.mkdtemp(prefix="parity-naclip-"))
    weights = harness.random_openai_clip(SEED, PERTURBATION)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    protocol = load_protocol("naclip")
    gaussian_std = float(baseline_defaults("naclip")["gaussian_std"])
    arrays: dict[str, np.ndarray] = {}
    cases = []

    # Dense scores of crops: square, non-square, not a multiple of 16; names with synonyms; raw cosines.
    names_file = work / "cls_plain.txt"
    names_file.write_text("\n".join(harness.CLASS_LINES) + "\n")
    segmentor = NACLIP(str(clip_path), str(names_file), device="cpu", gaussian_std=gaussian_std)
    for case, (seed, shape) in DENSE_CASES.items():
        crops = harness.crop_batch(seed, shape)
        logits = segmentor.forward_feature(crops).float()
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        cases.append({"case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": crops.shape[0],
                      "classes": "CLASS_LINES", "subsample": SUBSAMPLE, "gaussian_std": gaussian_std,
                      "reference": "NACLIP.forward_feature(crops): cosines, bilinear to the crop",
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})

    # Whole images through the reference's predict (slide or whole, bilinear to the original size, PAMR,
    # postprocess), from the engine's resize.
    for case, (benchmark, lines, seed, size, short, pamr) in WHOLE_CASES.items():
        spec = fixture_spec(protocol, benchmark, harness.class_names(lines), short=short)
        names_file = work / f"cls_{case}.txt"
        names_file.write_text("\n".join(lines) + "\n")
        settings = protocol_settings(spec, pamr)
        segmentor = NACLIP(str(clip_path), str(names_file), device="cpu", **settings)
        handed = keep_handed_logits(segmentor)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        sample = segmentor.predict(inputs, [reference.sample(size)])[0]
        prediction = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        probs = class_probabilities(handed["logits"][0], segmentor.logit_scale, segmentor.query_idx)
        ties = harness.decision_ties(probs, settings.get("prob_thd"))
        decided = probs.argmax(0).masked_fill(probs.max(0).values < settings.get("prob_thd", 0.0), 0).numpy()
        if not np.array_equal(decided[~ties], prediction[~ties]):
            raise RuntimeError(f"{case}: the recomputed probabilities do not give the reference's decisions")
        arrays[case] = prediction
        arrays[f"{case}_ties"] = ties
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": short, "pamr": pamr, "settings": settings,
                      "inference": spec.inference.mode,
                      "reference": "NACLIP.predict(resized image) -> pred_sem_seg",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(ties.sum())})

    meta = {
        "method": "naclip", "repository": REPOSITORY, "commit": args.commit,
        "script": "tools/parity/make_naclip.py",
        "weights": {"seed": SEED, "perturbation": PERTURBATION,
                    "sha256": harness.weights_digest(weights), "keys": list(weights)},
        "reference_did": (
            "clip.load(state dict file, device='cpu', jit=False): build_model + convert_weights (fp16 rounding of "
            "conv/linear/attention/projection weights; the fixture weights are fp16-representable, so the rounding "
            "is exact), then model.float(): float32 on the CPU. visual.set_params('reduced', 'naclip', "
            "gaussian_std): the last block is custom_attn alone, softmax(k k^T scale + Gaussian addition). Text: "
            "prompts/imagenet_template.py openai_imagenet_template (80), each embedding normalised, mean, "
            "normalised. Whole images: the engine's resize and normalisation (mmcv's equal) feed predict(): "
            "forward_slide (or forward_feature where slide_crop=0), bilinear to the original size, PAMR(pamr_steps, "
            "pamr_stride) on the logits guided by the resized image bilinearly upsampled to the original size "
            "(pamr_steps=0: none, as eval.py --pamr off), softmax(logit_scale * logits), max over synonyms, prob_thd. "
            "Ties: on the probabilities postprocess_result decides on (see make_naclip.py)."
        ),
        "templates": "protocols/templates/imagenet80.txt",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source})")
    for entry in cases:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted, {entry.get('tie_pixels')} ties")


if __name__ == "__main__":
    main()
