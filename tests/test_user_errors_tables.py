"""Issue #24, items 6, 7 and 9: unusable records, typos in table options, numbers checked at the door.

6. One unusable record no longer blocks every table: the tables warn (one line naming the file and the
   remedy) and go on, --strict stops with exit 2, and `eval --skip-existing` recomputes the record.
7. A --protocol, --benchmarks or results folder that names nothing is one error line naming what exists.
9. Records are strict JSON (no NaN); numeric flags are checked by argparse (one line, exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.results import RECORD_SCHEMA, is_record, read_record, read_records
from tests.test_runner import NUMBERS, records_under, run_cli

TOY = "toyset.json"


def refuse_constant(name: str) -> None:
    raise AssertionError(f"non-strict JSON constant {name}")


def strict_json(text: str):
    return json.loads(text, parse_constant=refuse_constant)


def record_file(world, name: str = TOY) -> Path:
    (path,) = world["results"].rglob(name)
    return path


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def evaluated(toy_world, capsys):
    """The toy world with one full run's records, and those records as read."""
    assert run_cli(toy_world) == 0
    capsys.readouterr()
    return toy_world, records_under(toy_world["results"])


# item 6: an unusable record ------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def test_a_truncated_record_is_reported_and_the_other_records_still_make_the_table(evaluated, capsys):
    world, _ = evaluated
    broken = record_file(world)
    truncate(broken)
    for command in (["leaderboard", "--results", str(world["results"])], ["build", str(world["results"])]):
        assert main(command) == 0
        captured = capsys.readouterr()
        (line,) = error_lines(captured.err)
        assert line.startswith(f"warning: {broken}: unusable record, not valid JSON")
        assert "rerun the eval that wrote it" in line and "or delete the file" in line
        assert "| toy " in captured.out and "toyset_bg" in captured.out


def test_strict_tables_stop_at_an_unusable_record(evaluated, capsys):
    world, _ = evaluated
    broken = record_file(world)
    truncate(broken)
    out = world["root"] / "board.md"
    for command in (["leaderboard", "--results", str(world["results"])], ["build", str(world["results"])]):
        assert main([*command, "--strict", "--out", str(out)]) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert line.startswith(f"error: {broken}: unusable record") and line.endswith("--strict: no table written")
        assert not out.exists()


def test_eval_with_skip_existing_recomputes_an_unusable_record_to_the_same_numbers(evaluated, capsys):
    world, reference = evaluated
    broken, kept = record_file(world), record_file(world, "toyset_bg.json")
    kept_text = kept.read_text()
    truncate(broken)
    assert not is_record(broken) and is_record(kept)
    assert run_cli(world, "--skip-existing") == 0
    out = capsys.readouterr().out
    assert "nothing evaluated" not in out and "| toy " in out
    recomputed = strict_json(broken.read_text())
    for key in NUMBERS:
        assert recomputed[key] == reference[TOY][key], key
    assert kept.read_text() == kept_text  # a complete record is still kept as it is
    assert run_cli(world, "--skip-existing") == 0
    assert "nothing evaluated" in capsys.readouterr().out


@pytest.mark.parametrize("change, reason", [
    (lambda r: r.update(schema=RECORD_SCHEMA + 1), "record schema 2; this version reads schema 1"),
    (lambda r: r.pop("benchmark"), "incomplete record (no benchmark)"),
    (lambda r: r["protocol"].pop("hash"), "incomplete record (no protocol.hash)"),
    (lambda r: r.update(miou="55"), "incomplete record (miou is '55')"),
], ids=["schema", "benchmark", "hash", "miou"])
def test_a_record_of_another_schema_or_with_a_missing_key_is_not_a_record(evaluated, change, reason):
    world, _ = evaluated
    path = record_file(world)
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    assert read_record(path) == (None, reason) and not is_record(path)


def test_json_that_is_no_record_is_passed_over_silently(evaluated):
    world, _ = evaluated
    (record_file(world).parent / "bench.json").write_text(json.dumps({"schema": 1, "method": {}, "images": 3}))
    records, unreadable = read_records([world["results"]])
    assert len(records) == 2 and unreadable == []


# item 7: typos in the table options ----------------------------------------------------------------------------


def test_table_commands_refuse_names_that_exist_nowhere(evaluated, capsys):
    world, _ = evaluated
    results = str(world["results"])
    cases = [
        (["leaderboard", "--results", results, "--protocol", "synthtic"],
         "error: --protocol 'synthtic': no such protocol (did you mean 'synthetic'?); shipped: "),
        (["build", results, "--protocol", "toyy"],
         "error: --protocol 'toyy': no such protocol (did you mean 'toy'?); shipped: "),
        (["leaderboard", "--results", results, "--benchmarks", "toyset,synthetc"],
         "error: --benchmarks 'synthetc': no such benchmark in the records; benchmarks: toyset, toyset_bg"),
        (["build", results, "--protocol", "toy", "--benchmarks", "toyste"],
         "error: --benchmarks 'toyste': no such benchmark in protocol 'toy' (did you mean 'toyset'?); "
         "benchmarks: toyset, toyset_bg"),
        (["leaderboard", "--results", results, "--protocol", str(world["protocol"]), "--benchmarks", "ade"],
         "error: --benchmarks 'ade': no such benchmark in protocol 'toy'; benchmarks: toyset, toyset_bg"),
        (["leaderboard", "--results", "/nonexistent"], "error: --results /nonexistent: no such folder"),
        (["build", results, "/nonexistent"], "error: no such results folder or record file: /nonexistent"),
    ]
    for command, message in cases:
        assert main(command) == 2, command
        captured = capsys.readouterr()
        (line,) = error_lines(captured.err)
        assert line.startswith(message), (command, line)
        assert captured.out == ""
    shipped = "error: --protocol 'synthtic': no such protocol (did you mean 'synthetic'?); shipped: "
    assert main(["leaderboard", "--results", results, "--protocol", "synthtic"]) == 2
    line = capsys.readouterr().err.strip()
    assert "synthetic" in line[len(shipped):] and line.endswith("; in the records: toy")


def test_names_found_in_the_records_or_the_protocol_are_accepted(evaluated, capsys):
    world, _ = evaluated
    results = str(world["results"])
    assert main(["leaderboard", "--results", results, "--protocol", "toy", "--benchmarks", "toyset_bg"]) == 0
    assert "toyset_bg" in capsys.readouterr().out
    assert main(["build", results, "--protocol", str(world["protocol"]), "--benchmarks", "toyset"]) == 0


def test_the_default_results_folder_missing_means_no_records_yet(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZSSEG_RESULTS", raising=False)
    assert main(["leaderboard"]) == 0
    assert "No records yet" in capsys.readouterr().out
    monkeypatch.setenv("ZSSEG_RESULTS", str(tmp_path / "resluts"))
    assert main(["leaderboard"]) == 2
    assert capsys.readouterr().err.startswith(f"error: $ZSSEG_RESULTS {tmp_path / 'resluts'}: no such folder")


def test_reproduce_refuses_a_method_without_published_entries(tmp_path, capsys):
    assert main(["reproduce", "--methods", "tcll", "--dry-run", "--report", str(tmp_path / "r.md")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("error: --methods 'tcll': no published entry (did you mean 'tcl'?); published methods: ")
    assert not (tmp_path / "r.md").exists()


# item 9: numbers -----------------------------------------------------------------------------------------------

EVAL = ["eval", "--method", "toy", "--protocol", "toy"]


@pytest.mark.parametrize("argv, message", [
    ([*EVAL, "--limit", "0"], "zsbench eval: error: argument --limit: expected an integer >= 1, got '0'"),
    ([*EVAL, "--limit", "-3"], "zsbench eval: error: argument --limit: expected an integer >= 1, got '-3'"),
    ([*EVAL, "--batch-size", "0"], "zsbench eval: error: argument --batch-size: expected an integer >= 1, got '0'"),
    ([*EVAL, "--workers", "-1"], "zsbench eval: error: argument --workers: expected an integer >= 0, got '-1'"),
    ([*EVAL, "--save-every", "-5"], "zsbench eval: error: argument --save-every: expected a number >= 0, got '-5'"),
    ([*EVAL, "--save-every", "nan"], "zsbench eval: error: argument --save-every: expected a number >= 0, got 'nan'"),
    ([*EVAL, "--save-vis", "-1"], "zsbench eval: error: argument --save-vis: expected an integer >= 0, got '-1'"),
    ([*EVAL, "--limit", "2.5"], "zsbench eval: error: argument --limit: expected an integer >= 1, got '2.5'"),
    (["bench", "--method", "toy", "--protocol", "toy", "--benchmark", "x", "--n", "0"],
     "zsbench bench: error: argument --n: expected an integer >= 1, got '0'"),
    (["bench", "--method", "toy", "--protocol", "toy", "--benchmark", "x", "--repeat", "0"],
     "zsbench bench: error: argument --repeat: expected an integer >= 1, got '0'"),
    (["bench", "--method", "toy", "--protocol", "toy", "--benchmark", "x", "--warmup", "-1"],
     "zsbench bench: error: argument --warmup: expected an integer >= 0, got '-1'"),
    (["demo", "--batch-size", "0"], "zsbench demo: error: argument --batch-size: expected an integer >= 1, got '0'"),
    (["demo", "--workers", "-2"], "zsbench demo: error: argument --workers: expected an integer >= 0, got '-2'"),
    (["predict", "--method", "toy", "--image", "a.png", "--classes", "cat", "--out", "o.png", "--alpha", "2"],
     "zsbench predict: error: argument --alpha: expected a number from 0 to 1, got '2'"),
    (["predict", "--method", "toy", "--image", "a.png", "--classes", "cat", "--out", "o.png", "--batch-size", "-1"],
     "zsbench predict: error: argument --batch-size: expected an integer >= 1, got '-1'"),
    (["predict", "--method", "toy", "--image", "a.png", "--classes", "cat", "--out", "o.png", "--threshold", "inf"],
     "zsbench predict: error: argument --threshold: expected a number, got 'inf'"),
    (["reproduce", "--tolerance", "-1"], "zsbench reproduce: error: argument --tolerance: expected a number >= 0"),
])
def test_numeric_flags_out_of_range_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(message)


def test_save_every_zero_still_means_after_every_batch(toy_world):
    assert run_cli(toy_world, "--save-every", "0", "--limit", "1") == 0


def test_a_record_without_scored_pixels_is_strict_json_with_null_scores(toy_world):
    from benchmark.method_run import MethodRun
    from benchmark.metrics import ConfusionMatrix
    from benchmark.protocol import load_protocol
    from benchmark.records import Execution, Outcome, build_record
    from tests.toy_method import ToyMethod

    protocol = load_protocol(toy_world["protocol"])
    spec = protocol.benchmarks["toyset"]
    metric = ConfusionMatrix(spec.dataset.num_classes, spec.dataset.ignore_index)
    execution = Execution(0.0, 0, 0, "cpu", 1, 1, False)
    record = build_record(MethodRun(ToyMethod(), {}, None), protocol, Outcome(spec, metric, 0, None, ("x",)),
                          execution)
    strict_json(json.dumps(record))
    assert record["miou"] is None and record["aacc"] is None and record["macc"] is None
    with pytest.raises(BenchmarkError, match=r"at method\.config\.threshold; records are strict JSON"):
        build_record(MethodRun(ToyMethod(threshold=float("nan")), {}, None), protocol,
                     Outcome(spec, metric, 0, None, ("x",)), execution)


def test_older_records_with_nan_still_make_every_table(evaluated, capsys):
    world, _ = evaluated
    path = record_file(world)
    record = json.loads(path.read_text())
    record["miou"], record["aacc"] = float("nan"), float("inf")
    record["per_class_iou"]["sky"] = float("nan")
    path.write_text(json.dumps(record))  # what older versions wrote: NaN, Infinity
    assert is_record(path)
    base = ["leaderboard", "--results", str(world["results"])]
    assert main([*base, "--per-class"]) == 0
    out = capsys.readouterr().out
    toy_row = next(line for line in out.splitlines() if line.startswith("| toy "))
    assert "|        - |" in toy_row and "NaN" not in out and "inf" not in out, out
    for fmt in ("json", "csv", "latex", "html"):
        assert main([*base, "--format", fmt, "--per-class"]) == 0, fmt
        text = capsys.readouterr().out
        assert "NaN" not in text and "Infinity" not in text, fmt
        if fmt == "json":
            strict_json(text)
    assert main(["build", str(world["results"]), str(path)]) == 0  # the same record twice: no false warning
    assert "warning" not in capsys.readouterr().err
