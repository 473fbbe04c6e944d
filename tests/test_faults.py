"""Fault injection: kills, concurrent runs and bad files lose nothing and never corrupt a record."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from benchmark.paths import REPO_ROOT
from tests.test_runner import NUMBERS, records_under, run_cli


def cli_command(world, results, *extra):
    return [
        sys.executable, "-m", "benchmark.cli", "eval", "--method", "tests.toy_method:ToyMethod",
        "--protocol", str(world["protocol"]), "--data-root", str(world["data"]), "--results", str(results),
        "--workers", "0", "--no-progress", "--batch-size", "2", "--save-every", "0", *extra,
    ]


def env(**extra):
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **extra}


def test_sigkill_at_random_points_then_resume_gives_identical_numbers(toy_world):
    assert run_cli(toy_world) == 0
    reference = records_under(toy_world["results"])
    results = toy_world["root"] / "killed"
    rng = random.Random(0)
    kills = 0
    for _ in range(4):
        process = subprocess.Popen(cli_command(toy_world, results), cwd=REPO_ROOT, env=env(TOY_DELAY="0.05"),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 4.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        for record in results.rglob("*.json"):
            json.loads(record.read_text())  # never half-written
    assert kills >= 2
    done = subprocess.run(cli_command(toy_world, results), cwd=REPO_ROOT, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = records_under(results)
    assert set(resumed) == set(reference)
    for name in reference:
        for key in NUMBERS:
            assert resumed[name][key] == reference[name][key], (name, key)
    assert not [p for p in results.rglob("*.tmp")]


def test_two_concurrent_runs_on_one_results_folder_write_each_record_once(toy_world):
    results = toy_world["root"] / "shared"
    processes = [
        subprocess.Popen(cli_command(toy_world, results), cwd=REPO_ROOT, env=env(TOY_DELAY="0.005"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=240) == 0, process.stderr.read()
    records = records_under(results)
    assert set(records) == {"toyset.json", "toyset_bg.json"}
    assert run_cli(toy_world) == 0
    reference = records_under(toy_world["results"])
    for name in reference:
        for key in NUMBERS:
            assert records[name][key] == reference[name][key]


def test_skip_bad_lists_exactly_the_skipped_files_and_marks_the_record_partial(toy_world, capsys):
    labels = sorted((toy_world["data"] / "toyset" / "labels").glob("*.png"))
    images = sorted((toy_world["data"] / "toyset" / "images").glob("*.png"))
    Image.fromarray(np.full((6, 6, 3), 9, np.uint8)).save(labels[1])  # a colour label
    images[4].write_bytes(images[4].read_bytes()[:40])  # a truncated image
    assert run_cli(toy_world, "--benchmarks", "toyset") == 2
    assert "--skip-bad" in capsys.readouterr().err
    assert run_cli(toy_world, "--benchmarks", "toyset", "--skip-bad") == 0
    (name, record), = records_under(toy_world["results"]).items()
    assert name == "toyset.partial.json" and record["partial"]
    assert record["partial_reasons"] == ["skipped 2 bad file(s)"]
    assert [str(labels[1]) in record["skipped_files"][0], str(images[4]) in record["skipped_files"][1]] == [True, True]
    assert record["dataset"]["images"] == 5
