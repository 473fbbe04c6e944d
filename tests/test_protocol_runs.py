"""Methods end to end through `zsbench eval` on the shipped protocols, on the tiny CLIP.

Protocols run as shipped (class names, background rules, per-dataset method settings, splits)
except for their geometry, scaled to the tiny CLIP's 64 px crops, and, for the native protocols,
their template lists, cut to the first two so that the 80-template protocols stay fast;
miniature datasets stand in for the real ones. The seed methods run from checkpoints their own
trainers wrote after one step on a few caption pairs. The ViT-B/16-shaped run is marked slow.
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
from benchmark.data import list_samples, load_card, read_image
from benchmark.protocol import load_protocol, read_templates
from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip
from methods.clip_baseline import baseline_defaults
from tests.factories import write_tiny_sam, write_tiny_vfm
from tests.fakedata import write_fake_dataset

REPO = Path(__file__).resolve().parents[1]
SPLIT_PROTOCOLS = ("zs_spnet_voc", "zs_spnet_cocostuff", "zs_zs3net_voc2", "zs_zs3net_context2")
ALL_CARDS = ("voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff171", "cityscapes", "ade20k",
             "ade847", "context459")
BASELINES = ("clip", "maskclip", "sclip", "clearclip", "naclip")
# Training-free methods with a native protocol of their own name.
NEWER_CLIP_METHODS = ("scclip", "pearl", "resclip", "sfp", "gem", "proxyclip", "cass", "corrclip")
# CLIP beside a vision foundation model: the tiny random DINO stands in
VFM_METHODS = ("proxyclip", "cass", "trident", "corrclip")
# Trident also takes SAM (the tiny random SAM), whose encoder reads 1024 x 1024 whatever the image: it runs on fewer
# benchmarks (test_trident_runs_...), and cuts windows of its own from each picture: the tiny geometry's.
TRIDENT_TINY = ("--opt", "window_crop=32", "--opt", "window_stride=16")
CLIP_METHODS = BASELINES + NEWER_CLIP_METHODS
# tcl8_nopamr and the zero-shot splits: CorrCLIP (its region tokens and maps, already run under tcl8 and its own
# protocol) is left out to keep the fast suite fast; the engine paths it uses are the same.
LIGHT_CLIP_METHODS = tuple(method for method in CLIP_METHODS if method != "corrclip")
NATIVE_PROTOCOLS = ("tcl8", "tcl8_nopamr", "sclip", "clearclip", "naclip", "naclip_nopamr", *NEWER_CLIP_METHODS)
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
    for card in ALL_CARDS:
        write_fake_dataset(load_card(card), data, count=2, sizes=[(60, 80), (72, 64)], seed=3)
    vfm_config, vfm_weights = write_tiny_vfm(root / "vfm")
    sam_config, sam_weights = write_tiny_sam(root / "sam")
    masks = write_region_maps(data, root / "region_masks")
    return {"root": root, "clip": clip, "captions": captions, "data": data, "vfm": vfm_config,
            "vfm_weights": vfm_weights, "sam": sam_config, "sam_weights": sam_weights, "masks": masks}


def write_region_maps(data: Path, folder: Path, cards: tuple[str, ...] = ALL_CARDS) -> Path:
    """CorrCLIP's region maps for every image of the fake datasets, in the authors' layout (<folder>/<dataset
    folder>/<image file stem>.npz, key instance_mask): a few blocks, 0 unsegmented."""
    folders = baseline_defaults("corrclip")["region_mask_folders"]
    for card_name in cards:
        card = load_card(card_name)
        for number, sample in enumerate(list_samples(card, data)):
            height, width = read_image(sample.image).shape[:2]
            ids = np.zeros((height, width), dtype=np.int32)
            ids[: height // 2, : width // 2] = 3 + number
            ids[height // 2:, width // 3:] = 7
            target = folder / folders[card_name] / f"{sample.image.stem}.npz"
            target.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(target, instance_mask=ids)
    return folder


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


def tiny_protocol(name: str, folder: Path, templates: int | None = None) -> Path:
    """The shipped protocol with the tiny CLIP's geometry (and its first `templates` templates), beside
    copies of the files it names."""
    copy = folder / "protocols"
    if not copy.exists():
        shutil.copytree(REPO / "protocols", copy)
    raw = yaml.safe_load((REPO / "protocols" / f"{name}.yaml").read_text())
    if templates is not None:
        source = REPO / "protocols" / raw["text"]["templates"]
        kept = read_templates(source)[:templates]
        (copy / "templates" / f"{name}_first{templates}.txt").write_text("\n".join(kept) + "\n")
        raw["text"]["templates"] = f"templates/{name}_first{templates}.txt"
    raw["image"]["resize"] = TINY_GEOMETRY["resize"]
    raw["inference"].update(crop=TINY_GEOMETRY["crop"], stride=TINY_GEOMETRY["stride"])
    for bench in raw["benchmarks"].values():
        if "resize" in bench.get("image", {}):
            bench["image"]["resize"] = TINY_GEOMETRY["resize"]
        if "inference" in bench and bench["inference"].get("mode") != "whole":
            bench["inference"].update(crop=TINY_GEOMETRY["crop"], stride=TINY_GEOMETRY["stride"])
    raw["name"] = f"{name}_tiny"
    path = copy / f"{name}_tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_eval(method: str, protocol: Path, world: dict[str, Path], results: Path, options: list[str]) -> int:
    return main([
        "eval", "--method", method, "--protocol", str(protocol), "--allow-incomplete", *options,
        "--data-root", str(world["data"]), "--results", str(results), "--workers", "0", "--batch-size", "4",
        "--no-progress",
    ])


def method_options(method: str, world: dict[str, Path], checkpoints: dict[str, Path]) -> list[str]:
    clip_options = ["--opt", f"model={MODEL_NAME}", "--opt", f"pretrained={world['clip']}"]
    if method == "vilseg":
        return ["--checkpoint", str(checkpoints["vilseg"])]
    if method in SEED_METHODS:
        return [*clip_options, "--checkpoint", str(checkpoints[method])]
    if method in VFM_METHODS:
        clip_options += ["--opt", f"vfm={world['vfm']}", "--opt", f"vfm_weights={world['vfm_weights']}"]
    if method == "trident":
        clip_options += ["--opt", f"sam={world['sam']}", "--opt", f"sam_weights={world['sam_weights']}", *TRIDENT_TINY]
    if method == "corrclip":
        clip_options += ["--opt", f"region_masks={world['masks']}"]
    return clip_options


@pytest.mark.parametrize("protocol_name", SPLIT_PROTOCOLS)
def test_every_method_runs_on_the_split_protocol(protocol_name, world, seed_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("ZSSEG_WEIGHTS", str(world["root"] / "weights"))
    protocol_path = tiny_protocol(protocol_name, tmp_path)
    protocol = load_protocol(protocol_path)
    (spec,) = protocol.benchmarks.values()
    assert spec.split is not None
    results = tmp_path / "results"
    for method in LIGHT_CLIP_METHODS + SEED_METHODS:
        options = method_options(method, world, seed_checkpoints)
        assert run_eval(method, protocol_path, world, results, options) == 0, method
    records = [json.loads(path.read_text()) for path in results.rglob("*.json") if path.parent.parent != results]
    records = [record for record in records if "split" in record]
    assert sorted(record["method"]["name"] for record in records) == sorted(LIGHT_CLIP_METHODS + SEED_METHODS)
    unseen = {spec.dataset.classes[k] for k in spec.split.unseen}
    for record in records:
        block = record["split"]
        assert set(block["unseen"]) == unseen and record["dataset"]["images"] == 2
        for key, names in (("miou_seen", block["seen"]), ("miou_unseen", block["unseen"])):
            present = [record["per_class_iou"][name] for name in names if record["per_class_iou"][name] is not None]
            expected = round(float(np.mean(present)), 2) if present else None
            assert block[key] == pytest.approx(expected, abs=0.011), (record["method"]["name"], key)


def methods_under(protocol_name: str) -> tuple[str, ...]:
    """Every CLIP method runs under tcl8; the baselines under each other's protocols; a newer method under its own."""
    if protocol_name == "tcl8":
        return CLIP_METHODS
    if protocol_name.startswith("tcl8"):
        return LIGHT_CLIP_METHODS
    return (protocol_name,) if protocol_name in NEWER_CLIP_METHODS else BASELINES


@pytest.mark.parametrize("protocol_name", NATIVE_PROTOCOLS)
def test_every_clip_method_runs_on_every_benchmark_of_the_protocol(protocol_name, world, tmp_path, monkeypatch):
    monkeypatch.setenv("ZSSEG_WEIGHTS", str(world["root"] / "weights"))
    protocol_path = tiny_protocol(protocol_name, tmp_path, templates=2)
    protocol = load_protocol(protocol_path)
    results = tmp_path / "results"
    methods = methods_under(protocol_name)
    for method in methods:
        assert run_eval(method, protocol_path, world, results, method_options(method, world, {})) == 0, method
    records = [json.loads(path.read_text()) for path in results.rglob("*.json") if path.parent.parent != results]
    records = [record for record in records if "miou" in record]
    runs = {(record["method"]["name"], record["benchmark"]) for record in records}
    assert runs == {(method, bench) for method in methods for bench in protocol.benchmarks}
    for record in records:
        assert record["protocol"]["hash"] == protocol.hash and 0 <= record["miou"] <= 100


def test_trident_runs_whole_images_slide_windows_and_a_zero_shot_split(world, tmp_path, monkeypatch):
    """Its own protocol (whole images; Cityscapes' SAM halves are in the parity test) in fp32 (SAM's 256-channel
    neck under CPU fp16 autocast takes seconds a convolution), tcl8 (engine windows, each its own picture) and a
    split protocol (the refinement on the restricted label map)."""
    monkeypatch.setenv("ZSSEG_WEIGHTS", str(world["root"] / "weights"))
    options = method_options("trident", world, {})
    results = tmp_path / "results"
    for name, benchmarks in (("trident", "voc21"), ("tcl8", "voc21"), ("zs_spnet_voc", None), ("ovs5", "ade847")):
        protocol_path = tiny_protocol(name, tmp_path, templates=2)
        selection = ["--benchmarks", benchmarks] if benchmarks else []
        extra = ["--set", "precision=fp32"] if name == "trident" else []
        assert run_eval("trident", protocol_path, world, results, [*options, *selection, *extra, "--limit", "1"]) == 0
    records = [json.loads(path.read_text()) for path in results.rglob("*.json") if path.parent.parent != results]
    runs = sorted((record["protocol"]["name"], record["benchmark"]) for record in records if "miou" in record)
    assert runs == [("ovs5_tiny", "ade847"), ("tcl8_tiny", "voc21"), ("trident_tiny+precision=fp32", "voc21"),
                    ("zs_spnet_voc_tiny", "voc20")]
    for record in records:
        if "miou" in record:
            assert 0 <= record["miou"] <= 100 and record["method"]["config"]["sam"]["name"] == "tiny_sam"


# 1 MiB of class scores: every image of the large-vocabulary runs takes the engine's class-chunked label step
CHUNKED = ("--score-memory", "1", "--limit", "1")


@pytest.mark.parametrize("protocol_name,methods", [
    ("ovs5", CLIP_METHODS + SEED_METHODS),
    ("tcl8_large", ("clip", "tcl")),
])
def test_methods_run_on_the_large_vocabulary_protocols(protocol_name, methods, world, seed_checkpoints, tmp_path,
                                                       monkeypatch):
    """The open-vocabulary 5-set for every CLIP method (Trident: test_trident_runs_...) and the seed methods, and
    tcl8's settings on A-847 / PC-459 (PAMR on): 16-bit labels, 847 and 459 names, void 65535, class chunks."""
    monkeypatch.setenv("ZSSEG_WEIGHTS", str(world["root"] / "weights"))
    protocol_path = tiny_protocol(protocol_name, tmp_path, templates=1)
    protocol = load_protocol(protocol_path)
    results = tmp_path / "results"
    for method in methods:
        options = [*method_options(method, world, seed_checkpoints), *CHUNKED]
        assert run_eval(method, protocol_path, world, results, options) == 0, method
    records = [json.loads(path.read_text()) for path in results.rglob("*.json") if path.parent.parent != results]
    records = [record for record in records if "miou" in record]
    assert {(record["method"]["name"], record["benchmark"]) for record in records} == {
        (method, bench) for method in methods for bench in protocol.benchmarks}
    for record in records:
        card = protocol.benchmarks[record["benchmark"]].dataset
        assert record["protocol"]["hash"] == protocol.hash and len(record["per_class_iou"]) == card.num_classes
        assert record["dataset"]["images"] == 1 and 0 <= record["miou"] <= 100
    if protocol_name == "ovs5":
        check_chunks_and_mmseg_metric(protocol_path, world, seed_checkpoints, tmp_path, records)


def check_chunks_and_mmseg_metric(protocol_path: Path, world: dict[str, Path], checkpoints: dict[str, Path],
                                  tmp_path: Path, records: list[dict]) -> None:
    """clip's chunked A-847 record against an unchunked run, and against mmseg's metric on the same labels."""
    unchunked = tmp_path / "unchunked"
    options = [*method_options("clip", world, checkpoints), "--limit", "1", "--benchmarks", "ade847"]
    assert run_eval("clip", protocol_path, world, unchunked, options) == 0
    (whole,) = [record for record in map(json.loads, (path.read_text() for path in unchunked.rglob("ade847*.json")))
                if "miou" in record]
    (chunked,) = [record for record in records if (record["method"]["name"], record["benchmark"]) == ("clip", "ade847")]
    assert whole["confusion_matrix"] == chunked["confusion_matrix"]
    # mmseg's IoUMetric on the same labels (ignore_index 255): class 255's pixels dropped, void pixels' predictions
    # in a row of their own, every other count unchanged
    mmseg = tmp_path / "mmseg_metric"
    assert run_eval("clip", protocol_path, world, mmseg, [*options, "--set", "metric.ignore_index=255"]) == 0
    (quirk,) = [record for record in map(json.loads, (path.read_text() for path in mmseg.rglob("ade847*.json")))
                if "miou" in record]
    matrix, counted = np.array(whole["confusion_matrix"]), np.array(quirk["confusion_matrix"])
    (sample,) = list_samples(load_card("ade847"), world["data"])[:1]
    raw = np.asarray(Image.open(sample.label))
    assert counted.shape == (848, 847) and counted[847].sum() == (raw == 65535).sum()
    assert counted[255].sum() == 0 and matrix[255].sum() == (raw == 255).sum()
    assert np.array_equal(np.delete(counted[:847], 255, axis=0), np.delete(matrix, 255, axis=0))


@pytest.mark.slow
def test_every_clip_method_runs_through_eval_on_vit_b16_shapes(tmp_path):
    import open_clip

    torch.manual_seed(0)
    weights = tmp_path / "random_vitb16.pt"
    torch.save(open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).state_dict(), weights)
    data = tmp_path / "data"
    write_fake_dataset(load_card("voc21"), data, count=1, sizes=[(120, 160)], seed=1)
    world = {"data": data}
    for method in (*CLIP_METHODS, "trident"):
        options = ["--opt", "model=ViT-B-16-quickgelu", "--opt", f"pretrained={weights}", "--opt", "text_cache=false"]
        if method in VFM_METHODS:  # DINO ViT-B/8's (Trident: B/16's, and SAM ViT-B's) architecture, random weights
            vfm = "dino_vitb16" if method == "trident" else "dino_vitb8"
            options += ["--opt", f"vfm={vfm}", "--opt", "vfm_weights=null"]
        if method == "trident":
            options += ["--opt", "sam_weights=null"]
        if method == "corrclip":
            options += ["--opt", f"region_masks={write_region_maps(data, tmp_path / 'region_masks', ('voc21',))}"]
        code = main([
            "eval", "--method", method, "--protocol", "tcl8", "--benchmarks", "voc21", "--allow-incomplete",
            *options, "--data-root", str(world["data"]), "--results", str(tmp_path / "results"), "--workers", "0",
            "--batch-size", "2", "--no-progress",
        ])
        assert code == 0, method
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("voc21*.json")]
    assert sorted(record["method"]["name"] for record in records) == sorted((*CLIP_METHODS, "trident"))
