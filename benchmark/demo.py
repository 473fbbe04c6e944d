"""`zsbench demo`: the synthetic world, a tiny CLIP, every method that can run on it, and chance rows.

Ends with the table (also `LEADERBOARD.md`), one self-contained page (`index.html`: the table, the
bar chart and examples of each method's predictions) and a line per phase with its wall time.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.atomic import write_text_atomic
from benchmark.data import list_samples, read_label
from benchmark.demo_assets import DemoAssets, demo_options_for
from benchmark.eval_settings import EvalSettings
from benchmark.formats import render
from benchmark.formats.options import RenderOptions
from benchmark.leaderboard import build_boards, miou_table
from benchmark.method_run import MethodRun
from benchmark.protocol import Protocol, load_protocol
from benchmark.registry import build_method, get_method_class, list_methods
from benchmark.runner import evaluate

DEMO_PROTOCOL = "synthetic"
CHANCE_METHODS = ("chance-uniform", "chance-majority")
EXAMPLES_PER_BENCHMARK = 2  # saved per method and benchmark, shown on the page


class Timeline:
    """Wall time of each phase of the demo, in order."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases.append((name, time.perf_counter() - started))

    def report(self, shortest: float = 0.05) -> str:
        """One line per phase that took at least `shortest` seconds (a method's demo entry that only names its
        weights is left out), then the total of all phases."""
        total = sum(seconds for _, seconds in self.phases)
        shown = [(name, seconds) for name, seconds in self.phases if seconds >= shortest]
        width = max([len(name) for name, _ in shown] + [5])
        lines = [f"  {name:<{width}}  {seconds:7.1f} s" for name, seconds in shown]
        return "\n".join([*lines, f"  {'total':<{width}}  {total:7.1f} s"])


@dataclass(frozen=True)
class DemoOutcome:
    table: str  # mIoU per method and benchmark, as in LEADERBOARD.md
    timeline: Timeline
    page: Path  # index.html


def prepare_assets(
    data_root: Path, weights_root: Path, seed: int, device: str, progress: bool, timeline: Timeline
) -> DemoAssets:
    from benchmark.synthetic import generate_world
    from benchmark.synthetic.tinyclip import MODEL_NAME
    from benchmark.synthetic.train_clip import train_clip

    world = data_root / "synthetic"
    print(f"[demo] synthetic world in {world} (seed {seed})", flush=True)
    with timeline.phase("synthetic world"):
        generate_world(world, seed, workers=len(os.sched_getaffinity(0)))
    weights_dir = weights_root / "synthetic" / f"seed{seed}"
    checkpoint = weights_dir / "tinyclip.pt"
    with timeline.phase("train tiny CLIP"):
        if checkpoint.exists():
            print(f"[demo] tiny CLIP cached at {checkpoint}", flush=True)
        else:
            print(f"[demo] training the tiny CLIP -> {checkpoint}", flush=True)
            train_clip(world / "captions", checkpoint, seed=seed, device=device, progress=progress)
    return DemoAssets(world, world / "captions", MODEL_NAME, checkpoint, weights_dir, seed, device, progress)


def majority_classes(protocol: Protocol, data_root: Path) -> dict[str, int]:
    """Each benchmark's most frequent ground-truth class over its whole split."""
    majority = {}
    for spec in protocol.benchmarks.values():
        counts: Counter[int] = Counter()
        for sample in list_samples(spec.dataset, data_root):
            label = read_label(sample.label, spec.dataset)
            counts.update(label[label != spec.dataset.ignore_index].ravel().tolist())
        majority[spec.name] = max(counts, key=lambda k: (counts[k], -k))
    return majority


def demo_runs(
    assets: DemoAssets, protocol: Protocol, data_root: Path, timeline: Timeline
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(method, constructor options) of every method with a demo entry, then the chance rows; a method's
    entry trains its tiny version first where it learns (timed as the phase "prepare <method>")."""
    for name in list_methods():
        if name in CHANCE_METHODS:
            continue
        entry = demo_options_for(name)
        if entry is not None:
            with timeline.phase(f"prepare {name}"):
                options = entry(assets)
            yield name, options
    yield "chance-uniform", {"seed": assets.seed}
    yield "chance-majority", {"majority": majority_classes(protocol, data_root)}


def write_page(records: list[dict[str, Any]], benchmarks: list[str], title: str, out: Path) -> Path:
    """The demo's table, bar chart and saved examples as one HTML file (formats/html_page)."""
    boards = build_boards(records, benchmarks=benchmarks, sort=False)
    write_text_atomic(out, render(boards, "html", RenderOptions(title=title,
                                                               examples_per_benchmark=EXAMPLES_PER_BENCHMARK)))
    return out


def run_demo(
    data_root: Path,
    weights_root: Path,
    results_root: Path,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = True,
) -> DemoOutcome:
    timeline = Timeline()
    assets = prepare_assets(data_root, weights_root, seed, device, progress, timeline)
    protocol = load_protocol(DEMO_PROTOCOL)
    settings = EvalSettings(
        data_root=data_root, results_root=results_root / f"demo-seed{seed}", batch_size=batch_size,
        device=device, skip_existing=True, workers=workers, progress=progress, save_vis=EXAMPLES_PER_BENCHMARK,
    )
    for name, options in demo_runs(assets, protocol, data_root, timeline):
        method = build_method(get_method_class(name), options=options)
        print(f"[demo] evaluating {name}", flush=True)
        with timeline.phase(f"evaluate {name}"):
            evaluate(MethodRun(method, options, None, str(weights_root)), protocol, None, settings)
    from benchmark.results import load_records

    records = sorted(
        (r for r in load_records([settings.results_root])
         if r["protocol"]["hash"] == protocol.hash and not r["partial"]),
        key=lambda r: r["method"]["name"],
    )
    benchmarks = list(protocol.benchmarks)
    table = miou_table(records, benchmarks)
    title = f"Demo leaderboard: protocol {protocol.name} ({protocol.short_hash}), seed {seed}"
    write_text_atomic(settings.results_root / "LEADERBOARD.md",
                      f"# {title}\n\nmIoU (%) on the synthetic world's val split.\n\n{table}\n")
    page = write_page(records, benchmarks, title, settings.results_root / "index.html")
    return DemoOutcome(table, timeline, page)
