"""Issue 24, items 1-5: run identities by content, the device, named demo weights, option errors, checks
before the first image, and method classes that would have written records under another's name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.synthetic.tinyclip import MODEL_NAME, create_tiny_clip
from methods.base import SegMethod

TINY = ["--opt", f"model={MODEL_NAME}", "--opt", "text_cache=false"]


def eval_cli(world, *extra, method="maskclip"):
    return main([
        "eval", "--method", method, "--protocol", str(world["protocol"]), "--data-root", str(world["data"]),
        "--results", str(world["results"]), "--workers", "0", "--no-progress", "--batch-size", "4",
        "--benchmarks", "toyset", *extra,
    ])


def records_under(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json")) if not p.name.startswith(".")]


@pytest.fixture(scope="module")
def tiny_clip_state() -> dict:
    return create_tiny_clip(seed=0).state_dict()


def one_line_error(capsys, code: int, expected: int = 2) -> str:
    err = capsys.readouterr().err.strip()
    assert code == expected and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


# --- 1. identity by content -------------------------------------------------------------------------

def test_the_same_weights_from_two_paths_and_both_spellings_are_one_run_and_one_row(toy_world, tiny_clip_state,
                                                                                 tmp_path, capsys):
    first, second = tmp_path / "w1" / "tinyclip.pt", tmp_path / "elsewhere" / "renamed.pt"
    first.parent.mkdir()
    second.parent.mkdir()
    torch.save(tiny_clip_state, first)
    shutil.copy(first, second)
    runs = []
    for index, weights in enumerate((first, second)):
        world = {**toy_world, "results": tmp_path / f"results{index}"}
        assert eval_cli(world, *TINY, "--opt", f"pretrained={weights}", "--weights-root", str(weights.parent)) == 0
        runs.append(records_under(world["results"])[0]["method"]["run_id"])
    assert runs[0] == runs[1]
    from methods.tcl.adapter import TCL
    from methods.tcl.checkpoint import save_checkpoint

    tcl = TCL(model=MODEL_NAME, pretrained=str(first), checkpoint=None, text_cache=False)
    save_checkpoint(tmp_path / "w1" / "tcl.pt", tcl.masker, tcl.last_block, {})
    tcl_ids = []
    spellings = (["--checkpoint", "tcl.pt"], ["--opt", f"checkpoint={tmp_path / 'w1' / 'tcl.pt'}"])
    for index, spelling in enumerate(spellings):
        world = {**toy_world, "results": tmp_path / f"tcl{index}"}
        assert eval_cli(world, *TINY, "--opt", f"pretrained={first}", "--weights-root", str(tmp_path / "w1"),
                        *spelling, method="tcl") == 0
        tcl_ids.append(records_under(world["results"])[0]["method"]["run_id"])
    assert tcl_ids[0] == tcl_ids[1]
    capsys.readouterr()
    board = tmp_path / "board.md"
    assert main(["build", str(tmp_path / "results0"), str(tmp_path / "results1"), "--out", str(board)]) == 0
    rows = [line for line in board.read_text().splitlines() if line.startswith("| maskclip")]
    assert len(rows) == 1, board.read_text()
    for extra in (["--format", "json"], ["--format", "html"], ["--format", "latex"]):
        assert main(["build", str(tmp_path / "results0"), str(tmp_path / "results1"), "--out",
                     str(tmp_path / f"board.{extra[1]}"), *extra]) == 0
    written = [*tmp_path.rglob("*.json"), *tmp_path.glob("board.*")]
    leaks = [str(path) for path in written if not path.name.startswith(".") and str(tmp_path) in path.read_text()]
    assert leaks == []


# --- 2. the device ----------------------------------------------------------------------------------

@pytest.mark.parametrize("device, message", [("gpu", "unknown device 'gpu'"), ("cuda:7", "cuda")])
def test_an_unavailable_or_unknown_device_is_one_line(toy_world, capsys, device, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    for command in (["eval", "--method", "toy", "--protocol", "synthetic"],
                    ["predict", "--method", "toy", "--image", "x.png", "--classes", "a,b"]):
        with pytest.raises(SystemExit) as stopped:
            main([*command, "--device", device])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and message in err and "Traceback" not in err


# --- 3. the demo's weights by name --------------------------------------------------------------------

def test_the_demo_clip_has_a_name_and_tcl_loads_the_clip_it_was_trained_with(toy_world, tiny_clip_state, tmp_path,
                                                                           capsys):
    weights = tmp_path / "weights"
    code = eval_cli(toy_world, "--opt", "pretrained=synthetic", "--weights-root", str(weights))
    assert "zsbench demo" in one_line_error(capsys, code)
    clip_file = weights / "synthetic" / "seed0" / "tinyclip.pt"
    clip_file.parent.mkdir(parents=True)
    torch.save(tiny_clip_state, clip_file)
    assert eval_cli(toy_world, "--opt", "pretrained=synthetic", "--opt", "text_cache=false",
                    "--weights-root", str(weights)) == 0
    (record,) = records_under(toy_world["results"])
    assert record["method"]["backbone"].startswith(MODEL_NAME)
    spelled_out = {**toy_world, "results": tmp_path / "spelled_out"}
    assert eval_cli(spelled_out, *TINY, "--opt", f"pretrained={clip_file}", "--weights-root", str(weights)) == 0
    assert records_under(spelled_out["results"])[0]["method"]["run_id"] == record["method"]["run_id"]
    from benchmark.paths import file_sha256
    from methods.tcl.adapter import TCL
    from methods.tcl.checkpoint import save_checkpoint

    tcl = TCL(model=MODEL_NAME, pretrained=str(clip_file), checkpoint=None, text_cache=False)
    meta = {"clip_model": MODEL_NAME, "clip_pretrained": "/gone/elsewhere/tinyclip.pt",
            "clip_sha256": file_sha256(clip_file)}
    save_checkpoint(weights / "synthetic" / "seed0" / "tcl.pt", tcl.masker, tcl.last_block, meta)
    loaded = TCL(checkpoint="synthetic/seed0/tcl.pt", weights_root=str(weights), text_cache=False)
    assert loaded.clip.name == MODEL_NAME and loaded.clip.weights_sha256 == meta["clip_sha256"]


# --- 4. options --------------------------------------------------------------------------------------

def test_option_errors_list_the_options_and_suggest(toy_world, capsys):
    err = one_line_error(capsys, eval_cli(toy_world, *TINY, "--opt", "logit_scal=50"))
    assert "'logit_scale' is a protocol setting" in err and "--set method_settings.logit_scale" in err
    assert "model" in err and "pretrained" in err and "weights_root" in err and "variant" in err
    err = one_line_error(capsys, eval_cli(toy_world, *TINY, "--opt", "variantt=clearclip"))
    assert "did you mean 'variant'" in err


def test_set_overrides_a_protocol_setting_as_a_derived_protocol(toy_world, capsys):
    assert eval_cli(toy_world, "--set", "method_settings.kp_w=0.5", method="tests.toy_method:ToyMethod") == 0
    (record,) = records_under(toy_world["results"])
    assert record["protocol"]["name"] == "toy+method_settings.kp_w=0.5"
    assert record["protocol"]["set"] == {"method_settings.kp_w": 0.5}
    assert record["method_settings"] == {"kp_w": 0.5}
    from benchmark.protocol import load_protocol

    assert record["protocol"]["hash"] != load_protocol(toy_world["protocol"]).hash
    code = eval_cli(toy_world, "--set", "imag.resize.short=32", method="tests.toy_method:ToyMethod")
    err = one_line_error(capsys, code)
    assert "unknown setting 'imag'" in err


# --- 5. a new method's first run ----------------------------------------------------------------------

class NoBackground(SegMethod):
    """Scores without a background value of its own."""

    name = "nobackground"
    score_kind = "probs"
    crops_seen = 0

    def encode_classes(self, names, text):
        return sum(len(synonyms) for synonyms in names)

    def predict_masks(self, crops, bank):
        NoBackground.crops_seen += crops.shape[0]
        return torch.rand(crops.shape[0], bank, 2, 2)


class ClaimsMaskclip(NoBackground):
    """A method whose name is taken."""

    name = "maskclip"


def test_requirements_are_checked_before_the_first_image_and_classes_need_no_init(toy_world, capsys):
    code = main([
        "eval", "--method", f"{__name__}:NoBackground", "--protocol", str(toy_world["protocol"]),
        "--data-root", str(toy_world["data"]), "--results", str(toy_world["results"]), "--workers", "0",
        "--no-progress",
    ])
    err = one_line_error(capsys, code)
    assert "background_value()" in err and "--set benchmarks.toyset_bg.background.value" in err
    assert NoBackground.crops_seen == 0 and not list(toy_world["results"].rglob("*.json"))
    assert eval_cli(toy_world, method=f"{__name__}:NoBackground") == 0  # no __init__ of its own: runs
    (record,) = records_under(toy_world["results"])
    assert record["method"]["class"] == f"{__name__}:NoBackground"


def test_a_method_named_like_a_builtin_is_refused(toy_world, capsys):
    err = one_line_error(capsys, eval_cli(toy_world, method=f"{__name__}:ClaimsMaskclip"))
    assert "named 'maskclip'" in err and "methods.maskclip:MaskCLIP" in err
