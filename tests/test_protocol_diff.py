"""`zsbench protocol diff` / `show` on two hand-written protocols: exactly the differences made, nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.protocol import load_protocol
from benchmark.protocol_diff import diff, render_markdown

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_protocols(tmp_path: Path) -> tuple[Path, Path]:
    """`a` is the shipped synthetic protocol copied out; `b` changes six things in it."""
    folder = tmp_path / "protocols"
    for sub in ("classnames/synthetic", "templates"):
        shutil.copytree(REPO / "protocols" / sub, folder / sub)
    raw = yaml.safe_load((REPO / "protocols" / "synthetic.yaml").read_text())
    raw["name"] = "a"
    (folder / "a.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    names = (folder / "classnames/synthetic/synthetic.txt").read_text().splitlines()
    changed_class = names[1]
    names[1] = f"{changed_class}, {changed_class} shape"
    (folder / "classnames/synthetic/synthetic_b.txt").write_text("\n".join(names) + "\n")
    templates = (folder / "templates/synthetic.txt").read_text().splitlines()
    (folder / "templates/synthetic_b.txt").write_text("\n".join([*templates[:-1], "a drawing of the {}."]) + "\n")
    raw["name"] = "b"
    raw["image"]["resize"]["short"] = 128
    raw["inference"]["stride"] = 48
    raw["text"]["templates"] = "templates/synthetic_b.txt"
    raw["benchmarks"]["synthetic"]["classes"] = "classnames/synthetic/synthetic_b.txt"
    raw["benchmarks"]["synthetic"]["method_settings"] = {"logit_scale": 50}
    raw["benchmarks"]["synthetic_bg"]["background"] = {"rule": "prob_thd", "value": 0.4}
    (folder / "b.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "a.yaml", folder / "b.yaml"


def test_diff_lists_exactly_the_differences_made(two_protocols, capsys):
    path_a, path_b = two_protocols
    assert main(["protocol", "diff", str(path_a), str(path_b), "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["identical"] is False and result["settings"] == []  # precision and aggregation agree
    count = len(load_protocol(path_a).text.templates)
    assert result["templates"]["count_a"] == result["templates"]["count_b"] == count
    assert result["templates"]["only_b"] == ["a drawing of the {}."] and len(result["templates"]["only_a"]) == 1
    every = {(item["setting"], item["a"], item["b"]) for item in result["in_every_benchmark"]}
    assert every == {("image.resize_short", 96, 128), ("inference.stride", 32, 48)}
    synthetic = result["benchmarks"]["synthetic"]
    settings = {(item["setting"], item["a"], item["b"]) for item in synthetic["settings"]}
    assert settings == every | {("method_settings.logit_scale", None, 50)}
    names = (REPO / "protocols/classnames/synthetic/synthetic.txt").read_text().splitlines()
    card_class = load_protocol(path_a).benchmarks["synthetic"].dataset.classes[1]
    changed = {"index": 1, "class": card_class, "a": names[1], "b": f"{names[1]}, {names[1]} shape"}
    assert synthetic["classes"] == [changed]
    background = result["benchmarks"]["synthetic_bg"]
    assert {(item["setting"], item["a"], item["b"]) for item in background["settings"]} == every | {
        ("background.rule", "names", "prob_thd"), ("background.value", None, 0.4)}
    assert background["classes"] == []


def test_markdown_shows_the_class_names_side_by_side_and_each_shared_difference_once(two_protocols):
    a, b = (load_protocol(path) for path in two_protocols)
    text = render_markdown(diff(a, b))
    assert text.count("image.resize_short") == 1 and "## Every benchmark" in text
    assert "shape" in text.split("Class names that differ: 1 of 16")[1]
    assert "Only in `b` (1): `a drawing of the {}.`" in text


def test_a_protocol_against_itself_and_show_round_trip(two_protocols, capsys):
    path_a, _ = two_protocols
    assert main(["protocol", "diff", str(path_a), str(path_a)]) == 0
    assert "No setting differs" in capsys.readouterr().out
    assert main(["protocol", "show", str(path_a), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    protocol = load_protocol(path_a)
    assert shown["hash"] == protocol.hash and shown["text"]["templates"] == list(protocol.text.templates)
    class_names = [list(names) for names in protocol.benchmarks["synthetic"].class_names]
    assert shown["benchmarks"]["synthetic"]["class_names"] == class_names
    assert main(["protocol", "show", str(path_a), "--set", "inference.stride=48"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["benchmarks"]["synthetic"]["inference"]["stride"] == 48


def test_an_unknown_benchmark_or_protocol_is_one_line(two_protocols, capsys):
    path_a, path_b = two_protocols
    assert main(["protocol", "diff", str(path_a), str(path_b), "--benchmark", "voc99"]) == 2
    err = capsys.readouterr().err
    assert "--benchmark voc99: in neither protocol; benchmarks: synthetic, synthetic_bg" in err
    assert main(["protocol", "diff", "sclipp", str(path_b)]) == 2
    assert "no protocol 'sclipp'" in capsys.readouterr().err
