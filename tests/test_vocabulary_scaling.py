"""The vocabulary-scaling view (`--view vocabulary`) and the long per-class layout for 459 and 847 classes.

Records are built here; every expected drop is worked out by hand from the numbers below. Regenerate the golden
files with `ZSBENCH_UPDATE_GOLDEN=1 pytest tests/test_vocabulary_scaling.py`, then read every changed file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.errors import BenchmarkError, ConfigError
from benchmark.formats import FORMATS, RenderOptions, render, render_vocabulary
from benchmark.leaderboard import WIDE_CLASS_LIMIT, MixedProtocolError, build_boards, per_class_layout
from benchmark.results import write_json_atomic
from benchmark.vocabulary_scaling import (
    BenchmarkPair,
    VocabularyPairs,
    build_vocabulary_boards,
    load_vocabulary_pairs,
)
from tests.test_leaderboard import SCRIPT, SUFFIX, check_golden

OVS5 = "a" * 64
LARGE = "b" * 64
TCL8 = "c" * 64
TCL8_OLD = "d" * 64
PAIRS = VocabularyPairs(
    Path("vocabulary_pairs.yaml"),
    (BenchmarkPair("context59", "context459", "PASCAL Context (59 vs 459 classes)"),
     BenchmarkPair("ade20k", "ade847", "ADE20K (150 vs 847 classes)")),
    {"tcl8_large": "tcl8"},
)


def record(protocol: str, digest: str, run: str, benchmark: str, miou: float | None, partial: bool = False,
           per_class: dict[str, float | None] | None = None, name: str | None = None,
           backbone: str = "ViT-B/16") -> dict:
    method = {"name": name or run.rsplit("-", 1)[0], "run_id": run, "config": {}, "checkpoint": None,
              "backbone": backbone}
    return {
        "schema": 1, "protocol": {"name": protocol, "hash": digest}, "benchmark": benchmark, "method": method,
        "dataset": {"card": benchmark}, "partial": partial, "miou": miou, "per_class_iou": per_class or {},
        "time": "2025-01-01T00:00:00+00:00",
    }


def vocabulary_records() -> list[dict]:
    return [
        # ovs5: both sides of both pairs in one protocol
        record("ovs5", OVS5, "tcl-0000000001", "context59", 33.17),
        record("ovs5", OVS5, "tcl-0000000001", "context459", 9.42),
        record("ovs5", OVS5, "tcl-0000000001", "ade20k", 17.1),
        record("ovs5", OVS5, "tcl-0000000001", "ade847", 5.85),
        record("ovs5", OVS5, "tcl-0000000001", "voc20", 80.0),  # in no pair: not shown
        record("ovs5", OVS5, "proxyclip-0000000002", "context59", 39.3),
        record("ovs5", OVS5, "proxyclip-0000000002", "context459", 12.6),
        record("ovs5", OVS5, "proxyclip-0000000002", "ade847", 7.75),  # no ade20k: that drop stays empty
        record("ovs5", OVS5, "script-0000000003", "ade847", 4.0, name=SCRIPT, backbone="ViT & co_1 %$#"),
        # tcl8_large: the large side; its small side from tcl8
        record("tcl8_large", LARGE, "tcl-0000000001", "ade847", 6.0),
        record("tcl8_large", LARGE, "tcl-0000000001", "context459", 10.0),
        record("tcl8_large", LARGE, "naclip-0000000004", "ade847", 4.5),
        record("tcl8", TCL8, "tcl-0000000001", "ade20k", 16.0),
        record("tcl8", TCL8, "tcl-0000000001", "context59", 33.0),
        record("tcl8", TCL8, "naclip-0000000004", "context59", 35.0),  # no ade20k
        record("tcl8", TCL8, "sclip-0000000005", "ade20k", 16.1),  # no tcl8_large record: no row
        record("tcl8", TCL8_OLD, "naclip-0000000004", "ade20k", 99.0),  # an older tcl8: never used
    ]


def lookup(name: str) -> tuple[str, set[str]] | None:
    """Protocol files as the tests see them: tcl8's current hash is TCL8; ovs5 and tcl8_large have no file."""
    return (TCL8, {"voc21", "context59", "ade20k"}) if name == "tcl8" else None


def boards_by_protocol() -> dict[str, object]:
    return {board.protocol: board for board in build_vocabulary_boards(vocabulary_records(), PAIRS, lookup)}


def table(board) -> dict[str, list[tuple]]:
    """label -> [(small, large, drop, drop %) per pair]"""
    return {row.label: [tuple(board.values(row, c).get(k) for k in ("small", "large", "drop", "drop_percent"))
                        for c in board.pairs] for row in board.rows}


def test_drops_within_one_protocol_are_exact():
    board = boards_by_protocol()["ovs5"]
    assert [c.pair.large for c in board.pairs] == ["context459", "ade847"]
    assert all((c.small_protocol, c.small_hash) == ("ovs5", OVS5) for c in board.pairs)
    values = table(board)
    # 33.17 - 9.42 = 23.75 points = 71.60 % of 33.17; 17.10 - 5.85 = 11.25 = 65.79 % of 17.10
    assert values["tcl"] == [(33.17, 9.42, 23.75, 71.6), (17.1, 5.85, 11.25, 65.79)]
    # 39.30 - 12.60 = 26.70 = 67.94 % of 39.30; ade20k missing: its drop is empty, ade847 still shown
    assert values["proxyclip"] == [(39.3, 12.6, 26.7, 67.94), (None, 7.75, None, None)]
    assert values[SCRIPT] == [(None, None, None, None), (None, 4.0, None, None)]
    assert [row.label for row in board.rows] == ["proxyclip", "tcl", SCRIPT]  # by mean large mIoU, then partial
    assert board.notes == [] and board.borrowed() == []


def test_a_large_protocol_takes_its_small_side_from_its_base_protocol():
    boards = boards_by_protocol()
    assert sorted(boards) == ["ovs5", "tcl8_large"]  # tcl8 has no large benchmark: no board of its own
    board = boards["tcl8_large"]
    assert all((c.small_protocol, c.small_hash) == ("tcl8", TCL8) for c in board.pairs)
    values = table(board)
    # 33 - 10 = 23 points = 69.70 % of 33; 16 - 6 = 10 points = 62.50 % of 16
    assert values["tcl"] == [(33.0, 10.0, 23.0, 69.7), (16.0, 6.0, 10.0, 62.5)]
    # naclip: context59 but no context459 under tcl8_large; the older tcl8's ade20k (99.0) is never used
    assert values["naclip"] == [(35.0, None, None, None), (None, 4.5, None, None)]
    assert "sclip" not in values  # a tcl8 run without a tcl8_large record gets no row
    assert board.notes == [f"records of protocol tcl8 under other hashes ({TCL8_OLD[:12]}) than its current "
                           f"{TCL8[:12]} are left out"]


def test_without_a_base_protocol_the_small_side_stays_empty_and_says_why():
    pairs = VocabularyPairs(Path("pairs.yaml"), PAIRS.pairs, {})
    board = next(b for b in build_vocabulary_boards(vocabulary_records(), pairs, lookup) if b.protocol == "tcl8_large")
    assert table(board)["tcl"] == [(None, 10.0, None, None), (None, 6.0, None, None)]
    assert board.notes[0] == ("context59: not in protocol tcl8_large, and pairs.yaml names no base protocol for "
                              "tcl8_large")
    assert all(c.small_protocol is None for c in board.pairs)


def test_a_base_protocol_without_a_file_must_have_one_version():
    records = [r for r in vocabulary_records() if r["protocol"]["name"] != "ovs5"]
    with pytest.raises(MixedProtocolError, match="protocol 'tcl8' appears with two hashes"):
        build_vocabulary_boards(records, PAIRS, lambda name: None)
    single = [r for r in records if r["protocol"]["hash"] != TCL8_OLD]
    (board,) = build_vocabulary_boards(single, PAIRS, lambda name: None)
    assert table(board)["tcl"][0] == (33.0, 10.0, 23.0, 69.7)


def test_partial_records_never_share_a_drop_with_full_ones():
    records = [record("ovs5", OVS5, "tcl-0000000001", "context59", 30.0),
               record("ovs5", OVS5, "tcl-0000000001", "context459", 5.0, partial=True)]
    (board,) = build_vocabulary_boards(records, PAIRS, lookup)  # no ade847 anywhere: only the Context pair
    assert table(board) == {"tcl": [(30.0, None, None, None)], "tcl (partial)": [(None, 5.0, None, None)]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_of_the_vocabulary_view_matches_its_golden_file(fmt):
    boards = build_vocabulary_boards(vocabulary_records(), PAIRS, lookup)
    check_golden(f"leaderboard_vocabulary.{SUFFIX[fmt]}", render_vocabulary(boards, fmt))


def test_missing_sides_are_empty_in_every_format_never_a_number():
    boards = build_vocabulary_boards(vocabulary_records(), PAIRS, lookup)
    rows = list(csv.DictReader(io.StringIO(render_vocabulary(boards, "csv"))))
    proxy = {row["large"]: row for row in rows if row["protocol"] == "ovs5" and row["method"] == "proxyclip"}
    assert (proxy["ade847"]["small_miou"], proxy["ade847"]["large_miou"], proxy["ade847"]["drop"],
            proxy["ade847"]["drop_percent"]) == ("", "7.75", "", "")
    assert (proxy["context459"]["drop"], proxy["context459"]["drop_percent"]) == ("26.70", "67.94")
    tcl_large = {row["large"]: row for row in rows if row["protocol"] == "tcl8_large" and row["method"] == "tcl"}
    assert (tcl_large["ade847"]["small_protocol"], tcl_large["ade847"]["small_protocol_hash"]) == ("tcl8", TCL8)
    content = json.loads(render_vocabulary(boards, "json"))
    proxy_json = next(r for r in content["boards"][0]["rows"] if r["method"] == "proxyclip")
    assert proxy_json["pairs"][1] == {"small": "ade20k", "large": "ade847", "small_miou": None, "large_miou": 7.75,
                                      "drop": None, "drop_percent": None}
    markdown = render_vocabulary(boards, "md")
    line = next(line for line in markdown.splitlines() if line.startswith("| proxyclip "))
    assert [cell.strip() for cell in line.strip("|").split("|")] == [
        "proxyclip", "ViT-B/16", "39.30", "12.60", "26.70", "67.94", "-", "7.75", "-", "-"]
    latex = render_vocabulary(boards, "latex")
    assert r"proxyclip & ViT-B/16 & 39.30 & 12.60 & 26.70 & 67.94 & -- & 7.75 & -- & -- \\" in latex
    page = render_vocabulary(boards, "html")
    assert SCRIPT not in page and "&lt;script&gt;" in page
    assert '<td class="num" data-sort="7.7500">7.75</td><td class="num" data-sort="">-</td>' in page


def write(folder: Path, records: list[dict]) -> None:
    for index, item in enumerate(records):
        write_json_atomic(folder / item["protocol"]["name"] / item["method"]["run_id"] / f"{index}.json", item)


def fixture_pairs(tmp_path: Path) -> Path:
    """Protocol names no protocol file has, so that the current protocol files never decide a hash here."""
    path = tmp_path / "pairs.yaml"
    path.write_text("pairs:\n  - {small: context59, large: context459}\n  - {small: ade20k, large: ade847}\n"
                    "base_protocols: {fixture_large: fixture_base}\n")
    return path


def renamed(records: list[dict]) -> list[dict]:
    names = {"tcl8_large": "fixture_large", "tcl8": "fixture_base", "ovs5": "fixture_ovs"}
    for item in records:
        item["protocol"]["name"] = names[item["protocol"]["name"]]
    return [item for item in records if item["protocol"]["hash"] != TCL8_OLD]


def test_leaderboard_and_build_show_the_view_from_results_folders(tmp_path, capsys):
    results = tmp_path / "results"
    write(results, renamed(vocabulary_records()))
    pairs = fixture_pairs(tmp_path)
    base = ["leaderboard", "--results", str(results), "--view", "vocabulary", "--vocabulary-pairs", str(pairs)]
    assert main([*base, "--protocol", "fixture_large", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {row["protocol"] for row in rows} == {"fixture_large"}  # the base protocol only fills the small side
    tcl = next(row for row in rows if row["method"] == "tcl" and row["large"] == "ade847")
    assert (tcl["small_protocol"], tcl["small_miou"], tcl["large_miou"], tcl["drop"]) == (
        "fixture_base", "16.00", "6.00", "10.00")
    assert main([*base, "--benchmarks", "ade847"]) == 0
    out = capsys.readouterr().out
    assert "## Vocabulary scaling: protocol `fixture_large`" in out and "protocol `fixture_ovs`" in out
    assert "context459" not in out and "ade847 drop %" in out  # --benchmarks keeps the pairs it names
    board_file = tmp_path / "vocabulary.tex"
    assert main(["build", str(results), "--view", "vocabulary", "--vocabulary-pairs", str(pairs), "--out",
                 str(board_file)]) == 0
    assert r"\multicolumn{4}{c}{ade20k / ade847}" in board_file.read_text()


def test_build_refuses_two_hashes_of_a_base_protocol_as_it_does_for_the_board(tmp_path, capsys):
    results = tmp_path / "results"
    records = vocabulary_records()
    kept = renamed([dict(item, protocol=dict(item["protocol"])) for item in records])
    old = next(item for item in records if item["protocol"]["hash"] == TCL8_OLD)
    write(results, [*kept, dict(old, protocol={"name": "fixture_base", "hash": TCL8_OLD})])
    command = ["build", str(results), "--view", "vocabulary", "--vocabulary-pairs", str(fixture_pairs(tmp_path))]
    assert main([*command, "--protocol", "fixture_large"]) == 2
    err = capsys.readouterr().err
    assert "protocol 'fixture_base' appears with two hashes" in err and TCL8_OLD[:12] in err
    assert main(["leaderboard", "--results", str(results), *command[2:], "--protocol", "fixture_large"]) == 2
    assert "appears with two hashes" in capsys.readouterr().err  # no protocol file names the current fixture_base


@pytest.mark.parametrize(("extra", "message"), [
    (["--per-class"], "--per-class: not with --view vocabulary"),
    (["--per-class-layout", "long"], "--per-class-layout: not with --view vocabulary"),
    (["--published"], "--published: not with --view vocabulary"),
    (["--plot", "x.png"], "--plot: not with --view vocabulary"),
    (["--benchmarks", "ade874"], "--benchmarks 'ade874': in no pair of"),
])
def test_options_of_the_other_view_are_errors(tmp_path, capsys, extra, message):
    results = tmp_path / "results"
    write(results, renamed(vocabulary_records()))
    command = ["leaderboard", "--results", str(results), "--view", "vocabulary",
               "--vocabulary-pairs", str(fixture_pairs(tmp_path)), *extra]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert message in err, err
    if "ade874" in extra:
        assert "did you mean 'ade847'?" in err


def test_vocabulary_pairs_only_with_the_vocabulary_view(tmp_path, capsys):
    assert main(["leaderboard", "--results", str(tmp_path), "--vocabulary-pairs", "x.yaml"]) == 2
    assert "--vocabulary-pairs: only with --view vocabulary" in capsys.readouterr().err


def test_the_shipped_pairs_file_pairs_the_large_benchmarks_of_the_shipped_protocols():
    from benchmark.vocabulary_scaling import current_protocol

    pairs = load_vocabulary_pairs()
    assert [(p.small, p.large) for p in pairs.pairs] == [("context59", "context459"), ("ade20k", "ade847")]
    assert pairs.base_protocols == {"tcl8_large": "tcl8"}
    for name in ("ovs5", "tcl8_large"):
        found = current_protocol(name)
        if found is None:
            continue
        for pair in pairs.pairs:
            if pair.large in found[1]:
                small_from = current_protocol(pairs.base_protocols.get(name, name))
                assert small_from is not None and pair.small in small_from[1], (name, pair)


BAD_PAIRS = [
    ("schema: 1\n", "missing required key 'pairs'"),
    ("pairs: []\n", "key 'pairs' (line 1) is empty"),
    ("pairs:\n  - {small: context59, large: context459}\nbases: {a: b}\n", "unknown key 'bases' (line 3)"),
    ("pairs:\n  - {small: context59}\n", "pairs[0]: missing required key 'large'"),
    ("pairs:\n  - context59\n", "pairs[0]: expected a mapping, got str"),
    ("pairs:\n  - {small: context59, large: 459}\n", "pairs[0]: key 'large' (line 2) must be a string"),
    ("pairs:\n  - {small: ade847, large: ade847}\n", "pairs[0]: key 'large' (line 2): 'ade847' is also the small"),
    ("pairs:\n  - {small: ade20k, large: ade847}\n  - {small: ade150, large: ade847}\n",
     "pairs[1]: key 'large' (line 3): 'ade847' is already the large benchmark of pairs[0]"),
    ("pairs:\n  - {small: '', large: ade847}\n", "pairs[0]: key 'small' (line 2) must be a non-empty string"),
    ("pairs:\n  - {small: a, large: b}\nbase_protocols:\n  tcl8: tcl8\n",
     "base_protocols: key 'tcl8' (line 4): a protocol cannot be its own base protocol"),
    ("pairs:\n  - {small: a, large: b}\nbase_protocols:\n  tcl8_large: [tcl8]\n",
     "base_protocols: key 'tcl8_large' (line 4) must be a non-empty string"),
    ("pairs:\n  - {small: a, large: b}\nbase_protocols: [tcl8]\n", "key 'base_protocols' (line 3) must be a mapping"),
    ("schema: 2\npairs:\n  - {small: a, large: b}\n", "key 'schema' (line 1): this version reads schema 1, got 2"),
    ("pairs:\n  - {small: a, large: b}\npairs: []\n", "key 'pairs' repeats the one at line 1"),
    ("pairs: [\n", "invalid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_PAIRS)
def test_a_bad_pairs_file_is_an_error_naming_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "vocabulary_pairs.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_vocabulary_pairs(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value), str(error.value)


def test_a_bad_pairs_file_stops_the_command_with_exit_2(tmp_path, capsys):
    path = tmp_path / "pairs.yaml"
    path.write_text("pairs:\n  - {small: context59}\n")
    assert main(["leaderboard", "--results", str(tmp_path), "--view", "vocabulary",
                 "--vocabulary-pairs", str(path)]) == 2
    assert f"{path}: pairs[0]: missing required key 'large'" in capsys.readouterr().err


# --- the long per-class layout ---------------------------------------------------------------------------------

CLASSES_847 = [f"thing {index}, kind {index % 7}" for index in range(847)]  # commas: CSV must quote them


def iou(run: int, index: int) -> float | None:
    return None if index % 100 == 99 else round((index * 37 + run * 11) % 1000 / 10, 2)


def records_847() -> list[dict]:
    runs = ["tcl-0000000001", "proxyclip-0000000002", "naclip-0000000004"]
    return [record("ovs5", OVS5, run, "ade847", 10.0 + number,
                   per_class={name: iou(number, index) for index, name in enumerate(CLASSES_847)})
            for number, run in enumerate(runs)] + [
        record("ovs5", OVS5, runs[0], "voc20", 80.0, per_class={"aeroplane": 70.0, "bicycle": 40.0})]


def test_the_layout_is_wide_up_to_the_limit_and_long_beyond_it():
    def board(classes: int):
        return build_boards([record("p", OVS5, "tcl-1", "b", 1.0, per_class={f"c{i}": 1.0 for i in range(classes)})])

    assert per_class_layout(board(WIDE_CLASS_LIMIT)) == "wide" and WIDE_CLASS_LIMIT >= 171  # COCO-Stuff stays wide
    assert per_class_layout(board(WIDE_CLASS_LIMIT + 1)) == "long"
    assert per_class_layout(board(3), "long") == "long"
    with pytest.raises(BenchmarkError, match=r"benchmark 'ade847' of protocol 'ovs5' has 847 classes, more than"):
        per_class_layout(build_boards(records_847()), "wide")


def test_long_per_class_csv_has_a_row_per_run_and_class_of_847():
    boards = build_boards(records_847())
    rows = list(csv.DictReader(io.StringIO(render(boards, "csv", RenderOptions(per_class=True)))))
    assert len(rows) == 3 * 847 + 2  # three runs on ade847, one on voc20 (two classes)
    assert list(rows[0]) == ["protocol", "protocol_hash", "method", "run_id", "partial", "benchmark", "class_index",
                             "class", "iou"]
    proxy = [row for row in rows if row["run_id"] == "proxyclip-0000000002"]
    assert len(proxy) == 847 and [int(row["class_index"]) for row in proxy] == list(range(847))
    assert proxy[512] == {"protocol": "ovs5", "protocol_hash": OVS5, "method": "proxyclip",
                          "run_id": "proxyclip-0000000002", "partial": "false", "benchmark": "ade847",
                          "class_index": "512", "class": "thing 512, kind 1", "iou": "95.50"}  # (512*37 + 11) % 1000
    assert proxy[199]["iou"] == ""  # no IoU in the record: empty, never a number


def test_long_per_class_layout_in_the_other_formats():
    boards = build_boards(records_847())
    options = RenderOptions(per_class=True)
    content = json.loads(render(boards, "json", options))
    (board,) = content["boards"]
    assert board["per_class_layout"] == "long" and len(board["per_class"]) == 3 * 847 + 2
    assert all("per_class_iou" not in row for row in board["rows"])
    # rows in board order: tcl first (the only run with an average), its ade847 classes, then its voc20 ones
    assert board["per_class"][1] == {"label": "tcl", "run_id": "tcl-0000000001", "partial": False,
                                     "benchmark": "ade847", "class_index": 1, "class": "thing 1, kind 1", "iou": 3.7}
    assert [line["class"] for line in board["per_class"][847:849]] == ["aeroplane", "bicycle"]
    markdown = render(boards, "md", options)
    table_lines = [line for line in markdown.split("### Per-class IoU (%), a row per run")[1].splitlines()
                   if line.startswith("| ")]
    assert len(table_lines) == 1 + 3 * 847 + 2  # the header, then a line per run and class
    assert "| proxyclip | ade847      | 512 | thing 512, kind 1 | 95.50 |" in markdown
    latex = render(boards, "latex", options)
    assert r"\begin{longtable}{llrlr}" in latex and latex.count(r"\begin{longtable}") == 1
    assert r"proxyclip & ade847 & 512 & thing 512, kind 1 & 95.50 \\" in latex
    page = render(boards, "html", RenderOptions())  # without --per-class the page holds them, folded
    long_table = page.split('class="sortable per-class-long"')[1].split("</table>")[0]
    assert long_table.count("<tr") == 1 + 3 * 847 + 2 and "<details><summary>Per-class IoU (%), a row" in page
    assert re.search(r'<td title="proxyclip-0000000002">proxyclip</td><td>ade847</td>'
                     r'<td class="num" data-sort="512">512</td><td>thing 512, kind 1</td><td class="num[^"]*" '
                     r'data-sort="95.5000">95.50</td>', page)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_long_layout_of_the_small_fixture_matches_its_golden_file(fmt):
    from tests.test_leaderboard import fixture_records

    boards = build_boards(fixture_records())
    text = render(boards, fmt, RenderOptions(per_class=True, per_class_layout="long"))
    check_golden(f"leaderboard_per_class_long.{SUFFIX[fmt]}", text)


def test_per_class_layout_on_the_command_line(tmp_path, capsys):
    results = tmp_path / "results"
    write(results, records_847())
    base = ["leaderboard", "--results", str(results), "--format", "csv"]
    assert main([*base, "--per-class-layout", "wide"]) == 2
    assert "use --per-class-layout long" in capsys.readouterr().err
    assert main([*base, "--per-class"]) == 0
    assert capsys.readouterr().out.count("\n") == 1 + 3 * 847 + 2
