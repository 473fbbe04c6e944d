"""Fault injection (issue #12): kills, concurrent runs, bad data, untrusted files and numerical faults.

Every fault the suite is meant to survive is injected here, against the real CLI where the fault is
about a run. docs/reliability.md maps each fault to the test that proves what the suite does. Kill
points are drawn at random; a failure prints its seed, and ZSBENCH_FAULT_SEED=<seed> replays it.
The longer soak (many runs, many kills) is tests/test_soak.py, `make soak`.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from benchmark.atomic import write_json_atomic
from benchmark.data import load_card
from benchmark.errors import CheckpointError, ConfigError
from benchmark.paths import REPO_ROOT
from benchmark.protocol import load_protocol
from benchmark.results import RECORD_SCHEMA
from tests.fakedata import put_value_9_in_label, shrink_label, write_card, write_fake_dataset
from tests.test_runner import NUMBERS, _window_count, records_under, run_cli
from tests.toy_method import ToyMethod

SEED = int(os.environ.get("ZSBENCH_FAULT_SEED") or random.SystemRandom().randrange(10**6))
BENCHMARKS = ("toyset", "toyset_bg")


def cli_command(world, results, *extra):
    return [
        sys.executable, "-m", "benchmark.cli", "eval", "--method", "tests.toy_method:ToyMethod",
        "--protocol", str(world["protocol"]), "--data-root", str(world["data"]), "--results", str(results),
        "--workers", "0", "--no-progress", "--batch-size", "2", "--save-every", "0", *extra,
    ]


def env(**extra):
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **extra}


def windows(world, benchmark: str) -> list[int]:
    """Crops per image of a benchmark, in split order."""
    return [_window_count(world, benchmark, index) for index in range(7)]


def reference_records(world) -> dict[str, dict]:
    """The records of one uninterrupted run (in-process, into the world's own results folder)."""
    assert run_cli(world) == 0
    return records_under(world["results"])


def check_results_folder(results: Path, reference: dict[str, dict], context: str) -> None:
    """What any reader may see at any moment: complete records with the reference numbers, readable state files."""
    for file in results.rglob("*.json"):
        content = json.loads(file.read_text())  # never half-written
        if file.name.startswith("."):
            assert {"key", "done", "metric"} <= set(content), (context, file)
            continue
        assert file.name in reference, (context, f"unexpected record {file}")
        assert content["schema"] == RECORD_SCHEMA and set(reference[file.name]) <= set(content), (context, file)
        for key in NUMBERS:
            assert content[key] == reference[file.name][key], (context, file.name, key)


def check_finished(results: Path, reference: dict[str, dict], context: str) -> None:
    check_results_folder(results, reference, context)
    assert set(records_under(results)) == set(reference), context
    leftovers = [p.name for p in results.rglob(".*") if p.suffix in (".tmp", ".json")]
    assert not leftovers, (context, leftovers)  # no state file, no temporary file


# 1. Crash safety ----------------------------------------------------------------------------------------------


def test_sigkill_at_random_points_then_resume_gives_identical_numbers(toy_world):
    """SIGKILL at random crop counts (the process kills itself) and once at a random moment from outside."""
    reference = reference_records(toy_world)
    total = sum(sum(windows(toy_world, name)) for name in BENCHMARKS)
    rng = random.Random(SEED)
    results = toy_world["root"] / "killed"
    for kill_after in rng.sample(range(1, total // 4), 1):  # inside the first benchmark
        killed = subprocess.run(cli_command(toy_world, results), cwd=REPO_ROOT, env=env(TOY_KILL_AFTER=str(kill_after)),
                                capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, (SEED, killed.stderr[-2000:])
        check_results_folder(results, reference, f"seed {SEED}: killed after {kill_after} crops")
    process = subprocess.Popen(cli_command(toy_world, results), cwd=REPO_ROOT, env=env(TOY_DELAY="0.02"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(results.glob("toy/*/.toyset_bg.r0of1.lock")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the run has claimed the second benchmark: now kill it at a random moment
    time.sleep(rng.uniform(0.0, 0.8))
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    check_results_folder(results, reference, f"seed {SEED}: killed from outside")
    toy_world["results"] = results
    assert run_cli(toy_world) == 0
    check_finished(results, reference, f"seed {SEED}")


KILL_IN_WRITE = """
import os, signal, sys
target, when, calls, real = int(os.environ["KILL_AT_WRITE"]), os.environ["KILL_WHEN"], [0], os.replace
def replace(source, destination):
    calls[0] += 1
    if calls[0] == target and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(source, destination)
    if calls[0] == target and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from benchmark.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_inside_an_atomic_write_never_leaves_a_half_written_record(toy_world):
    """Killed with a state file or a record written but not yet renamed, or renamed but not yet cleaned up."""
    reference = reference_records(toy_world)
    per_benchmark = 7 + 1  # --save-every 0: a state save after each of the 7 images, then the record
    rng = random.Random(SEED)
    points = [  # (kill before/after the rename, of the n-th atomic write, records visible after the kill): a state
        # save of the first benchmark or its record, before the rename; the second's, after the rename
        ("before", rng.randrange(1, per_benchmark + 1), set()),
        ("after", last := rng.randrange(per_benchmark + 1, 2 * per_benchmark + 1),
         {"toyset.json", "toyset_bg.json"} if last == 2 * per_benchmark else {"toyset.json"}),
    ]
    for number, (when, write, visible) in enumerate(points):
        results = toy_world["root"] / f"write-{number}"
        command = [sys.executable, "-c", KILL_IN_WRITE, *cli_command(toy_world, results)[3:]]
        killed = subprocess.run(command, cwd=REPO_ROOT, env=env(KILL_AT_WRITE=str(write), KILL_WHEN=when),
                                capture_output=True, text=True)
        context = f"seed {SEED}: killed {when} the rename of write {write}"
        assert killed.returncode == -signal.SIGKILL, (context, killed.stderr[-2000:])
        check_results_folder(results, reference, context)
        assert set(records_under(results)) == visible, context
        if when == "before":
            assert list(results.rglob(".*.tmp")), context  # the kill did land inside the write
        world = {**toy_world, "results": results}
        assert run_cli(world) == 0, context
        check_finished(results, reference, context)


def test_an_exception_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "record.json"
    write_json_atomic(target, {"miou": 1.0})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"miou": 2.0, "bad": object()})  # fails half-way through json.dump
    assert json.loads(target.read_text()) == {"miou": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_two_concurrent_runs_on_one_results_folder_write_each_record_once(toy_world):
    reference = reference_records(toy_world)
    results = toy_world["root"] / "shared"
    processes = [
        subprocess.Popen(cli_command(toy_world, results), cwd=REPO_ROOT, env=env(TOY_DELAY="0.005"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=240) == 0, process.stderr.read()
    check_finished(results, reference, "two concurrent runs")


def test_concurrent_runs_with_skip_existing_compute_each_benchmark_exactly_once(toy_world):
    reference = reference_records(toy_world)
    results, log = toy_world["root"] / "claimed", toy_world["root"] / "calls.log"
    processes = [
        subprocess.Popen(cli_command(toy_world, results, "--skip-existing"), cwd=REPO_ROOT,
                         env=env(TOY_DELAY="0.005", TOY_LOG=str(log)), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=240) == 0, process.stderr.read()
    check_finished(results, reference, "two concurrent runs with --skip-existing")
    crops: dict[int, int] = {}  # bank size (6 names: toyset, 2: toyset_bg) -> crops computed, by both runs
    for line in log.read_text().splitlines():
        _, names, count = map(int, line.split())
        crops[names] = crops.get(names, 0) + count
    assert crops == {6: sum(windows(toy_world, "toyset")), 2: sum(windows(toy_world, "toyset_bg"))}


# 2. Bad data ---------------------------------------------------------------------------------------------------


def add_jpeg_benchmark(world) -> Path:
    """A protocol over a card whose images are JPEGs (the toy world's are PNGs)."""
    folder = world["protocol"].parent
    card = write_card(folder, "toyjpg", ["sky", "grass", "cat", "dog"], 7, img_suffix=".jpg")
    write_fake_dataset(load_card(card), world["data"], 7, sizes=[(24, 40), (30, 30)], seed=3)
    protocol = yaml.safe_load(world["protocol"].read_text())
    protocol["name"] = "toy_jpeg"
    protocol["benchmarks"] = {"toyjpg": {"dataset": "toyjpg.yaml", "classes": "names/toyset.txt"}}
    path = folder / "toy_jpeg.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    return path


def unreadable(path: Path, monkeypatch) -> None:
    """No read permission; where the test runs as root (which reads anyway) the kernel's refusal is injected."""
    path.chmod(0)
    if not os.access(path, os.R_OK):
        return
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if not isinstance(file, int) and Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    monkeypatch.setattr(io, "open", refusing_open)


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def files_of(world, benchmark: str, kind: str) -> list[Path]:
    suffix = ".jpg" if benchmark == "toyjpg" and kind == "images" else ".png"
    return sorted((world["data"] / benchmark / kind).glob(f"*{suffix}"))


def colour_label(path: Path) -> None:
    Image.fromarray(np.stack([np.asarray(Image.open(path))] * 3, axis=-1)).save(path)


def palette_label_out_of_range(path: Path) -> None:
    label = np.asarray(Image.open(path)).copy()
    label[0, :3] = [7, 77, 254]
    written = Image.fromarray(label, mode="L").convert("P")
    written.putpalette([value % 256 for value in range(768)])
    written.save(path)


# (fault, benchmark, which file, how it is damaged, what the error says, what the --skip-bad list says)
BAD_DATA = [
    ("truncated_jpeg", "toyjpg", "images", truncate, "JPEG is truncated", None),
    ("corrupt_image", "toyset", "images", lambda p: p.write_bytes(b"\x89PNG not really"), "cannot be decoded", None),
    ("truncated_png_image", "toyset", "images", truncate, "cannot be decoded", None),
    ("zero_byte_png_image", "toyset", "images", lambda p: p.write_bytes(b""), "empty (0 bytes)", None),
    ("zero_byte_png_label", "toyjpg", "labels", lambda p: p.write_bytes(b""), "label cannot be decoded", None),
    ("truncated_png_label", "toyset", "labels", truncate, "label cannot be decoded", None),
    ("rgb_label", "toyset", "labels", colour_label, "colour (RGB) image, expected an index PNG", None),
    ("palette_label_values_outside_classes", "toyset", "labels", palette_label_out_of_range,
     "label values [7, 77, 254] are outside", None),
    ("label_values_outside_classes", "toyset_bg", "labels", put_value_9_in_label, "label values [9] are outside", None),
    ("image_label_size_mismatch", "toyset", "labels", shrink_label, "differs from image", None),
    ("missing_image_of_a_split_entry", "toyset", "images", Path.unlink, "incomplete (6/7", "image file is missing"),
    ("missing_label_of_a_split_entry", "toyset_bg", "labels", Path.unlink, "incomplete (6/7", "label file is missing"),
    ("unreadable_image", "toyset", "images", "unreadable", "Permission denied", None),
    ("unreadable_label", "toyset_bg", "labels", "unreadable", "Permission denied", None),
]
FIXES = ("re-download or re-prepare", "re-prepare", "convert it to class indices", "see datasets/README.md",
         "check its permissions", "--allow-incomplete")


@pytest.mark.parametrize(("benchmark", "kind", "damage", "message", "listed"),
                         [case[1:] for case in BAD_DATA], ids=[case[0] for case in BAD_DATA])
def test_bad_file_is_one_clear_error_or_with_skip_bad_a_partial_record_listing_it(
    toy_world, capsys, monkeypatch, benchmark, kind, damage, message, listed
):
    if benchmark == "toyjpg":
        toy_world["protocol"] = add_jpeg_benchmark(toy_world)
    victim = files_of(toy_world, benchmark, kind)[3]
    if damage == "unreadable":
        unreadable(victim, monkeypatch)
    else:
        damage(victim)
    assert run_cli(toy_world, "--benchmarks", benchmark) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "Traceback" not in error, error
    assert str(victim) in error and message in error, error
    assert any(fix in error for fix in FIXES) and "--skip-bad" in error, error
    assert not records_under(toy_world["results"])

    assert run_cli(toy_world, "--benchmarks", benchmark, "--skip-bad") == 0
    (name, record), = records_under(toy_world["results"]).items()
    assert name == f"{benchmark}.partial.json" and record["partial"]
    assert record["partial_reasons"] == ["skipped 1 bad file(s)"]
    (skipped,) = record["skipped_files"]
    assert skipped.startswith(str(victim)) and (listed or message) in skipped, skipped
    assert record["dataset"]["images"] == 6
    assert sum(map(sum, record["confusion_matrix"])) > 0


def test_skip_bad_lists_exactly_the_skipped_files_also_across_an_interruption(toy_world, capsys, monkeypatch):
    labels = files_of(toy_world, "toyset", "labels")
    images = files_of(toy_world, "toyset", "images")
    counts = windows(toy_world, "toyset")
    colour_label(labels[1])
    images[4].write_bytes(images[4].read_bytes()[:40])
    assert run_cli(toy_world, "--benchmarks", "toyset") == 2
    assert "--skip-bad" in capsys.readouterr().err
    monkeypatch.setenv("TOY_INTERRUPT_AFTER", str(counts[0] + counts[2] + counts[3] + 1))  # in image 5 of 7
    assert run_cli(toy_world, "--benchmarks", "toyset", "--skip-bad") == 130
    monkeypatch.delenv("TOY_INTERRUPT_AFTER")
    assert run_cli(toy_world, "--benchmarks", "toyset", "--skip-bad") == 0
    (name, record), = records_under(toy_world["results"]).items()
    assert name == "toyset.partial.json" and record["partial"]
    assert record["partial_reasons"] == ["skipped 2 bad file(s)"]
    assert [entry.split(":")[0] for entry in record["skipped_files"]] == [str(labels[1]), str(images[4])]
    assert record["dataset"]["images"] == 5


def test_split_file_missing_short_or_unreadable_is_one_clear_error(toy_world, capsys, monkeypatch):
    split = toy_world["data"] / "toyset" / "val.txt"
    lines = split.read_text().splitlines()
    split.write_text("\n".join(lines[:-1]) + "\n")  # a split entry is missing
    assert run_cli(toy_world, "--benchmarks", "toyset", "--skip-bad") == 2
    error = capsys.readouterr().err
    assert f"split file {split} lists 6" in error and "(6/7" in error and "--allow-incomplete" in error
    split.write_text("\n".join([*lines[:-1], "../../../etc/passwd"]) + "\n")
    assert run_cli(toy_world, "--benchmarks", "toyset") == 2
    assert f"{split}: line 7: entry '../../../etc/passwd' leaves the dataset folder" in capsys.readouterr().err
    split.write_text("\n".join(lines) + "\n")
    unreadable(split, monkeypatch)
    assert run_cli(toy_world, "--benchmarks", "toyset") == 2
    assert f"{split}: cannot be read (Permission denied); check its permissions" in capsys.readouterr().err
    monkeypatch.undo()
    split.unlink()
    assert run_cli(toy_world, "--benchmarks", "toyset") == 2
    assert f"{split}: split file of dataset 'toyset' is missing; see datasets/README.md" in capsys.readouterr().err
    assert not records_under(toy_world["results"])


# 3. Untrusted files --------------------------------------------------------------------------------------------


class RunsCode:
    """Unpickling this calls exec(): what a hostile checkpoint does."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (exec, (f"open({str(self.sentinel)!r}, 'w').close()",))


def _tcl(path):
    from methods.tcl.checkpoint import read_checkpoint

    return read_checkpoint(path)


def _vilseg(path):
    from methods.vilseg.checkpoint import load_weights

    return load_weights(path)


def _clips4(path):
    from methods.clips4.checkpoint import read_checkpoint

    return read_checkpoint(path)


def _clip(path):
    from methods.clip_backbone import load_clip

    return load_clip(None, str(path))


LOADERS = {"tcl": _tcl, "vilseg": _vilseg, "clips4": _clips4, "clip_backbone": _clip}


def hostile_files(folder: Path, sentinel: Path) -> dict[str, Path]:
    payload = {"model": {"weight": [0.0, 1.0]}, "clips4": {"format": 1}, "prototypes": {}, "x": RunsCode(sentinel)}
    files = {"torch_save": folder / "zip.pt", "legacy_pickle": folder / "legacy.pt", "plain_pickle": folder / "p.pkl"}
    torch.save({**payload, "model": {"weight": torch.zeros(2)}}, files["torch_save"])
    with open(files["legacy_pickle"], "wb") as handle:
        pickle.dump(payload, handle, protocol=2)
    with open(files["plain_pickle"], "wb") as handle:
        pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
    files["torchscript"] = folder / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(files["torchscript"]))
    return files


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.* is deprecated", "ignore:Detected pickle protocol")
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_every_checkpoint_loader_refuses_files_that_would_run_code(tmp_path, loader):
    sentinel = tmp_path / "code-ran"
    for kind, path in hostile_files(tmp_path, sentinel).items():
        with pytest.raises(CheckpointError) as error:
            LOADERS[loader](path)
        message = str(error.value)
        assert message.startswith(str(path)) and "\n" not in message, (kind, message)
        if kind in ("torch_save", "legacy_pickle"):
            assert re.search(r"refused .* imports (builtins\.)?exec, .* state dict", message), message
        elif kind == "plain_pickle":
            assert "weights_only=True" in message and "not a weights-only pickle" in message, message
        else:
            assert "TorchScript archive" in message and "runs code" in message, message
        assert "weights_only=False" not in message  # torch's own advice, which would run the code
    assert not sentinel.exists()


def test_a_hostile_protocol_cannot_build_python_objects_and_is_named_by_line(toy_world):
    sentinel = toy_world["root"] / "code-ran"
    path = toy_world["protocol"]
    original = path.read_text()
    path.write_text(original.replace("name: toy\n", f"name: !!python/object/apply:os.system ['touch {sentinel}']\n"))
    expected = rf"{re.escape(str(path))}: line 1, column \d+: invalid YAML: .*python/object"
    with pytest.raises(ConfigError, match=expected):
        load_protocol(path)
    assert not sentinel.exists()


def line_number(text: str, fragment: str) -> int:
    return text[: text.index(fragment)].count("\n") + 1


@pytest.mark.parametrize(("change", "expected", "at"), [  # at: the text on the line the error must name
    (("  mode: slide\n", "  mode: slide\n  resolution: 448\n"), "inference: unknown key 'resolution' (line {line})",
     "  resolution"),
    (("  crop: 16\n", "  crop: big\n"), "inference: key 'crop' (line {line}) must be an integer, got 'big'",
     "  crop"),
    (("  mode: slide\n", "  mode: slid\n"), "inference: key 'mode' (line {line}) must be 'slide' or 'whole'",
     "  mode"),
    (("  stride: 8\n", "  stride: 8\n  stride: 4\n"), "line {line}, column 3: invalid YAML: key 'stride' repeats",
     "  stride: 4"),
    (("name: toy\n", "name: [toy\n"), "line {line}, column", "image:"),  # where the unclosed list is noticed
    (("templates: templates.txt", "templates: ../../../etc/passwd"),
     "key 'text.templates' (line {line}): path '../../../etc/passwd' leaves its folder", "  templates"),
], ids=["unknown_key", "wrong_type", "bad_value", "repeated_key", "syntax_error", "path_escape"])
def test_protocol_errors_name_the_file_the_line_and_the_key(toy_world, change, expected, at):
    path = toy_world["protocol"]
    text = path.read_text().replace(*change)
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_protocol(path)
    expected = expected.format(line=line_number(text, at))
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value), error.value


def test_card_errors_name_the_file_the_line_and_the_key(toy_world):
    card = toy_world["protocol"].parent / "toyset.yaml"
    text = card.read_text()
    card.write_text(text.replace("num_images: 7", "num_images: many"))
    line = line_number(text, "num_images:")
    with pytest.raises(ConfigError, match=rf"toyset\.yaml: key 'num_images' \(line {line}\) must be an integer"):
        load_card(card)
    card.write_text(text.replace("root: toyset", "root: ../../elsewhere"))
    with pytest.raises(ConfigError, match=r"key 'root' \(line \d+\) must be a relative path inside the data root"):
        load_card(card)
    card.write_text(text.replace("seg_map_suffix: .png", "seg_map_suffix: /../../../etc/passwd"))
    with pytest.raises(ConfigError, match=r"key 'seg_map_suffix' \(line \d+\) must be a relative path"):
        load_card(card)


def test_a_symlink_out_of_the_protocol_folder_is_refused(toy_world):
    outside = toy_world["root"] / "outside.txt"
    outside.write_text("a photo of a {}.\n")
    (toy_world["protocol"].parent / "templates.txt").unlink()
    (toy_world["protocol"].parent / "templates.txt").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"key 'text.templates' \(line \d+\): path 'templates.txt' leaves its folder"):
        load_protocol(toy_world["protocol"])


PAYLOAD = "\\evilmacro{}%&$#_^~<zz-evil zzx=\"1\" zzy='2'>"
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "section", "p", "div", "table",
                "thead", "tbody", "tr", "th", "td", "details", "summary", "svg", "line", "text", "rect", "ul", "li",
                "code", "script", "figure", "img", "figcaption"}


def hostile(value):
    """Every string of a record prefixed with markup of three languages (keys stay: they are the schema)."""
    if isinstance(value, str):
        return PAYLOAD + value
    if isinstance(value, list):
        return [hostile(item) for item in value]
    if isinstance(value, dict):
        return {key: hostile(item) for key, item in value.items()}
    return value


def hostile_record(record: dict) -> dict:
    record = hostile(record)
    for block in (record["method"], record):  # free-form keys: config options and class names
        for key in ("config", "per_class_iou", "per_class_acc"):
            if isinstance(block.get(key), dict):
                block[key] = {PAYLOAD + name: value for name, value in block[key].items()}
    return record


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def test_html_latex_and_markdown_escape_every_field_of_a_record(tmp_path):
    from benchmark.formats import RenderOptions, render
    from benchmark.leaderboard import build_boards
    from benchmark.published import load_published

    records = [hostile_record(record) for record in json.loads((Path(__file__).parent / "data" /
                                                         "leaderboard_records.json").read_text())]
    for record in records:
        record["protocol"]["hash"] = PAYLOAD  # the short hash printed in captions is the payload's first 12 characters
    boards = build_boards(records, load_published([Path(__file__).parent / "data" / "published_fixture.yaml"]).entries)
    for board in boards:
        board.with_published = True
        for row in board.rows:
            for cell in row.cells.values():
                cell.source, cell.published = PAYLOAD + "source", 50.0
    options = RenderOptions(per_class=True, title=PAYLOAD)

    page = render(boards, "html", options)
    parser = TagCollector()
    parser.feed(page)
    assert {tag for tag, _ in parser.tags} <= ALLOWED_TAGS
    assert not [attrs for _, attrs in parser.tags if any(name in ("zzx", "zzy") for name, _ in attrs)]
    assert [tag for tag, _ in parser.tags].count("script") == 1
    assert page.count("zz-evil") == page.count("&lt;zz-evil") > 10

    latex = render(boards, "latex", options)
    labels = [line for line in latex.splitlines() if line.strip().startswith("\\label")]
    assert all(re.fullmatch(r"\s*\\label\{tab:zsbench-[A-Za-z0-9-]+\}", line) for line in labels), labels
    latex = "\n".join(line for line in latex.splitlines() if line not in labels)
    assert "evilmacro" in latex and latex.count("evilmacro") == latex.count(r"\textbackslash{}evilmacro")
    assert latex.count("zz-evil") == latex.count(r"\textless{}zz-evil")
    comments = [line for line in latex.splitlines() if re.search(r"(?<!\\)%", line)]
    assert all(line.startswith("% Generated by zsbench") for line in comments), comments

    for record in records:
        record["protocol"]["name"] = "`" + PAYLOAD
    markdown = render(build_boards(records), "md", options)
    assert markdown.count("zz-evil") == markdown.count("\\<zz-evil") > 0


# 4. Numerical faults -------------------------------------------------------------------------------------------


class InfToyMethod(ToyMethod):
    """The toy method, with +Inf scores on one crop once `nan_after` crops are done."""

    name = "toy-inf"

    def predict_masks(self, crops, bank):
        nan_after, self.nan_after = self.nan_after, None
        scores = super().predict_masks(crops, bank)
        self.nan_after = nan_after
        if nan_after is not None and self.calls > nan_after:
            scores[-1, -1, -1, -1] = float("inf")
        return scores


@pytest.mark.parametrize("method", ["toy", "tests.test_faults:InfToyMethod"], ids=["nan", "inf"])
def test_nan_or_inf_scores_stop_the_run_naming_method_benchmark_and_image(toy_world, capsys, method):
    rng = random.Random(SEED)
    benchmark = rng.choice(BENCHMARKS)
    counts = windows(toy_world, benchmark)
    bad_crop = rng.randrange(sum(counts))  # 0-based: the first crop whose scores are not finite
    image = int(np.searchsorted(np.cumsum(counts), bad_crop, side="right"))
    stem = f"2008_{image:06d}"
    assert run_cli(toy_world, "--benchmarks", benchmark, "--batch-size", "1", "--opt", f"nan_after={bad_crop}",
                   method=method) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0, error
    name = "toy" if method == "toy" else "toy-inf"
    assert f"method {name!r} produced NaN/Inf scores on benchmark {benchmark!r}, image(s) ['{stem}']" in error, (
        SEED, error)
    assert not records_under(toy_world["results"])
