"""Every CLIP-based method and the three seed methods, end to end on the zero-shot split protocols.

Each split protocol family (SPNet VOC, SPNet COCO-Stuff, ZS3Net VOC with background, ZS3Net
Context with background) is run as shipped except for its geometry, which is scaled to the tiny
CLIP's 64 px crops; miniature datasets stand in for the real ones. The seed methods run from
checkpoints their own trainers wrote after one step on a few caption pairs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from benchmark.cli import main
from benchmark.data import load_card
from benchmark.protocol import load_protocol
from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip
from tests.fakedata import write_fake_dataset

REPO = Path(__file__).resolve().parents[1]
SPLIT_PROTOCOLS = ("zs_spnet_voc", "zs_spnet_cocostuff", "zs_zs3net_voc2", "zs_zs3net_context2")
CLIP_METHODS = ("clip", "maskclip", "sclip", "clearclip", "naclip")
SEED_METHODS = ("tcl", "vilseg", "clips4")
TINY_GEOMETRY = {"resize": {"short": 64, "long_max": 128}, "crop": 64, "stride": 48}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("split_world")
    clip = root / "tinyclip.pt"
    torch.save(create_tiny_clip(seed=0).state_dict(), clip)
    captions = root / "captions"
    (captions / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for index in range(8):
        pixels = np.broadcast_to(rng.integers(0, 256, 3), (64, 64, 3)).astype(np.uint8).copy()
        pixels[16:48, 16:48] = rng.integers(0, 256, 3)
        Image.fromarray(pixels).save(captions / "images" / f"{index}.png")
        lines.append(json.dumps({"image": f"images/{index}.png", "caption": f"a red square on grass {index}"}))
    (captions / "captions.jsonl").write_text("\n".join(lines) + "\n")
    data = root / "data"
    for card in ("voc20", "voc21", "coco_stuff171", "context60"):
        write_fake_dataset(load_card(card), data, count=2, sizes=[(60, 80), (72, 64)], seed=3)
    return {"root": root, "clip": clip, "captions": captions, "data": data}


@pytest.fixture(scope="module")
def seed_checkpoints(world: dict[str, Path]) -> dict[str, Path]:
    """One-step checkpoints of TCL, ViL-Seg and CLIP-S4 on the tiny CLIP, written by their trainers."""
    from methods.clips4.train import train_clips4
    from methods.tcl.train import train_tcl
    from methods.vilseg.recipe import TrainRecipe
    from methods.vilseg.train import train_vilseg
    from methods.vilseg.views import ViewSettings

    root, clip = world["root"], str(world["clip"])
    out = {"tcl": root / "tcl.pt", "vilseg": root / "vilseg.pt", "clips4": root / "clips4.pt"}
    train_tcl(world["captions"], out["tcl"], clip_model=MODEL_NAME, clip_pretrained=clip, steps=1, batch_size=4,
              image_size=64, augment="crop_flip", normalisation="clip", workers=0, progress=False)
    recipe = TrainRecipe(steps=1, lr=1e-4, head_lr=1e-4, num_clusters=4, head_hidden=16, head_bottleneck=8,
                         head_out=16, views=ViewSettings(global_size=64, local_size=32, local_views=2))
    train_vilseg(world["captions"], out["vilseg"], init=clip, model=MODEL_NAME, batch_size=4, recipe=recipe,
                 progress=False, workers=0)
    train_clips4(images=world["captions"] / "images", out=out["clips4"], clip_model=MODEL_NAME, clip_pretrained=clip,
                 known_classes=["circle", "square"], progress=False, settings={"steps": 1, "batch_size": 4})
    return out


def tiny_protocol(name: str, folder: Path) -> Path:
    """The shipped protocol with the tiny CLIP's geometry, beside copies of the files it names."""
    copy = folder / "protocols"
    if not copy.exists():
        shutil.copytree(REPO / "protocols", copy)
    raw = yaml.safe_load((REPO / "protocols" / f"{name}.yaml").read_text())
    raw["image"]["resize"] = TINY_GEOMETRY["resize"]
    raw["inference"].update(crop=TINY_GEOMETRY["crop"], stride=TINY_GEOMETRY["stride"])
    raw["name"] = f"{name}_tiny"
    path = copy / f"{name}_tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def method_options(method: str, world: dict[str, Path], checkpoints: dict[str, Path]) -> list[str]:
    clip_options = ["--opt", f"model={MODEL_NAME}", "--opt", f"pretrained={world['clip']}"]
    if method == "vilseg":
        return ["--checkpoint", str(checkpoints["vilseg"])]
    if method in SEED_METHODS:
        return [*clip_options, "--checkpoint", str(checkpoints[method])]
    return clip_options


@pytest.mark.parametrize("protocol_name", SPLIT_PROTOCOLS)
def test_every_method_runs_on_the_split_protocol(protocol_name, world, seed_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("ZSSEG_WEIGHTS", str(world["root"] / "weights"))
    protocol_path = tiny_protocol(protocol_name, tmp_path)
    protocol = load_protocol(protocol_path)
    (spec,) = protocol.benchmarks.values()
    assert spec.split is not None
    results = tmp_path / "results"
    for method in CLIP_METHODS + SEED_METHODS:
        code = main([
            "eval", "--method", method, "--protocol", str(protocol_path), "--allow-incomplete",
            *method_options(method, world, seed_checkpoints), "--data-root", str(world["data"]),
            "--results", str(results), "--workers", "0", "--batch-size", "4", "--no-progress",
        ])
        assert code == 0, method
    records = [json.loads(path.read_text()) for path in results.rglob("*.json") if path.parent.parent != results]
    records = [record for record in records if "split" in record]
    assert sorted(record["method"]["name"] for record in records) == sorted(CLIP_METHODS + SEED_METHODS)
    unseen = {spec.dataset.classes[k] for k in spec.split.unseen}
    for record in records:
        block = record["split"]
        assert set(block["unseen"]) == unseen and record["dataset"]["images"] == 2
        for key, names in (("miou_seen", block["seen"]), ("miou_unseen", block["unseen"])):
            present = [record["per_class_iou"][name] for name in names if record["per_class_iou"][name] is not None]
            expected = round(float(np.mean(present)), 2) if present else None
            assert block[key] == pytest.approx(expected, abs=0.011), (record["method"]["name"], key)
