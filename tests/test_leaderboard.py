"""Leaderboard formats against golden files, escaping, and the `leaderboard` / `build` commands.

Regenerate the golden files with `ZSBENCH_UPDATE_GOLDEN=1 pytest tests/test_leaderboard.py`, then read
every changed file before committing it.
"""

import copy
import csv
import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.formats import FORMATS, RenderOptions, format_for, render
from benchmark.leaderboard import MixedProtocolError, build_boards, check_one_hash_per_protocol, miou_table
from benchmark.published import load_published
from benchmark.results import write_json_atomic

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
SUFFIX = {"md": "md", "latex": "tex", "csv": "csv", "html": "html", "json": "json"}
SCRIPT = "<script>alert('x')</script>"


def fixture_records() -> list[dict]:
    return json.loads((DATA / "leaderboard_records.json").read_text())


def published_entries() -> list:
    return load_published([DATA / "published_fixture.yaml"]).entries


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ZSBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing; run with ZSBENCH_UPDATE_GOLDEN=1 and read the file"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", ["plain", "published", "per_class"])
def test_every_format_matches_its_golden_file(fmt, variant):
    boards = build_boards(fixture_records(), published_entries() if variant == "published" else None)
    text = render(boards, fmt, RenderOptions(per_class=variant == "per_class"))
    check_golden(f"leaderboard_{variant}.{SUFFIX[fmt]}", text)


def test_boards_keep_partial_rows_apart_and_average_only_complete_rows():
    (board, split_board) = build_boards(fixture_records())
    labels = [row.label for row in board.rows]
    assert labels == ["naclip (pamr=True)", "naclip (pamr=False)", "tcl", SCRIPT, "chance-uniform (partial)"]
    assert [c.label for c in split_board.columns] == ["voc20 mIoU-S", "voc20 mIoU-U", "voc20 hIoU", "avg"]
    script_row = board.rows[3]
    assert script_row.cells[board.columns[-1]].value is None  # no ade20k: no average
    assert board.ranks(board.columns[0]) == {0: 1, 1: 2}  # the partial row is never ranked


def test_the_authors_number_wins_over_a_third_party_re_report():
    (board, _) = build_boards(fixture_records(), published_entries())
    naclip_off = next(row for row in board.rows if row.label == "naclip (pamr=False)")
    cell = naclip_off.cells[board.columns[0]]
    assert (cell.published, cell.third_party) == (58.9, False)
    naclip_on = next(row for row in board.rows if row.label == "naclip (pamr=True)")
    assert naclip_on.cells[board.columns[0]].published is None  # the entry's run options say pamr: false


def test_a_method_named_script_is_escaped_in_every_format():
    boards = build_boards(fixture_records(), published_entries())
    html = render(boards, "html", RenderOptions(per_class=True))
    assert SCRIPT not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<b>lamp</b>" not in html and "&lt;b&gt;lamp&lt;/b&gt;" in html
    assert html.count("<script>") == 1  # the page's own sorting script
    latex = render(boards, "latex", RenderOptions(per_class=True))
    assert "<script>" not in latex and r"\textless{}script\textgreater{}alert('x')" in latex
    assert r"ViT \& co\_1 \%\$\#\{\}\textasciitilde{}\textasciicircum{}\textbackslash{}" in latex
    markdown = render(boards, "md")
    assert SCRIPT not in markdown and r"\<script\>alert('x')\</script\>" in markdown
    rows = list(csv.DictReader(io.StringIO(render(boards, "csv"))))
    assert SCRIPT in [row["method"] for row in rows]  # CSV and JSON keep the text itself
    assert json.loads(render(boards, "json"))["boards"][0]["rows"][3]["label"] == SCRIPT


def test_format_is_taken_from_the_flag_then_the_suffix():
    assert format_for("board.tex", None) == "latex"
    assert format_for("board.tex", "csv") == "csv"
    assert format_for(None, None) == "md"


def write_records(folder: Path, records: list[dict]) -> None:
    for index, record in enumerate(records):
        run = record["method"]["run_id"]
        write_json_atomic(folder / record["protocol"]["name"] / run / f"{record['benchmark']}-{index}.json", record)


def test_build_refuses_two_hashes_of_one_protocol_naming_both(tmp_path, capsys):
    records = fixture_records()
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    write_records(machine_a, [r for r in records if r["method"]["name"] == "tcl"])
    changed = [copy.deepcopy(r) for r in records if r["method"]["name"] == "naclip"]
    for record in changed:
        record["protocol"]["hash"] = "9" * 64
    write_records(machine_b, changed)
    out = tmp_path / "board.md"
    assert main(["build", str(machine_a), str(machine_b), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "3f2a9c0d81b4" in err and "999999999999" in err
    assert str(machine_a) in err and str(machine_b) in err and "fixture3" in err
    assert not out.exists()
    with pytest.raises(MixedProtocolError):
        check_one_hash_per_protocol(records + changed)


def test_build_merges_folders_from_two_machines_into_one_table(tmp_path, capsys):
    records = fixture_records()
    write_records(tmp_path / "a", [r for r in records if r["method"]["name"] == "tcl"])
    write_records(tmp_path / "b", [r for r in records if r["method"]["name"] != "tcl"])
    write_records(tmp_path / "b", [r for r in records if r["method"]["name"] == "tcl"])  # the same run twice
    out = tmp_path / "board.csv"
    assert main(["build", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--protocol", "fixture3",
                 "--partial"]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [row["method"] for row in rows] == [
        "naclip (pamr=True)", "naclip (pamr=False)", "tcl", SCRIPT, "chance-uniform (partial)"]
    assert rows[2]["voc21"] == "55.02" and rows[2]["avg"] == "34.13"


def test_leaderboard_command_on_real_runs(toy_world, tmp_path, capsys):
    from tests.test_runner import run_cli

    assert run_cli(toy_world) == 0
    assert run_cli(toy_world, "--limit", "2") == 0
    capsys.readouterr()
    base = ["leaderboard", "--results", str(toy_world["results"])]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "## Protocol `toy`" in out and "| toy " in out and "partial" not in out
    assert main([*base, "--partial", "--protocol", str(toy_world["protocol"]), "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "toy (partial)" in out and "### Per-class IoU (%): toyset_bg" in out and "| grass " in out
    latex = tmp_path / "table.tex"
    assert main([*base, "--out", str(latex)]) == 0
    assert r"\toprule" in latex.read_text() and r"\textbf{" in latex.read_text()


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from benchmark.formats.plot import save_plot

    out = save_plot(build_boards(fixture_records()), tmp_path / "plot.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 600


def test_miou_table_keeps_its_shape_for_eval_and_the_demo():
    records = [r for r in fixture_records() if r["protocol"]["name"] == "fixture3"]
    table = miou_table(records, ["voc21", "context60", "ade20k"])
    assert table.splitlines()[0].split("|")[1].strip() == "method"
    assert "| tcl " in table and "34.13" in table


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PROBE = """<script>
(function () {
  var table = document.querySelector("table.leaderboard");
  var header = table.tHead.rows[0].cells[2];
  function order() {
    var rows = table.tBodies[0].rows;
    return Array.prototype.map.call(rows, function (row) { return row.cells[0].textContent; }).join("|");
  }
  header.click();
  document.body.setAttribute("data-first-click", order());
  header.click();
  document.body.setAttribute("data-second-click", order());
})();
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_page_opens_in_headless_chromium_without_console_messages_and_sorts(tmp_path):
    page = render(build_boards(fixture_records()), "html", RenderOptions(per_class=True))
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    path = tmp_path / "board.html"
    path.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = done.stdout
    assert 'data-sortable="ready"' in dom and "<table" in dom and "naclip (pamr=True)" in dom
    first = html.unescape(re.search(r'data-first-click="([^"]*)"', dom).group(1)).split("|")
    second = html.unescape(re.search(r'data-second-click="([^"]*)"', dom).group(1)).split("|")
    descending = ["naclip (pamr=True)", "naclip (pamr=False)", "tcl", SCRIPT, "chance-uniform (partial)"]
    assert first == descending and second == descending[::-1]


def test_the_hand_written_part_of_a_page_survives_regeneration(tmp_path):
    from benchmark.formats.markdown import GENERATED_MARKER

    folder = tmp_path / "results"
    write_records(folder, fixture_records())
    page = tmp_path / "README.md"
    page.write_text(f"# Leaderboard\n\nHand-written.\n\n{GENERATED_MARKER}\nold tables\n")
    command = ["leaderboard", "--results", str(folder), "--out", str(page)]
    assert main(command) == 0
    first = page.read_text()
    assert first.startswith("# Leaderboard\n\nHand-written.\n\n" + GENERATED_MARKER + "\n\n## Protocol `fixture3`")
    assert "old tables" not in first and "# zsseg-bench leaderboard" not in first
    assert main(command) == 0 and page.read_text() == first


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
@pytest.mark.parametrize("variant", ["plain", "published", "per_class"])
def test_latex_golden_files_compile(tmp_path, variant):
    table = GOLDEN / f"leaderboard_{variant}.tex"
    document = tmp_path / "paper.tex"
    document.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                        f"\\input{{{table.as_posix()}}}\n\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]


def test_published_numbers_no_measured_row_shows_get_rows_of_their_own_after_the_measured_ones(tmp_path):
    extra = tmp_path / "published_extra.yaml"
    extra.write_text(
        "entries:\n"
        "  - &sc {method: scclip, backbone: ViT-B/16, protocol: scclip, dataset: voc21, miou: 64.6,"
        " source: a paper's Table 1}\n"
        "  - {<<: *sc, dataset: context60, miou: 36.9}\n"
        "  - {<<: *sc, dataset: ade20k, miou: 20.1}\n"
        "  - {<<: *sc, dataset: ade20k, miou: 19.0, third_party: true, source: a re-run}\n"
        "  - &one {method: sfpx, backbone: ViT-B/16, protocol: sfpx, dataset: voc21, miou: 61.4, source: a log}\n"
        "  - &rerun {<<: *one, miou: 56.8, third_party: true, source: a full re-run}\n"
        "  - {<<: *rerun, dataset: context60, miou: 32.3}\n"
        "  - {<<: *rerun, dataset: ade20k, miou: 18.1}\n"
    )
    entries = published_entries() + load_published([extra]).entries
    board = next(board for board in build_boards(fixture_records(), entries) if board.protocol == "fixture3")
    row = next(row for row in board.rows if row.name == "scclip")
    assert row.published_only and row.label == "scclip (published, protocol scclip)"
    assert [cell.value for cell in row.cells.values()] == [None] * len(row.cells)
    average = round((64.6 + 36.9 + 20.1) / 3, 2)  # the authors' ADE20K, not the re-run's
    assert [row.cell(column).published for column in board.columns] == [64.6, 36.9, 20.1, average]
    first_published = next(index for index, other in enumerate(board.rows) if other.published_only)
    assert all(other.published_only for other in board.rows[first_published:])  # measured rows first
    sfpx = next(row for row in board.rows if row.name == "sfpx")  # one source's row, not the best per benchmark
    assert [sfpx.cell(column).published for column in board.columns[:3]] == [56.8, 32.3, 18.1]
    assert sfpx.label == "sfpx (published, protocol sfpx, third party)"
    assert sum(other.name == "naclip" for other in board.rows) == 2  # shown beside a measured row: no row of its own


def test_leaderboard_of_a_protocol_without_runs_shows_the_published_rows(tmp_path, capsys):
    empty = tmp_path / "results"
    empty.mkdir()
    assert main(["leaderboard", "--protocol", "tcl8", "--published", "--results", str(empty)]) == 0
    lines = capsys.readouterr().out.splitlines()
    tcl = next(line for line in lines if line.startswith("| tcl \\[pamr\\] (published)"))
    assert "55.0" in tcl and "37.2" in tcl  # Table 2's row and its average
    assert any(line.startswith("| sclip (published, protocol sclip)") for line in lines)
