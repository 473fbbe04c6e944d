"""Training-free CLIP baselines on a tiny random open_clip ViT: shapes, hand-computed attention,
positional-embedding resizing, text banks and their disk cache, weights files."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from methods.clearclip import ClearCLIP
from methods.clip_attention import last_block_attention
from methods.clip_backbone import WeightsError, backbone_from_model, load_clip
from methods.clip_dense import clip_block, resize_positional_embedding
from methods.clip_text import TextBankStore, aggregate, build_text_bank
from methods.clip_vanilla import VanillaCLIP
from methods.maskclip import MaskCLIP
from methods.naclip import NACLIP
from methods.sclip import SCLIP
from tests.factories import make_protocol, make_spec, make_text

CLASSES = {cls.name: cls for cls in (VanillaCLIP, MaskCLIP, SCLIP, ClearCLIP, NACLIP)}
METHODS = tuple(CLASSES)
TEMPLATES = ["a photo of a {}.", "a sketch of the {}."]
TEXT = make_text(TEMPLATES, "mean_normalised")
PROTOCOL = make_protocol(text=TEXT)
NAMES = [["sky", "wall"], ["cat"], ["dog", "puppy", "hound"]]
FLAT = 6


def tiny_clip(seed: int = 0, image_size: int = 32, patch: int = 8, width: int = 128, layers: int = 2) -> CLIP:
    """A random CLIP small enough for unit tests, with OpenAI's head width 64 and QuickGELU."""
    torch.manual_seed(seed)
    model = CLIP(
        64,
        vision_cfg=CLIPVisionCfg(layers=layers, width=width, patch_size=patch, image_size=image_size),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "bias" in name or "ln" in name:  # LayerNorm affines and biases away from 1 / 0
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module")
def backbone():
    return backbone_from_model(tiny_clip(), "tiny-test")


def make(name: str, backbone, **options):
    method = CLASSES[name](backbone=backbone, text_cache=False, **options)
    method.setup(PROTOCOL, make_spec(dataset="voc20"))
    return method


def cosines(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """features [B, L, C] patch tokens (no class token) on a square grid -> [B, n, g, g]."""
    features = features / features.norm(dim=-1, keepdim=True)
    grid = math.isqrt(features.shape[1])
    return (features @ text.t()).permute(0, 2, 1).reshape(features.shape[0], -1, grid, grid)


# --- scores -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", METHODS)
def test_scores_have_one_channel_per_name_on_the_patch_grid(name, backbone):
    method = make(name, backbone)
    bank = method.encode_classes(NAMES, TEXT)
    scores = method.predict_masks(torch.randn(2, 3, 32, 32), bank)
    assert scores.shape == (2, FLAT, 4, 4)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert scores.abs().max() <= method.logit_scale * (1 + 1e-5)


@pytest.mark.parametrize(
    ("name", "shape"),
    [("sclip", (4, 5)), ("naclip", (4, 5)), ("clearclip", (36, 44)), ("clip", (36, 44)), ("maskclip", (5, 6))],
)
def test_crops_off_the_patch_size_drop_or_pad_as_the_reference_does(name, shape, backbone):
    method = make(name, backbone)
    scores = method.predict_masks(torch.randn(1, 3, 36, 44), method.encode_classes(NAMES, TEXT))
    assert scores.shape == (1, FLAT, *shape)


def test_centre_padding_cuts_the_crop_out_of_the_padded_scores(backbone):
    method = make("clearclip", backbone)
    bank = method.encode_classes(NAMES, TEXT)
    crop = torch.randn(1, 3, 30, 27)
    padded = F.pad(crop, (2, 3, 1, 1))  # 27 -> 32: left 2, right 3; 30 -> 32: top 1, bottom 1
    expected = F.interpolate(method.predict_masks(padded, bank), size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(method.predict_masks(crop, bank), expected[..., 1:31, 2:29], atol=1e-5)


def test_logit_scale_comes_from_the_protocol_then_the_dataset_then_the_method(backbone):
    method = SCLIP(backbone=backbone, text_cache=False)
    method.setup(PROTOCOL, make_spec(dataset="voc21"))
    assert method.logit_scale == 65.0  # SCLIP configs/cfg_voc21.py
    method.setup(PROTOCOL, make_spec(dataset="ade20k"))
    assert method.logit_scale == 40.0
    method.setup(PROTOCOL, make_spec(dataset="voc21", method_settings={"logit_scale": 7}))
    assert method.logit_scale == 7.0
    clip = VanillaCLIP(backbone=backbone, text_cache=False)
    assert clip.logit_scale == pytest.approx(backbone.model.logit_scale.exp().item())


def test_background_values_are_the_methods_own_per_dataset(backbone):
    voc21 = make_spec(dataset="voc21")
    assert make("clearclip", backbone).background_value(PROTOCOL, voc21, "prob_thd") == 0.5
    assert make("sclip", backbone).background_value(PROTOCOL, voc21, "prob_thd") == 0.1
    assert make("naclip", backbone).background_value(PROTOCOL, voc21, "threshold") == 0.1
    synthetic = make_spec(dataset="synthetic_bg")
    assert make("clearclip", backbone).background_value(PROTOCOL, synthetic, "threshold") == 0.5
    assert make("maskclip", backbone).background_value(PROTOCOL, synthetic, "threshold") == 0.5
    unlisted = make_spec(dataset="ade20k")
    assert make("sclip", backbone).background_value(PROTOCOL, unlisted, "prob_thd") == 0.0
    assert make("clip", backbone).background_value(PROTOCOL, voc21, "names") is None


def test_naclip_refines_with_pamr_and_the_others_do_not(backbone):
    scores, image = torch.randn(3, 20, 24), torch.randn(3, 10, 12)
    assert torch.equal(make("sclip", backbone).refine(image, scores), scores)
    refined = make("naclip", backbone).refine(image, scores)
    assert refined.shape == scores.shape and not torch.allclose(refined, scores)


# --- the last block against hand computations -------------------------------------------------

def block_input(visual, crops: torch.Tensor) -> torch.Tensor:
    """Tokens entering the last block, from open_clip's own embedding (native grid, no resize)."""
    x = visual._embeds(crops)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    return x


def mmseg_block_input(visual, crops: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Tokens entering the last block in MaskCLIP's mmseg ViT: exact GELU, every LayerNorm with eps 1e-6."""
    def norm(module, x):
        return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, eps)

    x = visual.conv1(crops).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    x = norm(visual.ln_pre, x)
    for block in visual.transformer.resblocks[:-1]:
        h = norm(block.ln_1, x)
        x = x + block.attn(h, h, h, need_weights=False)[0]
        x = x + block.mlp.c_proj(F.gelu(block.mlp.c_fc(norm(block.ln_2, x))))
    return x


def test_maskclip_is_the_value_path_through_ln_post_and_proj(backbone):
    visual, crops = backbone.visual, torch.randn(2, 3, 32, 32)
    method = make("maskclip", backbone, variant="clearclip")
    bank = method.encode_classes(NAMES, TEXT)
    block = visual.transformer.resblocks[-1]
    with torch.no_grad():
        x = block_input(visual, crops)
        dim = x.shape[-1]
        v = block.ln_1(x) @ block.attn.in_proj_weight[2 * dim:].t() + block.attn.in_proj_bias[2 * dim:]
        value_only = block.attn.out_proj(v)
        expected = cosines(visual.ln_post(value_only[:, 1:]) @ visual.proj, bank.embeddings)
        assert torch.allclose(method.predict_masks(crops, bank) / method.logit_scale, expected, atol=1e-5)


def test_maskclip_authors_runs_mmsegs_vit_gelu_and_layer_norm_eps(backbone):
    """The authors' mmseg ViT: value path with residual and FFN, exact GELU and eps 1e-6 in the whole tower."""
    visual, crops = backbone.visual, torch.randn(2, 3, 32, 32)
    method = make("maskclip", backbone)
    bank = method.encode_classes(NAMES, TEXT)
    block = visual.transformer.resblocks[-1]

    def norm(module, x):
        return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, 1e-6)

    with torch.no_grad():
        x = mmseg_block_input(visual, crops)
        dim = x.shape[-1]
        v = norm(block.ln_1, x) @ block.attn.in_proj_weight[2 * dim:].t() + block.attn.in_proj_bias[2 * dim:]
        authors = block.attn.out_proj(v) + x
        authors = authors + block.mlp.c_proj(F.gelu(block.mlp.c_fc(norm(block.ln_2, authors))))
        expected = cosines(norm(visual.ln_post, authors[:, 1:]) @ visual.proj, bank.embeddings)
        got = method.predict_masks(crops, bank) / method.logit_scale
        assert torch.allclose(got, expected, atol=1e-5)
        # the tiny CLIP runs QuickGELU and eps 1e-5: the override is not a no-op here
        plain = make("maskclip", backbone)
        plain.active_recipe = replace(plain.active_recipe, activation=None, layer_norm_eps=None)
        assert (plain.predict_masks(crops, bank) / plain.logit_scale - got).abs().max() > 1e-4


@pytest.mark.parametrize("name", METHODS)
def test_tower_overrides_at_the_models_own_values_change_nothing(name, backbone):
    method = make(name, backbone)
    bank = method.encode_classes(NAMES, TEXT)
    crops = torch.randn(2, 3, 32, 32)
    base = replace(method.active_recipe, activation=None, layer_norm_eps=None)
    with torch.no_grad():
        method.active_recipe = base
        expected = method.predict_masks(crops, bank)
        method.active_recipe = replace(base, activation="quick_gelu", layer_norm_eps=1e-5)
        assert torch.allclose(method.predict_masks(crops, bank), expected, atol=1e-5)


def test_recipe_identity_leaves_out_unset_tower_overrides():
    recipe = SCLIP.recipe
    assert "activation" not in recipe.as_dict() and "layer_norm_eps" not in recipe.as_dict()
    authors = MaskCLIP.recipe.as_dict()
    assert authors["activation"] == "gelu" and authors["layer_norm_eps"] == 1e-6
    with pytest.raises(ValueError, match="activation"):
        replace(recipe, activation="relu")
    with pytest.raises(ValueError, match="layer_norm_eps"):
        replace(recipe, layer_norm_eps=0.0)


def test_vanilla_clip_equals_open_clips_own_tokens(backbone):
    visual, crops = backbone.visual, torch.randn(2, 3, 32, 32)
    method = make("clip", backbone)
    bank = method.encode_classes(NAMES, TEXT)
    with torch.no_grad():
        tokens = visual.ln_post(visual.transformer(visual._embeds(crops))[:, 1:]) @ visual.proj
    assert torch.allclose(method.predict_masks(crops, bank) / method.logit_scale, cosines(tokens, bank.embeddings),
                          atol=1e-5)


def hand_attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor, rule: str, grid, std: float = 0.0):
    """Head by head, token by token, from the definitions in the papers."""
    dim, heads = x.shape[-1], attn.num_heads
    head_dim = dim // heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q, k, v = (x[0] @ w[i * dim:(i + 1) * dim].t() + b[i * dim:(i + 1) * dim] for i in range(3))
    length = x.shape[1]
    prior = torch.zeros(length, length)
    positions = [(r, c) for r in range(grid[0]) for c in range(grid[1])]
    for i, (ri, ci) in enumerate(positions, start=1):
        for j, (rj, cj) in enumerate(positions, start=1):
            prior[i, j] = math.exp(-((ri - rj) ** 2 + (ci - cj) ** 2) / (2 * std**2)) if std else 0.0
    outputs = []
    for h in range(heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        qh, kh, vh = q[:, part], k[:, part], v[:, part]
        scale = head_dim**-0.5
        if rule == "qq":
            weights = torch.softmax(qh @ qh.t() * scale, dim=-1)
        elif rule == "qq+kk":
            weights = torch.softmax(qh @ qh.t() * scale, dim=-1) + torch.softmax(kh @ kh.t() * scale, dim=-1)
        elif rule == "kk+gaussian":
            weights = torch.softmax(kh @ kh.t() * scale + prior, dim=-1)
        elif rule == "identity":
            weights = torch.eye(length)
        outputs.append(weights @ vh)
    return attn.out_proj(torch.cat(outputs, dim=-1))[None]


@pytest.mark.parametrize("rule", ["qq", "qq+kk", "kk+gaussian", "identity"])
def test_last_block_attention_rules_match_hand_computation(rule):
    torch.manual_seed(3)
    attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    grid = (2, 3)
    x = torch.randn(1, 1 + grid[0] * grid[1], 8)
    with torch.no_grad():
        expected = hand_attention(attn, x, rule, grid, std=1.5 if rule == "kk+gaussian" else 0.0)
        got = last_block_attention(attn, x, rule, grid, gaussian_std=1.5)
    assert torch.allclose(got, expected, atol=1e-6)


def test_qk_rule_is_torchs_multihead_attention():
    torch.manual_seed(4)
    attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(3, 7, 8)
    with torch.no_grad():
        expected = attn(x, x, x, need_weights=False)[0]
        assert torch.allclose(last_block_attention(attn, x, "qk", (2, 3)), expected, atol=1e-6)


def test_clip_block_is_open_clips_residual_attention_block(backbone):
    """The engine's written-out block (batch-first SDPA) against open_clip's own block forward."""
    torch.manual_seed(6)
    recipe = replace(MaskCLIP.recipe, activation=None, layer_norm_eps=None)
    x = torch.randn(3, 17, backbone.visual.transformer.width)
    for block in backbone.visual.transformer.resblocks:
        with torch.no_grad():
            assert torch.allclose(clip_block(block, x, recipe), block(x), atol=1e-5)


# --- positional embeddings -------------------------------------------------------------------

def cubic_matrix(source: int, target: int, scale_inverse: float) -> torch.Tensor:
    """torch's bicubic (A=-0.75, align_corners=False, edge-clamped) as a [target, source] matrix."""
    def kernel(t: float) -> float:
        t, a = abs(t), -0.75
        if t <= 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a if t < 2 else 0.0

    matrix = np.zeros((target, source))
    for out in range(target):
        x = (out + 0.5) * scale_inverse - 0.5
        base = math.floor(x)
        for tap in range(base - 1, base + 3):
            matrix[out, min(max(tap, 0), source - 1)] += kernel(x - tap)
    return torch.tensor(matrix, dtype=torch.float64)


@pytest.mark.parametrize(("rule", "target"), [("scale_factor", (7, 9)), ("size", (7, 9)), ("scale_factor", (3, 2))])
def test_positional_embedding_resize_matches_an_independent_bicubic(rule, target):
    torch.manual_seed(5)
    source, dim = 4, 3
    positional = torch.randn(1 + source * source, dim, dtype=torch.float64)
    grid = positional[1:].reshape(source, source, dim)
    rows, cols = (
        cubic_matrix(source, n, source / (n + 0.1) if rule == "scale_factor" else source / n) for n in target
    )
    expected = torch.einsum("ar,rcd,bc->abd", rows, grid, cols).reshape(-1, dim)
    got = resize_positional_embedding(positional, (source, source), target, rule)
    assert torch.equal(got[0], positional[0])
    assert torch.allclose(got[1:], expected, atol=1e-10)


def test_positional_embedding_is_kept_when_the_token_count_matches():
    positional = torch.randn(1 + 16, 5)
    assert resize_positional_embedding(positional, (4, 4), (4, 4), "scale_factor") is positional
    assert resize_positional_embedding(positional, (4, 4), (2, 8), "size") is positional  # as the references do


# --- text banks ------------------------------------------------------------------------------

def test_text_aggregation_rules():
    embeddings = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(aggregate(embeddings, "mean_unnormalised"), F.normalize(torch.tensor([1.5, 0.5]), dim=0))
    assert torch.allclose(aggregate(embeddings, "mean_normalised"), F.normalize(torch.tensor([0.5, 0.5]), dim=0))
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(embeddings, "max")


@pytest.mark.parametrize("rule", ["mean_normalised", "mean_unnormalised"])
def test_text_bank_follows_the_protocols_aggregation(rule, backbone):
    method = make("clearclip", backbone)
    bank = method.encode_classes(NAMES, make_text(TEMPLATES, rule))
    assert bank.names == ("sky", "wall", "cat", "dog", "puppy", "hound")
    assert bank.name_to_class == (0, 0, 1, 2, 2, 2)
    with torch.no_grad():
        raw = backbone.model.encode_text(backbone.tokenizer([t.replace("{}", "puppy") for t in TEMPLATES]))
    assert torch.allclose(bank.embeddings[4], aggregate(raw, rule), atol=1e-6)


def test_text_bank_cache_hit_encodes_no_text(tmp_path, monkeypatch):
    backbone = backbone_from_model(tiny_clip(), "tiny-test")
    calls = []
    encode = backbone.model.encode_text
    monkeypatch.setattr(backbone.model, "encode_text", lambda tokens: calls.append(len(tokens)) or encode(tokens))
    store = TextBankStore(tmp_path / "banks")
    first = build_text_bank(backbone, NAMES, TEMPLATES, "mean_normalised", store)
    assert calls and len(list((tmp_path / "banks").glob("*.pt"))) == 1
    calls.clear()
    second = build_text_bank(backbone, NAMES, TEMPLATES, "mean_normalised", store)
    assert calls == [] and torch.equal(first.embeddings, second.embeddings)
    build_text_bank(backbone, NAMES, TEMPLATES, "mean_unnormalised", store)
    assert calls  # another aggregation rule is another key
    calls.clear()
    build_text_bank(backbone_from_model(tiny_clip(seed=1), "tiny-test"), NAMES, TEMPLATES, "mean_normalised", store)
    assert len(list((tmp_path / "banks").glob("*.pt"))) == 3  # other weights, other key


# --- weights files ---------------------------------------------------------------------------

def save_torchscript(model: CLIP, path: Path) -> None:
    """A traced archive like OpenAI's: forward, encode_image and encode_text traced."""
    image = torch.randn(2, 3, *model.visual.image_size)
    text = torch.randint(0, 100, (2, model.context_length))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(
            model, {"forward": (image, text), "encode_image": (image,), "encode_text": (text,)}, check_trace=False
        )
        traced.save(str(path))


def scores_of(backbone, name: str = "sclip", size: int = 40) -> torch.Tensor:
    torch.manual_seed(7)
    crops = torch.randn(1, 3, size, size)
    method = make(name, backbone)
    return method.predict_masks(crops, method.encode_classes(NAMES, TEXT))


def test_state_dict_and_torchscript_archive_load_to_identical_scores(tmp_path):
    model = tiny_clip()
    torch.save(model.state_dict(), tmp_path / "tiny_sd.pt")
    save_torchscript(model, tmp_path / "tiny_jit.pt")
    config = tmp_path / "TinyTest-quickgelu.json"
    config.write_text(json.dumps({
        "embed_dim": 64, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    }))
    from_dict = load_clip(None, "tiny_sd.pt", weights_root=tmp_path)
    from_archive = load_clip(None, str(tmp_path / "tiny_jit.pt"), allow_torchscript=True)
    from_config = load_clip(str(config), "tiny_sd.pt", weights_root=tmp_path)
    expected = scores_of(backbone_from_model(model, "tiny"))
    for loaded in (from_dict, from_archive, from_config):
        assert loaded.weights_sha256 and len(loaded.weights_sha256) == 64
        assert torch.equal(scores_of(loaded), expected)


def test_openai_layout_weights_build_quickgelu_whatever_the_model_name_says(tmp_path):
    """A state dict saved from OpenAI's archive, loaded with a GELU model name (open_clip's ViT-B-16 is
    GELU), is built with QuickGELU: the scores are the QuickGELU model's, not silently the GELU ones."""
    model = tiny_clip()
    openai_keys = {"input_resolution": torch.tensor(32), "context_length": torch.tensor(16),
                   "vocab_size": torch.tensor(49408)}
    torch.save({**model.state_dict(), **openai_keys}, tmp_path / "openai_layout.pt")
    torch.save(model.state_dict(), tmp_path / "open_clip_layout.pt")
    gelu = tmp_path / "TinyTestGelu.json"
    gelu.write_text(json.dumps({
        "embed_dim": 64,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    }))
    expected = scores_of(backbone_from_model(model, "tiny"))
    for spelling in (None, str(gelu)):
        loaded = load_clip(spelling, "openai_layout.pt", weights_root=tmp_path)
        assert torch.equal(scores_of(loaded), expected), spelling
    gelu_built = scores_of(load_clip(str(gelu), "open_clip_layout.pt", weights_root=tmp_path))
    assert not torch.allclose(gelu_built, expected)  # what the OpenAI-layout file gave before: the trap
    with pytest.raises(WeightsError, match="does not hold a ViT-B-16"):
        load_clip("ViT-B-16", "openai_layout.pt", weights_root=tmp_path)


def test_truncated_or_mismatched_weights_are_clear_errors(tmp_path):
    model = tiny_clip()
    torch.save(model.state_dict(), tmp_path / "tiny_sd.pt")
    data = (tmp_path / "tiny_sd.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_clip(None, "cut.pt", weights_root=tmp_path)
    save_torchscript(model, tmp_path / "tiny_jit.pt")
    data = (tmp_path / "tiny_jit.pt").read_bytes()
    (tmp_path / "cut_jit.pt").write_bytes(data[: len(data) - 4096])
    with pytest.raises(WeightsError, match="truncated"):
        load_clip(None, "cut_jit.pt", weights_root=tmp_path, allow_torchscript=True)
    with pytest.raises(WeightsError, match=r"does not hold a ViT-B-16: .*vision width 128 \(model ViT-B-16: 768\)"):
        load_clip("ViT-B-16", str(tmp_path / "tiny_jit.pt"), allow_torchscript=True)
    with pytest.raises(WeightsError, match=r"does not fit model ViT-B-16-quickgelu: .*shape mismatches"):
        load_clip("ViT-B-16-quickgelu", "tiny_sd.pt", weights_root=tmp_path)


def test_a_torchscript_archive_of_unknown_sha256_is_refused_unless_trusted(tmp_path, monkeypatch):
    import methods.clip_backbone as clip_backbone

    model = tiny_clip()
    save_torchscript(model, tmp_path / "tiny_jit.pt")
    read = []
    monkeypatch.setattr(clip_backbone.torch.jit, "load", lambda *a, **k: read.append(a) or pytest.fail("read"))
    with pytest.raises(WeightsError, match=r"tiny_jit.pt is a TorchScript archive .* allow_torchscript=True"):
        load_clip(None, str(tmp_path / "tiny_jit.pt"))
    assert read == []
    monkeypatch.undo()
    sha = clip_backbone.file_sha256(tmp_path / "tiny_jit.pt")
    pinned = clip_backbone.KnownWeights("tiny", "test", "tiny_jit.pt", sha, "https://example.org/tiny_jit.pt")
    monkeypatch.setattr(clip_backbone, "known_weights", lambda: (pinned,))
    assert load_clip(None, str(tmp_path / "tiny_jit.pt")).weights_sha256 == sha


def test_missing_or_corrupt_openai_weights_name_file_sha256_and_url(tmp_path):
    sha = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    with pytest.raises(WeightsError) as missing:
        load_clip("ViT-B-16", "openai", weights_root=tmp_path)
    message = str(missing.value)
    assert "'ViT-B-16.pt'" in message and sha in message and f"clip/models/{sha}/ViT-B-16.pt" in message
    (tmp_path / "ViT-B-16.pt").write_bytes(b"not the archive")
    with pytest.raises(WeightsError, match=f"expected {sha}"):
        load_clip("ViT-B-16", "openai", weights_root=tmp_path)
    with pytest.raises(WeightsError, match="not found"):
        load_clip("ViT-B-16", "elsewhere/nothing.pt", weights_root=tmp_path)


# --- ViT-B/16 shapes -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit_b16(tmp_path_factory):
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    folder = tmp_path_factory.mktemp("vitb16")
    torch.save(model.state_dict(), folder / "random_vitb16.pt")
    save_torchscript(model, folder / "random_vitb16_jit.pt")
    return folder


@pytest.mark.slow
def test_vit_b16_state_dict_and_archive_give_identical_scores(vit_b16):
    from_dict = load_clip("ViT-B-16-quickgelu", "random_vitb16.pt", weights_root=vit_b16)
    from_archive = load_clip("ViT-B-16", "random_vitb16_jit.pt", weights_root=vit_b16, allow_torchscript=True)
    inferred = load_clip(None, "random_vitb16.pt", weights_root=vit_b16)
    expected = scores_of(from_dict, "clearclip", 448)
    assert torch.equal(scores_of(from_archive, "clearclip", 448), expected)
    assert torch.equal(scores_of(inferred, "clearclip", 448), expected)


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_each_method_on_a_vit_b16_448_crop(name, vit_b16):
    backbone = load_clip("ViT-B-16-quickgelu", "random_vitb16.pt", weights_root=vit_b16)
    scores = scores_of(backbone, name, 448)
    assert scores.shape == (1, FLAT, 28, 28)
    assert torch.isfinite(scores).all()


def test_clip_keeps_the_last_blocks_residual_unless_asked_for_clearclips_default(backbone):
    kept, ignored = make("clip", backbone), make("clip", backbone, ignore_residual=True)
    assert (kept.active_recipe.residual, kept.active_recipe.ffn) == (True, True)
    assert (ignored.active_recipe.residual, ignored.active_recipe.ffn) == (False, False)
    assert ignored.active_recipe.attention == kept.active_recipe.attention == "qk"
    assert kept.config()["options"] == {"ignore_residual": False}
    bank = kept.encode_classes(NAMES, TEXT)
    crops = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(kept.predict_masks(crops, bank), ignored.predict_masks(crops, bank))
