"""(method x benchmarks of a protocol) -> one record per benchmark: sharded, resumable, atomic.

The life of one `evaluate`:

    evaluate(run, protocol, benchmarks, settings, shard)
     |- select_samples            once per benchmark (dataset check, --limit, --skip-bad, --allow-incomplete)
     |- shared_image_groups       benchmarks over the same images -> one pass (method with encode_crops/score)
     '- evaluate_together         per group, under one lock per record
         |- _prepare              per benchmark: --skip-existing, zero-shot overlap, background value,
         |                        method.setup, text bank (cached per run), metric resumed from saved state
         |- run_pass              the loop: images -> SlidingWindowPredictor -> each member's metric
         '- _finish               metrics summed over ranks, records written atomically, states removed

`evaluate_entries` is `evaluate_together` for (protocol, benchmark) pairs: benchmarks of several protocols
over the same images, each record under its own protocol (benchmark/protocol_passes.py, sweeps and the matrix).
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmark.atomic import write_json_atomic
from benchmark.distributed import SINGLE_PROCESS, Shard, barrier
from benchmark.eval_settings import EvalSettings
from benchmark.evaluation_pass import PassMember, PassResult, run_pass
from benchmark.inference import ScoreHead
from benchmark.method_run import MethodRun
from benchmark.metrics import ConfusionMatrix
from benchmark.policy import (
    check_before_first_image,
    check_split_overlap,
    ignored_in_metric,
    resolve_background_value,
)
from benchmark.protocol import BenchmarkSpec, Protocol
from benchmark.records import Execution, Outcome, build_record
from benchmark.results import (
    PartialState,
    claim_owner,
    is_record,
    record_lock,
    record_path,
    run_folder,
    state_path,
)
from benchmark.selection import Selection, select_samples, shared_image_groups
from benchmark.text_banks import TextBankCache

Record = dict[str, Any]
Entry = tuple[Protocol, Selection]  # a benchmark's selection, evaluated under a protocol
Key = tuple[str, str]  # (protocol name, benchmark)


def evaluate(
    run: MethodRun,
    protocol: Protocol,
    benchmarks: list[str] | None,
    settings: EvalSettings,
    shard: Shard = SINGLE_PROCESS,
) -> list[Record]:
    """Every selected benchmark of the protocol; returns the records written (on the main rank)."""
    banks = TextBankCache()
    run.method.to(settings.device).eval()
    specs = protocol.select(benchmarks)
    selections = [select_samples(spec, settings) for spec in specs]
    check_before_first_image(run.method, protocol, specs)
    records: dict[str, Record | None] = {}
    for group in shared_image_groups(selections, run.method, settings):
        together = evaluate_together(run, protocol, group, settings, shard, banks)
        records.update(zip([selection.spec.name for selection in group], together, strict=True))
    return [records[spec.name] for spec in specs if records.get(spec.name) is not None]


def evaluate_benchmark(
    run: MethodRun,
    protocol: Protocol,
    spec: BenchmarkSpec,
    settings: EvalSettings,
    shard: Shard = SINGLE_PROCESS,
    banks: TextBankCache | None = None,
) -> Record | None:
    """Evaluates one benchmark; returns its record (on the main rank) or None when skipped."""
    return evaluate_together(run, protocol, [select_samples(spec, settings)], settings, shard, banks)[0]


def evaluate_together(
    run: MethodRun,
    protocol: Protocol,
    selections: list[Selection],
    settings: EvalSettings,
    shard: Shard = SINGLE_PROCESS,
    banks: TextBankCache | None = None,
) -> list[Record | None]:
    """Benchmarks over the same images in one pass (encode_crops once, score per class set); one record each.

    A benchmark whose record exists (--skip-existing) is left out; states saved at different points
    (an interrupted single run) are resumed one benchmark at a time.
    """
    return evaluate_entries(run, [(protocol, selection) for selection in selections], settings, shard, banks)


def evaluate_entries(
    run: MethodRun,
    entries: list[Entry],
    settings: EvalSettings,
    shard: Shard = SINGLE_PROCESS,
    banks: TextBankCache | None = None,
) -> list[Record | None]:
    """(protocol, benchmark) pairs over the same images, geometry and precision in one pass; a record each,
    filed under its own protocol: the benchmarks of one protocol, or one benchmark under protocols that
    differ only on the text side (the variants of a sensitivity sweep). None where a record was skipped."""
    entries = [(protocol, selection.checked()) for protocol, selection in entries]
    banks = banks or TextBankCache()
    records: list[Record | None] = [None] * len(entries)
    with contextlib.ExitStack() as locks:
        folders = [run_folder(settings.results_root, protocol.name, run.run_id) for protocol, _ in entries]
        for (_, selection), folder in zip(entries, folders, strict=True):
            locks.enter_context(record_lock(folder, selection.spec.name, shard.rank, shard.world))
        prepared = [_prepare(run, protocol, selection, settings, shard, banks, folder)
                    for (protocol, selection), folder in zip(entries, folders, strict=True)]
        members = [(position, member) for position, member in enumerate(prepared) if member is not None]
        together = len({member.state.done for _, member in members}) == 1
        for group in [members] if together else [[member] for member in members]:
            if group:
                passing = [member for _, member in group]
                result = run_pass(run.method, passing, settings, shard)
                finished = _finish(run, passing, result, settings, shard)
                for (position, _), record in zip(group, finished, strict=True):
                    records[position] = record
    return records


def _prepare(
    run: MethodRun,
    protocol: Protocol,
    selection: Selection,
    settings: EvalSettings,
    shard: Shard,
    banks: TextBankCache,
    folder: Path,
) -> PassMember | None:
    """Everything a benchmark needs before its first image; None when --skip-existing finds its record."""
    method, spec = run.method, selection.spec
    partial_record = bool(selection.partial_reasons) or settings.skip_bad
    state_file = state_path(folder, spec.name, shard.rank, shard.world)
    if settings.skip_existing and not partial_record and is_record(record_path(folder, spec.name, False)):
        state_file.unlink(missing_ok=True)  # left by a run killed between writing the record and cleaning up
        return None
    check_split_overlap(method, protocol, spec)
    background_value = resolve_background_value(method, protocol, spec)
    method.setup(protocol, spec)
    head = ScoreHead(spec, banks.get(method, protocol, spec), background_value, partial(method.setup, protocol, spec))
    key = {
        "protocol": protocol.hash, "run": run.run_id, "benchmark": spec.name, "rank": shard.rank,
        "world": shard.world, "images": len(selection.samples), "limit": settings.limit,
    }
    metric = ConfusionMatrix(spec.dataset.num_classes, spec.ignore_in_metric, torch.device(settings.device),
                             unlabelled_row=spec.metric_ignore_index is not None)
    state = PartialState.load_or_new(state_file, key)
    if state.metric is not None:
        try:
            metric.load_state_dict(state.metric)
        except (ValueError, KeyError, TypeError):
            state = PartialState(key)
    return PassMember(selection, head, metric, state, state_file, ignored_in_metric(spec), protocol, folder)


def _finish(
    run: MethodRun, members: list[PassMember], result: PassResult, settings: EvalSettings, shard: Shard
) -> list[Record | None]:
    """Metrics summed over ranks; a record per member written (main rank), in member order; saved states removed."""
    execution = Execution(result.seconds, result.peak_host_bytes, result.peak_device_bytes, settings.device,
                          shard.world, settings.batch_size, settings.compile)
    owner = claim_owner(shard.rank, shard.world)
    records: list[Record | None] = []
    for member in members:
        member.metric.all_reduce()
        reasons = member.selection.partial_reasons
        if result.skipped_files:
            reasons = (*reasons, f"skipped {len(result.skipped_files)} bad file(s)")
        record = None
        if shard.is_main:
            images = len(member.selection.samples) - len(result.skipped_files)
            outcome = Outcome(member.selection.spec, member.metric, images, member.head.background_value, reasons)
            record = build_record(run, member.protocol, outcome, execution)
            record["skipped_files"] = result.skipped_files
            record["evaluated_with"] = [_pass_mate(other, member) for other in members if other is not member]
            write_json_atomic(record_path(member.folder, member.name, bool(reasons)), record, owner)
        records.append(record)
    barrier(shard)
    for member in members:
        member.state_file.unlink(missing_ok=True)
    return records


def _pass_mate(other: PassMember, member: PassMember) -> str:
    """A benchmark scored in the same pass: its name, under its protocol's name where that differs."""
    return other.name if other.protocol.name == member.protocol.name else f"{other.protocol.name}/{other.name}"
