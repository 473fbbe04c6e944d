"""`zsbench sweep`: knobs -> derived protocols, one shared pass for text-only variants, the sensitivity report.

Every variant's record must be the record `zsbench eval --set ...` writes (identical confusion matrices, same
place), and the one a protocol file written by hand with that setting gives.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from benchmark.cli import main
from benchmark.errors import ConfigError
from benchmark.protocol import TextSpec, load_protocol
from benchmark.protocol_passes import ProtocolsEvaluation
from benchmark.sweep import SweepResult, make_variants
from benchmark.sweep_knobs import parse_vary
from benchmark.sweep_report import knob_tables, ranking, render_csv, render_markdown
from tests.toy_method import ToyMethod

METHOD = "tests.test_sweep:TextToy"


class TextToy(ToyMethod):
    """The toy method split into an image side and a text side, whose bank depends on the names, the templates
    and the aggregation; a `scale` method setting multiplies its logits. Counts the crops it encodes."""

    name = "text-toy"
    encoded = 0

    def __init__(self, seed: int = 0, threshold: float = 0.3) -> None:
        super().__init__(seed, threshold)
        self.scale = 4.0

    def encode_classes(self, names: list[list[str]], text: TextSpec) -> Tensor:
        rows = []
        for name in (name for synonyms in names for name in synonyms):
            key = f"{name}|{'|'.join(text.templates)}|{text.aggregation}|{self.seed}"
            rows.append(torch.randn(3, generator=torch.Generator().manual_seed(zlib.crc32(key.encode()))))
        return torch.stack(rows)

    def predict_masks(self, crops: Tensor, bank: Tensor) -> Tensor:
        return self.score(self.encode_crops(crops), bank)

    def encode_crops(self, crops: Tensor) -> Tensor:
        type(self).encoded += crops.shape[0]
        return F.avg_pool2d(crops, 2, ceil_mode=True)

    def score(self, features: Tensor, bank: Tensor) -> Tensor:
        return torch.einsum("nc,bchw->bnhw", bank.to(features), features) * self.scale

    def setup(self, protocol, benchmark) -> None:
        self.scale = float(benchmark.method_settings.get("scale", 4.0))


@pytest.fixture
def sweep_world(toy_world: dict[str, Path]) -> dict[str, Path]:
    """The toy world, a second protocol beside `toy` with other class names, and two template files."""
    folder = toy_world["protocol"].parent
    raw = yaml.safe_load(toy_world["protocol"].read_text())
    raw["background"] = {"rule": "none"}  # a protocol-wide rule, so that background.value can be set for all
    toy_world["protocol"].write_text(yaml.safe_dump(raw, sort_keys=False))
    (folder / "names" / "toyset_alt.txt").write_text("blue sky\ngreen grass\ntabby cat\nsmall dog\n")
    (folder / "names" / "toyset_bg_alt.txt").write_text("cat, kitten\ndog\n")
    raw = yaml.safe_load(toy_world["protocol"].read_text())
    raw["name"] = "toy_alt"
    raw["benchmarks"]["toyset"]["classes"] = "names/toyset_alt.txt"
    raw["benchmarks"]["toyset_bg"]["classes"] = "names/toyset_bg_alt.txt"
    (folder / "toy_alt.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (folder / "two.txt").write_text("a photo of a {}.\na picture of the {}.\n")
    return {**toy_world, "alt": folder / "toy_alt.yaml"}


def cli(world: dict[str, Path], command: str, results: str, *extra: str) -> int:
    return main([command, "--method", METHOD, "--protocol", str(world["protocol"]), "--data-root", str(world["data"]),
                 "--results", str(world["root"] / results), "--workers", "0", "--no-progress", "--batch-size", "5",
                 *extra])


def records_under(folder: Path) -> dict[str, dict]:
    return {str(p.relative_to(folder)): json.loads(p.read_text())
            for p in sorted(folder.rglob("*.json")) if not p.name.startswith(".")}


def test_a_two_knob_sweep_writes_records_equal_to_eval_with_the_same_settings(sweep_world, capsys):
    report = sweep_world["root"] / "report.json"
    assert cli(sweep_world, "sweep", "sweep", "--vary", "resize.short=20,28", "--vary",
               "text.aggregation=mean_unnormalised", "--out", str(report), "--plot",
               str(sweep_world["root"] / "sweep.png")) == 0
    printed = capsys.readouterr().out
    content = json.loads(report.read_text())
    assert [v["label"] for v in content["variants"]] == [
        "base", "resize.short=20", "resize.short=28", "text.aggregation=mean_unnormalised"]
    assert [v["set"] for v in content["variants"]] == [
        [], ["image.resize.short=20"], ["image.resize.short=28"], ["text.aggregation=mean_unnormalised"]]
    assert "## `resize.short`" in printed and "toy+image.resize.short=20" in printed
    assert (sweep_world["root"] / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    swept = records_under(sweep_world["root"] / "sweep")
    assert len(swept) == 4 * 2
    for variant in content["variants"]:
        extra = [word for argument in variant["set"] for word in ("--set", argument)]
        assert cli(sweep_world, "eval", "eval", *extra) == 0
        for benchmark in ("toyset", "toyset_bg"):
            record = swept[f"{variant['protocol']}/{content['run_id']}/{benchmark}.json"]
            assert record["protocol"]["hash"] == variant["hash"]
            assert record["miou"] == variant["miou"][benchmark]
    evaluated = records_under(sweep_world["root"] / "eval")
    assert set(evaluated) == set(swept)
    for path, record in swept.items():
        assert record["confusion_matrix"] == evaluated[path]["confusion_matrix"], path
    # the same setting written into a protocol file by hand gives the same matrices
    raw = yaml.safe_load(sweep_world["protocol"].read_text())
    raw["name"], raw["image"]["resize"]["short"] = "toy_short20", 20
    by_hand = sweep_world["protocol"].parent / "toy_short20.yaml"
    by_hand.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["eval", "--method", METHOD, "--protocol", str(by_hand), "--data-root", str(sweep_world["data"]),
                 "--results", str(sweep_world["root"] / "by_hand"), "--workers", "0", "--no-progress"]) == 0
    for path, record in records_under(sweep_world["root"] / "by_hand").items():
        assert record["confusion_matrix"] == swept[path.replace("toy_short20", "toy+image.resize.short=20")][
            "confusion_matrix"]
    # the report's spreads are max - min of the rows it shows, and the knobs are ranked by their mean
    for knob in content["knobs"]:
        for benchmark in ("toyset", "toyset_bg"):
            values = [row["miou"][benchmark] for row in knob["rows"]]
            assert knob["spread"][benchmark] == pytest.approx(max(values) - min(values), abs=0.011)
    spreads = [item["mean_spread"] for item in content["ranking"]]
    assert spreads == sorted(spreads, reverse=True)
    # the leaderboard shows each variant as a protocol of its own
    capsys.readouterr()
    assert main(["leaderboard", "--results", str(sweep_world["root"] / "sweep")]) == 0
    board = capsys.readouterr().out
    for variant in content["variants"]:
        assert f"Protocol `{variant['protocol']}` (hash `{variant['hash'][:12]}`)" in board


def test_a_rerun_with_skip_existing_reads_every_record_back(sweep_world, capsys):
    arguments = ("--vary", "resize.short=20", "--vary", "method.scale=2")
    assert cli(sweep_world, "sweep", "sweep", *arguments) == 0
    TextToy.encoded = 0
    table = sweep_world["root"] / "again.csv"
    assert cli(sweep_world, "sweep", "sweep", *arguments, "--skip-existing", "--out", str(table)) == 0
    assert TextToy.encoded == 0
    assert "records read back" in capsys.readouterr().out
    lines = table.read_text().splitlines()
    assert lines[0] == "knob,side,value,base,benchmark,miou,spread,protocol,protocol_hash"
    assert len(lines) == 1 + 2 * 2 * 3  # knobs x rows (base + value) x (2 benchmarks + avg)


def window_count(world: dict[str, Path], benchmark: str) -> int:
    from benchmark.data import list_samples, read_image
    from benchmark.inference import resize_image, windows_for

    spec = load_protocol(world["protocol"]).benchmarks[benchmark]
    images = [resize_image(read_image(s.image), spec.image) for s in list_samples(spec.dataset, world["data"])]
    return sum(len(windows_for(spec.inference, *image.shape[:2])) for image in images)


def test_a_text_only_sweep_encodes_each_crop_once(sweep_world, capsys):
    text_only = ("--vary", f"classes={sweep_world['alt']}", "--vary", "text.aggregation=mean_unnormalised",
                 "--vary", "method.scale=1,9", "--vary", "text.templates=two.txt", "--vary", "background.value=0.1")
    TextToy.encoded = 0
    assert cli(sweep_world, "sweep", "separate", *text_only, "--no-shared-pass") == 0
    separately = TextToy.encoded
    capsys.readouterr()
    TextToy.encoded = 0
    assert cli(sweep_world, "sweep", "shared", *text_only, "--format", "json") == 0
    content = json.loads(capsys.readouterr().out)
    windows = window_count(sweep_world, "toyset") + window_count(sweep_world, "toyset_bg")
    assert TextToy.encoded == windows  # 7 variants (the base and 6 text-side ones), two image sets: once each
    assert separately == 7 * windows
    assert [sorted({benchmark for _, benchmark in keys}) for keys in content["passes"]] == [["toyset"], ["toyset_bg"]]
    assert [len(keys) for keys in content["passes"]] == [7, 7]
    shared, apart = records_under(sweep_world["root"] / "shared"), records_under(sweep_world["root"] / "separate")
    assert set(shared) == set(apart) and len(shared) == 7 * 2
    for path, record in apart.items():
        assert shared[path]["confusion_matrix"] == record["confusion_matrix"], path
    assert shared[next(iter(shared))]["evaluated_with"]  # the pass mates, under their protocols
    toyset = {variant["label"]: variant["miou"]["toyset"] for variant in content["variants"]}
    assert len(set(toyset.values())) > 2  # the text side does change the numbers


@pytest.mark.parametrize("vary, named", [
    ("inference.size=8", ["inference.size", "resize.short", "inference.crop", "method.<setting>"]),
    ("precision=fp8", ["precision", "fp32, bf16, fp16"]),
    ("resize.short=-3", ["resize.short", "positive integers"]),
    ("inference.mode=tiles", ["inference.mode", "slide, whole"]),
    ("text.aggregation=max", ["text.aggregation", "mean_unnormalised, mean_normalised"]),
    ("background.rule=otsu", ["background.rule", "none, names, threshold, prob_thd"]),
    ("text.templates=nosuch", ["text.templates", "imagenet80", "tcl9"]),
    ("classes=nosuch", ["classes", "no protocol 'nosuch'", "sclip"]),
    ("resize.short", ["KNOB=V1,V2", "resize.short"]),
])
def test_a_bad_knob_or_value_is_one_line_naming_the_knob_and_what_it_accepts(sweep_world, capsys, vary, named):
    assert cli(sweep_world, "sweep", "bad", "--vary", vary) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    for word in named:
        assert word in error
    assert not (sweep_world["root"] / "bad").exists()


def test_classes_takes_the_other_protocols_files_and_names_both_protocols_when_one_lacks_a_benchmark(sweep_world):
    base, alt = load_protocol(sweep_world["protocol"]), load_protocol(sweep_world["alt"])
    variants = make_variants(base, [parse_vary(f"classes={sweep_world['alt']}")], False, None)
    assert [variant.label for variant in variants] == ["base", f"classes={sweep_world['alt']}"]
    assert variants[1].overrides == {"benchmarks.toyset.classes": "names/toyset_alt.txt",
                                     "benchmarks.toyset_bg.classes": "names/toyset_bg_alt.txt"}
    for name, spec in variants[1].protocol.benchmarks.items():
        assert spec.class_names == alt.benchmarks[name].class_names
        assert spec.image == base.benchmarks[name].image and spec.background == base.benchmarks[name].background
    raw = yaml.safe_load(sweep_world["alt"].read_text())
    del raw["benchmarks"]["toyset_bg"]
    raw["name"] = "toy_one"
    (sweep_world["alt"].parent / "toy_one.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"protocol 'toy_one' has no benchmark toyset_bg of protocol 'toy'"):
        make_variants(base, [parse_vary(f"classes={sweep_world['alt'].parent / 'toy_one.yaml'}")], False, None)
    # restricted to the benchmarks it has, the sweep may use it
    only = make_variants(base, [parse_vary(f"classes={sweep_world['alt'].parent / 'toy_one.yaml'}")], False,
                         ["toyset"])
    assert only[1].overrides == {"benchmarks.toyset.classes": "names/toyset_alt.txt"}


def test_a_value_equal_to_the_base_is_the_base_and_knobs_given_twice_are_refused(sweep_world):
    base = load_protocol(sweep_world["protocol"])
    variants = make_variants(base, [parse_vary("resize.short=20,24"), parse_vary("method.scale=3")], False, None)
    assert [(variant.label, variant.is_base) for variant in variants] == [
        ("base", True), ("resize.short=20", False), ("resize.short=24", True), ("method.scale=3", False)]
    assert variants[2].protocol is base and variants[1].protocol.name == "toy+image.resize.short=20"
    assert variants[3].protocol.benchmarks["toyset"].method_settings == {"scale": 3}
    with pytest.raises(ConfigError, match="given twice"):
        make_variants(base, [parse_vary("resize.short=20"), parse_vary("resize.short=28")], False, None)
    with pytest.raises(ConfigError, match="listed twice"):
        parse_vary("resize.short=20,20")


def fake_result(base, knobs, grid: bool, mious: dict[str, dict[str, float]]) -> SweepResult:
    """A sweep result with hand-made mIoU per variant label (no evaluation)."""
    variants = make_variants(base, knobs, grid, None)
    records = {(variant.protocol.name, name): {"miou": value}
               for variant in variants for name, value in mious[variant.label].items()}
    evaluation = ProtocolsEvaluation(records, [], [], 0, 0)
    return SweepResult("text-toy", "text-toy-0", base, ["toyset", "toyset_bg"], knobs, grid, variants, evaluation)


def test_the_report_computes_spreads_ranking_and_grid_means_by_hand(sweep_world):
    base = load_protocol(sweep_world["protocol"])
    knobs = [parse_vary("resize.short=20,28"), parse_vary("method.scale=2")]
    one = fake_result(base, knobs, False, {
        "base": {"toyset": 30.0, "toyset_bg": 10.0}, "resize.short=20": {"toyset": 25.0, "toyset_bg": 12.0},
        "resize.short=28": {"toyset": 33.0, "toyset_bg": 11.0}, "method.scale=2": {"toyset": 31.0, "toyset_bg": 4.0},
    })
    short, scale = knob_tables(one)
    assert [row.value for row in short.rows] == ["base: 24", "20", "28"]
    assert short.spread == {"toyset": 8.0, "toyset_bg": 2.0, "avg": 3.5}  # avg rows 20, 18.5, 22
    assert scale.spread == {"toyset": 1.0, "toyset_bg": 6.0, "avg": 2.5}
    assert (short.mean_spread, scale.mean_spread) == (5.0, 3.5)
    assert [table.knob for table in ranking([scale, short])] == ["resize.short", "method.scale"]
    text = render_markdown(one)
    assert "| base: 24 " in text and "--set image.resize.short=20" in text
    assert render_csv(one).splitlines()[1] == "resize.short,image,base: 24,True,toyset,30.00,8.00,toy,"  + base.hash
    grid = fake_result(base, knobs, True, {
        "resize.short=20, method.scale=2": {"toyset": 20.0, "toyset_bg": 10.0},
        "resize.short=28, method.scale=2": {"toyset": 26.0, "toyset_bg": 6.0},
    })
    short, scale = knob_tables(grid)
    assert [(row.value, row.miou["toyset"]) for row in short.rows] == [("20", 20.0), ("28", 26.0)]
    assert [(row.value, row.miou["toyset"], row.miou["toyset_bg"]) for row in scale.rows] == [("2", 23.0, 8.0)]
    assert short.spread["toyset"] == 6.0 and scale.spread["toyset"] is None
    assert "## Grid" in render_markdown(grid)
