"""Soak (issue #12, `make soak`): a multi-benchmark evaluation run to the end again and again under random SIGKILLs.

Each iteration evaluates a three-benchmark toy world into a fresh results folder. Runs are killed at random:
from outside at a random moment (start-up, inference, state saves, record writes), from inside after a random
number of crops, or one of two runs started at once on the same folder; each run draws its batch size, data
workers, save interval and --skip-existing. After every kill, every record a reader could see must be complete
and carry the numbers of an uninterrupted run; when a run finally completes, every record must be there, once,
with those numbers, and no partial state or temporary file may be left.

ZSBENCH_SOAK_ITERATIONS sets the number of iterations (default 20: about 5 minutes on two idle cores),
ZSBENCH_SOAK_SEED the seed (default: random, printed).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from benchmark.data import load_card
from benchmark.paths import REPO_ROOT
from tests.fakedata import write_card, write_fake_dataset
from tests.test_faults import check_finished, check_results_folder, cli_command, env
from tests.test_runner import records_under, run_cli

pytestmark = pytest.mark.soak

ITERATIONS = int(os.environ.get("ZSBENCH_SOAK_ITERATIONS") or 20)
SEED = int(os.environ.get("ZSBENCH_SOAK_SEED") or random.SystemRandom().randrange(10**6))
DELAY = 0.02  # seconds per crop: runs long enough to be killed at many points
MAX_KILLS = 4  # per iteration; then a run is left to finish


def add_third_benchmark(world: dict[str, Path]) -> None:
    """A third card (larger images, more crops) and benchmark, next to the toy world's two."""
    folder = world["protocol"].parent
    card = write_card(folder, "toyset_big", ["road", "car", "tree"], 6)
    write_fake_dataset(load_card(card), world["data"], 6, sizes=[(48, 64), (40, 72), (64, 52)], seed=4)
    (folder / "names" / "toyset_big.txt").write_text("road, street\ncar\ntree, bush\n")
    protocol = yaml.safe_load(world["protocol"].read_text())
    protocol["benchmarks"]["toyset_big"] = {"dataset": "toyset_big.yaml", "classes": "names/toyset_big.txt",
                                            "inference": {"mode": "slide", "crop": 20, "stride": 12}}
    world["protocol"].write_text(yaml.safe_dump(protocol, sort_keys=False))


def draw_flags(rng: random.Random, workers: bool) -> list[str]:
    flags = ["--batch-size", str(rng.choice([1, 2, 3, 5])), "--save-every", rng.choice(["0", "0", "0.3", "600"])]
    if workers and rng.random() < 0.25:
        flags += ["--workers", "1"]
    if rng.random() < 0.3:
        flags.append("--skip-existing")
    return flags


def start(world, results: Path, flags: list[str], **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(cli_command(world, results, *flags), cwd=REPO_ROOT,
                            env=env(TOY_DELAY=str(DELAY), **extra_env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def descendants(pid: int) -> list[int]:
    """Child processes (data-loader workers) of a process this test started, to end them with it."""
    try:
        children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [found for child in children for found in (child, *descendants(child))]


def kill(process: subprocess.Popen) -> None:
    workers = descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def finish(process: subprocess.Popen, context: str) -> int:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode in (0, -signal.SIGKILL), (context, process.returncode, stderr[-3000:])
    return process.returncode


def attempt(
    world, results: Path, rng: random.Random, span: tuple[float, float], crops: int, stats: Counter, final: bool
) -> bool:
    """One run (or two at once), killed at a random point unless `final`; True when no run was killed."""
    if final:
        process = start(world, results, draw_flags(rng, workers=True))
        assert finish(process, "final run") == 0
        return True
    mode = rng.choice(["outside", "outside", "inside", "pair"])
    stats[mode] += 1
    if mode == "inside":
        process = start(world, results, draw_flags(rng, workers=False), TOY_KILL_AFTER=str(rng.randint(1, crops)))
        return finish(process, f"killed after a random crop ({mode})") == 0
    processes = [start(world, results, draw_flags(rng, workers=True)) for _ in range(2 if mode == "pair" else 1)]
    startup, whole = span  # most kills land after start-up, where the state and records are written
    deadline = time.monotonic() + (rng.uniform(0.0, startup) if rng.random() < 0.2 else rng.uniform(startup, whole))
    victims = processes if mode == "outside" or rng.random() < 0.3 else [rng.choice(processes)]
    while time.monotonic() < deadline and any(p.poll() is None for p in victims):
        time.sleep(0.01)
    for process in victims:
        if process.poll() is None:
            kill(process)
            stats["killed"] += 1
    codes = [finish(process, f"{mode} kill") for process in processes]
    return all(code == 0 for code in codes)


def test_soak_random_sigkills_never_change_a_record(toy_world):
    add_third_benchmark(toy_world)
    assert run_cli(toy_world) == 0
    reference = records_under(toy_world["results"])
    assert set(reference) == {"toyset.json", "toyset_bg.json", "toyset_big.json"}

    began = time.monotonic()
    crop_log = toy_world["root"] / "crops.log"
    probe = start(toy_world, toy_world["root"] / "probe", [], TOY_LOG=str(crop_log))
    assert finish(probe, "uninterrupted subprocess run") == 0
    crops = sum(int(line.split()[2]) for line in crop_log.read_text().splitlines())
    whole = time.monotonic() - began  # start-up and inference of one whole run: kill moments are drawn within it
    span = (max(whole - crops * DELAY * 1.2, 0.0), whole)
    check_finished(toy_world["root"] / "probe", reference, "uninterrupted subprocess run")

    rng = random.Random(SEED)
    stats: Counter = Counter()
    for iteration in range(ITERATIONS):
        results = toy_world["root"] / f"soak-{iteration}"
        kills = rng.randint(1, MAX_KILLS)
        for number in range(kills + 1):
            context = f"seed {SEED}, iteration {iteration}, run {number}"
            completed = attempt(toy_world, results, rng, span, crops, stats, final=number == kills)
            check_results_folder(results, reference, context)
            stats["runs"] += 1
            if completed:
                stats["completed early"] += number < kills
                break
        check_finished(results, reference, f"seed {SEED}, iteration {iteration}")
    minutes = (time.monotonic() - began) / 60
    print(f"\nsoak: seed {SEED}, {ITERATIONS} iterations, {stats['runs']} runs; {stats['killed']} runs killed from "
          f"outside (in {stats['outside']} single-run and {stats['pair']} two-run attempts), {stats['inside']} killed "
          f"from inside at a random crop, {stats['completed early']} finished before their kill; {crops} crops per "
          f"whole run; {minutes:.1f} min")
