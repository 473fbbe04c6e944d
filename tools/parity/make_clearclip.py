"""Makes tests/parity/fixtures/clearclip from ClearCLIP's own code (mc-lan/ClearCLIP), run with mmseg stubbed.

    python tools/parity/make_clearclip.py --repo /path/to/ClearCLIP/.git [--commit ad68a40]

The repository is unpacked at the commit into a temporary folder and run from there on the CPU, with
its own open_clip copy (open_clip/). `ClearCLIPSegmentation.__init__` builds CLIP with
`create_model('ViT-B/16', pretrained='openai', precision='fp16')`, which downloads OpenAI's archive;
here the segmentor module's `create_model` is replaced by the repository's own
`open_clip.load_openai_model(<state-dict file>, precision='fp32', device='cpu')`, the function that
`create_model` calls for pretrained='openai': `build_model_from_openai_state_dict` rounds
conv/linear/attention/projection weights through fp16 (`convert_weights_to_fp16`), then
`model.float()`. The fixture weights are fp16-representable, so that rounding changes nothing, and
the run is float32, as the adapter's; `predict` is run as its two steps, `forward_slide` and
`postprocess_result`, without its `inputs.half()` (fp16 inputs to a float32 model).

Imports that the segmentor module makes but that no CLIP model type reaches (BLIP, which needs
`transformers`, and GEM) are stubbed. `make_clip.py` runs the same repository's `vanilla` model type
through `ClearCLIPRepository` below.
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

REPOSITORY = "mc-lan/ClearCLIP"
COMMIT = "ad68a40"
# The harness's seed 0 at perturbation 0.5 leaves the attention-only features of ClearCLIP predicting one class
# almost everywhere; seed 5 at 0.25 predicts several (classes_predicted in meta.json).
SEED = 5
PERTURBATION = 0.25
SUBSAMPLE = 8  # dense scores are stored every 8th pixel of the crop

# case -> (image seed, crop shape). crops_padded is not a multiple of 16: forward_slide pads it around the centre.
DENSE_CASES = {"crops_square": (1, (224, 224)), "crops_wide": (2, (224, 288)), "crops_padded": (5, (200, 300))}
# case -> (benchmark, class lines, image seed, original size, resize short side). 448 is the protocol's own
# (two 448 windows on a 448 x 627 image); at 224 the 253 x 224 image is one window smaller than the crop,
# padded to 256 x 224.
WHOLE_CASES = {
    "whole_voc21": ("voc21", harness.BACKGROUND_CLASS_LINES, 30, (300, 420), 448),
    "whole_context59": ("context59", harness.CLASS_LINES, 4, (260, 230), 224),
}

REFERENCE_DID = (
    "clearclip_segmentor.create_model replaced by the repository's open_clip.load_openai_model(state-dict file, "
    "precision='fp32', device='cpu') (what create_model calls for pretrained='openai', there with precision "
    "'fp16'): build_model_from_openai_state_dict + convert_weights_to_fp16 (fp16 rounding of conv/linear/"
    "attention/projection weights; the fixture weights are fp16-representable, so the rounding is exact), then "
    "model.float(): float32 on the CPU. BLIP.models.blip_retrieval and gem stubbed (imported, never reached). "
    "encode_image(img, model_type, ignore_residual): the last block through VisionTransformer.custom_attn. "
    "Text: prompts/imagenet_template.py openai_imagenet_template (80), each embedding normalised, mean, "
    "normalised. Dense: forward_feature(crops) (cosines, bilinear to the crop); crops_padded: forward_slide with "
    "one window the size of the crop (compute_padsize centre padding, scores cut back). Whole images: the "
    "engine's resize and normalisation (mmcv's equal) feed predict's two steps, forward_slide(inputs, metas, "
    "slide_stride, slide_crop) and postprocess_result, without predict's inputs.half(): softmax(logit_scale * "
    "logits), max over synonyms, prob_thd."
)


class ClearCLIPRepository:
    """The ClearCLIP repository at a commit, unpacked and importable, building segmentors on the fixture weights."""

    def __init__(self, git_dir: Path, commit: str, clip_path: Path) -> None:
        self.clip_path = clip_path
        reference.install_stubs()
        for name in ("BLIP", "BLIP.models", "BLIP.models.blip_retrieval", "gem"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["BLIP.models.blip_retrieval"].blip_retrieval = _not_reached
        for name in [name for name in sys.modules if name == "open_clip" or name.startswith("open_clip.")]:
            del sys.modules[name]
        self.source = reference.checkout(git_dir, commit)
        import clearclip_segmentor  # the reference, from the checkout
        import open_clip

        if not Path(open_clip.__file__).resolve().is_relative_to(self.source.resolve()):
            raise RuntimeError(f"open_clip imported from {open_clip.__file__}, not from the checkout {self.source}")
        clearclip_segmentor.create_model = lambda *_, **__: open_clip.load_openai_model(
            str(self.clip_path), precision="fp32", device="cpu"
        )
        self.module = clearclip_segmentor

    def segmentor(self, names_file: Path, model_type: str, **settings: Any):
        return self.module.ClearCLIPSegmentation(
            "CLIP", "ViT-B/16", model_type, str(names_file), device="cpu", **settings
        )


def _not_reached(*_: Any, **__: Any) -> None:
    raise RuntimeError("BLIP is stubbed: only clip_type 'CLIP' runs in the parity fixtures")


def dense_cases(
    repository: ClearCLIPRepository, work: Path, model_type: str, variant: dict[str, Any], suffix: str = ""
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Raw cosines of the dense cases, upsampled to the crop as the reference does, every SUBSAMPLE-th pixel."""
    names_file = work / "cls_plain.txt"
    names_file.write_text("\n".join(harness.CLASS_LINES) + "\n")
    segmentor = repository.segmentor(names_file, model_type, **variant)
    cases, arrays = [], {}
    for name, (seed, shape) in DENSE_CASES.items():
        crops = harness.crop_batch(seed, shape)
        if shape[0] % 16 or shape[1] % 16:
            logits = segmentor.forward_slide(crops, [{"ori_shape": shape}], stride=shape, crop_size=shape).float()
            how = "forward_slide(crops, one window of the crop's size): centre padding, scores cut back"
        else:
            logits = segmentor.forward_feature(crops).float()
            how = "forward_feature(crops): cosines, bilinear to the crop"
        case = name + suffix
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        cases.append({"case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": crops.shape[0],
                      "classes": "CLASS_LINES", "subsample": SUBSAMPLE, "model_type": model_type,
                      "options": variant, "reference": how,
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})
    return cases, arrays


def whole_cases(
    repository: ClearCLIPRepository, work: Path, model_type: str, variant: dict[str, Any], names: list[str],
    suffix: str = "",
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Label maps of whole images at their original size, with the protocol's settings for each benchmark."""
    protocol = load_protocol("clearclip")
    cases, arrays = [], {}
    for name in names:
        benchmark, lines, seed, size, short = WHOLE_CASES[name]
        spec = fixture_spec(protocol, benchmark, harness.class_names(lines), short=short)
        names_file = work / f"cls_{name}.txt"
        names_file.write_text("\n".join(lines) + "\n")
        settings: dict[str, Any] = {"logit_scale": spec.method_settings["logit_scale"],
                                    "slide_crop": spec.inference.crop, "slide_stride": spec.inference.stride}
        if spec.background.rule == "prob_thd":
            settings["prob_thd"] = spec.background.value
        segmentor = repository.segmentor(names_file, model_type, **variant, **settings)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        logits = segmentor.forward_slide(inputs, [reference.sample(size).metainfo], segmentor.slide_stride,
                                         segmentor.slide_crop)
        sample = segmentor.postprocess_result(logits, [reference.sample(size)])[0]
        prediction = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        case = name + suffix
        arrays[case] = prediction
        arrays[f"{case}_ties"] = harness.decision_ties(sample.seg_logits.data, settings.get("prob_thd"))
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": short, "settings": settings,
                      "model_type": model_type, "options": variant,
                      "reference": "forward_slide(resized image) + postprocess_result -> pred_sem_seg",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})
    return cases, arrays


def weights_meta(weights: dict[str, torch.Tensor], seed: int, perturbation: float) -> dict[str, Any]:
    return {"seed": seed, "perturbation": perturbation, "sha256": harness.weights_digest(weights),
            "keys": list(weights)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of the fetched repository")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "clearclip")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parity-clearclip-"))
    weights = harness.random_openai_clip(SEED, PERTURBATION)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    repository = ClearCLIPRepository(args.repo, args.commit, clip_path)
    variant = {"ignore_residual": True}  # the segmentor's default and configs/base_config.py's
    cases, arrays = dense_cases(repository, work, "ClearCLIP", variant)
    more_cases, more_arrays = whole_cases(repository, work, "ClearCLIP", variant, list(WHOLE_CASES))
    cases += more_cases
    arrays.update(more_arrays)

    meta = {
        "method": "clearclip", "repository": REPOSITORY, "commit": args.commit,
        "script": "tools/parity/make_clearclip.py", "weights": weights_meta(weights, SEED, PERTURBATION),
        "reference_did": REFERENCE_DID + " model_type 'ClearCLIP' (q-q attention), ignore_residual True.",
        "templates": "protocols/templates/imagenet80.txt",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({repository.source})")
    for entry in cases:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted, {entry.get('tie_pixels')} ties")


if __name__ == "__main__":
    main()
