"""`zsbench demo` is reproducible: each of its trainers, run twice with the same seed, writes bit-identical
weights, and its evaluation, run twice, writes identical numbers.

Everything runs at toy scale on a tiny synthetic world (the world generator's own byte-for-byte check is
tests/test_synthetic_world.py): the demo's recipes (methods/tcl/defaults.yaml demo_training,
methods/vilseg/demo.yaml, methods/clips4/defaults.yaml) with a few steps and small batches, one thread
(the trainers otherwise take every core the process may use, and their weights depend on the thread count).
Before each of the two runs the global RNGs (torch, numpy, random) are put in a different state, so identical
weights also show that no trainer draws from them. Identical weights also make identical files: a weights file
holds the weights and the run's settings, never its timings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmark.synthetic import generate_world
from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip
from benchmark.synthetic.train_clip import train_clip

SEED = 0
N_CAPTIONS = 16  # every trainer's batch below fits; 4 TCL steps of 4 pairs are one epoch
N_VAL = 4
STEPS = 3
CLIP_BATCH = 8
BATCH = 4
# The record's numbers; times, paths, dates and the machine are left out.
NUMBERS = ("miou", "aacc", "macc", "per_class_iou", "per_class_acc", "confusion_matrix")


@pytest.fixture(scope="module", autouse=True)
def global_rngs_restored() -> Iterator[None]:
    """The tests scramble the global RNGs on purpose; other test modules get them back as they were."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def scramble_global_rngs(salt: int) -> None:
    torch.manual_seed(1000 + salt)
    np.random.seed(2000 + salt)
    random.seed(3000 + salt)


def train_twice(root: Path, name: str, train: Callable[[Path], Any]) -> tuple[Path, Path]:
    """`train(out)` into two folders, the global RNGs in a different state each time; the two outputs."""
    outs = (root / "a" / name, root / "b" / name)
    for salt, out in enumerate(outs):
        out.parent.mkdir(parents=True, exist_ok=True)
        scramble_global_rngs(salt)
        train(out)
    return outs


def load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [key for key in a if not (a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]))]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ between the two runs, first {differ[:5]}"


def assert_trained(trained: dict[str, torch.Tensor], initial: dict[str, torch.Tensor]) -> None:
    """Same entries as the untrained network, and at least one changed (so identical runs are no accident)."""
    assert trained.keys() == initial.keys()
    changed = [key for key in trained if not torch.equal(trained[key], initial[key].to(trained[key].dtype))]
    assert changed, "training changed no tensor"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny synthetic world under data/synthetic (as `zsbench demo` lays it out) and a tiny CLIP trained on it."""
    root = tmp_path_factory.mktemp("demo_determinism")
    world = root / "data" / "synthetic"
    generate_world(world, SEED, n_captions=N_CAPTIONS, n_val=N_VAL)
    clip = root / "tinyclip.pt"
    train_clip(world / "captions", clip, seed=SEED, max_steps=STEPS, batch_size=CLIP_BATCH, progress=False, threads=1)
    return {"root": root, "data": root / "data", "captions": world / "captions", "clip": clip}


def train_tiny_tcl(demo: dict[str, Path], out: Path) -> dict[str, Any]:
    """The demo's TCL recipe (methods/tcl/demo.py), a few steps of small batches."""
    from methods.tcl.adapter import tcl_defaults
    from methods.tcl.train import train_tcl

    recipe = {**tcl_defaults()["demo_training"], "steps": STEPS, "batch_size": BATCH}
    return train_tcl(demo["captions"], out, clip_model=MODEL_NAME, clip_pretrained=str(demo["clip"]), seed=SEED,
                     progress=False, resume=False, threads=1, **recipe)


@pytest.fixture(scope="module")
def tcl_pair(demo: dict[str, Path]) -> tuple[Path, Path]:
    return train_twice(demo["root"] / "tcl", "tcl.pt", lambda out: train_tiny_tcl(demo, out))


@pytest.fixture(scope="module")
def clip_pair(demo: dict[str, Path]) -> tuple[Path, Path]:
    return train_twice(demo["root"] / "clip", "tinyclip.pt", lambda out: train_clip(
        demo["captions"], out, seed=SEED, max_steps=STEPS, batch_size=CLIP_BATCH, progress=False, threads=1))


def test_tiny_clip_trains_to_identical_weights(clip_pair: tuple[Path, Path]) -> None:
    first, second = (load(path) for path in clip_pair)
    assert_bit_identical(first, second)
    assert_trained(first, create_tiny_clip(SEED).state_dict())
    assert json.loads(clip_pair[0].with_suffix(".json").read_text())["stopped_by"] == "steps"


def test_tiny_tcl_trains_to_identical_weights(demo: dict[str, Path], tcl_pair: tuple[Path, Path]) -> None:
    from methods.clip_backbone import load_clip
    from methods.tcl.checkpoint import to_released
    from methods.tcl.model import TCLMasker

    first, second = (load(path) for path in tcl_pair)
    assert_bit_identical(first["model"], second["model"])
    assert first["tcl"] == second["tcl"] and first["tcl"]["steps"] == STEPS
    visual = load_clip(MODEL_NAME, str(demo["clip"])).model.visual
    with torch.random.fork_rng(devices=[]):  # as methods/tcl/train.py builds the masker
        torch.manual_seed(SEED)
        masker = TCLMasker.from_clip(visual)
    assert_trained(first["model"], to_released(masker, len(visual.transformer.resblocks) - 1))
    summary = json.loads(tcl_pair[0].with_suffix(".json").read_text())
    assert summary["stopped_by"] == "steps" and summary["steps_done"] == STEPS


def test_tiny_clips4_trains_to_identical_weights(demo: dict[str, Path]) -> None:
    from methods.clip_backbone import load_clip
    from methods.clips4.demo import seen_classes
    from methods.clips4.network import NetworkConfig, PixelEmbedder
    from methods.clips4.train import train_clips4

    a, b = train_twice(demo["root"] / "clips4", "clips4.pt", lambda out: train_clips4(
        images=demo["captions"] / "images", out=out, clip_model=MODEL_NAME, clip_pretrained=str(demo["clip"]),
        known_classes=seen_classes(), seed=SEED, steps=STEPS, batch_size=BATCH, progress=False, resume=False,
        threads=1))
    assert file_sha256(a) == file_sha256(b)
    first, second = load(a), load(b)
    for part in ("model", "prototypes"):
        assert_bit_identical(first[part], second[part])
    assert first["clips4"]["run_key"] == second["clips4"]["run_key"]
    with torch.random.fork_rng(devices=[]):  # as methods/clips4/train.py builds the network
        torch.manual_seed(SEED)
        network = PixelEmbedder(NetworkConfig(**first["clips4"]["network"]),
                                load_clip(MODEL_NAME, str(demo["clip"])).visual)
    assert_trained(first["model"], network.state_dict())


def test_tiny_vilseg_trains_to_identical_weights(demo: dict[str, Path]) -> None:
    from methods.clip_backbone import load_clip
    from methods.vilseg.config import ViLSegConfig
    from methods.vilseg.demo import demo_settings
    from methods.vilseg.model import build_model
    from methods.vilseg.train import train_vilseg

    _, precision, recipe = demo_settings()
    recipe = dataclasses.replace(recipe, steps=STEPS)
    a, b = train_twice(demo["root"] / "vilseg", "vilseg.pt", lambda out: train_vilseg(
        demo["captions"], out, init=str(demo["clip"]), model=MODEL_NAME, seed=SEED, batch_size=BATCH,
        precision=precision, recipe=recipe, progress=False, resume=False, workers=0, threads=1))
    assert file_sha256(a) == file_sha256(b)
    first, second = load(a), load(b)
    assert_bit_identical(first["model"], second["model"])
    assert first["config"] == second["config"]
    # as methods/vilseg/train.py starts from the CLIP
    initial = build_model(ViLSegConfig.from_dict(first["config"]), load_clip(MODEL_NAME, str(demo["clip"])).model,
                          seed=SEED)
    assert_trained(first["model"], initial.state_dict())


def evaluate_demo_methods(demo: dict[str, Path], tcl_checkpoint: Path, results: Path,
                          save_vis: int = 0) -> dict[tuple[str, str], dict]:
    """maskclip (training-free, on the tiny CLIP), the tiny TCL and chance-uniform under protocol synthetic,
    as benchmark/demo.py runs them; every record written, by (method, benchmark)."""
    from benchmark.demo import DEMO_PROTOCOL
    from benchmark.eval_settings import EvalSettings
    from benchmark.method_run import MethodRun
    from benchmark.protocol import load_protocol
    from benchmark.registry import build_method, get_method_class
    from benchmark.runner import evaluate

    protocol = load_protocol(DEMO_PROTOCOL)
    settings = EvalSettings(data_root=demo["data"], results_root=results, batch_size=BATCH, device="cpu",
                            allow_incomplete=True, workers=0, progress=False, save_vis=save_vis)
    weights_root = str(results / "weights")  # text-bank caches stay in the test's folders
    runs = {
        "maskclip": {"model": MODEL_NAME, "pretrained": str(demo["clip"])},
        "tcl": {"checkpoint": str(tcl_checkpoint)},
        "chance-uniform": {"seed": SEED},
    }
    for name, options in runs.items():
        method = build_method(get_method_class(name), None, options, weights_root)
        evaluate(MethodRun(method, options, None, weights_root), protocol, None, settings)
    records = {}
    for path in sorted(results.rglob("*.json")):
        if path.name.startswith(".") or "weights" in path.relative_to(results).parts:
            continue
        record = json.loads(path.read_text())
        records[record["method"]["name"], record["benchmark"]] = record
    return records


def test_evaluation_twice_gives_identical_records(
    demo: dict[str, Path], tcl_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = (evaluate_demo_methods(demo, checkpoint, tmp_path / folder)
            for checkpoint, folder in zip(tcl_pair, ("a", "b"), strict=True))
    methods = ("maskclip", "tcl", "chance-uniform")
    assert set(a) == set(b) == {(m, bench) for m in methods for bench in ("synthetic", "synthetic_bg")}
    for key, record in a.items():
        assert sum(map(sum, record["confusion_matrix"])) > 0, key
        for number in NUMBERS:
            assert record[number] == b[key][number], (key, number)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_identical_weights_make_identical_files_and_run_ids(
    clip_pair: tuple[Path, Path], tcl_pair: tuple[Path, Path]
) -> None:
    """The tiny CLIP's and TCL's files hold nothing but the weights and the run's settings; a record's run id
    is its method's content (the weights' sha256 included), never where or when the weights were written."""
    from benchmark.method_run import MethodRun
    from benchmark.registry import build_method, get_method_class

    assert file_sha256(clip_pair[0]) == file_sha256(clip_pair[1])
    assert file_sha256(tcl_pair[0]) == file_sha256(tcl_pair[1])
    run_ids = set()
    for checkpoint in tcl_pair:
        options = {"checkpoint": str(checkpoint)}
        run_ids.add(MethodRun(build_method(get_method_class("tcl"), None, options), options).run_id)
    assert len(run_ids) == 1


def test_the_page_holds_the_table_the_chart_and_each_methods_examples(
    demo: dict[str, Path], tcl_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    from benchmark.demo import EXAMPLES_PER_BENCHMARK, Timeline, write_page
    from benchmark.results import load_records

    evaluate_demo_methods(demo, tcl_pair[0], tmp_path / "results", save_vis=EXAMPLES_PER_BENCHMARK)
    records = [record for record in load_records([tmp_path / "results"]) if "benchmark" in record]
    assert len(records) == 6
    page = write_page(records, ["synthetic", "synthetic_bg"], "Demo", tmp_path / "index.html")
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html
    for record in records:
        assert f"{record['miou']:.2f}" in html and record["method"]["name"] in html
    assert html.count('<img src="data:image/png;base64,') == len(records) * EXAMPLES_PER_BENCHMARK

    timeline = Timeline()
    timeline.phases += [("synthetic world", 12.0), ("prepare clip", 0.001), ("train tiny CLIP", 100.5)]
    lines = timeline.report().splitlines()
    assert [line.split()[0] for line in lines] == ["synthetic", "train", "total"]
    assert lines[-1].endswith("112.5 s")
