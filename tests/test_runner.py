import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import registry
from benchmark.cli import main
from benchmark.eval_settings import EvalSettings
from benchmark.method_run import MethodRun
from benchmark.paths import REPO_ROOT
from benchmark.protocol import load_protocol
from benchmark.registry import build_method, get_method_class
from benchmark.runner import evaluate
from tests.toy_method import ToyMethod

NUMBERS = ("miou", "aacc", "macc", "per_class_iou", "per_class_acc", "confusion_matrix")


def run_cli(world, *extra, method="toy"):
    return main([
        "eval", "--method", method, "--protocol", str(world["protocol"]), "--data-root", str(world["data"]),
        "--results", str(world["results"]), "--workers", "0", "--no-progress", "--batch-size", "3", *extra,
    ])


def records_under(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.rglob("*.json")) if not p.name.startswith(".")}


def test_toy_method_from_a_test_module_runs_end_to_end_through_the_cli(toy_world, capsys):
    assert run_cli(toy_world) == 0
    out = capsys.readouterr().out
    assert "| toy" in out and "toyset_bg" in out
    records = records_under(toy_world["results"])
    assert set(records) == {"toyset.json", "toyset_bg.json"}
    record = records["toyset_bg.json"]
    assert record["protocol"]["hash"] == load_protocol(toy_world["protocol"]).hash
    assert record["dataset"]["images"] == 7 and not record["partial"]
    assert record["background"] == {"rule": "threshold", "value": 0.3, "area_thd": None, "value_source": "method"}
    assert list(record["per_class_iou"]) == ["background", "cat", "dog"]
    assert 0 <= record["miou"] <= 100 and record["images_per_s"] > 0


def test_records_match_an_independent_recount_of_predictions(toy_world):
    """The record's confusion matrix equals one rebuilt from per-image predictions with numpy."""
    import numpy as np

    from benchmark.data import BenchmarkDataset, list_samples
    from benchmark.inference import ImagePreprocessor, PreparedImage, ScoreHead, SlidingWindowPredictor

    protocol = load_protocol(toy_world["protocol"])
    spec = protocol.benchmarks["toyset"]
    method = ToyMethod()
    settings = EvalSettings(data_root=toy_world["data"], results_root=toy_world["results"], progress=False)
    (record,) = evaluate(MethodRun(method, {}, None), protocol, ["toyset"], settings)
    samples = list_samples(spec.dataset, toy_world["data"])
    dataset = BenchmarkDataset(spec.dataset, samples, list(range(len(samples))), ImagePreprocessor(spec.image))
    bank = method.encode_classes([list(s) for s in spec.class_names], protocol.text)
    matrix = np.zeros((4, 4), int)
    for item in dataset:
        predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, None)], batch_size=1)
        prepared = PreparedImage(item["index"], item["stem"], item["image"], item["label"])
        (prediction,) = [*predictor.push(prepared), *predictor.flush()]
        label, pred = item["label"].numpy(), prediction.pred.numpy()
        valid = label != 255
        np.add.at(matrix, (label[valid], pred[valid]), 1)
    assert record["confusion_matrix"] == matrix.tolist()


def test_interrupted_run_resumes_to_identical_numbers(toy_world, monkeypatch):
    assert run_cli(toy_world) == 0
    reference = records_under(toy_world["results"])
    toy_world["results"] = toy_world["root"] / "resumed"
    monkeypatch.setenv("TOY_INTERRUPT_AFTER", "10")
    assert run_cli(toy_world) == 130
    states = list(toy_world["results"].rglob(".*.state.*.json"))
    assert len(states) == 1
    done = json.loads(states[0].read_text())["done"]
    assert 0 < done < 7
    assert not list(toy_world["results"].rglob("toyset.json"))
    monkeypatch.delenv("TOY_INTERRUPT_AFTER")
    calls = []
    original = ToyMethod.predict_masks
    monkeypatch.setattr(ToyMethod, "predict_masks", lambda self, c, b: calls.append(c.shape[0]) or original(self, c, b))
    assert run_cli(toy_world, "--benchmarks", "toyset") == 0
    windows_left = sum(_window_count(toy_world, "toyset", i) for i in range(done, 7))
    assert sum(calls) == windows_left
    assert run_cli(toy_world) == 0
    resumed = records_under(toy_world["results"])
    assert set(resumed) == set(reference)
    for name in reference:
        for key in NUMBERS:
            assert resumed[name][key] == reference[name][key], (name, key)
    assert not list(toy_world["results"].rglob(".*.state.*.json"))


def _window_count(world, benchmark, index):
    from benchmark.data import list_samples, read_image
    from benchmark.inference import resize_image, windows_for

    spec = load_protocol(world["protocol"]).benchmarks[benchmark]
    image = resize_image(read_image(list_samples(spec.dataset, world["data"])[index].image), spec.image)
    return len(windows_for(spec.inference, *image.shape[:2]))


def test_skip_existing_limit_and_partial_records(toy_world, capsys):
    assert run_cli(toy_world, "--limit", "2") == 0
    partial = records_under(toy_world["results"])
    assert set(partial) == {"toyset.partial.json", "toyset_bg.partial.json"}
    assert partial["toyset.partial.json"]["partial_reasons"] == ["limit 2"]
    assert run_cli(toy_world) == 0
    assert run_cli(toy_world, "--skip-existing") == 0
    assert "nothing evaluated" in capsys.readouterr().out
    assert len(records_under(toy_world["results"])) == 4


def test_incomplete_dataset_is_refused_unless_allowed(toy_world, capsys):
    victim = next((toy_world["data"] / "toyset" / "labels").glob("*.png"))
    victim.unlink()
    assert run_cli(toy_world, "--benchmarks", "toyset") == 2
    err = capsys.readouterr().err
    assert "incomplete (6/7" in err and str(victim) in err and "--allow-incomplete" in err
    assert run_cli(toy_world, "--benchmarks", "toyset", "--allow-incomplete") == 0
    (record,) = records_under(toy_world["results"]).values()
    assert record["partial"] and record["dataset"]["images"] == 6


def test_method_given_as_import_path_and_unknown_method(toy_world, capsys):
    assert run_cli(toy_world, "--benchmarks", "toyset", method="tests.toy_method:ToyMethod") == 0
    assert run_cli(toy_world, method="no-such-method") == 2
    assert "unknown method 'no-such-method'" in capsys.readouterr().err


def test_entry_point_from_another_installed_package_registers_a_method(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "extpkg-0.1.dist-info").mkdir(parents=True)
    (site / "extpkg-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: extpkg\nVersion: 0.1\n")
    (site / "extpkg-0.1.dist-info" / "entry_points.txt").write_text(
        "[zsseg_bench.methods]\nexternal-toy = extpkg:ExternalToy\n"
    )
    (site / "extpkg.py").write_text(
        "from tests.toy_method import ToyMethod\n\nclass ExternalToy(ToyMethod):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_discovered", False)
    assert "external-toy" in registry.list_methods()
    assert get_method_class("external-toy").__name__ == "ExternalToy"


def test_unknown_method_option_is_a_clear_error():
    from benchmark.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match=r"no option 'colour'; its options \(--opt KEY=VALUE\): seed, "):
        build_method(ToyMethod, options={"colour": "red"})


def test_two_process_gloo_run_gives_the_same_confusion_matrix(toy_world):
    assert run_cli(toy_world) == 0
    single = records_under(toy_world["results"])
    results = toy_world["root"] / "distributed"
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [
        str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "benchmark.cli", "eval", "--method", "toy",
        "--protocol", str(toy_world["protocol"]), "--data-root", str(toy_world["data"]), "--results", str(results),
        "--workers", "0", "--no-progress", "--batch-size", "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    # the toy method must be registered in the worker processes too: go through its import path
    command[command.index("toy")] = "tests.toy_method:ToyMethod"
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    distributed = records_under(results)
    assert set(distributed) == set(single)
    for name in single:
        assert distributed[name]["world_size"] == 2
        for key in NUMBERS:
            assert distributed[name][key] == single[name][key], (name, key)


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_file_mid_run_is_one_clear_error_and_keeps_earlier_records(toy_world, capsys, workers):
    import numpy as np
    from PIL import Image

    assert run_cli(toy_world, "--benchmarks", "toyset") == 0
    before = records_under(toy_world["results"])
    label = sorted((toy_world["data"] / "toyset_bg" / "labels").glob("*.png"))[3]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(label)
    assert run_cli(toy_world, "--benchmarks", "toyset_bg", "--workers", str(workers)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert str(label) in err and "differs from image" in err
    assert records_under(toy_world["results"]) == before


def test_check_data_reports_found_incomplete_and_missing(toy_world, capsys):
    from benchmark.cli import main as cli

    assert cli(["check-data", "--protocol", str(toy_world["protocol"]), "--data-root", str(toy_world["data"])]) == 0
    assert capsys.readouterr().out.count(" found ") == 2
    next((toy_world["data"] / "toyset" / "images").glob("*.png")).unlink()
    assert cli(["check-data", "--protocol", str(toy_world["protocol"]), "--data-root", str(toy_world["data"])]) == 1
    out = capsys.readouterr().out
    assert "toyset           incomplete 6/7" in out and "missing:" in out
    assert cli(["check-data", "--datasets", "voc21,ade20k", "--data-root", str(toy_world["root"] / "none")]) == 1
    out = capsys.readouterr().out
    assert "voc21            missing" in out and "datasets/README.md" in out


def test_save_vis_keeps_n_examples_per_benchmark(toy_world):
    from PIL import Image

    assert run_cli(toy_world, "--save-vis", "2") == 0
    examples = sorted(toy_world["results"].rglob("examples/*/*.png"))
    assert [p.parent.name for p in examples] == ["toyset", "toyset", "toyset_bg", "toyset_bg"]
    with Image.open(examples[0]) as picture:
        assert picture.width > picture.height  # image | ground truth | prediction side by side


@pytest.mark.slow
def test_compiled_forward_is_recorded_and_gives_the_eager_numbers(toy_world):
    assert run_cli(toy_world) == 0
    eager = records_under(toy_world["results"])
    toy_world["results"] = toy_world["root"] / "compiled"
    assert run_cli(toy_world, "--compile") == 0
    compiled = records_under(toy_world["results"])
    assert set(compiled) == set(eager)
    for name, record in compiled.items():
        assert record["compiled"] and not eager[name]["compiled"]
        assert abs(record["miou"] - eager[name]["miou"]) <= 0.1
