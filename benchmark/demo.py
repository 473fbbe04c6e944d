"""`zsbench demo`: the synthetic world, a tiny CLIP, every method that can run on it, and chance rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from benchmark.data import list_samples, read_label
from benchmark.demo_assets import DemoAssets, demo_options_for
from benchmark.eval_settings import EvalSettings
from benchmark.leaderboard import miou_table
from benchmark.method_run import MethodRun
from benchmark.protocol import Protocol, load_protocol
from benchmark.registry import build_method, get_method_class, list_methods
from benchmark.runner import evaluate

DEMO_PROTOCOL = "synthetic"
CHANCE_METHODS = ("chance-uniform", "chance-majority")


def prepare_assets(data_root: Path, weights_root: Path, seed: int, device: str, progress: bool) -> DemoAssets:
    from benchmark.synthetic import generate_world
    from benchmark.synthetic.tinyclip import MODEL_NAME
    from benchmark.synthetic.train_clip import train_clip

    world = data_root / "synthetic"
    print(f"[demo] synthetic world in {world} (seed {seed})", flush=True)
    generate_world(world, seed)
    weights_dir = weights_root / "synthetic" / f"seed{seed}"
    checkpoint = weights_dir / "tinyclip.pt"
    if checkpoint.exists():
        print(f"[demo] tiny CLIP cached at {checkpoint}", flush=True)
    else:
        print(f"[demo] training the tiny CLIP -> {checkpoint}", flush=True)
        train_clip(world / "captions", checkpoint, seed=seed, device=device, progress=progress)
    return DemoAssets(world, world / "captions", MODEL_NAME, checkpoint, weights_dir, seed, device)


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


def demo_runs(assets: DemoAssets, protocol: Protocol, data_root: Path) -> list[tuple[str, dict[str, Any]]]:
    runs = []
    for name in list_methods():
        if name in CHANCE_METHODS:
            continue
        entry = demo_options_for(name)
        if entry is not None:
            runs.append((name, entry(assets)))
    runs.append(("chance-uniform", {"seed": assets.seed}))
    runs.append(("chance-majority", {"majority": majority_classes(protocol, data_root)}))
    return runs


def run_demo(
    data_root: Path,
    weights_root: Path,
    results_root: Path,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = True,
) -> str:
    assets = prepare_assets(data_root, weights_root, seed, device, progress)
    protocol = load_protocol(DEMO_PROTOCOL)
    settings = EvalSettings(
        data_root=data_root, results_root=results_root / f"demo-seed{seed}", batch_size=batch_size,
        device=device, skip_existing=True, workers=workers, progress=progress,
    )
    for name, options in demo_runs(assets, protocol, data_root):
        method = build_method(get_method_class(name), options=options)
        print(f"[demo] evaluating {name}", flush=True)
        evaluate(MethodRun(method, options, None, str(weights_root)), protocol, None, settings)
    from benchmark.results import load_records

    records = [
        r for r in load_records([settings.results_root])
        if r["protocol"]["hash"] == protocol.hash and not r["partial"]
    ]
    benchmarks = list(protocol.benchmarks)
    table = miou_table(sorted(records, key=lambda r: r["method"]["name"]), benchmarks)
    board = settings.results_root / "LEADERBOARD.md"
    board.write_text(
        f"# Demo leaderboard: protocol {protocol.name} ({protocol.short_hash}), seed {seed}\n\n"
        f"mIoU (%) on the synthetic world's val split.\n\n{table}\n"
    )
    return table
