"""`zsbench bench`: the command and its JSON, and the reference loop against hand-computed cases."""

from __future__ import annotations

import json
import pstats
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from benchmark import paths
from benchmark.bench import (
    crop_count,
    load_shapes,
    pixel_agreement,
    reference_predict,
    update_confusion,
    write_synthetic_split,
)
from benchmark.cli import main
from benchmark.data import list_cards, list_samples, load_card, read_label
from benchmark.inference import PreparedImage, ScoreHead, SlidingWindowPredictor
from benchmark.protocol import BackgroundSpec, BenchmarkSpec, ImageSpec, InferenceSpec, TextSpec, load_protocol
from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip
from methods.base import SegMethod
from tests.factories import make_text
from tests.toy_method import ToyMethod

LOOP_FIELDS = ("images", "crops", "seconds", "images_per_s", "crops_per_s", "peak_host_bytes", "host_added_bytes",
               "peak_device_bytes", "miou", "confusion_matrix")
RESULT_FIELDS = ("method", "protocol", "benchmark", "dataset", "num_classes", "images", "image_sizes", "device",
                 "precision", "batch_size", "engine", "reference", "speedup", "host_memory_ratio",
                 "confusion_identical", "identical_required", "versions")


@pytest.fixture(scope="module")
def tiny_clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tinyclip.pt"
    torch.save(create_tiny_clip(seed=0).state_dict(), path)
    return path


def run_bench_cli(clip: Path, folder: Path, benchmark: str, *extra: str) -> tuple[int, dict]:
    out = folder / "bench.json"
    code = main([
        "bench", "--method", "maskclip", "--protocol", "synthetic", "--benchmark", benchmark, "--n", "4",
        "--opt", f"model={MODEL_NAME}", "--opt", f"pretrained={clip}", "--weights-root", str(folder / "weights"),
        "--json", str(out), *extra,
    ])
    return code, json.loads(out.read_text())


@pytest.mark.parametrize("benchmark, batch_size", [("synthetic", "16"), ("synthetic_bg", "3")])
def test_bench_runs_and_engine_equals_reference_at_fp32(tiny_clip_file, tmp_path, capsys, benchmark, batch_size):
    code, result = run_bench_cli(tiny_clip_file, tmp_path, benchmark, "--batch-size", batch_size)
    assert code == 0
    printed = capsys.readouterr().out
    assert "engine / reference" in printed and "confusion matrices: identical" in printed
    assert all(key in result for key in RESULT_FIELDS)
    assert result["benchmark"] == benchmark and result["precision"] == "fp32" and result["identical_required"]
    for loop in ("engine", "reference"):
        assert all(key in result[loop] for key in LOOP_FIELDS)
        assert result[loop]["images"] == 4 and result[loop]["seconds"] > 0
    assert result["engine"]["crops"] == result["reference"]["crops"] > 4
    assert result["confusion_identical"]
    assert result["engine"]["confusion_matrix"] == result["reference"]["confusion_matrix"]
    assert np.asarray(result["engine"]["confusion_matrix"]).sum() > 0
    assert result["engine"]["miou"] == result["reference"]["miou"]
    assert result["pixel_agreement_with_fp32"] is None


def test_bench_at_bf16_reports_the_difference_without_failing_and_profiles(tiny_clip_file, tmp_path, capsys):
    code, result = run_bench_cli(tiny_clip_file, tmp_path, "synthetic", "--precision", "bf16", "--warmup", "0",
                                 "--repeat", "2", "--profile", str(tmp_path / "profile"))
    assert code == 0
    assert result["precision"] == "bf16" and result["reference_precision"] == "fp32"
    assert not result["identical_required"]
    assert len(result["engine"]["seconds_all"]) == len(result["reference"]["seconds_all"]) == 2
    assert result["engine"]["seconds"] == min(result["engine"]["seconds_all"])
    assert "confusion matrices:" in capsys.readouterr().out
    assert 0.9 <= result["pixel_agreement_with_fp32"] <= 1.0
    for name in ("engine", "reference"):
        stats = pstats.Stats(str(tmp_path / "profile" / f"{name}.prof"))
        assert any(function == "predict_masks" for _, _, function in stats.stats)


class BatchSensitive(ToyMethod):
    """Wrong on purpose: name 0 gains with the number of crops in the forward pass."""

    name = "toy-batch-sensitive"

    def predict_masks(self, crops: Tensor, bank: Tensor) -> Tensor:
        scores = super().predict_masks(crops, bank)
        scores[:, 0] += 10.0 * crops.shape[0]
        return scores


def test_a_difference_at_fp32_is_reported_and_fails_the_command(tmp_path, capsys):
    code = main(["bench", "--method", "tests.test_bench:BatchSensitive", "--protocol", "synthetic",
                 "--benchmark", "synthetic", "--n", "3", "--json", str(tmp_path / "bench.json")])
    assert code == 1
    captured = capsys.readouterr()
    assert "DIFFER at fp32" in captured.out and "different confusion matrices" in captured.err
    result = json.loads((tmp_path / "bench.json").read_text())
    assert not result["confusion_identical"] and result["confusion_pixels_moved"] > 0


def test_pixel_agreement_counts_equal_labels_over_all_images():
    first = [torch.tensor([[0, 1], [2, 3]]), torch.tensor([[5, 5, 5]])]
    second = [torch.tensor([[0, 1], [3, 3]]), torch.tensor([[5, 4, 4]])]
    assert pixel_agreement(first, second) == pytest.approx(4 / 7)
    assert pixel_agreement(first, first) == 1.0


def test_every_shipped_card_has_typical_sizes():
    assert set(list_cards()) <= set(load_shapes())


def test_synthetic_split_follows_the_card_layout_and_sizes(tmp_path):
    card = load_card("ade20k")
    sizes = write_synthetic_split(card, load_shapes()["ade20k"], 3, seed=5, data_root=tmp_path)
    samples = list_samples(card, tmp_path)
    assert len(samples) == 3
    for sample, (width, height) in zip(samples, sizes, strict=True):
        assert 512 <= width <= 683 and height == 512
        label = read_label(sample.label, card)
        assert label.shape == (height, width)
        assert set(np.unique(label)) <= {*range(150), 255}
    assert write_synthetic_split(card, load_shapes()["ade20k"], 3, seed=5, data_root=tmp_path / "again") == sizes
    spec = load_protocol("tcl8").benchmarks["ade20k"]
    # 448 short side: 512x512 -> 448x448 is one 448 crop; 683x512 -> 598x448 is two.
    assert crop_count(spec, [(512, 512), (683, 512)]) == 3


class WindowMean(SegMethod):
    """Two names: the crop's mean of channel 0 at every pixel, and zero."""

    name = "window-mean"
    score_kind = "logits"

    def encode_classes(self, names: list[list[str]], text: TextSpec) -> None:
        return None

    def predict_masks(self, crops: Tensor, bank: None) -> Tensor:
        batch, _, height, width = crops.shape
        mean = crops[:, 0].mean(dim=(1, 2))[:, None, None].expand(batch, height, width)
        return torch.stack([mean, torch.zeros(batch, height, width)], dim=1)


def spec_of(background: BackgroundSpec, crop: int = 4, stride: int = 2, classes: int = 2) -> BenchmarkSpec:
    return BenchmarkSpec(
        name="hand", dataset=None, class_names=tuple((f"c{k}",) for k in range(classes)),
        image=ImageSpec(None, None, (0, 0, 0), (1, 1, 1)), inference=InferenceSpec("slide", crop, stride),
        background=background,
    )


def hand_image() -> Tensor:
    """4x6, channel 0 = [-3 -3 -3 -3 4 6] on every row: windows x 0-4 (mean -3) and 2-6 (mean 1)."""
    image = torch.zeros(3, 4, 6)
    image[0] = torch.tensor([-3.0, -3, -3, -3, 4, 6])
    return image


def test_reference_loop_matches_a_hand_computed_case():
    # Stitched name-0 scores per column: -3 -3 | (-3 + 1) / 2 = -1 twice | 1 1; name 1 is 0.
    pred, forwards = reference_predict(WindowMean(), None, spec_of(BackgroundSpec("none")), None, hand_image(), (4, 6))
    assert forwards == 2
    assert pred.tolist() == [[1, 1, 1, 1, 0, 0]] * 4
    # Threshold 0.8 in front: p(name 1) = sigmoid(3) = 0.95 wins at columns 0-1 (class 2); elsewhere the
    # larger probability is sigmoid(1) = 0.73 < 0.8, so background.
    pred, _ = reference_predict(
        WindowMean(), None, spec_of(BackgroundSpec("threshold")), 0.8, hand_image(), (4, 6)
    )
    assert pred.tolist() == [[2, 2, 0, 0, 0, 0]] * 4
    matrix = np.zeros((2, 2), dtype=np.int64)
    label = np.array([[1, 0, 1, 255, 0, 0]] * 4)
    update_confusion(matrix, np.array([[1, 1, 1, 1, 0, 0]] * 4), label, ignore_index=255)
    assert matrix.tolist() == [[8, 4], [0, 8]]


@pytest.mark.parametrize("background, value", [(BackgroundSpec("none"), None), (BackgroundSpec("threshold"), 0.3),
                                               (BackgroundSpec("prob_thd", area_thd=0.2), 0.4)])
def test_reference_loop_equals_the_engine_on_the_toy_method(background, value):
    spec = spec_of(background, crop=16, stride=8, classes=4)
    generator = torch.Generator().manual_seed(2)
    images = [torch.randn(3, h, w, generator=generator) for h, w in [(20, 37), (16, 16), (9, 30), (33, 21)]]
    labels = [(h * 2, w + 3) for h, w in [(20, 37), (16, 16), (9, 30), (33, 21)]]
    method = ToyMethod()
    bank = method.encode_classes([list(s) for s in spec.class_names], make_text())
    predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, value)], batch_size=5)
    engine = []
    for index, (image, size) in enumerate(zip(images, labels, strict=True)):
        engine.extend(predictor.push(PreparedImage(index, str(index), image, torch.zeros(size, dtype=torch.int64))))
    engine.extend(predictor.flush())
    for image, size, prediction in zip(images, labels, engine, strict=True):
        pred, _ = reference_predict(method, bank, spec, value, image, size)
        assert torch.equal(pred, prediction.pred)


def test_bench_without_warmup_encodes_the_names_with_the_protocols_aggregation(tiny_clip_file, tmp_path,
                                                                                monkeypatch):
    """The text bank was built before any setup, with the method's default rule (mean_normalised) where
    the protocol says mean_unnormalised: bench numbers were not those of `zsbench eval`."""
    import methods.clip_text

    folder = tmp_path / "protocols"
    for part in ("templates", "classnames/synthetic"):
        shutil.copytree(paths.PROTOCOLS_DIR / part, folder / part)
    text = (paths.PROTOCOLS_DIR / "synthetic.yaml").read_text()
    text = text.replace("name: synthetic\n", "name: synthagg\n", 1)
    text = text.replace("aggregation: mean_normalised", "aggregation: mean_unnormalised")
    (folder / "synthagg.yaml").write_text(text)
    rules = []
    encode_names = methods.clip_text.encode_names

    def spy(backbone, names, templates, rule, *args, **kwargs):
        rules.append(rule)
        return encode_names(backbone, names, templates, rule, *args, **kwargs)

    monkeypatch.setattr(methods.clip_text, "encode_names", spy)
    out = tmp_path / "bench.json"
    code = main([
        "bench", "--method", "maskclip", "--protocol", str(folder / "synthagg.yaml"), "--benchmark", "synthetic",
        "--n", "1", "--warmup", "0", "--opt", f"model={MODEL_NAME}", "--opt", f"pretrained={tiny_clip_file}",
        "--opt", "text_cache=false", "--weights-root", str(tmp_path / "weights"), "--json", str(out),
    ])
    assert code == 0 and json.loads(out.read_text())["confusion_identical"]
    assert rules and set(rules) == {"mean_unnormalised"}
