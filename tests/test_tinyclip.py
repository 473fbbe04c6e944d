from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import VisionTransformer
from PIL import Image, ImageDraw

from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip, load_tiny_clip, tiny_clip_tokenizer
from benchmark.synthetic.train_clip import contrastive_loss, load_pairs, normalise, sidecar_path, train_clip

COLOURS = {"red": (220, 30, 30), "green": (40, 190, 50), "blue": (40, 60, 220), "yellow": (240, 220, 40)}
BACKGROUNDS = {"sand": (200, 180, 120), "water": (30, 90, 140), "snow": (240, 240, 245), "grass": (60, 120, 40)}
SHAPES = ("circle", "square")
BATCH = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("captions")
    (root / "images").mkdir()
    lines = []
    combos = [(c, b, s) for c in COLOURS for b in BACKGROUNDS for s in SHAPES][:BATCH]
    for index, (colour, background, shape) in enumerate(combos):
        image = Image.new("RGB", (64, 64), BACKGROUNDS[background])
        draw = ImageDraw.Draw(image)
        box = (12 + index % 5, 14, 44 + index % 7, 48)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        image.save(root / "images" / f"{index:06d}.png")
        caption = f"a {colour} {shape} on {background}"
        lines.append(json.dumps({"image": f"images/{index:06d}.png", "caption": caption}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("weights") / "tiny.pt"
    summary = train_clip(world, out, seed=3, max_steps=12, batch_size=BATCH, lr=2e-3, progress=False, threads=1)
    return out, summary


def _batch_loss(model: torch.nn.Module, world: Path) -> float:
    images, captions = load_pairs(world, 64)
    with torch.no_grad():
        image_features = model.encode_image(normalise(images), normalize=True)
        text_features = model.encode_text(tiny_clip_tokenizer()(captions), normalize=True)
        return contrastive_loss(image_features, text_features, model.logit_scale.exp()).item()


def test_config_is_registered_and_model_is_an_ordinary_vit() -> None:
    assert MODEL_NAME in open_clip.list_models()
    model = create_tiny_clip(0)
    visual = model.visual
    assert isinstance(visual, VisionTransformer)
    assert visual.image_size == (64, 64) and visual.patch_size == (8, 8)
    for name in ("class_embedding", "positional_embedding", "ln_post", "proj"):
        assert hasattr(visual, name)
    assert len(visual.transformer.resblocks) >= 4
    assert 5e6 < sum(p.numel() for p in model.parameters()) < 11e6
    assert visual.preprocess_cfg["mean"] == open_clip.OPENAI_DATASET_MEAN
    assert tiny_clip_tokenizer()(["a red star"]).shape == (1, model.context_length)


def test_same_seed_same_initial_weights() -> None:
    a, b, c = create_tiny_clip(5).state_dict(), create_tiny_clip(5).state_dict(), create_tiny_clip(6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual.proj"], c["visual.proj"])


def test_training_lowers_the_contrastive_loss(world: Path, trained: tuple[Path, dict]) -> None:
    checkpoint, summary = trained
    before = _batch_loss(create_tiny_clip(3), world)
    after = _batch_loss(load_tiny_clip(checkpoint), world)
    assert after < before - 0.3
    assert summary["steps"] == 12 and summary["stopped_by"] == "steps"


def test_checkpoint_loads_like_real_clip_weights(world: Path, trained: tuple[Path, dict]) -> None:
    checkpoint, summary = trained
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    ours = load_tiny_clip(checkpoint)
    theirs = open_clip.create_model(MODEL_NAME, pretrained=str(checkpoint)).eval()
    assert all(torch.equal(state[k], v) for k, v in ours.state_dict().items())
    images, captions = load_pairs(world, 64)
    tokens = tiny_clip_tokenizer()(captions[:4])
    with torch.no_grad():
        assert torch.equal(ours.encode_image(normalise(images[:4])), theirs.encode_image(normalise(images[:4])))
        assert torch.equal(ours.encode_text(tokens), theirs.encode_text(tokens))
    sidecar = json.loads(sidecar_path(checkpoint).read_text())
    assert sidecar["seed"] == 3 and sidecar["steps"] == 12 and sidecar["model"] == MODEL_NAME
    assert sidecar["final_loss"] == pytest.approx(summary["final_loss"]) and "seconds" in sidecar


def test_same_seed_trains_to_identical_weights(world: Path, tmp_path: Path) -> None:
    kwargs = dict(seed=1, max_steps=2, batch_size=8, progress=False, threads=1)
    train_clip(world, tmp_path / "a.pt", **kwargs)
    train_clip(world, tmp_path / "b.pt", **kwargs)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob(".*tmp*"))


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_tiny_clip(tmp_path / "nope.pt")
