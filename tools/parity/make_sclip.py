"""Makes tests/parity/fixtures/sclip from SCLIP's own code (wangf3014/SCLIP), run with mmseg stubbed.

    python tools/parity/make_sclip.py --repo /path/to/SCLIP/.git [--commit b56bd30]

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.protocol import load_protocol  # noqa: E402
from tests.parity import harness  # noqa: E402
from tests.parity.engine import fixture_spec, resized_input  # noqa: E402
from tools.parity import reference  # noqa: E402

REPOSITORY = "wangf3014/SCLIP"
COMMIT = "b56bd30"
SEED = 0
SUBSAMPLE = 8  # dense scores are stored every 8th pixel of the crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of the fetched repository")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "sclip")
    args = parser.parse_args()

    reference.install_stubs()
    source = reference.checkout(args.repo, args.commit)
    from clip_segmentor import CLIPForSegmentation  # the reference, from the checkout

    work = Path(tempfile.mkdtemp(prefix="parity-sclip-"))
    weights = harness.random_openai_clip(SEED)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    protocol = load_protocol("sclip")
    arrays: dict[str, np.ndarray] = {}
    cases = []

    # Dense scores of crops: square and non-square, names with synonyms; raw cosines upsampled to the crop.
    names_file = work / "cls_plain.txt"
    names_file.write_text("\n".join(harness.CLASS_LINES) + "\n")
    segmentor = CLIPForSegmentation(str(clip_path), str(names_file), device="cpu")
    for case, (seed, shape) in {"crops_square": (1, (224, 224)), "crops_wide": (2, (224, 288))}.items():
        crops = harness.crop_batch(seed, shape)
        logits = segmentor.forward_feature(crops).float()
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        cases.append({"case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": crops.shape[0],
                      "classes": "CLASS_LINES", "subsample": SUBSAMPLE,
                      "reference": "CLIPForSegmentation.forward_feature(crops): cosines, bilinear to the crop",
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})

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
        segmentor = CLIPForSegmentation(str(clip_path), str(names_file), device="cpu", slide_crop=224,
                                        slide_stride=112, **settings)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        sample = segmentor.predict(inputs, [reference.sample(size)])[0]
        prediction = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[case] = prediction
        arrays[f"{case}_ties"] = harness.decision_ties(sample.seg_logits.data, settings.get("prob_thd"))
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": 224, "settings": settings,
                      "reference": "CLIPForSegmentation.predict(resized image) -> pred_sem_seg",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})

    meta = {
        "method": "sclip", "repository": REPOSITORY, "commit": args.commit,
        "script": "tools/parity/make_sclip.py",
        "weights": {"seed": SEED, "perturbation": harness.PERTURBATION,
                    "sha256": harness.weights_digest(weights), "keys": list(weights)},
        "reference_did": (
            "clip.load(state dict file, device='cpu', jit=False): build_model + convert_weights (fp16 rounding of "
            "conv/linear/attention/projection weights; the fixture weights are fp16-representable, so the rounding "
            "is exact), then model.float(): float32 on the CPU. encode_image(return_all=True, csa=True). Text: the "
            "repository's 80 ImageNet templates, each embedding normalised, mean, normalised. Whole images: the "
            "engine's resize and normalisation (mmcv's equal) feed predict(); the reference's slide inference, "
            "bilinear resize to the original size, softmax(logit_scale * logits), synonyms max, area_thd, prob_thd."
        ),
        "templates": "protocols/templates/imagenet80.txt",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source})")
    for entry in cases:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted")


if __name__ == "__main__":
    main()
