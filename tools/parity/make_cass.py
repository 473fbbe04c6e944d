"""Makes tests/parity/fixtures/cass from CASS's own code (MICV-yonsei/CASS), run with mmseg stubbed.

    python tools/parity/make_cass.py --repo /path/to/CASS/.git

Needs scikit-learn beside the suite (cass_segmentor.py imports sklearn's cosine_distances). The repository is
unpacked at the commit into a temporary folder and run from there on the CPU, with its own OpenAI `clip` copy and
its own DINO (dino/vision_transformer.py, dino/dino_attention.py):

- `clip.load(<state-dict file>, device='cpu', jit=False)`: build_model + convert_weights (fp16 rounding of
  conv/linear/attention/projection weights, exact on the fixture's fp16-representable weights), then float32;
- DinoSelfAttention builds `vits.vit_base(patch_size=8, num_classes=0)`: here the repository's own
  `VisionTransformer` with the fixture's width and depth (patch 8, 128 wide, 2 heads of 64 as the fixture CLIP's,
  qkv bias, LayerNorm eps 1e-6), and its download of DINO's weights returns the fixture's random DINO weights
  (strict load);
- requests for the device 'cuda' (the text tokens) are served on the CPU, and `.half()` casts are no-ops, so the
  whole run is float32 (the eigen- and singular-value steps float64, as written);
- torch.manual_seed(42) before every forward_feature call: each crop draws its svd_lowrank numbers from a freshly
  seeded generator, as the adapter does (the reference seeds once per run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.protocol import load_protocol  # noqa: E402
from tests.parity import harness  # noqa: E402
from tests.parity.engine import fixture_spec, resized_input  # noqa: E402
from tools.parity import reference  # noqa: E402

REPOSITORY = "MICV-yonsei/CASS"
COMMIT = "228ecdd"
SEED = 9
# The harness's CLIP with sharp attention (harness.sharpened_deep_clip): the Gaussian prior (std 5 on a 14 x 14
# grid) otherwise averages every patch into one and every crop predicts one class.
WEIGHTS = {"vision_layers": 3, "perturbation": 0.5, "query_key_scale": 8.0, "last_out_proj_scale": 1.0}
# Names whose mean scores under these weights lie within the patches' spread, so that several classes win
# somewhere (chosen from 40 common words by their mean scores on the dense crops); one class with two names.
CLASS_LINES = ["floor", "book", "tree, plant", "sofa", "window", "horse, flower"]
BACKGROUND_CLASS_LINES = ["floor, window, wall", "book", "tree", "sofa, cup", "plant", "horse"]
DINO_SEED = 8
DINOV2_SEED = 9
DINO_PERTURBATION = 0.5
RANDOM_SEED = 42  # configs/base_config.py randomness=dict(seed=42)
SUBSAMPLE = 8
DATASET_CONFIG = {"voc21": "voc21", "context59": "context59", "cityscapes": "city_scapes", "voc20": "voc20"}

# case: (benchmark whose per-dataset settings apply, image seed, image size, short side, crop windows (y, x, size))
DENSE_CASES = {
    "crops_context59": ("context59", 11, (260, 380), 224, [(0, 0, 224), (0, 103, 224)]),
    "crops_voc20": ("voc20", 12, (300, 300), 224, [(0, 0, 224)]),  # eigenscaling off
    "crops_cityscapes": ("cityscapes", 13, (240, 480), 224, [(0, 224, 224)]),  # the crop's own class token
    "crops_context59_dinov2": ("context59", 7, (260, 380), 224, [(0, 0, 224), (0, 103, 224)]),  # dino_type dinov2
}
# case: (benchmark of the cass protocol, class lines, image seed, original size, short side)
WHOLE_CASES = {
    "whole_voc21": ("voc21", BACKGROUND_CLASS_LINES, 1, (300, 420), 224),  # whole image, non-square
    "whole_context59": ("context59", CLASS_LINES, 7, (260, 380), 224),
    "whole_cityscapes": ("cityscapes", CLASS_LINES, 6, (240, 480), 224),
    "whole_context59_dinov2": ("context59", CLASS_LINES, 7, (260, 380), 224),
}

REFERENCE_DID = (
    "clip.load(state-dict file, device='cpu', jit=False): build_model + convert_weights (exact fp16 rounding of the "
    "fixture weights), float32 on the CPU. DinoSelfAttention's vits.vit_base replaced by the repository's own "
    "dino/vision_transformer.VisionTransformer(patch_size=8, embed_dim=128, depth=2, num_heads=2, qkv_bias=True, "
    "LayerNorm eps 1e-6, num_classes=0) and its torch.hub.load_state_dict_from_url by the fixture's DINO weights "
    "(strict). Cases *_dinov2 (dino_type='dinov2_vitb14'): Dinov2SelfAttention's vit_base replaced by the "
    "repository's own dinov2 DinoVisionTransformer at 128 wide, 2 heads, 2 blocks (patch 14, img_size 518, "
    "init_values 1.0, 4 register tokens), loading the fixture's DINOv2 weights (DINOv2's own layout) from "
    "dinov2_vitb14_reg4_pretrain.pth in the working folder. Tensor.to('cuda') served on the CPU "
    "(clip.tokenize(...).to('cuda')); Tensor.half and Module.half made "
    "no-ops: float32 throughout. torch.manual_seed(42) before every forward_feature call (per crop). "
    "CASS_segmentor(arch='reduced', attn_strategy='spectral', gaussian_std=5, pamr_steps=0, logit_scale=40, "
    "dataset=./configs/cfg_<dataset>.py with that config's global_semantics_weight, mean_vector_weight, "
    "h_threshold and prob_thd). Dense: forward_feature(crop, whole image) (forward_feature(crop, None) for "
    "cityscapes), cosine mixtures on the patch grid bilinear to the crop. Whole images: the engine's resize and "
    "normalisation (mmcv's equal) feed predict (forward_slide, or forward_feature on the whole image for voc21; "
    "bilinear to the original size; softmax(40 x logits), synonyms max, prob_thd). Text: prompts/imagenet_template.py "
    "openai_imagenet_template (80), per name: each embedding normalised, mean, normalised."
)


def dataset_settings(benchmark: str) -> dict[str, Any]:
    import yaml

    defaults = yaml.safe_load((Path(__file__).resolve().parents[2] / "methods/clip_settings/cass.yaml").read_text())
    per = defaults["datasets"][benchmark]
    settings = {key: per[key] for key in ("global_semantics_weight", "mean_vector_weight", "h_threshold")}
    if "prob_thd" in per:
        settings["prob_thd"] = per["prob_thd"]
    return settings


def patch_dinov2(dinov2_weights: dict[str, torch.Tensor], folder: Path) -> None:
    """Dinov2SelfAttention builds `vit_base(patch_size=14, img_size=518, init_values=1.0, num_register_tokens=4,
    block_chunks=0)` and loads 'dinov2_vitb14_reg4_pretrain.pth' from the working folder: here the repository's own
    DinoVisionTransformer at the fixture's width and depth, and the fixture's DINOv2 weights saved under that name
    in `folder` (the working folder while segmentors are built)."""
    import dinov2.dino_attention as dinov2_attention  # the repository's, from the checkout
    from dinov2.layers import MemEffAttention
    from dinov2.layers import NestedTensorBlock as Block
    from dinov2.models.vision_transformer import DinoVisionTransformer

    config = harness.CASS_DINOV2_CONFIG["timm_kwargs"]

    def small_vit(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any) -> nn.Module:
        return DinoVisionTransformer(patch_size=patch_size, embed_dim=config["embed_dim"], depth=config["depth"],
                                     num_heads=config["num_heads"], mlp_ratio=4,
                                     block_fn=partial(Block, attn_class=MemEffAttention),
                                     num_register_tokens=num_register_tokens, **kwargs)

    dinov2_attention.vit_base = small_vit
    torch.save(dinov2_weights, folder / "dinov2_vitb14_reg4_pretrain.pth")


def patch_reference(dino_weights: dict[str, torch.Tensor]) -> Any:
    sys.modules.setdefault("requests", types.ModuleType("requests"))  # dino_attention.py imports it, never uses it
    import dino.dino_attention as dino_attention  # the repository's, from the checkout

    config = harness.CASS_DINO_CONFIG["timm_kwargs"]
    vits = dino_attention.vits

    def small_vit(patch_size: int = 8, **kwargs: Any) -> nn.Module:
        return vits.VisionTransformer(patch_size=patch_size, embed_dim=config["embed_dim"], depth=config["depth"],
                                      num_heads=config["num_heads"], mlp_ratio=4, qkv_bias=True,
                                      norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)

    vits.vit_base = small_vit
    torch.hub.load_state_dict_from_url = lambda *_, **__: dict(dino_weights)
    to = torch.Tensor.to

    def to_here(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple("cpu" if arg == "cuda" else arg for arg in args)
        if kwargs.get("device") == "cuda":
            kwargs["device"] = "cpu"
        return to(self, *args, **kwargs)

    torch.Tensor.to = to_here
    torch.Tensor.half = lambda self, *_, **__: self
    nn.Module.half = lambda self: self
    import cass_segmentor  # the reference, from the checkout
    import clip.model as clip_model

    assign = clip_model.linear_sum_assignment

    def logged(costs: np.ndarray):  # the head pairing each crop's spectral block chose, in call order
        rows, cols = assign(costs)
        ASSIGNMENTS.append(np.asarray(cols, dtype=np.int16))
        return rows, cols

    clip_model.linear_sum_assignment = logged
    return cass_segmentor


ASSIGNMENTS: list[np.ndarray] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of MICV-yonsei/CASS")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "cass")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parity-cass-"))
    weights = harness.sharpened_deep_clip(SEED, **WEIGHTS)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    dino_weights = harness.random_dino(DINO_SEED, DINO_PERTURBATION, harness.CASS_DINO_CONFIG)
    dinov2_weights = harness.random_dinov2_official(DINOV2_SEED, DINO_PERTURBATION, harness.CASS_DINOV2_CONFIG)
    protocol = load_protocol("cass")

    reference.install_stubs()
    source = reference.checkout(args.repo, args.commit)
    module = patch_reference(dino_weights)
    patch_dinov2(dinov2_weights, work)

    def segmentor(names_file: Path, benchmark: str, dino_type: str = "dino_vitb8", **settings: Any):
        here = os.getcwd()
        os.chdir(work)  # Dinov2SelfAttention reads its weights file from the working folder
        try:
            model = module.CASS_segmentor(str(clip_path), str(names_file), device="cpu", pamr_steps=0,
                                          dataset=f"./configs/cfg_{DATASET_CONFIG[benchmark]}.py", dino_type=dino_type,
                                          **settings)
        finally:
            os.chdir(here)
        forward_feature = model.forward_feature

        def seeded(*inputs: Any, **keywords: Any):
            torch.manual_seed(RANDOM_SEED)
            return forward_feature(*inputs, **keywords)

        model.forward_feature = seeded
        return model

    arrays: dict[str, np.ndarray] = {}
    cases = []
    for case, (benchmark, seed, size, short, windows) in DENSE_CASES.items():
        spec = fixture_spec(protocol, benchmark, harness.class_names(CLASS_LINES), short=short)
        names_file = work / f"cls_{case}.txt"
        names_file.write_text("\n".join(CLASS_LINES))
        settings = dataset_settings(benchmark)
        settings.pop("prob_thd", None)
        dino_type = "dinov2_vitb14" if case.endswith("_dinov2") else "dino_vitb8"
        model = segmentor(names_file, benchmark, dino_type, **settings)
        image = resized_input(harness.whole_image(seed, size), spec)
        whole = None if benchmark == "cityscapes" else image
        ASSIGNMENTS.clear()
        logits = torch.cat([model.forward_feature(image[:, :, y:y + side, x:x + side], whole)
                            for y, x, side in windows]).float()
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        arrays[f"{case}_assignments"] = np.stack(ASSIGNMENTS)
        cases.append({"case": case, "kind": "dense", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "short": short, "windows": [list(window) for window in windows], "settings": settings,
                      "dino_type": dino_type,
                      "classes": CLASS_LINES, "subsample": SUBSAMPLE,
                      "reference": "forward_feature(crop, whole image or None): bilinear to the crop",
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})

    for case, (benchmark, lines, seed, size, short) in WHOLE_CASES.items():
        spec = fixture_spec(protocol, benchmark, harness.class_names(lines), short=short)
        names_file = work / f"cls_{case}.txt"
        names_file.write_text("\n".join(lines))
        settings: dict[str, Any] = {**dataset_settings(benchmark), "logit_scale": spec.method_settings["logit_scale"],
                                    "slide_crop": spec.inference.crop if spec.inference.mode == "slide" else 0,
                                    "slide_stride": spec.inference.stride or 112}
        dino_type = "dinov2_vitb14" if case.endswith("_dinov2") else "dino_vitb8"
        model = segmentor(names_file, benchmark, dino_type, **settings)
        inputs = resized_input(harness.whole_image(seed, size), spec)
        ASSIGNMENTS.clear()
        sample = model.predict(inputs, [reference.sample(size)])[0]
        arrays[f"{case}_assignments"] = np.stack(ASSIGNMENTS)
        prediction = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[case] = prediction
        arrays[f"{case}_ties"] = harness.decision_ties(sample.seg_logits.data.float(), settings.get("prob_thd"))
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": short, "settings": settings, "classes": lines,
                      "dino_type": dino_type,
                      "reference": "CASS_segmentor.predict(resized image) -> pred_sem_seg",
                      "ties_from": "postprocess_result's seg_logits (class probabilities)",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})

    meta = {
        "method": "cass", "repository": REPOSITORY, "commit": args.commit, "script": "tools/parity/make_cass.py",
        "weights": {"seed": SEED, **WEIGHTS, "sha256": harness.weights_digest(weights), "keys": list(weights),
                    "recipe": "tests/parity/harness.py sharpened_deep_clip(seed, vision_layers, perturbation, "
                              "query_key_scale, last_out_proj_scale)"},
        "dino_weights": {"seed": DINO_SEED, "perturbation": DINO_PERTURBATION, "config": harness.CASS_DINO_CONFIG,
                         "sha256": harness.weights_digest(dino_weights), "keys": list(dino_weights)},
        "dinov2_weights": {"seed": DINOV2_SEED, "perturbation": DINO_PERTURBATION,
                           "config": harness.CASS_DINOV2_CONFIG, "sha256": harness.weights_digest(dinov2_weights),
                           "keys": list(dinov2_weights)},
        "random_seed": RANDOM_SEED,
        "reference_did": REFERENCE_DID,
        "reference_quirks": [
            "inv_normalize uses std 0.255 for blue (ImageNet's is 0.225); the adapter uses the same constants.",
            "Output head h mixes CLIP head h with DINO head pi(h) but weighs the pair (DINO h, CLIP pi(h)) "
            "(cost_matrix is filled [dino, clip] and read [clip, dino]); the adapter reads it the same way.",
            "optimal_q's energy test always passes at the first rank tried: rank 10, whatever energy_threshold says.",
            "The reference seeds once per run, so a crop's svd_lowrank draws depend on every crop before it.",
            "The head-pairing costs are often additive (cost[i, j] = a_i + b_j when every DINO spectrum dominates "
            "every CLIP spectrum in the same places), so every pairing costs the same and float rounding picks one: "
            "<case>_assignments holds the pairing the reference chose for each crop, in call order; the test replays "
            "it after checking that it is optimal for the adapter's own costs.",
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
