from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock
from PIL import Image

from benchmark.errors import CheckpointError
from benchmark.protocol import BenchmarkSpec
from benchmark.training import decay_groups, warmup_cosine
from methods.clip_backbone import backbone_from_model
from methods.tcl.adapter import TCL, tcl_pamr
from methods.tcl.checkpoint import load_masker_state, read_checkpoint, save_checkpoint, to_released
from methods.tcl.decoder import MaskDecoder
from methods.tcl.inference import centred_padding
from methods.tcl.losses import (
    LogitScale,
    area_loss,
    extended_info_nce,
    gumbel_sigmoid_hard,
    info_nce,
    masked_pool,
    tv_loss,
)
from methods.tcl.model import TCLMasker
from methods.tcl.objective import TCLObjective
from methods.tcl.train import WARMUP_START, spared_from_decay, train_tcl
from tests.factories import make_protocol, make_spec, make_text

# The learned entries of the released tcl.pth for ViT-B/16 (width 768, embed 512, last block 11),
# written out from the reference's module tree (kakaobrain/tcl models/tcl/masker.py, decoders.py,
# modules.py, encoders.py), not from methods/tcl/checkpoint.py.
BLOCK = "masker.image_encoder.backbone.transformer.resblocks.11."
NET = "masker.image_encoder.decoder.decoder.net."
RELEASED_VIT_B16 = {
    **{BLOCK + k: s for k, s in {
        "ln_1.weight": (768,), "ln_1.bias": (768,), "attn.in_proj_weight": (2304, 768), "attn.in_proj_bias": (2304,),
        "attn.out_proj.weight": (768, 768), "attn.out_proj.bias": (768,), "ln_2.weight": (768,), "ln_2.bias": (768,),
        "mlp.c_fc.weight": (3072, 768), "mlp.c_fc.bias": (3072,), "mlp.c_proj.weight": (768, 3072),
        "mlp.c_proj.bias": (768,),
    }.items()},
    **{f"{NET}{i}.{conv}.{k}": s for i in (0, 1) for conv in ("conv", "conv2") for k, s in {
        "norm.weight": (768,), "norm.bias": (768,), "conv.weight": (768, 768, 3, 3), "conv.bias": (768,),
        "gate.gate": (),
    }.items()},
    "masker.image_encoder.decoder.image_proj.ln.weight": (768,),
    "masker.image_encoder.decoder.image_proj.ln.bias": (768,),
    "masker.image_encoder.decoder.image_proj.proj": (768, 512),
    "masker.sim2mask.w": (),
    "masker.sim2mask.b": (),
}


@pytest.fixture(scope="module")
def vit_b16_masker() -> TCLMasker:
    """A masker of ViT-B/16 shapes without building the 12-block CLIP around it."""
    torch.manual_seed(0)
    block = ResidualAttentionBlock(768, 12, act_layer=QuickGELU, norm_layer=LayerNorm)
    return TCLMasker(block, LayerNorm(768), torch.randn(768, 512) * 768**-0.5)


def random_release(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) for key, shape in RELEASED_VIT_B16.items()}


def tiny_clip(seed: int = 0, image_size: int = 32, patch: int = 8, width: int = 64, layers: int = 2) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(
        32,
        vision_cfg=CLIPVisionCfg(layers=layers, width=width, patch_size=patch, image_size=image_size),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    )
    return model.eval()


@pytest.fixture(scope="module")
def backbone():
    return backbone_from_model(tiny_clip(), "tiny-test")


# --- released checkpoint layout ----------------------------------------------------------------

def test_released_names_and_shapes_load_strictly(vit_b16_masker, tmp_path):
    release = random_release()
    path = tmp_path / "tcl.pth"
    torch.save({"model": release}, path)
    state, meta = read_checkpoint(path)
    assert meta == {}
    load_masker_state(vit_b16_masker, state, last_block=11, source=str(path))
    loaded = vit_b16_masker.state_dict()
    assert torch.equal(loaded["sim2mask.w"], release["masker.sim2mask.w"])
    assert torch.equal(loaded["decoder.stages.1.conv2.gate"], release[NET + "1.conv2.gate.gate"])
    assert torch.equal(loaded["decoder.stages.0.conv1.conv.weight"], release[NET + "0.conv.conv.weight"])
    assert torch.equal(loaded["block.attn.in_proj_weight"], release[BLOCK + "attn.in_proj_weight"])
    assert torch.equal(loaded["image_proj.proj"], release["masker.image_encoder.decoder.image_proj.proj"])
    written = to_released(vit_b16_masker, 11)
    assert {k: tuple(v.shape) for k, v in written.items()} == RELEASED_VIT_B16
    assert all(torch.equal(written[k], release[k]) for k in release)


def test_reference_training_state_entries_are_skipped(vit_b16_masker):
    release = {**random_release(), "tcli_loss.logit_scale": torch.tensor(2.0),
               "clip_image_encoder.clip_visual.conv1.weight": torch.zeros(1)}
    load_masker_state(vit_b16_masker, release, last_block=11, source="full.pth")


@pytest.mark.parametrize("fault", ["renamed", "missing", "unexpected", "shape"])
def test_a_wrong_entry_fails_naming_it(vit_b16_masker, fault):
    release = random_release()
    gate = NET + "0.conv.gate.gate"
    if fault == "renamed":
        release[NET + "0.conv.gate.weight"] = release.pop(gate)
        named = [gate, NET + "0.conv.gate.weight"]
    elif fault == "missing":
        del release["masker.sim2mask.b"]
        named = ["missing masker.sim2mask.b"]
    elif fault == "unexpected":
        release["masker.sim2mask.bias"] = torch.zeros(())
        named = ["unexpected masker.sim2mask.bias"]
    else:
        release["masker.image_encoder.decoder.image_proj.proj"] = torch.zeros(768, 256)
        named = ["masker.image_encoder.decoder.image_proj.proj has shape (768, 256), expected (768, 512)"]
    with pytest.raises(CheckpointError) as error:
        load_masker_state(vit_b16_masker, release, last_block=11, source="bad.pth")
    assert all(text in str(error.value) for text in named)


def test_a_wrong_block_index_is_named(vit_b16_masker):
    with pytest.raises(CheckpointError, match=r"missing masker\.image_encoder\.backbone\.transformer\.resblocks\.3\."):
        load_masker_state(vit_b16_masker, random_release(), last_block=3, source="tcl.pth")


def test_unreadable_or_unsafe_files_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*releases/download/v1.0.0/tcl.pth"):
        read_checkpoint(tmp_path / "tcl.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(tmp_path / "junk.pth")
    torch.save({"model": {"a": torch.zeros(1)}, "config": SimpleNamespace(x=1)}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(tmp_path / "pickled.pth")


def test_saved_checkpoint_round_trips_with_its_description(vit_b16_masker, tmp_path):
    save_checkpoint(tmp_path / "out.pt", vit_b16_masker, 11, {"steps": 7, "clip_sha256": "abc"})
    state, meta = read_checkpoint(tmp_path / "out.pt")
    assert set(state) == set(RELEASED_VIT_B16) and meta == {"format": 1, "steps": 7, "clip_sha256": "abc"}


# --- model ---------------------------------------------------------------------------------------

def test_fresh_decoder_is_nearest_x4_upsampling():
    torch.manual_seed(0)
    decoder = MaskDecoder(16)
    x = torch.randn(2, 16, 5, 7)
    assert all(stage.conv1.gate.item() == 0 and stage.conv2.gate.item() == 0 for stage in decoder.stages)
    assert torch.equal(decoder(x), x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


def test_fresh_masker_copies_clip_and_starts_at_sim2mask_init(backbone):
    visual = backbone.model.visual
    masker = TCLMasker.from_clip(visual)
    assert torch.equal(masker.block.attn.in_proj_weight, visual.transformer.resblocks[-1].attn.in_proj_weight)
    assert torch.equal(masker.image_proj.proj, visual.proj) and masker.image_proj.proj is not visual.proj
    assert (masker.sim2mask.w.item(), masker.sim2mask.b.item()) == (10.0, -2.5)
    assert all(p.requires_grad for p in masker.parameters())


def test_centred_padding_puts_the_odd_pixel_right_and_bottom():
    assert centred_padding(448, 448, (16, 16)) == (0, 0, 0, 0)
    assert centred_padding(437, 451, (16, 16)) == (6, 7, 5, 6)


# --- adapter -------------------------------------------------------------------------------------

def make(backbone, **options) -> TCL:
    with pytest.warns(UserWarning, match="untrained"):
        return TCL(backbone=backbone, checkpoint=None, text_cache=False, **options)


TEXT = make_text(["a photo of a {}."], "mean_unnormalised")
PROTOCOL = make_protocol(text=TEXT)


def bench(settings: dict) -> BenchmarkSpec:
    return make_spec(dataset="voc21", method_settings=settings)


def test_background_follows_the_pamr_setting_in_force(backbone):
    method = make(backbone)
    assert method.score_kind == "probs"
    assert method.background_value(PROTOCOL, bench({}), "threshold") == 0.4
    assert method.background_value(PROTOCOL, bench({"pamr": False}), "threshold") == 0.5
    assert method.background_value(PROTOCOL, bench({}), "prob_thd") is None
    assert make(backbone, pamr=False).background_value(PROTOCOL, bench({}), "threshold") == 0.5


def test_protocol_settings_override_options_and_config_records_them(backbone):
    method = make(backbone, pamr=False, kp_w=0.0)
    method.setup(PROTOCOL, bench({"pamr": True, "kp_w": 0.3}))
    assert method.pamr == tcl_pamr() and method.kp_w == 0.3
    assert tcl_pamr().dilations == (1, 2, 4, 8, 12, 24) and tcl_pamr().steps == 10
    config = method.config()
    assert config["pamr"] is None and config["kp_w"] == 0.0 and "checkpoint" not in config  # a path: not identity
    json.dumps(config)


@pytest.mark.parametrize("size", [(32, 32), (29, 37)])
def test_masks_cover_the_crop_with_probabilities(backbone, size):
    method = make(backbone)
    method.setup(PROTOCOL, bench({}))
    bank = method.encode_classes([["cat"], ["dog", "puppy"]], TEXT)
    masks = method.predict_masks(torch.randn(2, 3, *size), bank)
    assert masks.shape == (2, 3, *size)
    assert masks.min() >= 0 and masks.max() <= 1


def test_blend_is_the_reference_mix_of_masker_and_clip_maps(backbone):
    from methods.tcl.clip_features import dense_embeddings, encode_until_last
    from methods.tcl.inference import generate_masks

    method = make(backbone)
    visual, crops, text = method.net.visual, torch.randn(1, 3, 32, 32), torch.randn(3, 32)
    masker_only = generate_masks(visual, method.masker, crops, text, None, 0.0)
    blended = generate_masks(visual, method.masker, crops, text, None, 0.3)
    tokens, grid = encode_until_last(visual, crops)
    dense = F.normalize(dense_embeddings(visual, tokens, grid), dim=1)
    clip = torch.sigmoid((torch.einsum("bchw,nc->bnhw", dense, F.normalize(text, dim=-1)) - 0.25) * 10)
    clip = F.interpolate(F.interpolate(clip, size=(16, 16), mode="bilinear"), size=(32, 32), mode="bilinear")
    assert torch.allclose(blended, 0.3 * clip + 0.7 * masker_only, atol=1e-6)


# --- losses --------------------------------------------------------------------------------------

def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    assert tv_loss(x).item() == pytest.approx((1 + 2) / 2 + (3 + 4) / 2)


def test_area_prior_is_the_distance_of_the_mean_to_the_prior():
    assert area_loss(torch.full((2, 1, 3, 3), 0.5), 0.4).item() == pytest.approx(0.1)
    assert area_loss(torch.tensor([0.0, 0.2]), 0.4).item() == pytest.approx(0.3)


def test_masked_pool_is_a_mask_weighted_mean():
    embeddings = torch.arange(8.0).reshape(1, 2, 2, 2)  # channel 0: 0..3, channel 1: 4..7
    masks = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]]])
    pooled = masked_pool(embeddings, masks)
    assert torch.allclose(pooled, torch.tensor([[[0.0, 4.0], [1.5, 5.5]]]), atol=1e-5)


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_info_nce_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised inside
    scale = torch.tensor(2.0)
    cos = [[1.0, 0.0], [0.6, 0.8]]
    rows = _ce([2 * v for v in cos[0]], 0) + _ce([2 * v for v in cos[1]], 1)
    cols = _ce([2 * cos[0][0], 2 * cos[1][0]], 0) + _ce([2 * cos[0][1], 2 * cos[1][1]], 1)
    assert info_nce(image, text, scale).item() == pytest.approx(0.5 * (rows / 2 + cols / 2), abs=1e-6)


def test_extended_info_nce_scores_image_b_with_text_n_through_mask_b_n():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pooled = torch.tensor([[[1.0, 0.0], [0.8, 0.6]],      # image 0 pooled by text 0's, text 1's mask
                           [[0.0, 1.0], [0.7071068, 0.7071068]]])
    p = [[1.0, 0.6], [0.0, 0.7071068]]  # p[b][n] = cos(pooled[b, n], text[n])
    per_image = _ce(p[0], 0) + _ce(p[1], 1)
    per_text = _ce([p[0][0], p[1][0]], 0) + _ce([p[0][1], p[1][1]], 1)
    expected = 0.5 * (per_image / 2 + per_text / 2)
    assert extended_info_nce(pooled, text, torch.tensor(1.0)).item() == pytest.approx(expected, abs=1e-6)


def test_temperature_starts_at_1_over_0_07_and_is_clamped_at_100():
    scale = LogitScale()
    assert scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        scale.logit_scale.fill_(10.0)
    assert scale().item() == 100.0


def test_hard_gumbel_masks_are_binary_with_straight_through_gradients():
    logits = torch.tensor([-30.0, 30.0, 0.3], requires_grad=True)
    hard = gumbel_sigmoid_hard(logits, generator=torch.Generator().manual_seed(0))
    assert hard[:2].tolist() == [0.0, 1.0] and hard[2].item() in (0.0, 1.0)
    same = gumbel_sigmoid_hard(logits, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hard, same)
    hard.sum().backward()
    uniform = torch.rand(3, generator=torch.Generator().manual_seed(0))
    soft = torch.sigmoid(logits.detach() + torch.log(uniform / (1 - uniform)))
    assert torch.allclose(logits.grad, soft * (1 - soft))


def test_objective_gives_the_six_weighted_losses_and_trains_the_masker(backbone):
    visual = backbone.model.visual
    objective = TCLObjective(TCLMasker.from_clip(visual))
    objective.masker.block.requires_grad_(False)  # the decoder-only phase
    images = torch.randn(3, 3, 32, 32)
    from methods.tcl.clip_features import encode_until_last, global_embedding

    with torch.no_grad():
        tokens, grid = encode_until_last(visual, images)
        text = backbone.model.encode_text(backbone.tokenizer(["a cat", "two dogs", "sky"]))
    losses = objective(tokens, grid, text, images, lambda x: global_embedding(visual, x), torch.Generator())
    assert set(losses) == {"area_loss", "neg_area_loss", "tclf_loss", "tv_img_loss", "tv_mask_loss", "tcli_loss"}
    sum(losses.values()).backward()
    assert objective.masker.sim2mask.w.grad is not None and objective.image_scale.logit_scale.grad is not None
    assert objective.masker.decoder.stages[0].conv1.gate.grad is not None
    assert objective.masker.block.attn.in_proj_weight.grad is None
    assert all(p.grad is None for p in visual.parameters())


# --- training ------------------------------------------------------------------------------------
def _threshold_masks(logits, tau=1.0, generator=None):
    """Noise-free hard masks, so one and two processes draw the same ones."""
    soft = torch.sigmoid(logits)
    return soft.gt(0.5).to(soft.dtype) - soft.detach() + soft


def _objective_case():
    clip = tiny_clip(seed=5).requires_grad_(False)
    torch.manual_seed(1)
    objective = TCLObjective(TCLMasker.from_clip(clip.visual))
    with torch.no_grad():
        for stage in objective.masker.decoder.stages:
            stage.conv1.gate.fill_(0.5)
            stage.conv2.gate.fill_(-0.5)
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, 32, 32, generator=generator)
    tokens = torch.randint(1, 400, (4, 16), generator=generator)
    tokens[:, -1] = 49407
    return clip, objective, images, tokens


def _gradients(clip, objective, model, images, tokens):
    from methods.tcl.clip_features import encode_until_last, global_embedding

    with torch.no_grad():
        text = clip.encode_text(tokens)
        clip_tokens, grid = encode_until_last(clip.visual, images)
    loss = sum(model(clip_tokens, grid, text, images, lambda x: global_embedding(clip.visual, x)).values())
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in objective.named_parameters()}


def _ddp_worker(rank: int, folder: str) -> None:
    import torch.distributed as dist

    import methods.tcl.objective as objective_module

    objective_module.gumbel_sigmoid_hard = _threshold_masks
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    clip, objective, images, tokens = _objective_case()
    model = torch.nn.parallel.DistributedDataParallel(objective)
    half = slice(2 * rank, 2 * rank + 2)
    loss, grads = _gradients(clip, objective, model, images[half], tokens[half])
    torch.save({"loss": loss, "grads": grads}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_train_as_one_process_on_the_global_batch(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    import methods.tcl.objective as objective_module

    monkeypatch.setattr(objective_module, "gumbel_sigmoid_hard", _threshold_masks)
    clip, objective, images, tokens = _objective_case()
    loss, grads = _gradients(clip, objective, objective, images, tokens)
    mp.start_processes(_ddp_worker, args=(str(tmp_path),), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert (ranks[0]["loss"] + ranks[1]["loss"]) / 2 == pytest.approx(loss, abs=1e-5)
    for rank in ranks:
        for name, grad in grads.items():
            assert torch.allclose(rank["grads"][name], grad, rtol=1e-4, atol=1e-6 * grad.abs().max()), name



def test_schedule_matches_torchs_sequential_lr():
    total, warmup, peak, floor = 20, 6, 1e-3, 1e-4
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=peak)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-4, end_factor=1.0, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=floor),
    ], milestones=[warmup])
    for step in range(total):
        rate = warmup_cosine(step, total, warmup, peak, floor, warmup_start=WARMUP_START)
        assert rate == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()


def test_weight_decay_spares_1d_parameters_and_biases_only(backbone):
    objective = TCLObjective(TCLMasker.from_clip(backbone.model.visual))
    decay, no_decay = decay_groups(objective.named_parameters(), 0.05, spared_from_decay)
    names = {id(p): n for n, p in objective.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert {"masker.sim2mask.w", "masker.decoder.stages.0.conv1.gate", "image_scale.logit_scale"} <= decayed
    assert "masker.block.attn.in_proj_weight" in decayed
    assert not any(n.endswith(".bias") or "norm" in n or "ln" in n for n in decayed)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


@pytest.fixture
def caption_world(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    (tmp_path / "captions" / "images").mkdir(parents=True)
    words = ["cat", "dog", "sky", "tree", "car", "sea"]
    records = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"captions/images/{i}.png")
        records.append({"image": f"images/{i}.png", "caption": f"a photo of a {words[i % 6]}"})
    (tmp_path / "captions" / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    torch.save(tiny_clip(seed=3).state_dict(), tmp_path / "clip.pt")
    return {"data": tmp_path / "captions", "clip": tmp_path / "clip.pt", "root": tmp_path}


def test_deit_augmentation_is_seeded_per_item_and_leaves_the_global_rngs_alone(caption_world):
    from benchmark.captions import CaptionDataset
    from methods.tcl.data import AugmentedPairs, build_transform

    pairs = AugmentedPairs(CaptionDataset(caption_world["data"]), build_transform("deit", 32, "imagenet"), seed=3)
    first = [pairs[(0, i)][0] for i in range(6)]
    np.random.seed(123)  # timm's RandAugment draws its operations from numpy's global RNG
    numpy_state = np.random.get_state()[1].copy()
    again = [pairs[(0, i)][0] for i in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert np.array_equal(np.random.get_state()[1], numpy_state)


def _train(world, out, **extra):
    return train_tcl(
        world["data"], out, clip_model=None, clip_pretrained=str(world["clip"]), seed=1, steps=4, batch_size=4,
        progress=False, augment="crop_flip", normalisation="clip", workers=0, lr=1e-3, threads=1, **extra,
    )


def test_interrupted_training_resumes_to_identical_weights(caption_world):
    root = caption_world["root"]
    straight = _train(caption_world, root / "straight.pt")
    assert straight["steps_done"] == 4 and straight["decoder_only_steps"] == 2
    stopped = _train(caption_world, root / "resumed.pt", max_seconds=0.0, save_every_s=0.0)
    assert stopped["steps_done"] == 1 and stopped["stopped_by"] == "max_seconds"
    assert (root / "resumed.pt.state").is_file()
    resumed = _train(caption_world, root / "resumed.pt")
    assert resumed["steps_done"] == 4 and not (root / "resumed.pt.state").exists()
    a, meta = read_checkpoint(root / "straight.pt")
    b, _ = read_checkpoint(root / "resumed.pt")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert meta["steps"] == 4 and meta["clip_sha256"] == straight["clip_sha256"]
    fresh = TCLMasker.from_clip(tiny_clip(seed=3).visual)
    assert not torch.equal(a["masker.sim2mask.w"], fresh.state_dict()["sim2mask.w"])
    block = "masker.image_encoder.backbone.transformer.resblocks.1.mlp.c_fc.weight"
    assert not torch.equal(a[block], fresh.state_dict()["block.mlp.c_fc.weight"])  # trained after the UST phase


def test_trained_checkpoint_loads_only_with_its_clip(caption_world, tmp_path):
    out = tmp_path / "tcl.pt"
    _train(caption_world, out)
    method = TCL(model=None, pretrained=str(caption_world["clip"]), checkpoint=str(out), text_cache=False)
    assert method.config()["trained"]["steps"] == 4 and method.checkpoint_sha256()
    torch.save(tiny_clip(seed=4).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="trained on CLIP weights"):
        TCL(model=None, pretrained=str(tmp_path / "other.pt"), checkpoint=str(out), text_cache=False)


# --- ViT-B/16 end to end -------------------------------------------------------------------------

@pytest.mark.slow
def test_eval_on_tcl8_runs_end_to_end_on_vit_b16_shapes(tmp_path, capsys):
    from benchmark.cli import main
    from benchmark.data import load_card
    from tests.fakedata import write_fake_dataset

    release = random_release(seed=5)
    for key in release:
        if key.endswith("gate.gate"):
            release[key] = torch.tensor(0.3)
        elif key.endswith(("norm.weight", "ln.weight", "ln_1.weight", "ln_2.weight")):
            release[key] = 1 + 0.1 * release[key]
        elif key.endswith("sim2mask.w"):
            release[key] = torch.tensor(10.0)
        else:
            release[key] = 0.02 * release[key]
    torch.save({"model": release}, tmp_path / "tcl.pth")
    write_fake_dataset(load_card("voc21"), tmp_path / "data", count=2, sizes=[(40, 52), (50, 44)])
    code = main([
        "eval", "--method", "tcl", "--protocol", "tcl8", "--benchmarks", "voc21", "--allow-incomplete",
        "--checkpoint", str(tmp_path / "tcl.pth"), "--opt", "pretrained=null", "--opt", "text_cache=false",
        "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "results"), "--workers", "0",
        "--batch-size", "2", "--no-progress",
    ])
    assert code == 0
    record = json.loads(next((tmp_path / "results").rglob("voc21*.json")).read_text())
    assert record["background"]["value"] == 0.4 and record["method_settings"] == {"pamr": True}
    assert record["method"]["config"]["pamr"]["dilations"] == [1, 2, 4, 8, 12, 24]
    assert 0 <= record["miou"] <= 100 and record["dataset"]["images"] == 2
