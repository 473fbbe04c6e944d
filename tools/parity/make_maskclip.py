"""Makes tests/parity/fixtures/maskclip (the authors' code, chongzhou96/MaskCLIP, an mmseg 0.x code base) and
tests/parity/fixtures/maskclip_clearclip (the ClearCLIP repository's re-implementation, model_type 'MaskCLIP').

    python tools/parity/make_maskclip.py --repo /path/to/MaskCLIP/.git --clearclip-repo /path/to/ClearCLIP/.git

Authors' variant. The repository is unpacked at the commit into a temporary folder and its own modules are
imported from there: mmseg/models/backbones/vit.py (VisionTransformer, return_qkv), mmseg/models/utils/embed.py
(PatchEmbed, padding="corner"), mmseg/models/decode_heads/{decode_head,maskclip_head}.py (MaskClipHead),
mmseg/models/segmentors/{base,encoder_decoder}.py (EncoderDecoder: encode_decode, slide_inference,
whole_inference, simple_test), mmseg/models/builder.py and mmseg/ops/wrappers.py (resize). The mmseg packages
are entered without running their __init__ files (which import every model, dataset and mmcv op), and the few
mmcv 1.x names those modules import are stubbed below, each doing what mmcv does for the arguments MaskCLIP
passes: build_norm_layer(LN) -> ("ln<postfix>", nn.LayerNorm(eps)), build_conv_layer -> nn.Conv2d, the GELU
activation -> nn.GELU, mmcv's MultiheadAttention (a batch-first wrapper around nn.MultiheadAttention, identity
added) and FFN (Linear-act-Dropout, Linear, Dropout; identity added), registries, BaseModule, fp16 decorators.
The model is built from the repository's configs/_base_/models/maskclip_vit16.py with the fixture CLIP's sizes
(width 128, 3 layers, 2 heads, 64-d joint space) in place of ViT-B/16's; weights come from the key mapping of
tools/maskclip_utils/convert_clip_weights.py (applied by `convert_clip_weights` below: that file runs its
mapping under __main__ on a clip.load()ed model, so it cannot be imported), as `--backbone` (the checkpoint)
and without it (the head's visual_projs_path file).

ClearCLIP variant: tools/parity/make_clearclip.py's ClearCLIPRepository and dense_cases with model_type 'MaskCLIP'
and ignore_residual True (out_proj(v) alone: no residual, no feed-forward branch); whole images under the
clearclip protocol on cases of its own (CLEARCLIP_WHOLE_CASES), run as make_clearclip runs predict.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.protocol import BenchmarkSpec, InferenceSpec, load_protocol  # noqa: E402
from methods.clip_backbone import load_clip  # noqa: E402
from methods.clip_text import build_text_bank  # noqa: E402
from tests.parity import harness  # noqa: E402
from tests.parity.engine import fixture_spec, resized_input  # noqa: E402
from tools.parity import make_clearclip, reference  # noqa: E402

REPOSITORY = "chongzhou96/MaskCLIP"
COMMIT = "245d31f"
SEED = 0
SUBSAMPLE = 8  # dense scores are stored every 8th pixel of the crop
PROTOCOL = "tcl8_nopamr"  # mmseg 0.x EncoderDecoder's slide inference, ImageNet mean/std, fp32: the authors' code base
# case -> (image seed, crop shape): square; 14 x 18 patches (positional embedding resized to size); 200 x 300,
# not a multiple of 16: PatchEmbed pads right and bottom to 208 x 304 ("corner") and encode_decode stretches the
# 13 x 19 grid over the 200 x 300 crop.
DENSE_CASES = {"crops_square": (1, (224, 224)), "crops_wide": (2, (224, 288)), "crops_padded": (5, (200, 300))}
# case -> (benchmark, image seed, original size, resize short side, inference, threshold). whole_voc20 is the
# published MaskCLIP setting (test_cfg mode 'whole', keep-ratio resize, no background) at short side 224 (the
# authors' 512 scaled to the fixture CLIP): the 253 x 224 image is padded to 256 x 224. slide_voc21 is the
# protocol's own slide inference (448 windows, stride 224, two windows on a 448 x 627 image) under its background
# rule `threshold` (TCL's constant channel in front of the class probabilities); the protocol leaves the value to
# the method, whose own (0.0, clip_settings/maskclip.yaml) never lets background win, so the case sets one: 0.15,
# inside the maximum class probabilities of MaskCLIP's flat random-weight scores (0.13-0.24 at logit scale 100;
# the suite's 0.5 for methods without a value would send every pixel to background).
WHOLE_CASES = {
    "whole_voc20": ("voc20", 4, (260, 230), 224, "whole", None),
    "slide_voc21": ("voc21", 3, (300, 420), 448, "slide", 0.15),
}

CLEARCLIP_VARIANT = {"ignore_residual": True}  # configs/base_config.py; model_type 'MaskCLIP' set per segmentor
# case -> (benchmark, image seed, original size, resize short side), under the clearclip protocol with its own
# settings. Class names CLASS_LINES in both: with BACKGROUND_CLASS_LINES the three names of class 0 win every pixel
# of MaskCLIP's flat random-weight scores. context60's prob_thd 0.15 falls inside those scores' maximum
# probabilities (0.147-0.184 at logit scale 50), so the rule sends some pixels to class 0 (voc21's 0.5 sends all);
# two 448 windows on a 448 x 576 image. context59 at 224: the 253 x 224 image is one window, padded to 256 x 224.
CLEARCLIP_WHOLE_CASES = {
    "whole_context60": ("context60", 8, (280, 360), 448),
    "whole_context59": ("context59", 4, (260, 230), 224),
}

REFERENCE_DID = (
    "The repository's own modules from the checkout (vit.py VisionTransformer, embed.py PatchEmbed, "
    "maskclip_head.py MaskClipHead on decode_head.py BaseDecodeHead, encoder_decoder.py EncoderDecoder), built "
    "from configs/_base_/models/maskclip_vit16.py with the fixture CLIP's sizes; mmcv 1.x stubbed (nn.LayerNorm "
    "with the config's eps 1e-6, nn.GELU: exact erf GELU, mmcv MultiheadAttention/FFN semantics). Weights: "
    "tools/maskclip_utils/convert_clip_weights.py's key mapping of the fixture state dict (what clip.load gives "
    "on the CPU: fp16-rounded by build_model/convert_weights, then float; the fixture weights are "
    "fp16-representable, so the rounding is exact), loaded as the checkpoint (--backbone keys) and as "
    "visual_projs_path (proj); float32 on the CPU. MaskClipHead's torch.load(map_location='cuda') is run with "
    "map_location='cpu'. decode_head loss_decode=() (the config's CrossEntropyLoss is only built for training). "
    "Last block: TransformerEncoderLayer.forward(return_qkv=True): v = out_proj(v_proj(ln1(x))) + x, "
    "v = v + ffn(ln2(v)), then the final norm ln1 and the head's proj; cls_seg: cosines with text_embeddings. "
    "Text embeddings (the head's text_embeddings_path) are not the reference's: the repository makes them with "
    "tools/maskclip_utils/prompt_engineering.py, which needs OpenAI's clip package and CUDA; the fixture passes "
    "the suite's text bank (methods/clip_text.build_text_bank, the protocol's templates and aggregation), "
    "stored as text_<classes> and checked by the test. Dense: EncoderDecoder.encode_decode(crops) (cosines, "
    "bilinear to the crop). Whole images: the engine's resize and normalisation (mmcv's equal) feed "
    "EncoderDecoder with test_cfg mode 'whole' (simple_test: whole_inference, bilinear to ori_shape, softmax, "
    "argmax over names, mapped to their classes) or mode 'slide' (slide_inference with rescale, then the "
    "protocol's rule, which the reference does not have, applied here: softmax(logit_scale * logits) over the "
    "names, max over each class's names, a constant threshold channel in front, argmax). Tie pixels: for mode "
    "'whole' on the class maxima of the cosines whole_inference returns (its softmax keeps their order), for "
    "'slide' on the rule's class probabilities and the threshold."
)
NOTES = [
    "The LayerNorm eps of the authors' ViT (1e-6, CLIP's 1e-5) moves these dense scores by only 2e-6 to 5e-6 "
    "(the perturbed tokens' variance is large): the test also holds the authors' dense scores to 1e-6 "
    "(the adapter is within 2.1e-7), so that it sees the eps.",
    "MaskCLIP's random-weight scores are flat (maximum class probability 0.13-0.25 at logit scale 100): a "
    "threshold of 0.5 sends every pixel to background, so slide_voc21 sets 0.15; with BACKGROUND_CLASS_LINES the "
    "three names of class 0 win nearly every pixel, so every case uses CLASS_LINES.",
    "Nothing in the reference failed on the engine's inputs: PatchEmbed's corner padding takes any crop size, "
    "resize_pos_embed resizes to any grid (size rule, only when the token count differs), slide_inference "
    "decodes windows smaller than the crop without padding them.",
]


# ---- mmcv 1.x, as much as the MaskCLIP modules import -------------------------------------------------------


class AttrDict(dict):
    """mmcv's ConfigDict as the segmentor reads test_cfg: keys as attributes."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as error:
            raise AttributeError(key) from error


class Registry:
    """mmcv.utils.Registry: classes by name, built from a config dict's 'type', looked up in the parent too."""

    def __init__(self, name: str, parent: Registry | None = None, **_: Any) -> None:
        self.name, self.parent, self.modules = name, parent, {}

    def register_module(self, name: str | None = None, force: bool = False, module: type | None = None):
        def register(cls: type) -> type:
            self.modules[name or cls.__name__] = cls
            return cls

        return register(module) if module is not None else register

    def get(self, key: str) -> type | None:
        found = self.modules.get(key)
        return found if found is not None or self.parent is None else self.parent.get(key)

    def build(self, cfg: dict[str, Any], default_args: dict[str, Any] | None = None) -> Any:
        args = dict(cfg)
        for key, value in (default_args or {}).items():
            args.setdefault(key, value)
        kind = args.pop("type")
        cls = self.get(kind)
        if cls is None:
            raise KeyError(f"{kind} is not in the {self.name} registry (only what MaskCLIP's test path builds is)")
        return cls(**args)


class BaseModule(nn.Module):
    """mmcv.runner.BaseModule: an nn.Module that keeps its init_cfg (init_weights is never run here)."""

    def __init__(self, init_cfg: Any = None) -> None:
        super().__init__()
        self.init_cfg = init_cfg


class ModuleList(nn.ModuleList):
    def __init__(self, modules: Any = None, init_cfg: Any = None) -> None:
        super().__init__(modules)
        self.init_cfg = init_cfg


def build_norm_layer(cfg: dict[str, Any], num_features: int, postfix: int | str = "") -> tuple[str, nn.Module]:
    """mmcv.cnn.build_norm_layer for type 'LN': the abbreviation 'ln' + postfix, and nn.LayerNorm(eps)."""
    if cfg.get("type") != "LN":
        raise NotImplementedError(f"only LN norms are stubbed, got {cfg}")
    return f"ln{postfix}", nn.LayerNorm(num_features, eps=cfg.get("eps", 1e-5))


def build_conv_layer(cfg: dict[str, Any] | None, *args: Any, **kwargs: Any) -> nn.Module:
    if cfg is not None and cfg.get("type") != "Conv2d":
        raise NotImplementedError(f"only Conv2d is stubbed, got {cfg}")
    return nn.Conv2d(*args, **kwargs)


def build_activation_layer(cfg: dict[str, Any]) -> nn.Module:
    """mmcv registers torch's nn.GELU (the exact erf form) as 'GELU' (mmcv/cnn/bricks/activation.py)."""
    if cfg.get("type") != "GELU":
        raise NotImplementedError(f"only GELU is stubbed, got {cfg}")
    return nn.GELU()


def build_dropout(cfg: dict[str, Any] | None) -> nn.Module:
    """Dropout / DropPath with drop_prob 0 (every MaskCLIP config): the identity."""
    if cfg and cfg.get("drop_prob", 0.0) != 0.0:
        raise NotImplementedError(f"only drop_prob 0 is stubbed, got {cfg}")
    return nn.Identity()


class MultiheadAttention(BaseModule):
    """mmcv.cnn.bricks.transformer.MultiheadAttention (mmcv 1.x): nn.MultiheadAttention as `attn`, batch-first
    inputs transposed to it and back, the identity (the query unless given) added to the output."""

    def __init__(self, embed_dims: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 dropout_layer: dict[str, Any] | None = None, init_cfg: Any = None, batch_first: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(init_cfg)
        self.batch_first = batch_first
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, attn_drop, **kwargs)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dropout_layer = build_dropout(dropout_layer)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                identity: Tensor | None = None, **_: Any) -> Tensor:
        key = query if key is None else key
        value = key if value is None else value
        identity = query if identity is None else identity
        if self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        out = self.attn(query=query, key=key, value=value)[0]
        if self.batch_first:
            out = out.transpose(0, 1)
        return identity + self.dropout_layer(self.proj_drop(out))


class FFN(BaseModule):
    """mmcv.cnn.bricks.transformer.FFN (mmcv 1.x): layers = [Sequential(Linear, act, Dropout)] * (num_fcs - 1)
    + [Linear, Dropout]; the identity (the input unless given) added."""

    def __init__(self, embed_dims: int = 256, feedforward_channels: int = 1024, num_fcs: int = 2,
                 act_cfg: dict[str, Any] | None = None, ffn_drop: float = 0.0,
                 dropout_layer: dict[str, Any] | None = None, add_identity: bool = True, init_cfg: Any = None,
                 **_: Any) -> None:
        super().__init__(init_cfg)
        layers: list[nn.Module] = []
        channels = embed_dims
        for _ in range(num_fcs - 1):
            layers.append(nn.Sequential(nn.Linear(channels, feedforward_channels),
                                        build_activation_layer(act_cfg or {"type": "ReLU"}), nn.Dropout(ffn_drop)))
            channels = feedforward_channels
        layers += [nn.Linear(feedforward_channels, embed_dims), nn.Dropout(ffn_drop)]
        self.layers = nn.Sequential(*layers)
        self.dropout_layer = build_dropout(dropout_layer)
        self.add_identity = add_identity

    def forward(self, x: Tensor, identity: Tensor | None = None) -> Tensor:
        out = self.layers(x)
        if not self.add_identity:
            return self.dropout_layer(out)
        return (x if identity is None else identity) + self.dropout_layer(out)


def _identity_decorator(*_: Any, **__: Any) -> Callable[[Callable], Callable]:
    return lambda function: function


def _weights_are_loaded(*_: Any, **__: Any) -> None:
    raise RuntimeError("initialisation is not run in the parity fixture: weights come from the converted state dict")


def _module(name: str, attributes: dict[str, Any] | None = None, path: Path | None = None) -> types.ModuleType:
    """A module in sys.modules; with `path`, a package over that folder whose __init__ is not run."""
    module = types.ModuleType(name)
    module.__dict__.update(attributes or {})
    if path is not None:
        module.__path__ = [str(path)]
    sys.modules[name] = module
    return module


def import_maskclip(source: Path) -> dict[str, Any]:
    """The MaskCLIP modules the test path runs, imported from the checkout under the stubs."""
    mmcv_models = Registry("mmcv models")
    _module("mmcv")
    _module("mmcv.cnn", {"build_norm_layer": build_norm_layer, "build_conv_layer": build_conv_layer,
                         "MODELS": mmcv_models})
    _module("mmcv.cnn.bricks")
    _module("mmcv.cnn.bricks.registry", {"ATTENTION": Registry("mmcv attention")})
    _module("mmcv.cnn.bricks.transformer", {"FFN": FFN, "MultiheadAttention": MultiheadAttention})
    _module("mmcv.cnn.utils")
    _module("mmcv.cnn.utils.weight_init", {name: _weights_are_loaded
                                           for name in ("constant_init", "kaiming_init", "trunc_normal_")})
    _module("mmcv.runner", {"BaseModule": BaseModule, "ModuleList": ModuleList, "_load_checkpoint": _weights_are_loaded,
                            "auto_fp16": _identity_decorator, "force_fp32": _identity_decorator})
    _module("mmcv.runner.base_module", {"BaseModule": BaseModule})
    _module("mmcv.utils", {"Registry": Registry, "to_2tuple": _pair,
                           "print_log": lambda message, logger=None: logging.getLogger("mmseg").info(message)})
    mmseg = source / "mmseg"
    _module("mmseg", path=mmseg)
    _module("mmseg.core", {"add_prefix": _weights_are_loaded, "build_pixel_sampler": _weights_are_loaded})
    _module("mmseg.utils", {"get_root_logger": lambda *_, **__: logging.getLogger("mmseg")})
    ops = _module("mmseg.ops", path=mmseg / "ops")
    _module("mmseg.models", path=mmseg / "models")
    _module("mmseg.models.losses", {"accuracy": _weights_are_loaded})
    utils = _module("mmseg.models.utils", path=mmseg / "models" / "utils")
    for package in ("backbones", "decode_heads", "segmentors"):
        _module(f"mmseg.models.{package}", path=mmseg / "models" / package)

    from mmseg.ops.wrappers import resize  # the reference, from the checkout

    ops.resize = resize
    from mmseg.models.utils.embed import PatchEmbed

    utils.PatchEmbed = PatchEmbed
    from mmseg.models import builder
    from mmseg.models.backbones import vit
    from mmseg.models.decode_heads import maskclip_head
    from mmseg.models.segmentors import encoder_decoder

    for module in (vit, maskclip_head, encoder_decoder):
        if not Path(module.__file__).resolve().is_relative_to(source.resolve()):
            raise RuntimeError(f"{module.__name__} imported from {module.__file__}, not from the checkout {source}")
    return {"builder": builder, "EncoderDecoder": encoder_decoder.EncoderDecoder}


# ---- the authors' weights and model ------------------------------------------------------------------------------


def convert_clip_weights(weights: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """tools/maskclip_utils/convert_clip_weights.py's ViT mapping of a CLIP state dict: the checkpoint with
    --backbone ('backbone.'-prefixed keys) and the visual_projs_path file ({'proj': {'weight': proj^T}})."""
    backbone: dict[str, Tensor] = {}
    projections: dict[str, dict[str, Tensor]] = {}
    for key, value in weights.items():
        if not key.startswith("visual."):
            continue
        new_key = key[len("visual."):]
        if new_key == "proj":
            projections["proj"] = {"weight": value.float().t()}
            continue
        if new_key == "class_embedding":
            new_key, value = "cls_token", value[None, None, :]
        elif new_key == "positional_embedding":
            new_key, value = "pos_embed", value[None, :, :]
        elif new_key == "conv1.weight":
            new_key = "patch_embed.projection.weight"
        elif "ln_pre" in new_key:
            new_key = f"ln0.{new_key.split('.')[-1]}"
        elif "ln_post" in new_key:
            new_key = f"ln1.{new_key.split('.')[-1]}"
        elif "transformer" in new_key:
            new_key = "layers." + new_key[len("transformer.resblocks."):]
            if "mlp" in new_key:
                new_key = new_key.replace("mlp", "ffn.layers")
            if "c_fc" in new_key:
                new_key = new_key.replace("c_fc", "0.0")
            if "c_proj" in new_key:
                new_key = new_key.replace("c_proj", "1")
            if "attn" in new_key:
                new_key = new_key.replace("attn", "attn.attn")
            elif "ln_" in new_key:
                new_key = new_key.replace("ln_", "ln")
        backbone["backbone." + new_key] = value.float()
    return backbone, projections


def read_config(source: Path, relative: str) -> dict[str, Any]:
    """An mmcv config file of plain assignments (no _base_), as the names it defines."""
    namespace: dict[str, Any] = {}
    exec(compile((source / relative).read_text(), relative, "exec"), namespace)  # noqa: S102
    return namespace


@contextmanager
def torch_load_on_cpu() -> Iterator[None]:
    """MaskClipHead loads its files with map_location='cuda'; the fixture runs on a machine without one."""
    original = torch.load
    torch.load = lambda path, map_location=None, **kwargs: original(path, map_location="cpu", **kwargs)
    try:
        yield
    finally:
        torch.load = original


class MaskCLIPRepository:
    """The MaskCLIP repository at a commit: EncoderDecoder segmentors on the fixture weights."""

    def __init__(self, git_dir: Path, commit: str, weights: dict[str, Tensor], work: Path) -> None:
        self.source = reference.checkout(git_dir, commit)
        self.modules = import_maskclip(self.source)
        self.model_cfg = read_config(self.source, "configs/_base_/models/maskclip_vit16.py")["model"]
        self.work = work
        self.checkpoint, projections = convert_clip_weights(weights)
        self.projections_path = work / "ViT16_clip_weights.pth"
        torch.save({**projections, "clip": {key[len("backbone."):]: value for key, value in self.checkpoint.items()}},
                   self.projections_path)

    def segmentor(self, text_embeddings: Tensor, test_cfg: dict[str, Any]) -> nn.Module:
        """EncoderDecoder from the config with the fixture CLIP's sizes, the checkpoint loaded as tools/test.py does."""
        cfg = dict(self.model_cfg)
        cfg["backbone"] = dict(cfg["backbone"], embed_dims=harness.VISION_WIDTH, num_layers=harness.VISION_LAYERS,
                               num_heads=harness.VISION_WIDTH // 64)
        text_path = self.work / "text_embeddings.pth"
        torch.save(text_embeddings, text_path)
        count = text_embeddings.shape[0]
        cfg["decode_head"] = dict(cfg["decode_head"], in_channels=harness.VISION_WIDTH, num_classes=count,
                                  text_categories=count, text_channels=harness.EMBED, loss_decode=(),
                                  text_embeddings_path=str(text_path), visual_projs_path=str(self.projections_path))
        cfg["test_cfg"] = AttrDict(test_cfg)
        cfg.pop("type")
        with torch_load_on_cpu():
            segmentor = self.modules["EncoderDecoder"](**cfg)
        missing, unexpected = segmentor.load_state_dict(self.checkpoint, strict=False)
        if unexpected or any(not key.startswith("decode_head.") for key in missing):
            raise RuntimeError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")
        return segmentor.eval()


def class_maxima(scores: Tensor, name_to_class: Tensor) -> Tensor:
    """[n_names, H, W] -> [n_classes, H, W]: each class's highest score over its names."""
    count = int(name_to_class.max()) + 1
    return torch.stack([scores[name_to_class == k].amax(0) for k in range(count)])


def text_embeddings(clip_path: Path, lines: list[str], protocol_name: str) -> Tensor:
    """The suite's text bank for the class lines under the protocol's text settings (the head's input)."""
    text = load_protocol(protocol_name).text
    bank = build_text_bank(load_clip(None, str(clip_path)), harness.class_names(lines), list(text.templates),
                           text.aggregation, None)
    return bank.embeddings.float()


def case_spec(benchmark: str, lines: list[str], short: int, inference: str, threshold: float | None) -> BenchmarkSpec:
    """The protocol's benchmark for a whole-image case (shared with the test): the fixture's class names and
    resize; whole inference where the case says so; the case's threshold where the rule has one."""
    spec = fixture_spec(load_protocol(PROTOCOL), benchmark, harness.class_names(lines), short=short)
    if inference == "whole":
        spec = replace(spec, inference=InferenceSpec(mode="whole", crop=None, stride=None))
    if threshold is not None:
        spec = replace(spec, background=replace(spec.background, value=threshold))
    return spec


def authors_cases(repository: MaskCLIPRepository, clip_path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    text = text_embeddings(clip_path, harness.CLASS_LINES, PROTOCOL)
    arrays: dict[str, np.ndarray] = {"text_CLASS_LINES": text.numpy()}
    segmentor = repository.segmentor(text, {"mode": "whole"})
    for case, (seed, shape) in DENSE_CASES.items():
        crops = harness.crop_batch(seed, shape)
        logits = segmentor.encode_decode(crops, [{"ori_shape": shape, "flip": False}]).float()
        arrays[case] = logits[..., ::SUBSAMPLE, ::SUBSAMPLE].numpy()
        cases.append({"case": case, "kind": "dense", "seed": seed, "shape": list(shape), "count": crops.shape[0],
                      "classes": "CLASS_LINES", "subsample": SUBSAMPLE, "protocol": PROTOCOL,
                      "reference": "EncoderDecoder.encode_decode(crops): cosines, bilinear to the crop",
                      "classes_predicted": int(len(np.unique(logits.argmax(1).numpy())))})

    protocol = load_protocol(PROTOCOL)
    for case, (benchmark, seed, size, short, inference, threshold) in WHOLE_CASES.items():
        spec = case_spec(benchmark, harness.CLASS_LINES, short, inference, threshold)
        test_cfg: dict[str, Any] = {"mode": spec.inference.mode}
        if spec.inference.mode == "slide":
            test_cfg.update(crop_size=(spec.inference.crop,) * 2, stride=(spec.inference.stride,) * 2)
        segmentor = repository.segmentor(text, test_cfg)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        metas = [{"ori_shape": (*size, 3), "img_shape": (*inputs.shape[-2:], 3), "flip": False}]
        name_to_class = torch.tensor(spec.name_to_class)
        logit_scale = 100.0  # clip_settings/maskclip.yaml logit_scale; the protocol sets none
        below = None
        if spec.background.rule == "none":
            prediction = name_to_class[torch.from_numpy(segmentor.simple_test(inputs, metas, rescale=True)[0])]
            # ties on the cosines simple_test's softmax and argmax decide on (the softmax keeps their order)
            ties = harness.decision_ties(class_maxima(segmentor.whole_inference(inputs, metas, rescale=True)[0],
                                                      name_to_class))
            how = "EncoderDecoder.simple_test (whole_inference, ori_shape, softmax, argmax) -> names' classes"
        else:
            logits = segmentor.slide_inference(inputs, metas, rescale=True)[0]
            final = class_maxima((logits * logit_scale).softmax(0), name_to_class)
            prediction = torch.cat([torch.full_like(final[:1], threshold), final]).argmax(0)
            ties = harness.decision_ties(final, threshold)
            below = int((final.max(0).values < threshold).sum())
            how = ("EncoderDecoder.slide_inference(rescale=True) logits; softmax(logit_scale * logits), max over "
                   "synonyms, constant threshold channel in front, argmax (the protocol's rule, applied here)")
        arrays[case] = prediction.numpy().astype(np.int16)
        arrays[f"{case}_ties"] = ties
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": short, "inference": inference,
                      "threshold": threshold, "classes": "CLASS_LINES", "protocol": protocol.name,
                      "test_cfg": {key: list(value) if isinstance(value, tuple) else value
                                   for key, value in test_cfg.items()},
                      "logit_scale": logit_scale, "reference": how,
                      "pixels_below_threshold": below,
                      "classes_predicted": int(len(np.unique(arrays[case]))), "tie_pixels": int(ties.sum())})
    return cases, arrays


def clearclip_cases(
    git_dir: Path, commit: str, clip_path: Path, work: Path
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], Path]:
    """make_clearclip's dense cases, and whole images under the clearclip protocol (CLEARCLIP_WHOLE_CASES)."""
    repository = make_clearclip.ClearCLIPRepository(git_dir, commit, clip_path)
    cases, arrays = make_clearclip.dense_cases(repository, work, "MaskCLIP", CLEARCLIP_VARIANT)
    protocol = load_protocol("clearclip")
    for case, (benchmark, seed, size, short) in CLEARCLIP_WHOLE_CASES.items():
        spec = fixture_spec(protocol, benchmark, harness.class_names(harness.CLASS_LINES), short=short)
        names_file = work / f"cls_{case}.txt"
        names_file.write_text("\n".join(harness.CLASS_LINES) + "\n")
        settings: dict[str, Any] = {"logit_scale": spec.method_settings["logit_scale"],
                                    "slide_crop": spec.inference.crop, "slide_stride": spec.inference.stride}
        if spec.background.rule == "prob_thd":
            settings["prob_thd"] = spec.background.value
        segmentor = repository.segmentor(names_file, "MaskCLIP", **CLEARCLIP_VARIANT, **settings)
        image = harness.whole_image(seed, size)
        inputs = resized_input(image, spec)
        logits = segmentor.forward_slide(inputs, [reference.sample(size).metainfo], segmentor.slide_stride,
                                         segmentor.slide_crop)
        sample = segmentor.postprocess_result(logits, [reference.sample(size)])[0]
        arrays[case] = sample.pred_sem_seg.data[0].numpy().astype(np.int16)
        arrays[f"{case}_ties"] = harness.decision_ties(sample.seg_logits.data, settings.get("prob_thd"))
        below = (int((sample.seg_logits.data.max(0).values < settings["prob_thd"]).sum())
                 if "prob_thd" in settings else None)
        cases.append({"case": case, "kind": "whole", "benchmark": benchmark, "seed": seed, "size": list(size),
                      "resized": list(inputs.shape[-2:]), "short": short, "settings": settings,
                      "classes": "CLASS_LINES", "model_type": "MaskCLIP", "options": CLEARCLIP_VARIANT,
                      "reference": "forward_slide(resized image) + postprocess_result -> pred_sem_seg",
                      "classes_predicted": int(len(np.unique(arrays[case]))), "pixels_below_prob_thd": below,
                      "tie_pixels": int(arrays[f"{case}_ties"].sum())})
    return cases, arrays, repository.source


def weights_meta(weights: dict[str, Tensor]) -> dict[str, Any]:
    return {"seed": SEED, "perturbation": harness.PERTURBATION, "sha256": harness.weights_digest(weights),
            "keys": list(weights)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of chongzhou96/MaskCLIP")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--clearclip-repo", type=Path, required=True, help="git directory of mc-lan/ClearCLIP")
    parser.add_argument("--clearclip-commit", default=make_clearclip.COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "maskclip")
    parser.add_argument("--clearclip-out", type=Path, default=harness.FIXTURES / "maskclip_clearclip")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parity-maskclip-"))
    weights = harness.random_openai_clip(SEED)
    clip_path = harness.save_weights(weights, work / "clip.pt")

    repository = MaskCLIPRepository(args.repo, args.commit, weights, work)
    cases, arrays = authors_cases(repository, clip_path)
    meta = {
        "method": "maskclip", "variant": "authors", "repository": REPOSITORY, "commit": args.commit,
        "script": "tools/parity/make_maskclip.py", "weights": weights_meta(weights),
        "reference_did": REFERENCE_DID, "notes": NOTES, "protocol": PROTOCOL, "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({repository.source})")
    for name in [name for name in sys.modules if name.split(".")[0] in ("mmcv", "mmseg")]:
        del sys.modules[name]  # the ClearCLIP run stubs mmseg 1.x names of its own

    cases_clearclip, arrays_clearclip, source = clearclip_cases(args.clearclip_repo, args.clearclip_commit,
                                                                clip_path, work)
    meta_clearclip = {
        "method": "maskclip", "variant": "clearclip", "repository": make_clearclip.REPOSITORY,
        "commit": args.clearclip_commit, "script": "tools/parity/make_maskclip.py", "weights": weights_meta(weights),
        "reference_did": make_clearclip.REFERENCE_DID + " model_type 'MaskCLIP' (each token attends only to "
        "itself: out_proj(v)), ignore_residual True (no residual, no feed-forward branch).",
        "templates": "protocols/templates/imagenet80.txt", "cases": cases_clearclip,
    }
    harness.write_fixture(args.clearclip_out, meta_clearclip, arrays_clearclip)
    print(f"wrote {args.clearclip_out} from {make_clearclip.REPOSITORY}@{args.clearclip_commit} ({source})")
    for entry in cases + cases_clearclip:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted, {entry.get('tie_pixels')} ties")


if __name__ == "__main__":
    main()
