"""What a parity fixture is made of, shared by the scripts that make fixtures (tools/parity/) and the tests.

A fixture holds the outputs of a method's reference code (its authors' repository, run with
mmseg stubbed) on inputs and weights that are rebuilt here from seeds, never stored:

- weights: `random_openai_clip(seed)`, a small CLIP in OpenAI's state-dict layout (ViT with
  16 px patches on a 14 x 14 grid, as ViT-B/16; 128 wide, 2 heads, 3 blocks), its LayerNorm affines
  and every bias perturbed so that dense scores are not flat, and every value rounded through fp16,
  so that OpenAI's `build_model` (whose `convert_weights` keeps conv/linear/attention/projection
  weights in fp16) loads exactly the values the adapter loads;
- images: `crop_batch(seed, shape)` and `whole_image(seed, size)`, drawn from a seeded generator;
- class names: fixed lists below (one class with several names).

`meta.json` records the reference repository, commit, what it computed and how; `arrays.npz`
the subsampled outputs. A fixture folder is written with `write_fixture` and read with `read_fixture`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

FIXTURES = Path(__file__).with_name("fixtures")

VISION_WIDTH = 128
VISION_LAYERS = 3
PATCH = 16
GRID = 14
TEXT_WIDTH = 128
TEXT_LAYERS = 2
CONTEXT = 77
VOCAB = 49408
EMBED = 64
# std of the perturbation added to LayerNorm weights (around 1) and biases and to every linear bias.
PERTURBATION = 0.5

# Class names: class k has the names on line k, comma-separated, as the references' cls_*.txt files.
CLASS_LINES = ["sky", "tree, trees, forest", "person", "car", "grass", "building, house"]
BACKGROUND_CLASS_LINES = ["sky, wall, floor", "cat", "dog, puppy", "bird", "car", "person"]
# Trident's postprocess_result max-pools the first n_names - n_classes + 1 names into class 0: only class 0 may have
# several names (as in every published class file).
LEADING_SYNONYM_LINES = ["sky, wall, floor", "cat", "dog", "bird", "car", "person"]
TEMPLATES = ["a photo of a {}.", "a bad photo of the {}.", "there is a {} in the scene."]
CLIP_MEAN = (122.771, 116.746, 104.094)  # CLIP's normalisation on 0-255 pixels, as the references give it
CLIP_STD = (68.501, 66.632, 70.323)


def _block_shapes(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.attn.in_proj_weight": (3 * width, width),
        f"{prefix}.attn.in_proj_bias": (3 * width,),
        f"{prefix}.attn.out_proj.weight": (width, width),
        f"{prefix}.attn.out_proj.bias": (width,),
        f"{prefix}.ln_1.weight": (width,),
        f"{prefix}.ln_1.bias": (width,),
        f"{prefix}.mlp.c_fc.weight": (4 * width, width),
        f"{prefix}.mlp.c_fc.bias": (4 * width,),
        f"{prefix}.mlp.c_proj.weight": (width, 4 * width),
        f"{prefix}.mlp.c_proj.bias": (width,),
        f"{prefix}.ln_2.weight": (width,),
        f"{prefix}.ln_2.bias": (width,),
    }


def openai_clip_shapes(vision_layers: int = VISION_LAYERS) -> dict[str, tuple[int, ...]]:
    """Every key of the fixture CLIP's state dict in OpenAI's layout (model.state_dict() of clip/model.py)."""
    shapes: dict[str, tuple[int, ...]] = {
        "positional_embedding": (CONTEXT, TEXT_WIDTH),
        "text_projection": (TEXT_WIDTH, EMBED),
        "logit_scale": (),
        "visual.class_embedding": (VISION_WIDTH,),
        "visual.positional_embedding": (GRID * GRID + 1, VISION_WIDTH),
        "visual.proj": (VISION_WIDTH, EMBED),
        "visual.conv1.weight": (VISION_WIDTH, 3, PATCH, PATCH),
        "visual.ln_pre.weight": (VISION_WIDTH,),
        "visual.ln_pre.bias": (VISION_WIDTH,),
    }
    for layer in range(vision_layers):
        shapes.update(_block_shapes(f"visual.transformer.resblocks.{layer}", VISION_WIDTH))
    shapes["visual.ln_post.weight"] = (VISION_WIDTH,)
    shapes["visual.ln_post.bias"] = (VISION_WIDTH,)
    shapes["token_embedding.weight"] = (VOCAB, TEXT_WIDTH)
    for layer in range(TEXT_LAYERS):
        shapes.update(_block_shapes(f"transformer.resblocks.{layer}", TEXT_WIDTH))
    shapes["ln_final.weight"] = (TEXT_WIDTH,)
    shapes["ln_final.bias"] = (TEXT_WIDTH,)
    return shapes


def random_openai_clip(
    seed: int, perturbation: float = PERTURBATION, vision_layers: int = VISION_LAYERS
) -> dict[str, Tensor]:
    """The fixture CLIP's weights: drawn key by key in `openai_clip_shapes()` order, fp16-representable float32."""
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, Tensor] = {}
    for key, shape in openai_clip_shapes(vision_layers).items():
        if key == "logit_scale":
            value = torch.tensor(float(np.log(100.0)))
        elif ".ln_" in key or key.startswith("ln_final") or key.startswith("visual.ln_"):
            noise = torch.randn(shape, generator=generator) * perturbation
            value = 1.0 + noise if key.endswith(".weight") else noise
        elif key.endswith("bias"):
            value = torch.randn(shape, generator=generator) * perturbation
        else:
            fan_in = shape[-1] if len(shape) == 2 else int(np.prod(shape[1:])) if len(shape) > 2 else shape[0]
            scale = 0.02 if key in ("token_embedding.weight", "positional_embedding") else fan_in ** -0.5
            value = torch.randn(shape, generator=generator) * scale
        weights[key] = value.half().float()
    return weights


def sharpened_deep_clip(
    seed: int, vision_layers: int, perturbation: float, query_key_scale: float, last_out_proj_scale: float
) -> dict[str, Tensor]:
    """A deeper fixture CLIP whose attention stays sharp through all its blocks: every block's query and key
    in-projections scaled by `query_key_scale`, the last block's out-projection by `last_out_proj_scale`, then
    rounded through fp16 again. Random blocks otherwise average the tokens into one, and every crop predicts
    one class (methods that read mid-layer positions, such as SFP's blocks 3 to 9, need 12 blocks)."""
    weights = random_openai_clip(seed, perturbation, vision_layers)
    for layer in range(vision_layers):
        key = f"visual.transformer.resblocks.{layer}.attn.in_proj_weight"
        in_proj = weights[key].clone()
        in_proj[: 2 * VISION_WIDTH] *= query_key_scale
        weights[key] = in_proj
    last = f"visual.transformer.resblocks.{vision_layers - 1}.attn.out_proj.weight"
    weights[last] = weights[last] * last_out_proj_scale
    return {key: value.half().float() for key, value in weights.items()}


RESIDUAL_BRANCH_KEYS = (".attn.out_proj.weight", ".attn.out_proj.bias", ".mlp.c_proj.weight", ".mlp.c_proj.bias")


def damped_deep_clip(seed: int, perturbation: float, vision_layers: int, branch_scale: float) -> dict[str, Tensor]:
    """A deeper fixture CLIP whose image blocks' residual branches (attention and MLP output projections,
    weights and biases) are scaled by `branch_scale` and rounded through fp16 again, so that twelve random
    blocks do not wash out the patch tokens (ResCLIP reads blocks 5 to 8 of a ViT-B/16-deep tower)."""
    weights = random_openai_clip(seed, perturbation, vision_layers)
    for key, value in weights.items():
        if key.startswith("visual.transformer.") and key.endswith(RESIDUAL_BRANCH_KEYS):
            weights[key] = (value * branch_scale).half().float()
    return weights


def weights_digest(weights: dict[str, Tensor]) -> str:
    """sha256 over keys, shapes and float32 bytes, in key order: the fixture records it, the test checks it."""
    digest = hashlib.sha256()
    for key, value in weights.items():
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_weights(weights: dict[str, Tensor], path: Path) -> Path:
    """The weights as a state-dict file (what both the reference's clip.load and the adapter read)."""
    torch.save(weights, path)
    return path


def _upsampled(coarse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of [..., h, w] to `size` (align_corners=False, as torch's), in float64 numpy.

    Each output value is a two-term weighted sum per axis, computed element by element: the same bits on
    every machine and thread count (torch's float32 kernel differs by an ulp with the thread setup, and a
    value at x.5 then rounds to another pixel level)."""
    for axis, out in ((-2, size[0]), (-1, size[1])):
        length = coarse.shape[axis]
        source = np.maximum((np.arange(out) + 0.5) * (length / out) - 0.5, 0.0)
        low = np.floor(source).astype(np.int64)
        high = np.minimum(low + 1, length - 1)
        weight = source - low
        shape = [1] * coarse.ndim
        shape[axis] = out
        weight = weight.reshape(shape)
        coarse = (1.0 - weight) * np.take(coarse, low, axis=axis) + weight * np.take(coarse, high, axis=axis)
    return coarse


def _smooth_pixels(seed: int, shape: tuple[int, ...], size: tuple[int, int]) -> np.ndarray:
    """uint8-valued float64 pixels [..., H, W]: a coarse grid of `shape` from a seeded generator, upsampled."""
    coarse = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    return np.clip(np.round(_upsampled(coarse, size) * 255), 0, 255)


def crop_batch(seed: int, shape: tuple[int, int], count: int = 2) -> Tensor:
    """[count, 3, h, w] crops normalised with CLIP's mean and std, from uint8 pixels of a seeded generator.

    Smooth blobs (a coarse random grid, bilinearly upsampled) so that neighbouring patches agree as in
    a photograph and PAMR or neighbourhood attention have structure to act on.
    """
    pixels = torch.from_numpy(
        _smooth_pixels(seed, (count, 3, max(2, shape[0] // 32), max(2, shape[1] // 32)), shape)
    ).float()
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def whole_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 image [H, W, 3] (an original, before the protocol's resize), from a seeded generator."""
    pixels = _smooth_pixels(seed, (3, max(2, size[0] // 24), max(2, size[1] // 24)), size)
    return np.ascontiguousarray(pixels.transpose(1, 2, 0)).astype(np.uint8)


def input_digest(values: torch.Tensor | np.ndarray) -> str:
    """sha256 of an input's bytes: the test checks that it rebuilds what the reference was given."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(values)).tobytes()).hexdigest()


def class_names(lines: list[str]) -> list[list[str]]:
    """Lines of a cls_*.txt file -> names per class, as the references' get_cls_idx splits them."""
    return [[name.strip() for name in line.split(",")] for line in lines]


def centred(logits: np.ndarray | Tensor, axis: int = 1) -> np.ndarray:
    """Logits with each class's mean over the image (every axis but `axis`) removed.

    Random-weight CLIP scores differ between classes by an offset much larger than their variation
    over the image; with the offset removed, a 1e-5 match says the spatial pattern agrees too.
    """
    array = np.asarray(logits, dtype=np.float64)
    axes = tuple(index for index in range(array.ndim) if index != axis % array.ndim)
    return array - array.mean(axis=axes, keepdims=True)


def write_fixture(folder: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    np.savez_compressed(folder / "arrays.npz", **arrays)


def read_fixture(name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    folder = FIXTURES / name
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    with np.load(folder / "arrays.npz", allow_pickle=False) as loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    return meta, arrays


def decision_ties(scores: Tensor, threshold: float | None = None, tolerance: float = 1e-6) -> np.ndarray:
    """[H, W] bool: pixels whose decision is a tie within `tolerance` in the reference's own final scores
    [C, H, W] (best and second best class, or the best against a background threshold). Two float32
    computations of the same sum in another order may decide these either way; every other pixel must agree.
    """
    top = scores.float().topk(2, dim=0).values
    ties = (top[0] - top[1]) < tolerance
    if threshold is not None:
        ties |= (top[0] - threshold).abs() < tolerance
    return ties.numpy()


# The fixture vision model: DINO's ViT-B/8 layout (8 px patches, trained grid 28 x 28 at 224 px, class token,
# qkv bias, LayerNorm eps 1e-6), 64 wide, 2 heads, 2 blocks. `vfm_config()` is its methods/vfm_configs entry.
DINO_CONFIG = {
    "family": "dino",
    "timm_model": "vit_base_patch8_224",
    "timm_kwargs": {"embed_dim": 64, "depth": 2, "num_heads": 2},
    "source": "tests/parity/harness.py: DINO ViT-B/8's layout, 64 wide, 2 heads, 2 blocks",
    "input_mean": [0.485, 0.456, 0.406],
    "input_std": [0.229, 0.224, 0.225],
    "position_rule": {"offset": 0.1, "antialias": False},
}


# Trident's guide is DINO ViT-B/16: the same small DINO with 16 px patches (CLIP's).
DINO_B16_CONFIG = {**DINO_CONFIG, "timm_model": "vit_base_patch16_224",
                   "source": "tests/parity/harness.py: DINO ViT-B/16's layout, 64 wide, 2 heads, 2 blocks"}


# CASS pairs DINO's heads with CLIP's: 2 heads of 64, as the fixture CLIP's.
CASS_DINO_CONFIG = {**DINO_CONFIG, "timm_kwargs": {"embed_dim": 128, "depth": 2, "num_heads": 2},
                    "source": "tests/parity/harness.py: DINO ViT-B/8's layout, 128 wide, 2 heads, 2 blocks"}


def random_dino(
    seed: int, perturbation: float = PERTURBATION, config: dict[str, Any] | None = None
) -> dict[str, Tensor]:
    """The fixture DINO's weights in DINO's (= timm's) layout, drawn key by key in timm's state-dict order."""
    from methods.vfm_backbone import build_vfm

    shapes = {key: tuple(value.shape) for key, value in build_vfm(config or DINO_CONFIG).state_dict().items()}
    return _random_vit(shapes, seed, perturbation)


# Tokens drawn at unit scale: strong positions make patch affinities vary (ProxyCLIP: mean cosine ~0.7 < 1 / beta).
VIT_TOKEN_KEYS = ("cls_token", "pos_embed", "register_tokens", "mask_token")


def _random_vit(shapes: dict[str, tuple[int, ...]], seed: int, perturbation: float) -> dict[str, Tensor]:
    """ViT weights drawn key by key in `shapes` order: LayerNorm affines around 1 / 0, biases and layer scales
    (around 1) perturbed, tokens at unit scale, matrices at fan_in ** -0.5."""
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if ".norm" in key or key.startswith("norm."):
            noise = torch.randn(shape, generator=generator) * perturbation
            value = 1.0 + noise if key.endswith(".weight") else noise
        elif key.endswith("bias"):
            value = torch.randn(shape, generator=generator) * perturbation
        elif key.endswith(".gamma"):
            value = torch.randn(shape, generator=generator) * perturbation + 1.0
        elif key.rsplit(".", 1)[-1] in VIT_TOKEN_KEYS:
            value = torch.randn(shape, generator=generator)
        else:
            value = torch.randn(shape, generator=generator) * int(np.prod(shape[1:])) ** -0.5
        weights[key] = value
    return weights


# A fixture DINOv2 with registers: dinov2_vitb14_reg's layout (14 px patches, trained grid 37 x 37 at 518 px, 4
# register tokens, layer scale, positions resized to size with antialiasing), 32 wide, 2 heads, 2 blocks.
DINOV2_CONFIG = {
    "family": "dinov2",
    "timm_model": "vit_base_patch14_reg4_dinov2",
    "timm_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2},
    "source": "tests/parity/harness.py: dinov2_vitb14_reg's layout, 32 wide, 2 heads, 2 blocks",
    "input_mean": [0.485, 0.456, 0.406],
    "input_std": [0.229, 0.224, 0.225],
    "position_rule": {"offset": 0.0, "antialias": True},
}


# CASS pairs DINOv2's heads with CLIP's: 2 heads of 64, as the fixture CLIP's.
CASS_DINOV2_CONFIG = {**DINOV2_CONFIG, "timm_kwargs": {"embed_dim": 128, "depth": 2, "num_heads": 2},
                      "source": "tests/parity/harness.py: dinov2_vitb14_reg's layout, 128 wide, 2 heads, 2 blocks"}


def random_dinov2_official(
    seed: int, perturbation: float = PERTURBATION, config: dict[str, Any] | None = None
) -> dict[str, Tensor]:
    """The fixture DINOv2's weights in DINOv2's own layout (register_tokens, mask_token, a position for the class
    token), drawn key by key: what dinov2_vitb14_reg4_pretrain.pth holds, at the fixture's size."""
    from methods.vfm_backbone import build_vfm

    timm_shapes = {key: tuple(value.shape) for key, value in build_vfm(config or DINOV2_CONFIG).state_dict().items()}
    width = timm_shapes["cls_token"][-1]
    shapes = {"cls_token": (1, 1, width), "pos_embed": (1, 1 + timm_shapes["pos_embed"][1], width),
              "register_tokens": timm_shapes["reg_token"], "mask_token": (1, width)}
    shapes.update({key: shape for key, shape in timm_shapes.items() if key not in ("cls_token", "pos_embed",
                                                                                    "reg_token")})
    return _random_vit(shapes, seed, perturbation)


# A fixture SAM: segment-anything's own model at 1024 px (16 px patches, 64 x 64 tokens, windowed attention with
# relative positions, one global block), its image encoder 32 wide, 2 heads, 2 blocks; prompt encoder and mask
# decoder at the library's fixed size.
SAM_CONFIG = {
    "family": "sam",
    "sam_kwargs": {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2,
                   "encoder_global_attn_indexes": [1]},
    "source": "tests/parity/harness.py: SAM's layout, image encoder 32 wide, 2 heads, 2 blocks",
    "input_mean": [0.485, 0.456, 0.406],
    "input_std": [0.229, 0.224, 0.225],
    "input_size": 1024,
}


def random_sam(seed: int, perturbation: float = PERTURBATION) -> dict[str, Tensor]:
    """The fixture SAM's weights in segment-anything's layout, drawn key by key in its state-dict order."""
    from methods.vfm_backbone import build_vfm

    shapes = {key: tuple(value.shape) for key, value in build_vfm(SAM_CONFIG).state_dict().items()}
    return _random_vit(shapes, seed, perturbation)


def sharpened_sam(seed: int, query_key_scale: float, rel_pos_scale: float) -> dict[str, Tensor]:
    """`random_sam(seed)` with its last block's query and key projections scaled by `query_key_scale` and its
    relative positions by `rel_pos_scale`: a random SAM's global attention is near uniform over its 4096 tokens, and
    Trident, which mixes every token by it, would predict one class everywhere."""
    weights = random_sam(seed)
    prefix = f"image_encoder.blocks.{SAM_CONFIG['sam_kwargs']['encoder_depth'] - 1}.attn."
    width = weights[f"{prefix}qkv.weight"].shape[1]
    weights[f"{prefix}qkv.weight"][:2 * width] *= query_key_scale
    weights[f"{prefix}qkv.bias"][:2 * width] *= query_key_scale
    weights[f"{prefix}rel_pos_h"] *= rel_pos_scale
    weights[f"{prefix}rel_pos_w"] *= rel_pos_scale
    return weights
