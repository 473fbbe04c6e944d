"""CLIP-S4 (methods/clips4): losses on hand-made inputs, segment formation, prototypes, adapter, checkpoints."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmark.atomic import save_torch_atomically
from benchmark.errors import CheckpointError
from methods.clip_backbone import backbone_from_model
from methods.clip_text import TextBank
from methods.clips4.adapter import CLIPS4
from methods.clips4.checkpoint import weights_content
from methods.clips4.losses import (
    embedding_consistency,
    embedding_pull,
    pixel_segment_contrastive,
    pseudo_labels,
    semantic_consistency,
    split_semantic_consistency,
)
from methods.clips4.network import NetworkConfig, PixelEmbedder
from methods.clips4.prototypes import PrototypeBank
from methods.clips4.segments import form_segments, segment_embeddings
from methods.clips4.superpixels import slic
from tests.factories import make_text


def unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# ---- losses -------------------------------------------------------------------------------------


def test_pixel_segment_contrastive_one_positive():
    pixels = unit([1, 0])
    segments = unit([1, 0], [0, 1])
    loss = pixel_segment_contrastive(pixels, torch.tensor([0]), segments, torch.tensor([0, 1]), kappa=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_pixel_segment_contrastive_positive_in_other_view_counts():
    pixels = unit([1, 0], [0, 1])
    # region 0 appears twice (both views), region 1 once.
    segments = unit([1, 0], [0, 1], [1, 0])
    regions = torch.tensor([0, 1, 0])
    loss = pixel_segment_contrastive(pixels, torch.tensor([0, 1]), segments, regions, kappa=2.0)
    first = math.log(2 * math.exp(2) + 1) - math.log(2 * math.exp(2))
    second = math.log(math.exp(2) + 2) - 2
    assert loss.item() == pytest.approx((first + second) / 2, abs=1e-6)


def test_pixel_segment_contrastive_needs_a_positive():
    with pytest.raises(ValueError, match="positive"):
        pixel_segment_contrastive(unit([1, 0]), torch.tensor([5]), unit([1, 0]), torch.tensor([0]), kappa=1.0)


def test_embedding_consistency_known_value():
    model = unit([1, 0], [0, 1])
    clip = unit([1, 0], [0, 1])
    loss = embedding_consistency(model, clip, kappa=2.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)
    swapped = embedding_consistency(model, clip.flip(0), kappa=2.0)
    assert swapped.item() == pytest.approx(math.log(1 + math.exp(2)), abs=1e-6)


def test_embedding_pull_is_one_minus_the_mean_cosine():
    model = unit([1, 0], [0, 1])
    assert embedding_pull(model, model).item() == pytest.approx(0.0, abs=1e-7)
    half = unit([1, 1], [0, 1])  # cosines 1/sqrt(2) and 1
    assert embedding_pull(model, half).item() == pytest.approx(1 - (1 / math.sqrt(2) + 1) / 2, abs=1e-6)
    assert embedding_pull(model, -model).item() == pytest.approx(2.0, abs=1e-6)


def test_unknown_embedding_loss_or_semantic_targets_is_a_config_error():
    from benchmark.errors import ConfigError
    from methods.clips4.settings import resolve_settings

    assert resolve_settings({"embedding_loss": "contrastive"})["embedding_loss"] == "contrastive"
    with pytest.raises(ConfigError, match="embedding_loss"):
        resolve_settings({"embedding_loss": "l2"})
    assert resolve_settings({"semantic_targets": "centres"})["semantic_targets"] == "centres"
    with pytest.raises(ConfigError, match="semantic_targets"):
        resolve_settings({"semantic_targets": "words"})


def test_semantic_consistency_known_value():
    prototypes = unit([1, 0], [0, 1])
    clip = unit([0.2, 1.0], [1.0, 0.1])
    labels = pseudo_labels(clip, prototypes)
    assert labels.tolist() == [1, 0]
    model = unit([1, 0], [1, 0])
    loss = semantic_consistency(model, prototypes, labels, logit_scale=3.0)
    expected = (math.log(math.exp(3) + 1) - 0 + math.log(math.exp(3) + 1) - 3) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_split_semantic_consistency_scores_known_pixels_on_text_and_unknown_ones_on_unknown_prototypes():
    known_text = unit([1, 0, 0], [0, 1, 0])
    unknown = unit([0, 0, 1], [0, 1, 1])
    model = unit([1, 0, 0], [0, 0, 1], [0, 1, 0])
    # pixel 0: known (centre 1) with text label 0; pixel 1: unknown prototype 1; pixel 2: known, text label 1
    targets, text_targets = torch.tensor([1, 3, 0]), torch.tensor([0, 0, 1])
    loss = split_semantic_consistency(model, known_text, unknown, targets, text_targets, logit_scale=2.0)
    s = 2.0
    known_0 = math.log(math.exp(s) + 1) - s  # softmax over the two texts, target text 0
    known_2 = math.log(1 + math.exp(s)) - s  # target text 1
    u = s / math.sqrt(2)
    unknown_1 = math.log(math.exp(s) + math.exp(u)) - u  # softmax over the unknown prototypes, target 1
    assert loss.item() == pytest.approx((known_0 + unknown_1 + known_2) / 3, abs=1e-6)


def test_unknown_margin_keeps_a_segment_with_the_known_centre_unless_it_is_that_much_closer():
    bank = PrototypeBank(unit([1, 0]), n_unknown=1, unknown_margin=0.0)
    bank.unknown.copy_(unit([0.6, 0.8]))
    point = unit([0.8, 0.6])  # cos 0.8 to the known centre, 0.96 to the unknown one
    assert bank.assign(point).tolist() == [1]
    bank.unknown_margin = 0.2
    assert bank.assign(point).tolist() == [0]


# ---- segment formation --------------------------------------------------------------------------


def test_slic_follows_a_colour_edge_off_the_grid():
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0, :, :13] = 0.9  # red left of column 13, blue right: not on the 8-pixel seed grid
    image[:, 2, :, 13:] = 0.9
    labels = slic(image, n_segments=16, compactness=1.0, iterations=10)[0]
    left = labels[:, :13].unique().tolist()
    right = labels[:, 13:].unique().tolist()
    assert not set(left) & set(right)
    assert len(left) >= 2 and len(right) >= 2


def test_segments_recover_two_regions_in_both_views():
    height, width, dim = 16, 16, 8
    a, b = unit([1, 0, 0, 0, 0, 0, 0, 0])[0], unit([0, 1, 0, 0, 0, 0, 0, 0])[0]
    embeddings = torch.empty(dim, height, width)
    embeddings[:, :, :6] = a[:, None, None]
    embeddings[:, :, 6:] = b[:, None, None]
    generator = torch.Generator().manual_seed(0)
    noisy = F.normalize(embeddings + 0.05 * torch.randn(dim, height, width, generator=generator), dim=0)
    views = torch.stack([noisy, noisy.flip(-1)])[:, None]  # [V=2,B=1,D,H,W]; view 2 is the mirror image
    grid = (torch.arange(height)[:, None] // 4) * 4 + torch.arange(width)[None, :] // 4  # 4x4 cells
    cells = torch.where(torch.arange(width)[None, :] < 6, grid, grid + 16)  # split cells at the edge
    superpixels = torch.stack([cells, cells.flip(-1)])[:, None]
    segments = form_segments(views, superpixels, n_superpixels=32, k=2)
    first = segments[0, 0]
    assert first[:, :6].unique().numel() == 1 and first[:, 6:].unique().numel() == 1
    assert first[0, 0] != first[0, -1]
    assert torch.equal(segments[1, 0], first.flip(-1))
    means, counts = segment_embeddings(views, segments, k=2)
    assert counts[0, 0].sort().values.tolist() == [6 * 16, 10 * 16]
    left_id = int(first[0, 0])
    assert torch.dot(means[0, 0, left_id], a).item() > 0.99
    assert means.norm(dim=-1).allclose(torch.ones(2, 1, 2))


# ---- prototype bank -----------------------------------------------------------------------------


def test_prototype_bank_learns_an_unknown_prototype_and_follows_its_members():
    known_text = unit([1, 0, 0, 0], [0, 1, 0, 0])
    bank = PrototypeBank(known_text, n_unknown=1, momentum=0.5)
    # Image-side segments: p1 is text class 0, p2-p4 text class 1, but p3 lies apart (an unknown class).
    p1, p2, p3, p4 = unit([1, 0, 0, 2], [0, 1, 0, 2], [0, 0.1, 1, 1], [0.1, 1, 0, 2])
    points = torch.stack([p1, p2, p3, p4])
    assert bank.text_labels(points).tolist() == [0, 1, 1, 1]
    bank.initialise(points)
    assert bank.known[0].allclose(p1, atol=1e-6)
    assert bank.known[1].allclose(F.normalize(p2 + p3 + p4, dim=0), atol=1e-6)
    assert bank.unknown[0].allclose(p3, atol=1e-6)
    assert bank.assign(points).tolist() == [0, 1, 2, 1]
    assert bank.prototypes().shape == (3, 4)

    known_before, unknown_before = bank.known.clone(), bank.unknown.clone()
    q = unit([0.05, 0, 1, 1])[0]  # text class 0, assigned to the unknown prototype
    bank.update(q[None], torch.tensor([2]))
    assert bank.known[0].allclose(F.normalize(0.5 * known_before[0] + 0.5 * q, dim=0), atol=1e-6)
    assert bank.known[1].equal(known_before[1])
    assert bank.unknown[0].allclose(F.normalize(0.5 * unknown_before[0] + 0.5 * q, dim=0), atol=1e-6)
    assert bank.known_text.equal(known_text)


def test_prototype_bank_update_leaves_prototypes_without_members():
    bank = PrototypeBank(unit([1, 0, 0], [0, 1, 0]), n_unknown=2, momentum=0.9)
    bank.initialise(unit([1, 0, 0.2], [0, 0, 1], [0.1, 0, 1]))
    assert not bool(bank.known_started[1])
    assert bank.known[1].equal(unit([0, 1, 0])[0])  # no member yet: still its text embedding
    before = bank.prototypes().clone()
    bank.update(unit([1, 0, 0.2]), torch.tensor([0]))
    assert bank.prototypes()[1:].equal(before[1:])


# ---- adapter and checkpoints --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_backbone():
    from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip

    model = create_tiny_clip(seed=3).eval().requires_grad_(False)
    return backbone_from_model(model, MODEL_NAME)


def _text_bank(n: int, dim: int) -> TextBank:
    embeddings = F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    return TextBank(embeddings, tuple(f"c{i}" for i in range(n)), tuple(range(n)))


def test_adapter_shapes(tiny_backbone):
    with pytest.warns(UserWarning, match="without a checkpoint"):
        method = CLIPS4(backbone=tiny_backbone, text_cache=False)
    dim = int(tiny_backbone.model.text_projection.shape[1])
    scores = method.predict_masks(torch.randn(2, 3, 64, 64), _text_bank(3, dim))
    assert scores.shape == (2, 3, 32, 32)
    odd = method.predict_masks(torch.randn(1, 3, 50, 70), _text_bank(4, dim))
    assert odd.shape == (1, 4, 25, 35) and torch.isfinite(odd).all()
    bank = method.encode_classes([["sky"], ["circle", "disc"]], make_text(["a photo of a {}."]))
    assert bank.embeddings.shape == (3, dim)


def _write_checkpoint(path: Path, backbone, config: NetworkConfig, meta_extra: dict | None = None) -> PixelEmbedder:
    torch.manual_seed(0)
    network = PixelEmbedder(config, backbone.visual)
    with torch.no_grad():
        for parameter in network.head.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    bank = PrototypeBank(torch.randn(2, config.embed_dim), n_unknown=1)
    meta = {"network": config.as_dict(), "clip_model": backbone.name, "clip_pretrained": None,
            "clip_sha256": None, "known_classes": ["sky", "circle"], "semantic_logit_scale": 50.0,
            **(meta_extra or {})}
    save_torch_atomically(path, weights_content(meta, network, bank))
    return network


def test_checkpoint_round_trip(tmp_path, tiny_backbone):
    dim = int(tiny_backbone.model.text_projection.shape[1])
    path = tmp_path / "clips4.pt"
    network = _write_checkpoint(path, tiny_backbone, NetworkConfig(embed_dim=dim, out_stride=4))
    loaded = torch.load(path, weights_only=True)
    assert loaded["clips4"]["known_classes"] == ["sky", "circle"]
    method = CLIPS4(checkpoint=str(path), backbone=tiny_backbone, text_cache=False)
    for key, value in network.state_dict().items():
        assert torch.equal(method.network.state_dict()[key], value), key
    crops = torch.randn(1, 3, 64, 64)
    expected = torch.einsum("bdhw,nd->bnhw", network.eval()(crops), _text_bank(2, dim).embeddings) * 50.0
    assert method.predict_masks(crops, _text_bank(2, dim)).allclose(expected, atol=1e-5)
    assert method.config()["trained"]["known_classes"] == ["sky", "circle"]
    assert method.checkpoint_sha256() is not None


def test_mismatched_checkpoint_names_file_and_key(tmp_path, tiny_backbone):
    dim = int(tiny_backbone.model.text_projection.shape[1])
    path = tmp_path / "bad.pt"
    _write_checkpoint(path, tiny_backbone, NetworkConfig(embed_dim=dim))
    content = torch.load(path, weights_only=True)
    del content["model"]["head.fuse.2.weight"]
    content["model"]["head.reduce.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=r"bad\.pt.*missing model\.head\.fuse\.2\.weight") as error:
        CLIPS4(checkpoint=str(path), backbone=tiny_backbone, text_cache=False)
    assert "model.head.reduce.weight has shape (1, 1, 1, 1)" in str(error.value)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.pt: key 'clips4'"):
        CLIPS4(checkpoint=str(foreign), backbone=tiny_backbone, text_cache=False)
    with pytest.raises(CheckpointError, match="not found"):
        CLIPS4(checkpoint=str(tmp_path / "absent.pt"), backbone=tiny_backbone, text_cache=False)


# ---- training -----------------------------------------------------------------------------------


def _write_images(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        image = np.zeros((size, size, 3), np.uint8)
        image[:] = rng.integers(0, 256, 3)
        image[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = rng.integers(0, 256, 3)
        Image.fromarray(image).save(folder / f"{i}.png")


TINY_RUN = {"image_size": 32, "view_size": 32, "contrast_pixels": 64, "segments_per_image": 3, "save_every": 1,
            "superpixels": {"n_segments": 16, "iterations": 2}, "kmeans_iterations": 2, "unknown_prototypes": 2}


def test_training_resumes_to_the_same_weights(tmp_path, tiny_backbone, monkeypatch):
    import methods.clips4.train as train_module

    clip_file = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), clip_file)
    _write_images(tmp_path / "images", 4, 32)
    common = dict(images=tmp_path / "images", clip_model=tiny_backbone.name, clip_pretrained=str(clip_file),
                  known_classes=["red", "blue"], steps=2, batch_size=2, progress=False, settings=TINY_RUN)
    whole = train_module.train_clips4(out=tmp_path / "whole.pt", **common)
    assert whole["steps"] == 2 and set(whole["last_losses"]) >= {"pixel_segment", "embedding", "semantic"}

    original, calls = train_module.training_step, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "training_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_module.train_clips4(out=tmp_path / "resumed.pt", **common)
    assert (tmp_path / "resumed.pt.state").is_file() and not (tmp_path / "resumed.pt").exists()
    monkeypatch.setattr(train_module, "training_step", original)
    resumed = train_module.train_clips4(out=tmp_path / "resumed.pt", **common)
    assert resumed["resumed_from"] == 1
    a = torch.load(tmp_path / "whole.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    for key in a["model"]:
        assert torch.allclose(a["model"][key], b["model"][key], atol=1e-6), key
    assert not (tmp_path / "resumed.pt.state").exists()
    again = train_module.train_clips4(out=tmp_path / "whole.pt", **common)
    assert again.get("cached") is True


@pytest.mark.parametrize("targets", ["text", "centres"])
def test_a_training_step_under_either_semantic_target_rule_trains_the_network(tmp_path, tiny_backbone, targets):
    from methods.clips4.train import train_clips4

    clip_file = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), clip_file)
    _write_images(tmp_path / "images", 2, 32)
    summary = train_clips4(
        images=tmp_path / "images", out=tmp_path / "one.pt", clip_model=tiny_backbone.name,
        clip_pretrained=str(clip_file), known_classes=["red", "blue"], steps=1, batch_size=2, progress=False,
        settings={**TINY_RUN, "semantic_targets": targets, "unknown_margin": 0.05},
    )
    assert all(math.isfinite(value) for value in summary["last_losses"].values())
    assert summary["last_losses"]["semantic"] > 0
    saved = torch.load(tmp_path / "one.pt", weights_only=True)
    assert saved["clips4"]["settings"]["semantic_targets"] == targets


# ---- end to end on ViT-B/16 shapes (slow) -------------------------------------------------------


@pytest.mark.slow
def test_eval_tcl8_voc21_on_vit_b16_shapes(tmp_path):
    from benchmark.data import load_card
    from methods.clip_backbone import load_clip
    from tests.fakedata import write_fake_dataset

    with pytest.warns(UserWarning, match="randomly initialised"):
        backbone = load_clip("ViT-B-16", None)
    checkpoint = tmp_path / "clips4_vitb16.pt"
    _write_checkpoint(checkpoint, backbone, NetworkConfig(embed_dim=512))
    data = tmp_path / "data"
    write_fake_dataset(load_card("voc21"), data, count=2, sizes=[(40, 56), (48, 36)])
    command = [
        sys.executable, "-m", "benchmark.cli", "eval", "--method", "clips4", "--checkpoint", str(checkpoint),
        "--protocol", "tcl8", "--benchmarks", "voc21", "--data-root", str(data), "--allow-incomplete",
        "--weights-root", str(tmp_path / "weights"), "--results", str(tmp_path / "results"), "--workers", "0",
        "--batch-size", "2", "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "voc21" in done.stdout
    records = list((tmp_path / "results").rglob("*.json"))
    assert records


# ---- the teacher's windows ----------------------------------------------------------------------


def test_teacher_at_scale_one_on_one_window_is_maskclip_dense_features(tiny_backbone):
    from methods.clip_dense import dense_features
    from methods.clips4.teacher import RECIPE, MaskClipTeacher

    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = F.normalize(dense_features(tiny_backbone.visual, images, RECIPE).permute(0, 3, 1, 2), dim=1)
    assert torch.allclose(MaskClipTeacher(tiny_backbone.visual)(images), expected, atol=1e-6)


def test_teacher_tiles_the_magnified_image_with_clip_sized_windows(tiny_backbone):
    from methods.clips4.teacher import MaskClipTeacher

    images = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    single = MaskClipTeacher(tiny_backbone.visual)
    magnified = F.interpolate(images, size=(96, 128), mode="bilinear", align_corners=False)
    features = MaskClipTeacher(tiny_backbone.visual, scale=2.0, step=1.0)(images)
    assert features.shape[-2:] == (12, 16)
    # rows start at 0 and 32 (flush with the end), columns at 0 and 64: each patch takes the mean over its windows
    top_left = single(magnified[:, :, 0:64, 0:64])
    bottom_right = single(magnified[:, :, 32:96, 64:128])
    assert torch.allclose(features[..., 0:4, 0:8], top_left[..., 0:4, :], atol=1e-5)
    assert torch.allclose(features[..., 8:12, 8:16], bottom_right[..., 4:8, :], atol=1e-5)
    bottom_left = single(magnified[:, :, 32:96, 0:64])
    overlap = F.normalize(top_left[..., 4:8, :] + bottom_left[..., 0:4, :], dim=1)
    assert torch.allclose(features[..., 4:8, 0:8], overlap, atol=1e-5)


def test_teacher_step_outside_one_window_is_a_config_error(tiny_backbone):
    from benchmark.errors import ConfigError
    from methods.clips4.teacher import MaskClipTeacher

    assert MaskClipTeacher(tiny_backbone.visual, step=0.3).stride == 16  # 19.2 px rounded to whole 8 px patches
    with pytest.raises(ConfigError, match="teacher.step"):
        MaskClipTeacher(tiny_backbone.visual, step=1.5)
    with pytest.raises(ConfigError, match="teacher.scale"):
        MaskClipTeacher(tiny_backbone.visual, scale=0)
    with pytest.raises(ConfigError, match="take numbers"):
        MaskClipTeacher(tiny_backbone.visual, scale="twice")


def test_train_cli_set_overrides_settings_and_refuses_unknown_keys(tmp_path, tiny_backbone, capsys):
    from benchmark.cli import main

    clip_file = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), clip_file)
    _write_images(tmp_path / "images", 2, 32)
    command = ["train", "clips4", "--images", str(tmp_path / "images"), "--clip-model", tiny_backbone.name,
               "--clip-pretrained", str(clip_file), "--classes", "red,blue", "--steps", "1", "--batch-size", "2",
               "--no-progress"]
    tiny = ["image_size=32", "view_size=32", "contrast_pixels=64", "segments_per_image=3", "kmeans_iterations=2",
            "unknown_prototypes=2", "superpixels.n_segments=16", "superpixels.iterations=2", "teacher.scale=1.5"]
    sets = [arg for pair in tiny for arg in ("--set", pair)]
    assert main([*command, "--out", str(tmp_path / "c.pt"), *sets]) == 0
    settings = torch.load(tmp_path / "c.pt", weights_only=True)["clips4"]["settings"]
    assert settings["image_size"] == 32 and settings["superpixels"]["n_segments"] == 16
    assert settings["teacher"] == {"scale": 1.5, "step": 0.5}

    assert main([*command, "--out", str(tmp_path / "d.pt"), "--set", "teacher.zoom=2"]) == 2
    assert "no keys ['zoom']" in capsys.readouterr().err
    assert main([*command, "--out", str(tmp_path / "d.pt"), "--set", "image_size"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert not (tmp_path / "d.pt").exists()
