"""Issue 24, items 8, 10 and 11: check-data --read applies eval's checks; discoverability (method descriptions,
help with defaults, --version, eval's device/precision line and aAcc/mAcc, no random-init notice); pictures
(overlay outlines and names, the HTML board's provenance, one chart palette, files readable under the umask)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.cli import build_parser, main
from benchmark.protocol import load_protocol
from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip
from tests.fakedata import put_value_9_in_label, shrink_label

RANDOM_INIT_NOTICE = "No pretrained weights loaded"


def eval_cli(world, *extra, method="tests.toy_method:ToyMethod"):
    return main([
        "eval", "--method", method, "--protocol", str(world["protocol"]), "--data-root", str(world["data"]),
        "--results", str(world["results"]), "--workers", "0", "--no-progress", "--batch-size", "4", *extra,
    ])


def one_line_error(capsys, code: int, expected: int = 2) -> str:
    err = capsys.readouterr().err.strip()
    assert code == expected and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


def labels_of(world, benchmark: str) -> list[Path]:
    return sorted((world["data"] / benchmark / "labels").glob("*.png"))


# --- 8. check-data --read rejects what eval rejects, with eval's reason --------------------------------------

@pytest.mark.parametrize(("damage", "reason"), [(shrink_label, "label size 5x5 differs from image"),
                                                (put_value_9_in_label, "label values [9] are outside")])
def test_check_data_read_reports_what_eval_rejects_with_evals_reason(toy_world, capsys, damage, reason):
    victim = labels_of(toy_world, "toyset")[3]
    damage(victim)
    check = ["check-data", "--protocol", str(toy_world["protocol"]), "--data-root", str(toy_world["data"])]
    assert main(check) == 0  # counting alone finds every file
    capsys.readouterr()
    assert main([*check, "--read"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^toyset +bad +7/7  -> eval stops on 1 file\(s\) below", out, re.M), out
    assert re.search(r"^toyset_bg +found +7/7$", out, re.M), out
    (line,) = [line for line in out.splitlines() if line.startswith("    bad: ")]
    listed = line.removeprefix("    bad: ")
    assert listed.startswith(f"{victim}: ") and reason in listed

    error = one_line_error(capsys, eval_cli(toy_world, "--benchmarks", "toyset"))
    assert listed in error  # eval stops on the same file, with the same words


def test_synthetic_cards_name_zsbench_synth_as_their_remedy(tmp_path, capsys):
    root = tmp_path / "nowhere"
    assert main(["check-data", "--datasets", "synthetic,synthetic_bg,voc21", "--data-root", str(root)]) == 1
    lines = capsys.readouterr().out.splitlines()
    synthetic = next(line for line in lines if line.startswith("synthetic "))
    assert f"generate it with `zsbench synth --data-root {root}`" in synthetic and "zsbench demo" in synthetic
    assert "download" not in synthetic.replace("nothing to download", "")
    assert "zsbench synth" in next(line for line in lines if line.startswith("synthetic_bg "))
    assert "datasets/README.md" in next(line for line in lines if line.startswith("voc21 "))


def test_predict_names_a_missing_image_as_such(toy_world, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    code = main(["predict", "--method", "tests.toy_method:ToyMethod", "--image", str(missing), "--classes", "cat,dog",
                 "--out", str(tmp_path / "out.png"), "--protocol", str(toy_world["protocol"])])
    error = one_line_error(capsys, code)
    assert error == f"error: {missing}: image file is missing (--image); check the path"
    assert not (tmp_path / "out.png").exists()


# --- 10. discoverability --------------------------------------------------------------------------------------

def test_every_registered_method_has_a_description(capsys):
    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = {line.split()[0] for line in lines}
    assert {"clip", "maskclip", "sclip", "clearclip", "naclip", "tcl"} <= names
    for line in lines:
        name, _, description = line.partition(" ")
        assert description.strip(), f"{name} has no description"
    assert any(re.match(r"maskclip +MaskCLIP \(Zhou et al\., ECCV 2022\)", line) for line in lines)


def test_version_prints_the_package_version_and_exits(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"zsbench {version('zsseg-bench')}") and "torch" in out


def parsers(parser: argparse.ArgumentParser, path: str = "zsbench"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from parsers(command, f"{path} {name}")


def test_every_flag_has_help_and_help_shows_defaults(capsys):
    for path, parser in parsers(build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{path} {'/'.join(action.option_strings) or action.dest} has no help"
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--device DEVICE", "--batch-size BATCH_SIZE", "--workers WORKERS", "--save-every SAVE_EVERY"):
        assert shown in text
    assert "(default: cpu)" in text and "crops per forward pass (default: 16)" in text
    assert "(default: 2)" in text and "(default: 60.0)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default: $ZSSEG_DATA or ./data)") == 1  # a default the text already says, once


def test_eval_names_device_and_precision_first_and_shows_aacc_and_macc(toy_world, capsys):
    protocol = load_protocol(toy_world["protocol"])
    assert eval_cli(toy_world, "--benchmarks", "toyset") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"toy on cpu, fp32 (protocol toy {protocol.short_hash})"
    (record_file,) = toy_world["results"].rglob("toyset.json")
    record = json.loads(record_file.read_text())
    assert re.search(rf"^\| toy +\| toyset +\| {record['aacc']:.2f} +\| {record['macc']:.2f} +\|$", out, re.M), out
    assert re.search(r"^\| method +\| benchmark +\| aAcc +\| mAcc +\|$", out, re.M)


def test_loading_a_tiny_clip_file_logs_no_random_init_notice(tmp_path, caplog):
    import open_clip

    from methods.clip_backbone import load_clip

    weights = tmp_path / "tinyclip.pt"
    caplog.set_level(logging.WARNING)
    torch.save(create_tiny_clip(seed=0).state_dict(), weights)
    load_clip(MODEL_NAME, str(weights))
    assert RANDOM_INIT_NOTICE not in caplog.text
    open_clip.create_model(MODEL_NAME, pretrained=None)  # outside the suite's loading, open_clip still says it
    assert RANDOM_INIT_NOTICE in caplog.text


def test_a_clip_baseline_run_on_a_tiny_clip_file_logs_no_random_init_notice(toy_world, tmp_path, caplog):
    weights = tmp_path / "tinyclip.pt"
    torch.save(create_tiny_clip(seed=0).state_dict(), weights)
    caplog.set_level(logging.WARNING)
    assert eval_cli(toy_world, "--benchmarks", "toyset", "--opt", f"model={MODEL_NAME}",
                    "--opt", f"pretrained={weights}", "--opt", "text_cache=false", method="maskclip") == 0
    assert RANDOM_INIT_NOTICE not in caplog.text


# --- 11. pictures and shared files ----------------------------------------------------------------------------

def test_overlay_outlines_regions_and_sets_apart_classes_not_predicted():
    from benchmark.visualize import OUTLINE_COLOUR, overlay

    image = np.full((120, 160, 3), 90, np.uint8)
    prediction = np.zeros((120, 160), np.int64)
    prediction[:, 80:] = 1
    names = ["sky", "grass", "cat"]
    with_absent = np.asarray(overlay(image, prediction, names))
    assert tuple(with_absent[60, 79]) == OUTLINE_COLOUR and tuple(with_absent[60, 80]) == OUTLINE_COLOUR
    assert tuple(with_absent[60, 40]) != OUTLINE_COLOUR
    all_predicted = np.asarray(overlay(image, prediction, names[:2]))
    assert with_absent.shape[0] > all_predicted.shape[0]  # the "not predicted: cat" note
    assert with_absent.shape[1] == 160


def test_html_board_shows_the_protocol_hash_suite_version_commit_and_date(toy_world, tmp_path):
    assert eval_cli(toy_world) == 0
    page = tmp_path / "board.html"
    assert main(["leaderboard", "--results", str(toy_world["results"]), "--out", str(page)]) == 0
    content = page.read_text()
    record = json.loads(next(toy_world["results"].rglob("toyset.json")).read_text())
    assert f"Protocol hash <code>{load_protocol(toy_world['protocol']).hash}</code>" in content
    assert f"by zsseg-bench <code>{version('zsseg-bench')}</code>" in content
    assert f"Measured {record['time'][:10]} " in content
    if record.get("git_commit"):
        assert f"at commit <code>{record['git_commit'][:12]}" in content


def test_html_bars_and_the_plot_share_one_palette(tmp_path):
    from benchmark.formats import RenderOptions, render
    from benchmark.formats.plot import CHART_COLOURS, save_plot
    from benchmark.leaderboard import build_boards

    records = json.loads((Path(__file__).parent / "data" / "leaderboard_records.json").read_text())
    boards = build_boards(records)[:1]
    page = render(boards, "html", RenderOptions())
    fills = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"><title>', page)
    assert fills[: len(boards[0].rows)] == list(CHART_COLOURS[: len(boards[0].rows)])
    pixels = np.asarray(Image.open(save_plot(boards, tmp_path / "plot.png")).convert("RGB")).reshape(-1, 3)
    present = {tuple(pixel) for pixel in np.unique(pixels, axis=0)}
    for colour in CHART_COLOURS[: len(boards[0].rows)]:
        assert tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5)) in present, colour


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_files_the_suite_writes_follow_the_umask(toy_world, umask, mode):
    from benchmark.atomic import write_json_atomic

    previous = os.umask(umask)
    try:
        write_json_atomic(toy_world["root"] / "shared" / "a.json", {"a": 1})
        assert eval_cli(toy_world, "--benchmarks", "toyset") == 0
    finally:
        os.umask(previous)
    assert (toy_world["root"] / "shared" / "a.json").stat().st_mode & 0o777 == mode
    records = [p for p in toy_world["results"].rglob("*.json")]
    assert records and {p.stat().st_mode & 0o777 for p in records} == {mode}
