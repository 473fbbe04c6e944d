"""ViL-Seg: losses on hand-made inputs, views, adapter shapes, checkpoints, training and resume."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.errors import CheckpointError
from methods.vilseg import ViLSeg
from methods.vilseg.checkpoint import load_weights, save_weights, state_path
from methods.vilseg.inference import crop_cosines
from methods.vilseg.losses import (
    clustering_loss,
    cross_modal_loss,
    distillation_loss,
    mutual_information,
    teacher_targets,
)
from methods.vilseg.model import arch_from_name, build_model
from methods.vilseg.recipe import TrainRecipe
from methods.vilseg.views import ViewSettings, align_to_local, make_views, random_theta
from tests.factories import make_protocol, make_spec, make_text

MICRO_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}
MICRO_RECIPE = TrainRecipe(
    steps=4, lr=1e-3, head_lr=1e-3, num_clusters=4, head_hidden=16, head_bottleneck=8, head_out=16,
    teacher_momentum=0.9, views=ViewSettings(global_size=32, local_size=16, local_views=2),
)


@pytest.fixture(scope="module")
def micro_model_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    config = tmp_path_factory.mktemp("config") / "ViLSeg-Test-Micro.json"
    config.write_text(json.dumps(MICRO_CLIP))
    return str(config)


@pytest.fixture(scope="module")
def micro_model(micro_model_name: str):
    return build_model(MICRO_RECIPE.network(arch_from_name(micro_model_name)), seed=0).eval()


@pytest.fixture(scope="module")
def captions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("captions")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for index in range(8):
        colour = rng.integers(0, 256, 3)
        pixels = np.broadcast_to(colour, (40, 48, 3)).astype(np.uint8).copy()
        pixels[10:30, 12:30] = 255 - colour
        Image.fromarray(pixels).save(root / "images" / f"{index}.png")
        lines.append(json.dumps({"image": f"images/{index}.png", "caption": f"a square number {index}"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def one_hot(indices: list[int], k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(indices), k).float()


def test_identical_views_with_uniform_clusters_give_log_k() -> None:
    k = 5
    assignment = one_hot([i % k for i in range(40)], k)
    assert mutual_information(assignment, assignment).item() == pytest.approx(math.log(k), abs=1e-5)
    assert clustering_loss(assignment, assignment).item() == pytest.approx(-math.log(k), abs=1e-5)


def test_mutual_information_is_zero_for_independent_or_collapsed_assignments() -> None:
    k = 4
    first = one_hot([i % k for i in range(16)], k)
    independent = one_hot([(i // k) % k for i in range(16)], k)
    collapsed = one_hot([0] * 16, k)
    uniform = torch.full((16, k), 1 / k)
    assert mutual_information(first, independent).item() == pytest.approx(0.0, abs=1e-5)
    assert mutual_information(collapsed, collapsed).item() == pytest.approx(0.0, abs=1e-5)
    assert mutual_information(first, uniform).item() == pytest.approx(0.0, abs=1e-5)


def test_mutual_information_never_exceeds_log_k() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        first = torch.rand(64, 6, generator=generator).softmax(dim=1)
        second = torch.rand(64, 6, generator=generator).softmax(dim=1)
        value = mutual_information(first, second).item()
        assert 0 <= value <= math.log(6) + 1e-6


def test_perfect_image_caption_pairing_gives_the_lowest_contrastive_loss() -> None:
    embeddings = torch.eye(4, 8)
    perfect = cross_modal_loss(embeddings, embeddings, 100.0).item()
    assert perfect == pytest.approx(0.0, abs=1e-6)
    shuffled = cross_modal_loss(embeddings, embeddings[[1, 0, 3, 2]], 100.0).item()
    assert shuffled > 50
    alike = torch.nn.functional.normalize(torch.ones(4, 8), dim=1)
    assert cross_modal_loss(alike, alike, 100.0).item() == pytest.approx(math.log(4), abs=1e-5)


def test_distillation_loss_is_the_cross_entropy_to_the_centred_sharpened_teacher() -> None:
    scores = torch.tensor([[0.3, -0.1, 0.2], [0.0, 0.5, -0.4]])
    assert torch.allclose(teacher_targets(scores, scores, 0.04), torch.full((2, 3), 1 / 3))
    targets = teacher_targets(scores, torch.zeros(1, 3), 0.1)
    matching = distillation_loss(scores.unsqueeze(0), targets, 0.1).item()
    entropy = -(targets * targets.log()).sum(dim=1).mean().item()
    assert matching == pytest.approx(entropy, abs=1e-5)
    flat = distillation_loss(torch.zeros(2, 2, 3), one_hot([0, 2], 3), 0.1).item()
    assert flat == pytest.approx(math.log(3), abs=1e-5)
    assert distillation_loss(scores.flip(1).unsqueeze(0), targets, 0.1).item() > matching


def test_local_views_are_crops_of_the_global_view_and_maps_align_with_them() -> None:
    generator = torch.Generator().manual_seed(0)
    theta = random_theta(6, (0.2, 0.5), (0.75, 1.33), True, generator)
    assert theta[:, 0, 0].abs().max() <= 1 and theta[:, 1, 1].max() <= 1
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    identity = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]]).view(1, 1, 2, 3)
    assert torch.allclose(align_to_local(maps, identity, (4, 4))[0], maps)
    mirror = torch.tensor([[[-1.0, 0, 0], [0, 1, 0]]]).view(1, 1, 2, 3)
    assert torch.allclose(align_to_local(maps, mirror, (4, 4))[0], maps.flip(-1))
    settings = ViewSettings(global_size=16, local_size=8, local_views=3, jitter=0.0, grayscale=0.0, flip=False,
                            global_scale=(1.0, 1.0), local_scale=(0.25, 0.25), ratio=(1.0, 1.0))
    image = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    views = make_views(image, settings, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), generator)
    assert views.global_images.shape == (2, 3, 16, 16) and views.local_images.shape == (3, 2, 3, 8, 8)
    assert torch.allclose(views.global_images * 255, image.float(), atol=1e-3)
    aligned = align_to_local(views.global_images, views.local_theta, (8, 8))
    assert torch.allclose(aligned, views.local_images, atol=1e-5)


def test_adapter_scores_are_constant_within_each_group(micro_model_name: str, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="untrained"):
        method = ViLSeg(model=micro_model_name, num_clusters=3, text_cache=False)
    bank = method.encode_classes([["sky"], ["cat", "kitten"], ["dog"]], make_text(["a photo of a {}."]))
    assert bank.embeddings.shape == (4, 16)
    crops = torch.randn(2, 3, 32, 32)
    scores = method.predict_masks(crops, bank)
    assert scores.shape == (2, 4, 4, 4) and torch.isfinite(scores).all()
    for crop in scores:
        assert len({tuple(crop[:, y, x].tolist()) for y in range(4) for x in range(4)}) <= 3
    assert method.predict_masks(torch.randn(1, 3, 30, 37), bank).shape == (1, 4, 30, 37)
    benchmark = make_spec([("cat",)] * 20)
    method.logit_scale_option = 100.0
    assert method.background_value(make_protocol(), benchmark, "threshold") == pytest.approx(0.514, abs=1e-3)
    assert method.background_value(make_protocol(), benchmark, "none") is None
    assert method.score_kind == "logits"


def test_checkpoint_round_trip_gives_the_same_scores(micro_model, tmp_path: Path) -> None:
    path = tmp_path / "vilseg.pt"
    save_weights(path, micro_model, {"steps": 0})
    loaded, meta = load_weights(path)
    assert meta == {"steps": 0} and loaded.config == micro_model.config
    for (name, a), (_, b) in zip(loaded.state_dict().items(), micro_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    method = ViLSeg(checkpoint=str(path), text_cache=False)
    bank = method.encode_classes([["sky"], ["cat"]], make_text())
    crops = torch.randn(2, 3, 32, 32)
    direct = crop_cosines(micro_model, crops, bank.embeddings) * micro_model.clip.logit_scale.exp()
    assert torch.allclose(method.predict_masks(crops, bank), direct)
    assert method.checkpoint_sha256() and "checkpoint" not in method.config()  # the sha256 identifies it


def test_a_checkpoint_that_does_not_fit_is_one_clear_error(micro_model, tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    save_weights(path, micro_model, {})
    content = torch.load(path, weights_only=True)
    content["model"]["cluster_head.mlp.2.weight"] = torch.zeros(7, 32)
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=r"bad\.pt.*'model\.cluster_head\.mlp\.2\.weight' has shape"):
        ViLSeg(checkpoint=str(path), text_cache=False)
    del content["model"]["cluster_head.mlp.2.weight"]
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=r"bad\.pt.*'model\.cluster_head\.mlp\.2\.weight' is missing"):
        load_weights(path)
    torch.save(micro_model.clip.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"bad\.pt: key 'format' is missing"):
        load_weights(path)
    content["config"]["num_clusters"] = "many"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=r"bad\.pt: key 'config'"):
        load_weights(path)
    with pytest.raises(CheckpointError, match="not found"):
        ViLSeg(checkpoint=str(tmp_path / "absent.pt"))


def test_param_groups_put_encoders_before_heads_and_spare_biases_norms_embeddings_and_scales(micro_model) -> None:
    from methods.vilseg.train import param_groups

    recipe = replace(MICRO_RECIPE, lr=1e-4, head_lr=1e-3, weight_decay=0.05)
    groups = param_groups(micro_model, recipe)
    assert [(g["base_lr"], g["weight_decay"]) for g in groups] == [(1e-4, 0.05), (1e-4, 0.0), (1e-3, 0.05), (1e-3, 0.0)]
    named = [(n, p) for n, p in micro_model.named_parameters() if p.requires_grad]
    names = {id(p): n for n, p in named}
    grouped = [[names[id(p)] for p in g["params"]] for g in groups]
    order = [n for n, _ in named]
    assert all(group == sorted(group, key=order.index) for group in grouped)  # each in the model's order
    assert sorted(sum(grouped, [])) == sorted(order)
    assert all(n.startswith("clip.") for n in grouped[0] + grouped[1])
    assert not any(n.startswith("clip.") for n in grouped[2] + grouped[3])
    assert "clip.logit_scale" in grouped[1] and "clip.positional_embedding" in grouped[1]
    decayed = [p for g in groups[0::2] for p in g["params"]]
    assert all(p.ndim >= 2 and not names[id(p)].endswith(".bias") and "ln" not in names[id(p)] for p in decayed)
    assert "clip.visual.proj" in grouped[0] and "vision_head.prototypes" in grouped[2]


def test_training_runs_resumes_exactly_and_reuses_a_finished_run(
    captions: Path, micro_model_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from methods.vilseg import train

    settings = {"init": None, "model": micro_model_name, "batch_size": 4, "recipe": MICRO_RECIPE,
                "progress": False, "workers": 0, "save_every": 2, "threads": 1}
    whole = train.train_vilseg(captions, tmp_path / "whole.pt", **settings)
    assert whole["steps"] == 4 and all(math.isfinite(v) for v in whole["final_loss"].values())
    assert json.loads((tmp_path / "whole.json").read_text())["sha256"] == whole["sha256"]

    calls = {"n": 0}
    original = train.step_loss

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    out = tmp_path / "resumed.pt"
    monkeypatch.setattr(train, "step_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.train_vilseg(captions, out, **settings)
    assert state_path(out).is_file() and not out.exists()
    monkeypatch.setattr(train, "step_loss", original)
    changed = {**settings, "recipe": replace(MICRO_RECIPE, lr=2e-3)}
    with pytest.raises(CheckpointError, match=r"resumed\.pt\.state\.pt: key 'identity' differs .*recipe"):
        train.train_vilseg(captions, out, **changed)
    resumed = train.train_vilseg(captions, out, **settings)
    assert resumed["resumed_at"] == 2 and not state_path(out).exists()
    first, _ = load_weights(tmp_path / "whole.pt")
    second, _ = load_weights(out)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert train.train_vilseg(captions, out, **settings)["reused"] is True


@pytest.mark.slow
def test_eval_on_tcl8_with_vit_b16_shapes(tmp_path: Path) -> None:
    from benchmark.cli import main
    from benchmark.data import load_card
    from tests.fakedata import write_fake_dataset

    network = build_model(TrainRecipe().network(arch_from_name("ViT-B-16")), seed=0)
    checkpoint = tmp_path / "vilseg-vitb16.pt"
    save_weights(checkpoint, network, {"steps": 0})
    del network
    data = tmp_path / "data"
    write_fake_dataset(load_card("voc21"), data, count=2)
    status = main([
        "eval", "--method", "vilseg", "--checkpoint", str(checkpoint), "--protocol", "tcl8", "--benchmarks",
        "voc21", "--data-root", str(data), "--results", str(tmp_path / "results"), "--weights-root",
        str(tmp_path / "weights"), "--allow-incomplete", "--workers", "0", "--batch-size", "2", "--no-progress",
    ])
    assert status == 0
    record = json.loads(next((tmp_path / "results").rglob("voc21*.json")).read_text())
    assert record["partial"] and record["dataset"]["images"] == 2
    expected = 1 / (1 + 19 * math.exp(-0.03 / 0.07))  # 20 classes; open_clip's initial logit scale 1 / 0.07
    assert record["background"]["value"] == pytest.approx(expected, rel=1e-5) and 0 <= record["miou"] <= 100
