"""Makes tests/parity/fixtures/sfp from SFP's own code (Kimsure/SFP, folder SFP_ICCV/), run with mmseg stubbed.

    python tools/parity/make_sfp.py --repo /path/to/SFP/.git [--commit 2804f5b]

The repository is unpacked at the commit into a temporary folder and SFP_ICCV/ is run from there on
the CPU. Its `clip.load` builds the model with OpenAI's `build_model`, which rounds conv/linear/
attention/projection weights through fp16 (`convert_weights`) and, on the CPU, runs in float32: the
fixture weights are fp16-representable, so that rounding changes nothing and the adapter loads the
same values. SFP reads the outputs of blocks 3..9 of its tower by position, so the fixture CLIP has
ViT-B/16's 12 vision blocks (harness.sharpened_deep_clip: the harness's CLIP, deeper, kept from collapsing its tokens).

Where the reference cannot run as it is (outlier coordinates on a non-square grid, purify=False),
its error is recorded; the non-square crops are then also run with the outlier coordinates that
`mean_interpolation` receives turned into the row-major ones the adapter uses (the only change).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
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

REPOSITORY = "Kimsure/SFP"
COMMIT = "2804f5b"
SEED = 0
SUBSAMPLE = 8  # dense scores are stored every 8th pixel of the crop
# The harness's CLIP made deep enough for SFP and kept from collapsing its tokens (harness.sharpened_deep_clip).
WEIGHTS = {"vision_layers": 12, "perturbation": 0.1, "query_key_scale": 4.0, "last_out_proj_scale": 16.0}


class OutlierLog:
    """Wraps the reference's VisionTransformer.mean_interpolation: counts the outliers it is given and,
    when `row_major` is set, turns the reference's (i // grid height, i % grid height) coordinates of
    token i into (i // grid width, i % grid width)."""

    def __init__(self, vision_class: type) -> None:
        self.vision_class = vision_class
        self.original = vision_class.mean_interpolation
        self.row_major = False
        self.counts: list[int] = []
        log = self

        def mean_interpolation(model: Any, fmap: torch.Tensor, keep_pixels: list) -> torch.Tensor:
            height, width = fmap.shape[-2:]
            log.counts.append(len(keep_pixels))
            if log.row_major:
                tokens = [int(row) * height + int(col) for row, col in keep_pixels]
                keep_pixels = [(token // width, token % width) for token in tokens]
            return log.original(model, fmap, keep_pixels)

        vision_class.mean_interpolation = mean_interpolation


def dense(segmentor: Any, crops: torch.Tensor) -> torch.Tensor:
    """forward_feature one crop at a time (the reference handles a batch of one, as its slide inference)."""
    return torch.cat([segmentor.forward_feature(crop[None]).float() for crop in crops])


def error_text(error: BaseException) -> str:
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return f"{type(error).__name__}: {error} (at {Path(frame.filename).name}:{frame.lineno}: {frame.line})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of the fetched repository")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "sfp")
    args = parser.parse_args()

    reference.install_stubs()
    sys.modules.setdefault("matplotlib", types.ModuleType("matplotlib"))
    sys.modules.setdefault("matplotlib.pyplot", types.ModuleType("matplotlib.pyplot"))  # imported, never used
    source = reference.checkout(args.repo, args.commit)
    sys.path.insert(0, str(source / "SFP_ICCV"))
    import clip.model  # the reference's clip package, from the checkout
    from SFP_segmentor import SFPForSegmentation

    log = OutlierLog(clip.model.VisionTransformer)
    work = Path(tempfile.mkdtemp(prefix="parity-sfp-"))
    weights = harness.sharpened_deep_clip(SEED, **WEIGHTS)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    protocol = load_protocol("sfp")
    arrays: dict[str, np.ndarray] = {}
    cases = []

    # Dense scores of crops: square and non-square, each outlier detector, names with synonyms.
    names_file = work / "cls_plain.txt"
    names_file.write_text("\n".join(harness.CLASS_LINES) + "\n")
    for case, (seed, shape, options) in {
        "crops_square": (1, (224, 224), {}),
        "crops_wide": (2, (224, 288), {}),
        "crops_square_l2": (1, (224, 224), {"pm": "L2"}),
        "crops_square_lof": (1, (224, 224), {"pm": "LOF"}),
    }.items():
        segmentor = SFPForSegmentation(str(clip_path), str(names_file), device="cpu", **options)
        crops = harness.crop_batch(seed, shape)
        entry: dict[str, Any] = {
            "case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": crops.shape[0],
            "classes": "CLASS_LINES", "subsample": SUBSAMPLE, "options": options,
            "reference": "SFPForSegmentation.forward_feature(crop[None]) per crop: cosines, bilinear to the crop",
        }
        log.counts.clear()
        try:
            logits = dense(segmentor, crops)
        except IndexError as error:
            logits, entry["reference_error"] = None, error_text(error)
        if shape[0] != shape[1]:
            unpatched = logits
            log.row_major, log.counts = True, []
            logits = dense(segmentor, crops)
            log.row_major = False
            entry["reference_patched"] = (
                "outlier coordinates given to mean_interpolation turned from (i // grid height, i % grid height) "
                "into row-major (i // grid width, i % grid width); nothing else changed"
            )
            if unpatched is not None:
                entry["unpatched_max_abs_diff"] = float((unpatched - logits).abs().max())
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        entry["outliers_per_crop"] = log.counts[::2]  # mean_interpolation runs twice per forward, same outliers
        entry["classes_predicted"] = int(len(np.unique(logits.argmax(1).numpy())))
        cases.append(entry)

    # purify=False: the reference's own switch.
    segmentor = SFPForSegmentation(str(clip_path), str(names_file), device="cpu", purify=False)
    try:
        dense(segmentor, harness.crop_batch(1, (224, 224)))
        unpurified = "ran"
    except NameError as error:
        unpurified = error_text(error)
    cases.append({"case": "crops_square_unpurified", "kind": "reference_error", "options": {"purify": False},
                  "reference_error": unpurified})

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
        segmentor = SFPForSegmentation(str(clip_path), str(names_file), device="cpu", slide_crop=224,
                                       slide_stride=112, **settings)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        log.counts.clear()
        sample = segmentor.predict(inputs, [reference.sample(size)])[0]
        prediction = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[case] = prediction
        arrays[f"{case}_ties"] = harness.decision_ties(sample.seg_logits.data, settings.get("prob_thd"))
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": 224, "settings": settings,
                      "reference": "SFPForSegmentation.predict(resized image) -> pred_sem_seg",
                      "outliers_per_window": log.counts[::2],
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})

    meta = {
        "method": "sfp", "repository": REPOSITORY, "commit": args.commit, "folder": "SFP_ICCV",
        "script": "tools/parity/make_sfp.py",
        "weights": {"seed": SEED, **WEIGHTS, "sha256": harness.weights_digest(weights), "keys": list(weights),
                    "recipe": "harness.random_openai_clip(seed, perturbation) with VISION_LAYERS = vision_layers; "
                              "every vision block's in_proj_weight rows [0, 2 x width) (query, key) x "
                              "query_key_scale; the last vision block's attn.out_proj.weight x last_out_proj_scale; "
                              "every value rounded through fp16 (tests/parity/harness.py sharpened_deep_clip)"},
        "reference_did": (
            "SFP_ICCV/clip.load(state dict file, device='cpu', jit=False): build_model + convert_weights (fp16 "
            "rounding of conv/linear/attention/projection weights; the fixture weights are fp16-representable, so "
            "the rounding is exact), then model.float(): float32 on the CPU. SFPForSegmentation defaults "
            "(configs/base_config.py: purify=True, pm='SOM', res_cls=0.3) unless a case says otherwise; "
            "encode_image(return_each=True): VisionTransformer.forward with nn.MultiheadAttention(need_weights=True) "
            "in the intermediate blocks, custom_attn and sinkhorn_attn in the last. Text: the repository's 80 "
            "ImageNet templates, each embedding normalised, mean, normalised. Dense crops one at a time (the "
            "reference's batch of one). Whole images: the engine's resize and normalisation (mmcv's equal) feed "
            "predict(); the reference's slide inference (224 x 224 windows: square grids), bilinear resize to the "
            "original size, softmax(logit_scale * logits), max over synonyms, area_thd, prob_thd."
        ),
        "templates": "protocols/templates/imagenet80.txt",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source})")
    for entry in cases:
        print(f"  {entry['case']}: {entry.get('classes_predicted')} classes predicted, "
              f"outliers {entry.get('outliers_per_crop', entry.get('outliers_per_window'))}, "
              f"error {entry.get('reference_error')}")


if __name__ == "__main__":
    main()
