"""A method under several protocols, passes shared across them: what sweeps and the matrix run.

    evaluate_protocols(run, [(protocol, benchmarks), ...], settings, shard)
     |- _existing_record          --skip-existing: a full record of the same protocol hash is read back
     |- _shared_passes            (protocol, benchmark) pairs over the same images, geometry and precision
     '- runner.evaluate_entries   per pass, as `zsbench eval` runs one: a head per pair, each record under its protocol
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from benchmark.data import DatasetCard
from benchmark.distributed import SINGLE_PROCESS, Shard
from benchmark.eval_settings import EvalSettings
from benchmark.method_run import MethodRun
from benchmark.policy import check_before_first_image
from benchmark.protocol import Protocol
from benchmark.results import read_record, record_path, run_folder
from benchmark.runner import Entry, Key, Record, evaluate_entries
from benchmark.selection import Selection, select_samples, shared_image_groups
from benchmark.text_banks import TextBankCache
from methods.base import SegMethod


@dataclass(frozen=True)
class ProtocolsEvaluation:
    """A method run under several protocols: each (protocol name, benchmark)'s record and how it came about."""

    records: dict[Key, Record]  # on the main rank
    passes: list[list[Key]]  # the pairs scored in each pass over the images, in the order run
    reused: list[Key]  # records of an earlier run read back (skip_existing, same protocol hash)
    text_banks_encoded: int
    text_banks_reused: int


def evaluate_protocols(
    run: MethodRun,
    targets: list[tuple[Protocol, list[str] | None]],
    settings: EvalSettings,
    shard: Shard = SINGLE_PROCESS,
) -> ProtocolsEvaluation:
    """Each protocol's selected benchmarks, sharing passes across protocols: pairs over the same images,
    geometry and precision are scored in one pass (encode_crops once, a head per pair), each record filed
    under its own protocol as `evaluate` files it. With `skip_existing`, a full record of the same protocol
    hash and run is read instead of recomputed; one of another hash (an edited protocol) is recomputed."""
    banks = TextBankCache()
    run.method.to(settings.device).eval()
    records: dict[Key, Record] = {}
    reused: list[Key] = []
    entries: list[Entry] = []
    selected: dict[DatasetCard, Selection] = {}
    for protocol, benchmarks in targets:
        specs = protocol.select(benchmarks)
        check_before_first_image(run.method, protocol, specs)
        for spec in specs:
            existing = _existing_record(run, protocol, spec.name, settings)
            if existing is not None:
                records[(protocol.name, spec.name)] = existing
                reused.append((protocol.name, spec.name))
                continue
            if spec.dataset not in selected:
                selected[spec.dataset] = select_samples(spec, settings)
            entries.append((protocol, replace(selected[spec.dataset], spec=spec)))
    passes: list[list[Key]] = []
    recompute = replace(settings, skip_existing=False)
    for group in _shared_passes(entries, run.method, settings):
        keys = [(protocol.name, selection.spec.name) for protocol, selection in group]
        written = evaluate_entries(run, group, recompute, shard, banks)
        records.update({key: record for key, record in zip(keys, written, strict=True) if record is not None})
        passes.append(keys)
    return ProtocolsEvaluation(records, passes, reused, banks.encoded, banks.reused)


def _existing_record(run: MethodRun, protocol: Protocol, benchmark: str, settings: EvalSettings) -> Record | None:
    if not settings.skip_existing or settings.limit is not None or settings.skip_bad:
        return None
    folder = run_folder(settings.results_root, protocol.name, run.run_id)
    record, _ = read_record(record_path(folder, benchmark, False))
    if record is None or record["protocol"]["hash"] != protocol.hash or record.get("partial"):
        return None
    return record


def _shared_passes(entries: list[Entry], method: SegMethod, settings: EvalSettings) -> list[list[Entry]]:
    """`shared_image_groups` across protocols: pairs of one precision over the same images and geometry."""
    protocol_of = {id(selection): protocol for protocol, selection in entries}
    by_precision: dict[str, list[Selection]] = {}
    for protocol, selection in entries:
        by_precision.setdefault(protocol.precision, []).append(selection)
    return [[(protocol_of[id(selection)], selection) for selection in group]
            for selections in by_precision.values() for group in shared_image_groups(selections, method, settings)]
