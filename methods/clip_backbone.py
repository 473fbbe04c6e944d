"""CLIP backbones for the training-free baselines: find the weights file, check it, build the model.

Nothing is downloaded. A weights file is named by an open_clip model name plus either a pretrained
tag pinned in ``clip_weights.yaml`` (OpenAI's archives) or a file path, absolute or under the
weights root. Three file kinds load:

- OpenAI's TorchScript archive (``ViT-B-16.pt``): the architecture is read off the weights and
  built with QuickGELU, as OpenAI trained it;
- a state dict in OpenAI's / open_clip's layout (``torch.save(model.state_dict())``), built from the
  named open_clip config (``ViT-B-16-quickgelu`` for OpenAI weights), or read off the weights
  like an archive when no model name is given;
- the same for any registered open_clip config, e.g. the synthetic world's tiny CLIP.
"""

from __future__ import annotations

import importlib
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import open_clip
import torch
import yaml
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import Tensor, nn

from benchmark import paths
from benchmark.errors import CheckpointError
from benchmark.open_clip_notices import random_init_notice_silenced
from benchmark.paths import file_sha256
from benchmark.safe_load import load_weights_only

KNOWN_WEIGHTS_FILE = Path(__file__).with_name("clip_weights.yaml")
DEFAULT_MODEL = "ViT-B-16"
# Entries of OpenAI's archives and of traced open_clip models that are not weights.
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
OPENAI_LAYOUT_KEYS = ("input_resolution", "context_length", "vocab_size")  # OpenAI's model.state_dict() only
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
# Modules that register extra open_clip model configs when imported.
CONFIG_PROVIDERS = ("benchmark.synthetic.tinyclip",)

Tokenizer = Callable[[list[str]], Tensor]


class WeightsError(CheckpointError):
    """A weights file is missing, unreadable, or does not fit the requested model."""


@dataclass(frozen=True)
class KnownWeights:
    model: str
    pretrained: str
    file: str
    sha256: str | None  # None: weights this suite makes (not pinned)
    url: str | None
    made_by: str | None = None  # for weights this suite makes: the command that makes them


@dataclass
class ClipBackbone:
    """A loaded CLIP with what identifies it: architecture name, weights source and sha256."""

    model: CLIP
    tokenizer: Tokenizer
    name: str
    pretrained: str | None = None
    weights_sha256: str | None = None

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    def describe(self) -> str:
        """``ViT-B-16/openai``, or the architecture and the weights file's name."""
        if not self.pretrained:
            return self.name
        return f"{self.name}/{Path(self.pretrained).name if _looks_like_path(self.pretrained) else self.pretrained}"


@lru_cache(maxsize=1)
def known_weights() -> tuple[KnownWeights, ...]:
    entries = yaml.safe_load(KNOWN_WEIGHTS_FILE.read_text(encoding="utf-8"))
    return tuple(KnownWeights(**entry) for entry in entries)


def model_for_tag(model: str | None, pretrained: str | None) -> str | None:
    """`model`, or the one architecture a weights tag names where `model` is left at a default that has no
    such tag (``--opt pretrained=synthetic`` alone gives the demo's tiny CLIP)."""
    if pretrained is None or _looks_like_path(pretrained):
        return model
    tagged = {k.model for k in known_weights() if k.pretrained == pretrained}
    if model not in tagged and len(tagged) == 1 and model in (None, DEFAULT_MODEL):
        return next(iter(tagged))
    return model


def clip_of_checkpoint(
    meta: dict[str, Any], model: str | None, pretrained: str | None, weights_root: str | os.PathLike | None
) -> tuple[str, str]:
    """The CLIP (model, pretrained) to load with a trained checkpoint: the weights the caller gave, else what the
    checkpoint records it was trained with (its model; its weights file where it still exists, else the
    known weights file under the weights root with the recorded sha256), else ViT-B-16 / openai."""
    recorded_model, recorded = meta.get("clip_model"), meta.get("clip_pretrained")
    if pretrained is not None:  # the caller's weights: its model, or the one the file or tag says
        return model or (None if _looks_like_path(pretrained) else DEFAULT_MODEL), pretrained
    model = model or recorded_model or DEFAULT_MODEL
    if recorded is None:
        return model, "openai" if recorded_model is None else recorded
    if not _looks_like_path(recorded) or Path(recorded).expanduser().is_file():
        return model, recorded
    root = paths.weights_root(weights_root)
    for known in known_weights():
        candidate = root / known.file
        if known.model == model and candidate.is_file() and file_sha256(candidate) == meta.get("clip_sha256"):
            return model, str(candidate)
    return model, recorded


def load_clip(
    model: str | None = "ViT-B-16",
    pretrained: str | None = "openai",
    weights_root: str | os.PathLike | None = None,
    allow_torchscript: bool = False,
) -> ClipBackbone:
    """A CLIP in eval mode on the CPU; `pretrained` is a pinned tag, a file path, or None (random).

    Loading a TorchScript archive runs code from it, so an archive is read only when its sha256 is
    one of OpenAI's pinned in ``clip_weights.yaml``, or when ``allow_torchscript`` says the file is trusted.
    """
    model = model_for_tag(model, pretrained)
    if model is not None:
        model = ensure_model_config(model)
    if pretrained is None:
        if model is None:
            raise WeightsError("give a model name or a weights file")
        warnings.warn(f"{model}: no weights given, the model is randomly initialised", stacklevel=2)
        with random_init_notice_silenced():
            network = open_clip.create_model(model, pretrained=None)
        return _finish(network, open_clip.get_tokenizer(model), model, None, None)
    root = paths.weights_root(weights_root)
    path, known = resolve_weights_file(model, pretrained, root)
    sha256 = checked_sha256(path, known)
    pinned = {k.sha256 for k in known_weights() if k.sha256}
    if not allow_torchscript and is_torchscript_archive(path) and sha256 not in pinned:
        raise WeightsError(
            f"{path} is a TorchScript archive (sha256 {sha256}) that is not one of OpenAI's CLIP files pinned in "
            f"{KNOWN_WEIGHTS_FILE.name}, and loading an archive runs code from it. Save its weights as a state dict "
            f"(torch.save(torch.jit.load(path).state_dict(), ...) on a machine you trust) or, if you trust the file, "
            f"pass allow_torchscript=True (--opt allow_torchscript=true)"
        )
    state_dict, is_archive = read_weights(path)
    network, name, tokenizer = build_from_state_dict(state_dict, model, is_archive, source=str(path))
    return _finish(network, tokenizer, name, pretrained, sha256)


def backbone_from_model(
    model: CLIP, name: str, tokenizer: Tokenizer | None = None, weights_sha256: str | None = None
) -> ClipBackbone:
    """Wraps an already built open_clip CLIP (tests, in-memory experiments)."""
    if tokenizer is None:
        context_length = getattr(model, "context_length", 77)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    return _finish(model, tokenizer, name, None, weights_sha256)


def ensure_model_config(model: str) -> str:
    """The open_clip config name; a ``.json`` path is registered first, extra providers imported."""
    if model.endswith(".json"):
        open_clip.add_model_config(model)
        return Path(model).stem
    name = model.replace("/", "-")
    if name in open_clip.list_models():
        return name
    for provider in CONFIG_PROVIDERS:
        try:
            importlib.import_module(provider)
        except ImportError:
            continue
    if name not in open_clip.list_models():
        raise WeightsError(f"unknown open_clip model {model!r}; known: {', '.join(open_clip.list_models())}")
    return name


def resolve_weights_file(
    model: str | None, pretrained: str, root: Path, entries: tuple[KnownWeights, ...] | None = None
) -> tuple[Path, KnownWeights | None]:
    """The weights file a pinned tag or a path names, and its known entry (CLIP's list unless `entries` is given)."""
    entries = known_weights() if entries is None else entries
    known = next((k for k in entries if k.model == model and k.pretrained == pretrained), None)
    if known is not None:
        path = root / known.file
        if not path.is_file() and known.made_by:
            raise WeightsError(
                f"weights file {known.file!r} for {known.model} ({known.pretrained}) not found under the weights "
                f"root {root}: {known.made_by} (weights root: --weights-root, env ZSSEG_WEIGHTS, default "
                "~/.cache/zsseg)"
            )
        if not path.is_file():
            raise WeightsError(
                f"weights file {known.file!r} for {known.model} ({known.pretrained}) not found under the weights "
                f"root {root}. Expected sha256 {known.sha256}. Download it from {known.url} and save it as "
                f"{path} (weights root: --weights-root, env ZSSEG_WEIGHTS, default ~/.cache/zsseg)"
            )
        return path, known
    if not _looks_like_path(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(model) if model else []
        hint = (
            f"open_clip knows tag {pretrained!r} for {model}, but it is not pinned here: fetch it with open_clip on a "
            f"machine with internet and pass the file path"
            if pretrained in tags
            else f"pinned tags: {sorted({(k.model, k.pretrained) for k in entries})}"
        )
        raise WeightsError(f"{pretrained!r} is neither a pinned tag for {model} nor a weights file path; {hint}")
    candidate = Path(pretrained).expanduser()
    path = candidate if candidate.is_absolute() else root / candidate
    if not path.is_file() and not candidate.is_absolute() and candidate.is_file():
        path = candidate
    known = next((k for k in entries if k.file == path.name), None)
    if not path.is_file():
        expected = f" Expected sha256 {known.sha256}; download it from {known.url}." if known else ""
        raise WeightsError(f"weights file {pretrained!r} not found (looked at {path}, weights root {root}).{expected}")
    return path, known


def checked_sha256(path: Path, known: KnownWeights | None) -> str:
    """The file's sha256; a known file whose pinned digest differs is refused."""
    sha256 = file_sha256(path)
    if known is not None and known.sha256 is not None and sha256 != known.sha256:
        raise WeightsError(
            f"{path}: sha256 is {sha256}, expected {known.sha256} for {known.model} ({known.pretrained}). "
            f"The file is truncated or a different checkpoint; download it again from {known.url}"
        )
    return sha256


def _looks_like_path(value: str) -> bool:
    return value.endswith(WEIGHT_SUFFIXES) or os.sep in value or "/" in value


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def read_weights(path: Path) -> tuple[dict[str, Tensor], bool]:
    """The state dict in a weights file and whether it came from a TorchScript archive."""
    unreadable = f"{path}: cannot read weights ({{}}); the file is truncated or not a PyTorch checkpoint"
    if is_torchscript_archive(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI ships archives
                archive = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:  # noqa: BLE001 - torch raises several kinds here
            raise WeightsError(unreadable.format(error)) from error
        return dict(archive.state_dict()), True
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(str(path), device="cpu")
        except Exception as error:  # noqa: BLE001 - safetensors raises several kinds here
            raise WeightsError(unreadable.format(error)) from error
    else:
        loaded = load_weights_only(path, "CLIP weights", WeightsError)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise WeightsError(f"{path}: not a state dict of tensors (got {type(loaded).__name__})")
    if all(key.startswith("module.") for key in loaded):
        loaded = {key[len("module."):]: value for key, value in loaded.items()}
    return loaded, False


def openai_config_from_state_dict(state_dict: dict[str, Tensor], source: str) -> dict[str, Any]:
    """CLIP constructor arguments read off a ViT state dict in OpenAI's layout."""
    try:
        width = state_dict["visual.conv1.weight"].shape[0]
        patch = state_dict["visual.conv1.weight"].shape[-1]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_layers = len({k.split(".")[3] for k in state_dict if k.startswith("visual.transformer.resblocks.")})
        text_width = state_dict["ln_final.weight"].shape[0]
        text_layers = len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")})
        vision = CLIPVisionCfg(layers=vision_layers, width=width, patch_size=patch, image_size=patch * grid)
        text = CLIPTextCfg(
            context_length=state_dict["positional_embedding"].shape[0],
            vocab_size=state_dict["token_embedding.weight"].shape[0],
            width=text_width,
            heads=text_width // 64,
            layers=text_layers,
        )
        embed_dim = state_dict["text_projection"].shape[1]
    except KeyError as error:
        raise WeightsError(f"{source}: not a CLIP ViT state dict in OpenAI's layout (no {error})") from None
    return {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text}


def build_from_state_dict(
    state_dict: dict[str, Tensor], model: str | None, openai_archive: bool, source: str
) -> tuple[CLIP, str, Tokenizer]:
    """Builds the model the weights describe and loads them strictly, in float32.

    OpenAI's weights always mean QuickGELU: an OpenAI archive, or a state dict saved from one (it keeps
    OpenAI's `input_resolution`, `context_length` and `vocab_size` entries), is built as OpenAI's CLIP
    whatever `model` says (which must name the same architecture); `model=ViT-B-16` would otherwise
    build open_clip's plain-GELU ViT-B-16 and give silently wrong scores. An open_clip state dict of
    OpenAI's weights cannot be told apart: its model name must say so (`ViT-B-16-quickgelu`).
    """
    openai_layout = openai_archive or any(key in state_dict for key in OPENAI_LAYOUT_KEYS)
    state_dict = {k: v for k, v in state_dict.items() if k not in NON_WEIGHT_KEYS}
    if openai_layout or model is None:
        config = openai_config_from_state_dict(state_dict, source)
        if model is not None:
            _check_same_architecture(config, model, source)
        network = CLIP(**config, quick_gelu=True)
        name = model or _openai_name(config)
        tokenizer: Tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=config["text_cfg"].context_length)
    else:
        with random_init_notice_silenced():
            network = open_clip.create_model(model, pretrained=None)
        name, tokenizer = model, open_clip.get_tokenizer(model)
    load_strict(network, state_dict, source, name)
    return network, name, tokenizer


def _openai_name(config: dict[str, Any]) -> str:
    vision = config["vision_cfg"]
    return f"openai-ViT-w{vision.width}-l{vision.layers}-p{vision.patch_size}-{vision.image_size}"


def _check_same_architecture(config: dict[str, Any], model: str, source: str) -> None:
    named = open_clip.get_model_config(model)
    vision, text = config["vision_cfg"], config["text_cfg"]
    found = {
        "embed_dim": config["embed_dim"], "vision width": vision.width, "vision layers": vision.layers,
        "patch size": vision.patch_size, "image size": vision.image_size, "text width": text.width,
        "text layers": text.layers,
    }
    wanted = {
        "embed_dim": named["embed_dim"], "vision width": named["vision_cfg"]["width"],
        "vision layers": named["vision_cfg"]["layers"], "patch size": named["vision_cfg"]["patch_size"],
        "image size": named["vision_cfg"]["image_size"], "text width": named["text_cfg"]["width"],
        "text layers": named["text_cfg"]["layers"],
    }
    differ = [f"{key} {found[key]} (model {model}: {wanted[key]})" for key in found if found[key] != wanted[key]]
    if differ:
        raise WeightsError(f"{source} does not hold a {model}: {'; '.join(differ)}")


def load_strict(network: nn.Module, state_dict: dict[str, Tensor], source: str, name: str) -> None:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    problems = [
        f"{len(items)} {what} (e.g. {', '.join(items[:3])})"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes))
        if items
    ]
    if problems:
        raise WeightsError(f"{source} does not fit model {name}: {'; '.join(problems)}")
    network.load_state_dict(state_dict)


def _finish(
    network: CLIP, tokenizer: Tokenizer, name: str, pretrained: str | None, sha256: str | None
) -> ClipBackbone:
    network = network.float().eval()
    network.requires_grad_(False)
    return ClipBackbone(network, tokenizer, name, pretrained, sha256)
