"""Makes tests/parity/fixtures/gem from GEM's own code (WalBouss/GEM) and the harness that evaluates it
(mc-lan/ClearCLIP, model_type='GEM'), each run with mmseg stubbed.

    pip install --target SITE --no-deps open_clip_torch==2.23.0 einops
    python tools/parity/make_gem.py --repo /path/to/GEM/.git --clearclip-repo /path/to/ClearCLIP/.git --site SITE

GEM's requirements.txt pins open_clip_torch<=2.23.0 (its modified_vit_forward feeds the blocks
sequence-first and chains lists through them; later open_clip transformers are batch-first) and
einops: SITE holds them and comes first on GEM's sys.path. ClearCLIP's repository carries its own
open_clip (2.24.0, edited) and its own copy of gem/: its part runs in a second process, from its
checkout. Both build the fixture CLIP (harness.random_openai_clip, OpenAI's layout, QuickGELU) as an
open_clip CLIP of the same architecture, float32 on the CPU, and load the weights strictly; every
repository call then runs unchanged on it.
"""

from __future__ import annotations

import argparse
import functools
import json
import pickle
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.parity import harness  # noqa: E402

REPOSITORY = "WalBouss/GEM"
COMMIT = "5fa677c"
CLEARCLIP_REPOSITORY = "mc-lan/ClearCLIP"
CLEARCLIP_COMMIT = "ad68a40"
SEED = 0
SUBSAMPLE = 8  # dense scores are stored every 8th pixel of the crop
# The fixture CLIP has 3 blocks: GEM's default gem_depth=7 wraps blocks[-1..-6] and fails; gem_depth=3
# wraps the last two (one plain block before them), gem_depth=4 all three.
GEM_DEPTH = 3
PROMPT = "a photo of a {}."  # gem/gem_wrapper.py GEMWrapper.encode_text
# A pixel is a tie where its top two probabilities (or the top one and prob_thd) are this close in the
# reference's own scores: cosines agree to about 1e-7, which logit scale 50 and the softmax turn into
# probability differences of a few 1e-6 (harness.decision_ties' 1e-6 left one such pixel to thread order).
TIE_TOLERANCE = 1e-5

# GEM's own GEMWrapper.forward on crops: (seed, shape, create_gem_model options).
GEM_DENSE = {
    "crops_square": (1, (224, 224), {"gem_depth": GEM_DEPTH}),
    "crops_wide": (2, (224, 288), {"gem_depth": GEM_DEPTH}),
    "crops_square_all_blocks": (5, (224, 224), {"gem_depth": 4}),
    "crops_wide_iterated": (6, (224, 288), {"gem_depth": GEM_DEPTH, "ss_attn_iter": 2, "ss_attn_temp": 4.0}),
}
# ClearCLIP's ClearCLIPSegmentation(model_type='GEM').forward_feature on crops: (seed, shape, ignore_residual).
CLEARCLIP_DENSE = {
    "crops_square_ignore_residual": (8, (224, 224), True),
}
# ClearCLIP's ClearCLIPSegmentation(model_type='GEM').predict on whole images: (benchmark, lines, seed, size,
# resize short side, ignore_residual). voc21's prob_thd 0.5 is above every class probability the fixture
# CLIP gives (about 0.17 at most over 8 names): the background case is context60's (prob_thd 0.15).
CLEARCLIP_WHOLE = {
    "whole_context60": ("context60", "BACKGROUND_CLASS_LINES", 8, (300, 420), 224, False),
    "whole_context59": ("context59", "CLASS_LINES", 3, (260, 230), 448, False),
}


def fixture_clip(open_clip: types.ModuleType, weights: dict) -> Any:
    """The fixture CLIP as an open_clip CLIP (the given open_clip module), float32, weights loaded strictly."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=harness.VISION_LAYERS, width=harness.VISION_WIDTH, patch_size=harness.PATCH,
                           image_size=harness.PATCH * harness.GRID)
    text = CLIPTextCfg(context_length=harness.CONTEXT, vocab_size=harness.VOCAB, width=harness.TEXT_WIDTH,
                       heads=harness.TEXT_WIDTH // 64, layers=harness.TEXT_LAYERS)
    model = CLIP(embed_dim=harness.EMBED, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    model.load_state_dict(weights, strict=True)
    return model.float().eval()


def gem_part(repo: Path, commit: str, site: Path) -> tuple[dict, list]:
    """GEM's GEMWrapper (gem/gem_wrapper.py) on crops: cosines of its GEM path with 'a photo of a {}.' names."""
    import torch

    sys.path.insert(0, str(site))
    from tools.parity import reference

    source = reference.checkout(repo, commit)
    import gem as gem_package  # the reference, from the checkout
    import open_clip
    from gem.gem_wrapper import GEMWrapper

    assert Path(gem_package.__file__).is_relative_to(source), gem_package.__file__
    weights = harness.random_openai_clip(SEED)
    names = [name for names in harness.class_names(harness.CLASS_LINES) for name in names]
    arrays: dict[str, np.ndarray] = {}
    cases: list[dict] = []
    for case, (seed, shape, options) in GEM_DENSE.items():
        model = GEMWrapper(fixture_clip(open_clip, weights), open_clip.get_tokenizer("ViT-B-16"),
                           depth=options["gem_depth"], ss_attn_iter=options.get("ss_attn_iter", 1),
                           ss_attn_temp=options.get("ss_attn_temp"))
        crops = harness.crop_batch(seed, shape)
        with torch.no_grad():
            logits = model(crops, names, normalize=False).float()
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        cases.append({"case": case, "kind": "dense", "repository": REPOSITORY, "seed": seed, "shape": list(shape),
                      "count": crops.shape[0], "classes": "CLASS_LINES", "subsample": SUBSAMPLE,
                      "templates": [PROMPT], "options": options,
                      "reference": "GEMWrapper(model, tokenizer, depth, ss_attn_iter, ss_attn_temp).forward(crops, "
                                   "names, normalize=False): GEM-path cosines, bilinear to the crop",
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})
    try:
        GEMWrapper(fixture_clip(open_clip, weights), open_clip.get_tokenizer("ViT-B-16"), depth=7)
        failure = None
    except Exception as error:  # noqa: BLE001 - the error text is the record
        failure = f"{type(error).__name__}: {error}"
    cases.append({"case": "default_depth_on_3_blocks", "kind": "failure", "repository": REPOSITORY,
                  "options": {"gem_depth": 7}, "reference": "GEMWrapper(model, tokenizer, depth=7)",
                  "error": failure})
    return arrays, cases


def install_clearclip_stubs() -> None:
    """BLIP (imported by clearclip_segmentor.py, used only for clip_type='BLIP') needs transformers: a stub."""
    for name in ("BLIP", "BLIP.models"):
        sys.modules[name] = types.ModuleType(name)
    retrieval = types.ModuleType("BLIP.models.blip_retrieval")
    retrieval.blip_retrieval = None
    sys.modules["BLIP.models.blip_retrieval"] = retrieval


def clearclip_part(repo: Path, commit: str, site: Path) -> tuple[dict, list]:
    """ClearCLIPSegmentation(model_type='GEM') on whole images: slide 448/224, padding, postprocess_result."""
    sys.path.insert(0, str(site))  # einops; the checkout goes before it, so its own open_clip is the one imported
    from benchmark.protocol import load_protocol
    from tests.parity.engine import fixture_spec, resized_input
    from tools.parity import reference

    reference.install_stubs()
    install_clearclip_stubs()
    source = reference.checkout(repo, commit)
    import clearclip_segmentor
    import gem
    import open_clip  # ClearCLIP's own copy, from the checkout
    from clearclip_segmentor import ClearCLIPSegmentation

    assert Path(open_clip.__file__).is_relative_to(source) and Path(gem.__file__).is_relative_to(source)
    weights = harness.random_openai_clip(SEED)
    # __init__ builds the plain CLIP (its own create_model) before the GEM one (open_clip's, via gem).
    open_clip.create_model = clearclip_segmentor.create_model = lambda *_, **__: fixture_clip(open_clip, weights)
    gem.create_gem_model = functools.partial(gem.create_gem_model, gem_depth=GEM_DEPTH)
    protocol = load_protocol("gem")
    work = Path(tempfile.mkdtemp(prefix="parity-gem-"))
    arrays: dict[str, np.ndarray] = {}
    cases: list[dict] = []
    names_file = work / "cls_plain.txt"
    names_file.write_text("\n".join(harness.CLASS_LINES) + "\n")
    for case, (seed, shape, ignore_residual) in CLEARCLIP_DENSE.items():
        segmentor = ClearCLIPSegmentation("CLIP", "ViT-B/16", "GEM", str(names_file), device="cpu",
                                          ignore_residual=ignore_residual)
        crops = harness.crop_batch(seed, shape)
        logits = segmentor.forward_feature(crops).float()
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        cases.append({"case": case, "kind": "dense", "repository": CLEARCLIP_REPOSITORY, "seed": seed,
                      "shape": list(shape), "count": crops.shape[0], "classes": "CLASS_LINES", "subsample": SUBSAMPLE,
                      "templates": "protocol", "options": {"gem_depth": GEM_DEPTH, "ignore_residual": ignore_residual},
                      "reference": "ClearCLIPSegmentation('CLIP', 'ViT-B/16', 'GEM', ...).forward_feature(crops): "
                                   "cosines, bilinear to the crop",
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})
    for case, (benchmark, lines_name, seed, size, short, ignore_residual) in CLEARCLIP_WHOLE.items():
        lines = getattr(harness, lines_name)
        spec = fixture_spec(protocol, benchmark, harness.class_names(lines), short=short)
        names_file = work / f"cls_{case}.txt"
        names_file.write_text("\n".join(lines) + "\n")
        settings = {"logit_scale": 50.0, "slide_crop": spec.inference.crop, "slide_stride": spec.inference.stride,
                    "ignore_residual": ignore_residual}
        if spec.background.rule == "prob_thd":
            settings["prob_thd"] = spec.background.value
        segmentor = ClearCLIPSegmentation("CLIP", "ViT-B/16", "GEM", str(names_file), device="cpu", **settings)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        metas = [reference.sample(size).metainfo]
        # predict() as written, less its inputs.half(): float32 on the CPU, as the model runs.
        seg_logits = segmentor.forward_slide(inputs, metas, segmentor.slide_stride, segmentor.slide_crop)
        sample = segmentor.postprocess_result(seg_logits, [reference.sample(size)])[0]
        prediction = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[case] = prediction
        arrays[f"{case}_ties"] = harness.decision_ties(sample.seg_logits.data, settings.get("prob_thd"),
                                                           TIE_TOLERANCE)
        cases.append({"case": case, "kind": "whole", "repository": CLEARCLIP_REPOSITORY, "benchmark": benchmark,
                      "classes": lines_name, "seed": seed, "size": list(size), "resized": list(inputs.shape[-2:]),
                      "short": short, "settings": settings, "tie_tolerance": TIE_TOLERANCE,
                      "options": {"gem_depth": GEM_DEPTH, "ignore_residual": ignore_residual},
                      "reference": "ClearCLIPSegmentation('CLIP', 'ViT-B/16', 'GEM', ...): forward_slide(resized "
                                   "image) + postprocess_result -> pred_sem_seg",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})
    return arrays, cases


def run_part(part: str, args: argparse.Namespace, out: Path) -> tuple[dict, list]:
    command = [sys.executable, __file__, "--part", part, "--part-out", str(out), "--repo", str(args.repo),
               "--commit", args.commit, "--clearclip-repo", str(args.clearclip_repo),
               "--clearclip-commit", args.clearclip_commit, "--site", str(args.site)]
    subprocess.run(command, check=True)
    with out.open("rb") as handle:
        return pickle.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of WalBouss/GEM")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--clearclip-repo", type=Path, required=True, help="git directory of mc-lan/ClearCLIP")
    parser.add_argument("--clearclip-commit", default=CLEARCLIP_COMMIT)
    parser.add_argument("--site", type=Path, required=True, help="folder holding open_clip_torch==2.23.0 and einops")
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "gem")
    parser.add_argument("--part", choices=("gem", "clearclip"), help=argparse.SUPPRESS)
    parser.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part is not None:
        result = (gem_part(args.repo, args.commit, args.site) if args.part == "gem"
                  else clearclip_part(args.clearclip_repo, args.clearclip_commit, args.site))
        with args.part_out.open("wb") as handle:
            pickle.dump(result, handle)
        return

    work = Path(tempfile.mkdtemp(prefix="parity-gem-parts-"))
    gem_arrays, gem_cases = run_part("gem", args, work / "gem.pkl")
    clearclip_arrays, clearclip_cases = run_part("clearclip", args, work / "clearclip.pkl")
    weights = harness.random_openai_clip(SEED)
    meta = {
        "method": "gem", "repository": REPOSITORY, "commit": args.commit,
        "harness_repository": CLEARCLIP_REPOSITORY, "harness_commit": args.clearclip_commit,
        "script": "tools/parity/make_gem.py",
        "weights": {"seed": SEED, "perturbation": harness.PERTURBATION,
                    "sha256": harness.weights_digest(weights), "keys": list(weights)},
        "reference_did": (
            "Both repositories build their model with open_clip.create_model; here the fixture weights "
            "(fp16-representable, OpenAI's layout) are loaded strictly into an open_clip CLIP of the same "
            "architecture with QuickGELU (open_clip 2.23.0 for GEM, as its requirements.txt pins; ClearCLIP's own "
            "open_clip 2.24.0 copy for ClearCLIP), float32 on the CPU; ClearCLIP's precision='fp16' is not "
            "applied and its predict()'s inputs.half() is skipped (forward_slide + postprocess_result called as "
            "predict calls them). Dense cases: GEM's GEMWrapper.forward(crops, names, normalize=False): "
            "modified_vit_forward with SelfSelfAttention/GEMResidualBlock on the last gem_depth-1 blocks, GEM "
            "path's unit patch features x 'a photo of a {}.' embeddings, bilinear to the crop. Whole images: "
            "ClearCLIPSegmentation(clip_type='CLIP', vit_type='ViT-B/16', model_type='GEM', logit_scale=50, "
            "slide_crop=448, slide_stride=224) with gem.create_gem_model given gem_depth=3 (the fixture CLIP "
            "has 3 blocks) and open_clip.create_model returning the fixture CLIP; the engine's resize and "
            "normalisation (mmcv's equal) feed forward_slide (centre padding of crops off the patch size, "
            "sum/count, bilinear to the original size); postprocess_result: softmax(50 x cosines), max over "
            "synonyms, argmax, prob_thd. Text: ClearCLIP's 80 ImageNet templates, each embedding normalised, "
            "mean, normalised."
        ),
        "templates": "protocols/templates/imagenet80.txt",
        "notes": [
            "GEMWrapper(depth=7), GEM's default, fails on the 3-block fixture CLIP (case default_depth_on_3_blocks): "
            "the adapter then runs every block through the GEM path, which the gem_depth=4 case checks.",
            "voc21's prob_thd 0.5 is above every class probability of the fixture CLIP (about 0.17 at most over 8 "
            "names: every pixel would be background), so the background case is context60's prob_thd 0.15.",
            "With ignore_residual (ClearCLIP's base_config) the path is the last block's self-self attention alone: "
            "on the fixture CLIP one name has the highest cosine at every pixel of every crop tried, so that "
            "variant is checked on dense scores (raw and with each class's mean removed), not on label maps.",
            "modified_vit_forward compares the token count with positional_embedding.shape[1] (the width, not the "
            "token count), so it always calls resample_abs_pos_embed, which keeps the embedding only when the grid "
            "equals the trained one; a grid with exactly width - 1 patches would fail (shape mismatch). The "
            "adapter resamples whenever the grid differs from the trained one.",
        ],
        "cases": gem_cases + clearclip_cases,
    }
    harness.write_fixture(args.out, meta, {**gem_arrays, **clearclip_arrays})
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} and {CLEARCLIP_REPOSITORY}@{args.clearclip_commit}")
    print(json.dumps([{key: case.get(key) for key in ("case", "classes_predicted", "tie_pixels", "error")}
                      for case in meta["cases"]], indent=1))


if __name__ == "__main__":
    main()
