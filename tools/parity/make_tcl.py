"""Makes tests/parity/fixtures/tcl from TCL's own code (kakaobrain/tcl), run with mmcv/mmseg 0.x stubbed.

    python tools/parity/make_tcl.py --repo /path/to/tcl/.git --mmseg-repo /path/to/MaskCLIP/.git

The reference needs `einops` (pip install einops; a folder holding it can be given with --deps).

TCL is trained: the fixture's weights are the harness's random OpenAI-layout CLIP (the frozen CLIP, read by
the reference's `sclip.load`: `build_model` + `convert_weights`, whose fp16 rounding is exact on these
fp16-representable weights, then `model.float()` on the CPU) and TCL's learned masker drawn by
`released_masker_weights(seed)` in the layout of the released tcl.pth (`{"model": state}`), loaded by the
reference's own `utils.checkpoint.load_checkpoint` (strict about unexpected keys).

Dense cases: `TCL.generate_masks(crops, text_embedding, apply_pamr, kp_w)`, the text embedding from the
reference's `build_dataset_class_tokens` (template set `custom`) and `TCL.build_text_embedding`.
Whole images: the reference's `build_seg_inference` (its `TCLSegInference`) run by mmseg's
`EncoderDecoder.simple_test` / `inference` / `slide_inference`, on the engine's resize and normalisation
(tested equal to mmcv's elsewhere). mmsegmentation 0.27.0 itself cannot be fetched here; its
EncoderDecoder is taken from the copy of mmseg 0.20.2 vendored by chongzhou96/MaskCLIP (same slide
windows, count division, bilinear resize to the original size, softmax and argmax on this path).

TCL has one name per class: each synonym is given to the reference as a class of its own, and the
reference's label map (a name index, 0 the background channel where there is one) is mapped to the
name's class. An argmax over names mapped to classes is the argmax over classes of the max over each
class's names, the engine's synonym rule.

Only the mmcv, mmseg, omegaconf, termcolor, webdataset and braceexpand names that the model, its
checkpoint loader and its inference wrapper import are stubbed, each doing only what that code uses.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import runpy
import subprocess
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
from tests.parity.tcl_checkpoint import (  # noqa: E402
    MASKER_PERTURBATION,
    MASKER_SEED,
    SIM2MASK,
    released_masker_weights,
)

REPOSITORY = "kakaobrain/tcl"
COMMIT = "bc2b551"
MMSEG_REPOSITORY = "chongzhou96/MaskCLIP"  # vendors mmsegmentation 0.20.2 (mmseg/version.py)
MMSEG_COMMIT = "245d31f"
MMSEG_FILES = ("mmseg/models/segmentors/encoder_decoder.py", "mmseg/ops/wrappers.py")
SEED = 0
SUBSAMPLE = 8  # dense masks are stored every 8th pixel of the crop
def name_classes(lines: list[str], background: bool) -> tuple[list[str], list[int]]:
    """The names given to the reference as its classes, and the class of each reference channel."""
    names, classes = [], [0] if background else []
    for index, synonyms in enumerate(harness.class_names(lines)[1:] if background else harness.class_names(lines)):
        names += synonyms
        classes += [index + 1 if background else index] * len(synonyms)
    return names, classes


# --- stubs: what the reference's model, checkpoint loader and inference wrapper import ----------------------


class _AttrDict(dict):
    """mmcv.Config / OmegaConf config as read here: keys as attributes, ** unpacking."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as error:
            raise AttributeError(key) from error


class _Config(_AttrDict):
    @classmethod
    def fromfile(cls, path: str) -> _Config:
        return cls({k: v for k, v in runpy.run_path(path).items() if not k.startswith("_")})


class _Registry:
    """mmcv.utils.Registry: register_module as a decorator, build(dict(type=..., **kwargs))."""

    def __init__(self, name: str) -> None:
        self.name, self.modules = name, {}

    def register_module(self, *args: Any, **kwargs: Any):
        def register(cls: type) -> type:
            self.modules[cls.__name__] = cls
            return cls

        return register(args[0]) if args and isinstance(args[0], type) else register

    def build(self, cfg: dict) -> Any:
        cfg = dict(cfg)
        return self.modules[cfg.pop("type")](**cfg)


class _CheckpointLoader:
    @staticmethod
    def load_checkpoint(path: str, map_location: str = "cpu") -> dict:
        return torch.load(path, map_location=map_location, weights_only=True)


class _BaseSegmentor(torch.nn.Module):
    """mmseg 0.x BaseSegmentor as TCLSegInference uses it: an nn.Module (its __init__ skips EncoderDecoder's)."""

    def __init__(self, init_cfg: Any = None) -> None:
        super().__init__()


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("not stubbed: the parity run does not reach this")


def extract(git_dir: Path, commit: str, paths: tuple[str, ...]) -> Path:
    """Those files of the repository at `commit` in a new temporary folder (not put on sys.path)."""
    folder = Path(tempfile.mkdtemp(prefix="parity-mmseg-"))
    for path in paths:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shown = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"], check=True,
                               capture_output=True)
        target.write_bytes(shown.stdout)
    return folder


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def install_tcl_stubs(mmseg_source: Path) -> None:
    """mmcv 1.x / mmseg 0.x names (mmseg's EncoderDecoder itself from the vendored mmseg 0.20.2 files)."""
    package = lambda name, **attributes: _module(name, [], **attributes)  # noqa: E731
    _module("mmcv", Config=_Config)
    _module("mmcv.utils", Registry=_Registry, get_logger=lambda name=None, *a, **k: logging.getLogger(name or "tcl"))
    _module("mmcv.runner", CheckpointLoader=_CheckpointLoader)
    _module("mmcv.parallel")
    _module("mmcv.parallel.data_container", DataContainer=type("DataContainer", (), {}))
    _module("omegaconf", OmegaConf=types.SimpleNamespace(to_container=_unused), read_write=_unused)
    _module("termcolor", colored=lambda text, *args, **kwargs: text)
    _module("webdataset", WebLoader=_unused, WebDataset=_unused)
    _module("braceexpand", braceexpand=_unused)
    package("mmseg")
    _module("mmseg.core", add_prefix=_unused)
    _module("mmseg.datasets", build_dataloader=_unused, build_dataset=_unused)
    _module("mmseg.datasets.pipelines", Compose=_unused)
    _load_file("mmseg.ops", mmseg_source / "mmseg" / "ops" / "wrappers.py")
    package("mmseg.models")
    _module("mmseg.models.builder", SEGMENTORS=_Registry("segmentor"))
    package("mmseg.models.segmentors")
    _module("mmseg.models.segmentors.base", BaseSegmentor=_BaseSegmentor)
    sys.modules["mmseg.models"].builder = sys.modules["mmseg.models.builder"]
    encoder_decoder = _load_file(
        "mmseg.models.segmentors.encoder_decoder",
        mmseg_source / "mmseg" / "models" / "segmentors" / "encoder_decoder.py",
    )
    sys.modules["mmseg.models"].EncoderDecoder = encoder_decoder.EncoderDecoder


def _module(name: str, path: list[str] | None = None, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    if path is not None:
        module.__path__ = path
    sys.modules[name] = module
    return module


# --- the fixture --------------------------------------------------------------------------------------------


def build_reference(model_config: dict, clip_path: Path, checkpoint_path: Path) -> torch.nn.Module:
    """configs/tcl.yml's model (ie_freeze at the fixture CLIP's last block) with the checkpoint loaded."""
    from models.tcl.tcl import TCL
    from utils.checkpoint import load_checkpoint

    options = {k: v for k, v in model_config.items() if k != "type"}
    options.update(clip_model=str(clip_path), ie_freeze=harness.VISION_LAYERS - 1)
    model = TCL(**options)
    config = _AttrDict(checkpoint=_AttrDict(resume=str(checkpoint_path)), evaluate=_AttrDict(eval_only=True))
    load_checkpoint(config, model, None, None, None)
    model.eval()  # TCL.train (which eval calls) returns None
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of the fetched kakaobrain/tcl")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--mmseg-repo", type=Path, required=True, help="git directory of chongzhou96/MaskCLIP")
    parser.add_argument("--mmseg-commit", default=MMSEG_COMMIT)
    parser.add_argument("--deps", type=Path, help="a folder holding einops, put on sys.path")
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "tcl")
    args = parser.parse_args()
    if args.deps:
        sys.path.insert(0, str(args.deps))

    import yaml

    from tools.parity import reference

    reference.install_stubs()  # pkg_resources.packaging, which sclip/clip.py imports
    install_tcl_stubs(extract(args.mmseg_repo, args.mmseg_commit, MMSEG_FILES))
    source = reference.checkout(args.repo, args.commit)
    from datasets.builder import build_text_transform
    from datasets.templates import custom
    from segmentation.evaluation.builder import build_dataset_class_tokens, build_seg_inference

    work = Path(tempfile.mkdtemp(prefix="parity-tcl-"))
    weights = harness.random_openai_clip(SEED)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    masker = released_masker_weights(weights, MASKER_SEED)
    checkpoint_path = work / "tcl.pth"
    torch.save({"model": masker}, checkpoint_path)
    tcl_config = yaml.safe_load((source / "configs" / "tcl.yml").read_text())
    model = build_reference(tcl_config["model"], clip_path, checkpoint_path)
    text_transform = build_text_transform()
    protocols = {name: load_protocol(name) for name in ("tcl8", "tcl8_nopamr")}
    assert tuple(custom) == protocols["tcl8"].text.templates, "the protocol's templates are the reference's `custom`"
    evaluate = tcl_config["evaluate"]
    arrays: dict[str, np.ndarray] = {}
    cases = []

    # Dense masks of crops: square and non-square (224 x 288: padded to 224 x 288, no padding; 232 x 280 is
    # padded by 8 + 0 and 4 + 4), names with synonyms; PAMR and kp on (tcl8) and off.
    names, name_class = name_classes(harness.CLASS_LINES, background=False)
    text = model.build_text_embedding(build_dataset_class_tokens(text_transform, "custom", names))
    dense = {
        "crops_square": (1, (224, 224), "tcl8", 0.3), "crops_wide": (2, (224, 288), "tcl8", 0.3),
        "crops_padded": (6, (232, 280), "tcl8", 0.3),
        "crops_square_raw": (1, (224, 224), "tcl8_nopamr", 0.0), "crops_wide_raw": (2, (224, 288), "tcl8_nopamr", 0.0),
    }
    for case, (seed, shape, protocol_name, kp_w) in dense.items():
        crops = harness.crop_batch(seed, shape)
        pamr = bool(protocols[protocol_name].benchmarks["context59"].method_settings["pamr"])
        try:
            model.generate_masks(crops, text, apply_pamr=pamr, kp_w=kp_w)
            batched_error = None
        except RuntimeError as error:  # PAMR's view of the einsum's mask layout with 2 crops
            batched_error = f"{type(error).__name__}: {error}"
        masks = torch.cat([model.generate_masks(crop[None], text, apply_pamr=pamr, kp_w=kp_w)[0] for crop in crops])
        arrays[case] = masks[..., ::SUBSAMPLE, ::SUBSAMPLE].float().numpy()
        cases.append({"case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": crops.shape[0],
                      "classes": "CLASS_LINES", "subsample": SUBSAMPLE, "protocol": protocol_name,
                      "input_sha256": harness.input_digest(crops),
                      "pamr": pamr, "kp_w": kp_w,
                      "reference": "TCL.generate_masks(crop, text_embedding, apply_pamr, kp_w) crop by crop: "
                                   "soft masks per name", "reference_error_on_the_batch": batched_error,
                      "classes_predicted": int(len(np.unique(np.asarray(name_class)[masks.argmax(1).numpy()])))})

    # Whole images through the reference's TCLSegInference under mmseg's slide inference (crop 448, stride 224).
    # Short side 448 (the protocol's): several square windows; 300: one window smaller than the crop, padded
    # to a multiple of the patch (280 x 400 -> 300 x 429 -> 304 x 432; 260 x 330 -> 300 x 381 -> 304 x 384,
    # the odd pixel right).
    whole = {
        "whole_voc21_pamr": ("tcl8", "voc21", 0.3, 3, (300, 420), 448),
        "whole_voc21_nopamr": ("tcl8_nopamr", "voc21", 0.3, 4, (350, 260), 448),
        "whole_voc21_nopamr_nokp": ("tcl8_nopamr", "voc21", 0.0, 3, (280, 400), 300),
        "whole_context59_pamr": ("tcl8", "context59", 0.3, 6, (240, 400), 448),
        "whole_context59_pamr_nokp": ("tcl8", "context59", 0.0, 5, (260, 330), 300),
        "whole_context59_nopamr": ("tcl8_nopamr", "context59", 0.3, 4, (350, 260), 448),
    }
    for case, (protocol_name, benchmark, kp_w, seed, size, short) in whole.items():
        protocol = protocols[protocol_name]
        background = protocol.benchmarks[benchmark].background.rule == "threshold"
        lines = harness.BACKGROUND_CLASS_LINES if background else harness.CLASS_LINES
        class_lines = lines[1:] if background else lines
        spec = fixture_spec(protocol, benchmark, harness.class_names(class_lines), short=short)
        names, channel_class = name_classes(lines, background)
        pamr = bool(spec.method_settings["pamr"])
        bg_thresh = 0.4 if pamr else 0.5  # README "Evaluation": eval.yml's 0.4, `evaluate.bg_thresh=0.5` without PAMR
        seg_config = work / f"{case}_dataset.py"
        seg_config.write_text(
            f"test_cfg = dict(mode='slide', stride=({spec.inference.stride}, {spec.inference.stride}), "
            f"crop_size=({spec.inference.crop}, {spec.inference.crop}))\n"
        )
        dataset = types.SimpleNamespace(CLASSES=tuple(["background"] * background + names), PALETTE=None)
        config = _AttrDict(model=_AttrDict(type="TCL"),
                           evaluate=_AttrDict(evaluate, pamr=pamr, bg_thresh=bg_thresh, kp_w=kp_w))
        seg_model = build_seg_inference(model, dataset, text_transform, config, str(seg_config))
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        meta = [{"ori_shape": (*size, 3), "img_shape": (*inputs.shape[-2:], 3), "flip": False}]
        label = torch.as_tensor(seg_model.simple_test(inputs, meta, rescale=True)[0])
        probs = seg_model.inference(inputs, meta, rescale=True)[0]
        mapping = torch.tensor(channel_class)
        prediction = mapping[label].numpy().astype(np.int16)
        per_class = torch.stack([probs[mapping == k].amax(0) for k in range(int(mapping.max()) + 1)])
        arrays[case] = prediction
        arrays[f"{case}_ties"] = harness.decision_ties(per_class)
        cases.append({"case": case, "kind": "whole", "protocol": protocol_name, "benchmark": benchmark,
                      "seed": seed, "size": list(size), "resized": list(inputs.shape[-2:]), "short": short,
                      "input_sha256": harness.input_digest(image),
                      "settings": {"pamr": pamr, "kp_w": kp_w, "bg_thresh": bg_thresh if background else None,
                                   "with_bg": background, "test_cfg": seg_config.read_text().strip()},
                      "reference_names": names, "channel_class": channel_class,
                      "reference": "build_seg_inference(...).simple_test(resized image): label map, names -> classes",
                      "classes_predicted": int(len(np.unique(prediction))),
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})

    meta = {
        "method": "tcl", "repository": REPOSITORY, "commit": args.commit,
        "mmseg": {"repository": MMSEG_REPOSITORY, "commit": args.mmseg_commit, "version": "0.20.2",
                  "files": list(MMSEG_FILES)},
        "script": "tools/parity/make_tcl.py",
        "weights": {"seed": SEED, "perturbation": harness.PERTURBATION,
                    "sha256": harness.weights_digest(weights), "keys": list(weights)},
        "masker": {"seed": MASKER_SEED, "perturbation": MASKER_PERTURBATION, "sim2mask": list(SIM2MASK),
                   "sha256": harness.weights_digest(masker), "keys": list(masker),
                   "layout": "the released tcl.pth: {'model': state}"},
        "reference_did": (
            "TCL(**configs/tcl.yml model, clip_model=<state dict file>, ie_freeze=2: the fixture CLIP's last block "
            "of 3, as 11 of 12 for ViT-B/16). sclip.load(file, device='cpu'): build_model + convert_weights (fp16 "
            "rounding of conv/linear/attention/projection weights; the fixture weights are fp16-representable, so "
            "the rounding is exact), then model.float(): float32 on the CPU. The masker from the checkpoint by "
            "utils.checkpoint.load_checkpoint (load_state_dict strict=False; missing keys only the whitelisted "
            "frozen CLIP copies and loss temperatures, no unexpected key). Attention: torch.nn.MultiheadAttention "
            "(sequence-first, F.multi_head_attention_forward); the last block with the MaskCLIP mask (-inf off the "
            "diagonal). Text: template set `custom` (= protocols/templates/tcl9.txt), encode_text per template, "
            "mean, one normalisation (TCL.build_text_embedding). Whole images: the engine's resize and "
            "normalisation feed EncoderDecoder.simple_test (mmseg 0.20.2 slide_inference with TCLSegInference."
            "encode_decode: bg_thresh channel first where CLASSES[0] == 'background'; bilinear to the original "
            "size, softmax, argmax). Ties: decided against the reference's softmax output, max over each class's "
            "names."
        ),
        "templates": "protocols/templates/tcl9.txt",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source})")
    for entry in cases:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted, ties {entry.get('tie_pixels')}")


if __name__ == "__main__":
    main()
