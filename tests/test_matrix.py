"""`zsbench matrix`: every method under every protocol, Kendall's tau-b between protocols, the swaps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.matrix import kendall_tau_b, ranks, swapped_pairs
from tests.test_sweep import TextToy, window_count

A, B = "tests.test_sweep:TextToy", "tests.test_matrix:OtherToy"


class OtherToy(TextToy):
    """Another text-toy: other random directions for the same names."""

    name = "other-toy"
    encoded = 0

    def __init__(self, seed: int = 7, threshold: float = 0.3) -> None:
        super().__init__(seed, threshold)


def test_tau_b_equals_a_hand_computation():
    # x ranks 1..5; y = 3,1,2,5,4: of the 10 pairs, (0,1) (0,2) (3,4) are discordant, the other 7 concordant
    assert kendall_tau_b([1, 2, 3, 4, 5], [3, 1, 2, 5, 4]) == pytest.approx((7 - 3) / 10)
    # ties: x = 1,1,2,3 and y = 1,2,2,3: 4 concordant, 0 discordant, one pair tied in x, one in y:
    # tau_b = 4 / sqrt((6 - 1) * (6 - 1)) = 0.8
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    # x = 1,2,3,4 and y = 4,4,1,2: pair (0,1) tied in y; (2,3) concordant; (0,2) (0,3) (1,2) (1,3) discordant:
    # tau_b = (1 - 4) / sqrt(6 * (6 - 1))
    assert kendall_tau_b([1, 2, 3, 4], [4, 4, 1, 2]) == pytest.approx(-3 / math.sqrt(30))
    assert kendall_tau_b([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau_b([1, 2, 3], [5, 5, 5]) is None
    assert kendall_tau_b([1.0], [2.0]) is None


def test_swaps_and_ranks():
    assert swapped_pairs(["a", "b", "c"], [3, 2, 1], [1, 2, 3]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert swapped_pairs(["a", "b", "c"], [3, 2, 1], [3, 3, 1]) == []  # a tie is no swap
    assert swapped_pairs(["a", "b", "c"], [1, 3, 2], [1, 2, 3]) == [("b", "c")]
    assert ranks({"a": 30.0, "b": 40.0, "c": 30.0, "d": None}) == {"a": 2, "b": 1, "c": 2}


@pytest.fixture
def two_protocols(toy_world: dict[str, Path]) -> dict[str, Path]:
    """`toy` and `toy_alt` (other class names, the same images and geometry) side by side."""
    folder = toy_world["protocol"].parent
    (folder / "names" / "toyset_alt.txt").write_text("blue sky\ngreen grass\ntabby cat\nsmall dog\n")
    (folder / "names" / "toyset_bg_alt.txt").write_text("cat, kitten\ndog\n")
    raw = yaml.safe_load(toy_world["protocol"].read_text())
    raw["name"] = "toy_alt"
    raw["benchmarks"]["toyset"]["classes"] = "names/toyset_alt.txt"
    raw["benchmarks"]["toyset_bg"]["classes"] = "names/toyset_bg_alt.txt"
    (folder / "toy_alt.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return {**toy_world, "alt": folder / "toy_alt.yaml"}


def matrix(world: dict[str, Path], *extra: str) -> int:
    return main(["matrix", "--methods", f"{A},{B},toy", "--protocols", f"{world['protocol']},{world['alt']}",
                 "--data-root", str(world["data"]), "--results", str(world["results"]), "--workers", "0",
                 "--no-progress", "--batch-size", "5", *extra])


def test_the_matrix_holds_the_records_of_each_method_under_each_protocol(two_protocols, capsys):
    TextToy.encoded = 0
    assert matrix(two_protocols, "--format", "json", "--opt", "toy:seed=3") == 0
    first = json.loads(capsys.readouterr().out)
    # TextToy and OtherToy: both protocols scored from one pass per image set
    assert [len(keys) for keys in first["passes"][A]] == [2, 2]
    assert TextToy.encoded == window_count(two_protocols, "toyset") + window_count(two_protocols, "toyset_bg")
    records = {}
    for path in two_protocols["results"].rglob("*.json"):
        record = json.loads(path.read_text())
        records[(record["method"]["run_id"], record["protocol"]["name"], record["benchmark"])] = record["miou"]
    assert len(records) == 3 * 2 * 2
    run_ids = {entry["name"]: entry["run_id"] for entry in first["methods"]}
    assert run_ids["toy"].startswith("toy-") and json.loads(
        (two_protocols["results"] / "toy" / run_ids["toy"] / "toyset.json").read_text())["method"]["config"][
            "seed"] == 3
    for benchmark in ("toyset", "toyset_bg"):
        for method, by_protocol in first["miou"][benchmark].items():
            for protocol, value in by_protocol.items():
                assert value == records[(run_ids[method], protocol, benchmark)]
    for column in ("toyset", "toyset_bg", "avg"):
        (pair,) = first["stability"][column]
        scores = first["miou"][column]
        x = [scores[m]["toy"] for m in (A, B, "toy")]
        y = [scores[m]["toy_alt"] for m in (A, B, "toy")]
        assert pair["tau"] == pytest.approx(kendall_tau_b(x, y))
        assert [tuple(swap) for swap in pair["swaps"]] == swapped_pairs([A, B, "toy"], x, y)
    # a second run reads every record back
    TextToy.encoded = 0
    assert matrix(two_protocols, "--opt", "toy:seed=3", "--out", str(two_protocols["root"] / "m.csv")) == 0
    printed = capsys.readouterr().out
    assert TextToy.encoded == 0 and "4 read back from earlier runs" in printed
    assert "Kendall's tau-b" in printed and "## Average over" in printed
    lines = (two_protocols["root"] / "m.csv").read_text().splitlines()
    assert lines[0] == "benchmark,method,run_id,protocol,protocol_hash,miou,rank" and len(lines) == 1 + 3 * 3 * 2


@pytest.mark.parametrize("extra, named", [
    (["--benchmarks", "toyset,nosuch"], ["--benchmarks nosuch", "toyset, toyset_bg"]),
    (["--opt", "nosuch:seed=1"], ["nosuch", "--methods"]),
])
def test_bad_matrix_input_is_one_line(two_protocols, capsys, extra, named):
    assert matrix(two_protocols, *extra) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    for word in named:
        assert word in error


def test_a_method_listed_twice_or_one_protocol_is_refused(two_protocols, capsys):
    base = ["--data-root", str(two_protocols["data"]), "--results", str(two_protocols["results"]), "--no-progress"]
    assert main(["matrix", "--methods", f"{A},{A}", "--protocols", f"{two_protocols['protocol']},"
                 f"{two_protocols['alt']}", *base]) == 2
    assert "listed twice" in capsys.readouterr().err
    assert main(["matrix", "--methods", A, "--protocols", str(two_protocols["protocol"]), *base]) == 2
    assert "two or more different protocols" in capsys.readouterr().err
    assert main(["matrix", "--methods", "nosuch", "--protocols", f"{two_protocols['protocol']},"
                 f"{two_protocols['alt']}", *base]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_a_protocol_written_as_base_plus_settings_is_the_derived_protocol_eval_files(two_protocols):
    from benchmark.cli_sensitivity import protocol_from_text
    from benchmark.protocol import load_protocol

    derived = protocol_from_text(f"{two_protocols['protocol']}+image.resize.short=20+method_settings.scale=2")
    same = load_protocol(two_protocols["protocol"], {"image.resize.short": 20, "method_settings.scale": 2})
    assert (derived.name, derived.hash) == (same.name, same.hash) == (
        "toy+image.resize.short=20+method_settings.scale=2", same.hash)
    assert protocol_from_text(str(two_protocols["alt"])).name == "toy_alt"
