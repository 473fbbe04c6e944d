"""One pass over benchmarks that share their images: encode_crops once, score per class set.

The records must be those of separate runs, number for number, and an interrupted shared pass
resumes to them too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.cli import main
from benchmark.data import load_card
from benchmark.eval_settings import EvalSettings
from benchmark.protocol import load_protocol
from benchmark.selection import select_samples, shared_image_groups
from tests.conftest import TOY_SIZES
from tests.fakedata import write_card, write_fake_dataset, write_toy_protocol
from tests.toy_method import ToyMethod

NUMBERS = ("miou", "aacc", "macc", "per_class_iou", "per_class_acc", "confusion_matrix")


class ToyShared(ToyMethod):
    """The toy method split into an image side and a text side; counts the crops it encodes."""

    name = "toy-shared"

    encoded = 0

    def predict_masks(self, crops: Tensor, bank: Tensor) -> Tensor:
        return self.score(self.encode_crops(crops), bank)

    def encode_crops(self, crops: Tensor) -> Tensor:
        type(self).encoded += crops.shape[0]
        self.calls += crops.shape[0]
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        return F.avg_pool2d(crops, 2, ceil_mode=True)

    def score(self, features: Tensor, bank: Tensor) -> Tensor:
        scores = torch.einsum("nc,bchw->bnhw", bank.to(features), features) * 4.0
        scores[:, 0] += self.offset
        return scores

    def setup(self, protocol, benchmark) -> None:
        # a per-benchmark setting (as the CLIP baselines' logit scale): the shared pass must switch it per head
        self.offset = float((benchmark.method_settings or {}).get("offset", 0.0))


@pytest.fixture
def shared_world(tmp_path: Path) -> dict[str, Path]:
    """Three benchmarks: two label sets of the same images (toyset, toyset_bg) and one of other images."""
    folder = tmp_path / "protocols"
    folder.mkdir()
    data = tmp_path / "data"
    count = len(TOY_SIZES)
    with_bg = write_card(folder, "toyset_bg", ["background", "cat", "dog"], count, has_background=True,
                         root="toyset", ann_dir="labels_bg")
    plain = write_card(folder, "toyset", ["sky", "grass", "cat", "dog"], count)
    other = write_card(folder, "other", ["sky", "cat"], count)
    write_fake_dataset(load_card(with_bg), data, count, sizes=TOY_SIZES, seed=2)
    write_fake_dataset(load_card(plain), data, count, sizes=TOY_SIZES, seed=1)  # its images replace toyset_bg's
    write_fake_dataset(load_card(other), data, count, sizes=TOY_SIZES, seed=3)
    names = {"toyset": "sky\ngrass, lawn\ncat\ndog, puppy\n", "toyset_bg": "cat\ndog\n", "other": "sky\ncat\n"}
    protocol = write_toy_protocol(folder, "toyshared", names, {
        "toyset": {"dataset": "toyset.yaml", "classes": "names/toyset.txt"},
        "other": {"dataset": "other.yaml", "classes": "names/other.txt"},
        "toyset_bg": {"dataset": "toyset_bg.yaml", "classes": "names/toyset_bg.txt",
                      "background": {"rule": "threshold"}, "method_settings": {"offset": 1.0}},
    })
    return {"protocol": protocol, "data": data, "root": tmp_path}


def run_eval(world: dict[str, Path], results: str, *extra: str) -> int:
    return main([
        "eval", "--method", "tests.test_shared_pass:ToyShared", "--protocol", str(world["protocol"]),
        "--data-root", str(world["data"]), "--results", str(world["root"] / results), "--workers", "0",
        "--no-progress", "--batch-size", "5", *extra,
    ])


def records_under(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.rglob("*.json")) if not p.name.startswith(".")}


def test_benchmarks_over_the_same_images_are_grouped_in_protocol_order(shared_world):
    protocol = load_protocol(shared_world["protocol"])
    settings = EvalSettings(data_root=shared_world["data"])
    selections = [select_samples(spec, settings) for spec in protocol.select(None)]
    groups = shared_image_groups(selections, ToyShared(), settings)
    assert [[chosen.spec.name for chosen in group] for group in groups] == [["toyset", "toyset_bg"], ["other"]]
    alone = shared_image_groups(selections, ToyMethod(), settings)  # no hooks: no groups
    assert [[chosen.spec.name for chosen in group] for group in alone] == [["toyset"], ["other"], ["toyset_bg"]]
    off = EvalSettings(data_root=shared_world["data"], shared_pass=False)
    assert len(shared_image_groups(selections, ToyShared(), off)) == 3


def test_one_pass_gives_the_numbers_of_separate_runs_and_encodes_each_crop_once(shared_world):
    ToyShared.encoded = 0
    assert run_eval(shared_world, "separate", "--no-shared-pass") == 0
    encoded_separately = ToyShared.encoded
    ToyShared.encoded = 0
    assert run_eval(shared_world, "shared") == 0
    separate = records_under(shared_world["root"] / "separate")
    shared = records_under(shared_world["root"] / "shared")
    assert set(shared) == set(separate) == {"toyset.json", "toyset_bg.json", "other.json"}
    for name in separate:
        for key in NUMBERS:
            assert shared[name][key] == separate[name][key], (name, key)
    assert shared["toyset.json"]["evaluated_with"] == ["toyset_bg"]
    assert shared["toyset_bg.json"]["evaluated_with"] == ["toyset"]
    assert shared["other.json"]["evaluated_with"] == []
    assert separate["toyset.json"]["evaluated_with"] == []
    # toyset and toyset_bg have the same windows: the shared pass encodes them once, not twice
    toyset, other = window_count(shared_world, "toyset"), window_count(shared_world, "other")
    assert encoded_separately == 2 * toyset + other
    assert ToyShared.encoded == toyset + other


def window_count(world: dict[str, Path], benchmark: str) -> int:
    from benchmark.data import list_samples, read_image
    from benchmark.inference import resize_image, windows_for

    spec = load_protocol(world["protocol"]).benchmarks[benchmark]
    images = [resize_image(read_image(s.image), spec.image) for s in list_samples(spec.dataset, world["data"])]
    return sum(len(windows_for(spec.inference, *image.shape[:2])) for image in images)


def test_an_interrupted_shared_pass_resumes_to_the_same_numbers(shared_world, monkeypatch):
    assert run_eval(shared_world, "reference", "--benchmarks", "toyset,toyset_bg") == 0
    monkeypatch.setenv("TOY_INTERRUPT_AFTER", "12")
    assert run_eval(shared_world, "resumed", "--benchmarks", "toyset,toyset_bg") == 130
    states = sorted((shared_world["root"] / "resumed").rglob(".*.state.*.json"))
    assert len(states) == 2
    done = {json.loads(state.read_text())["done"] for state in states}
    assert len(done) == 1 and 0 < done.pop() < len(TOY_SIZES)
    monkeypatch.delenv("TOY_INTERRUPT_AFTER")
    assert run_eval(shared_world, "resumed", "--benchmarks", "toyset,toyset_bg") == 0
    reference = records_under(shared_world["root"] / "reference")
    resumed = records_under(shared_world["root"] / "resumed")
    assert set(resumed) == set(reference) == {"toyset.json", "toyset_bg.json"}
    for name in reference:
        for key in NUMBERS:
            assert resumed[name][key] == reference[name][key], (name, key)
    assert not list((shared_world["root"] / "resumed").rglob(".*.state.*.json"))


@pytest.fixture(scope="module")
def synthetic_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from benchmark.synthetic.tinyclip import create_tiny_clip
    from benchmark.synthetic.writer import generate_world

    root = tmp_path_factory.mktemp("shared_synthetic")
    generate_world(root / "data" / "synthetic", 0, n_captions=2, n_val=5)
    clip = root / "tinyclip.pt"
    torch.save(create_tiny_clip(seed=0).state_dict(), clip)
    return {"root": root, "data": root / "data", "clip": clip}


@pytest.mark.parametrize("method, options", [
    ("clip", []), ("maskclip", []), ("maskclip", ["--opt", "variant=clearclip"]), ("sclip", []),
    ("clearclip", []), ("naclip", []), ("tcl", ["--opt", "checkpoint=null"]), ("vilseg", ["--opt", "num_clusters=4"]),
])
def test_methods_with_hooks_give_the_same_records_in_one_pass(synthetic_world, tmp_path, method, options):
    """synthetic and synthetic_bg label the same images: one pass must give the separate runs' numbers."""
    from benchmark.synthetic.tinyclip import MODEL_NAME

    records = {}
    for mode in ("shared", "separate"):
        code = main([
            "eval", "--method", method, "--protocol", "synthetic", "--data-root", str(synthetic_world["data"]),
            "--results", str(tmp_path / mode), "--weights-root", str(tmp_path / "weights"), "--allow-incomplete",
            "--workers", "0", "--no-progress", "--batch-size", "4", "--opt", f"model={MODEL_NAME}",
            "--opt", f"pretrained={synthetic_world['clip']}", *options,
            *(["--no-shared-pass"] if mode == "separate" else []),
        ])
        assert code == 0
        records[mode] = records_under(tmp_path / mode)
    assert set(records["shared"]) == {"synthetic.partial.json", "synthetic_bg.partial.json"}
    assert records["shared"]["synthetic.partial.json"]["evaluated_with"] == ["synthetic_bg"]
    for name, record in records["separate"].items():
        for key in NUMBERS:
            assert records["shared"][name][key] == record[key], (name, key)


def test_clips4_gives_the_same_records_in_one_pass(synthetic_world, tmp_path):
    from benchmark.synthetic.tinyclip import MODEL_NAME
    from methods.clips4.train import train_clips4

    images = tmp_path / "images"
    images.mkdir()
    for number, path in enumerate(sorted((synthetic_world["data"] / "synthetic" / "val" / "images").glob("*.png"))):
        (images / f"{number}.png").write_bytes(path.read_bytes())
    checkpoint = tmp_path / "clips4.pt"
    train_clips4(images=images, out=checkpoint, clip_model=MODEL_NAME, clip_pretrained=str(synthetic_world["clip"]),
                 known_classes=["sky", "grass"], steps=1, batch_size=2, progress=False)
    records = {}
    for mode in ("shared", "separate"):
        code = main([
            "eval", "--method", "clips4", "--checkpoint", str(checkpoint), "--protocol", "synthetic",
            "--data-root", str(synthetic_world["data"]), "--results", str(tmp_path / mode), "--allow-incomplete",
            "--workers", "0", "--no-progress", "--batch-size", "4", "--opt", f"model={MODEL_NAME}",
            "--opt", f"pretrained={synthetic_world['clip']}", *(["--no-shared-pass"] if mode == "separate" else []),
        ])
        assert code == 0
        records[mode] = records_under(tmp_path / mode)
    assert records["shared"]["synthetic_bg.partial.json"]["evaluated_with"] == ["synthetic"]
    for name, record in records["separate"].items():
        for key in NUMBERS:
            assert records["shared"][name][key] == record[key], (name, key)
