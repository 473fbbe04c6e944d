"""Vocabulary scaling: each method run's mIoU on the same images with a small and a large vocabulary, and the drop.

Which benchmarks pair up (context59 with context459, ade20k with ade847) and where a large-vocabulary protocol
takes its small benchmarks from when it has none itself (tcl8_large from tcl8) is data:
leaderboard/vocabulary_pairs.yaml, read by load_vocabulary_pairs. build_vocabulary_boards makes one board per
protocol version (name, hash) that holds a large benchmark; the formats render it with `--view vocabulary`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import paths
from benchmark.errors import ConfigError
from benchmark.leaderboard import (
    Cell,
    Row,
    check_one_hash_per_protocol,
    finite_value,
    group_by_protocol,
    label_rows,
)
from benchmark.yamlio import at_line, check_fields, load_yaml_mapping

PAIRS_FILE = paths.LEADERBOARD_DIR / "vocabulary_pairs.yaml"
SCHEMA = 1
FILE_REQUIRED = {"pairs": list}
FILE_OPTIONAL = {"schema": int, "base_protocols": dict, "notes": str}
PAIR_REQUIRED = {"small": str, "large": str}
PAIR_OPTIONAL = {"title": str}

# name -> (current hash, benchmarks) of the protocol file of that name; None where there is none or it does not load
ProtocolLookup = Callable[[str], tuple[str, set[str]] | None]


@dataclass(frozen=True)
class BenchmarkPair:
    """Two benchmarks over the same images: `small` with the short class list, `large` with the long one."""

    small: str
    large: str
    title: str


@dataclass(frozen=True)
class VocabularyPairs:
    path: Path
    pairs: tuple[BenchmarkPair, ...]
    base_protocols: dict[str, str]  # large-vocabulary protocol -> the protocol its small benchmarks come from

    @property
    def benchmarks(self) -> list[str]:
        return list(dict.fromkeys(name for pair in self.pairs for name in (pair.small, pair.large)))

    def restricted(self, names: list[str]) -> VocabularyPairs:
        """Only the pairs with a benchmark among `names`."""
        kept = tuple(pair for pair in self.pairs if pair.small in names or pair.large in names)
        return VocabularyPairs(self.path, kept, self.base_protocols)


def _text(value: Any, path: Path, where: str, key: str, mapping: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: {where}key {key!r}{at_line(mapping, key)} must be a non-empty string, "
                          f"got {value!r}")
    return value.strip()


def load_vocabulary_pairs(path: Path | None = None) -> VocabularyPairs:
    """The pairs file (default leaderboard/vocabulary_pairs.yaml), checked: errors name the file, key and line."""
    path = Path(path) if path is not None else PAIRS_FILE
    content = load_yaml_mapping(path)
    check_fields(content, FILE_REQUIRED, FILE_OPTIONAL, path)
    if content.get("schema") not in (None, SCHEMA):
        raise ConfigError(f"{path}: key 'schema'{at_line(content, 'schema')}: this version reads schema {SCHEMA}, "
                          f"got {content['schema']!r}")
    if not content["pairs"]:
        raise ConfigError(f"{path}: key 'pairs'{at_line(content, 'pairs')} is empty; list at least one "
                          "{small: ..., large: ...} pair")
    pairs: list[BenchmarkPair] = []
    large_at: dict[str, int] = {}
    for index, item in enumerate(content["pairs"]):
        where = f"pairs[{index}]: "
        check_fields(item, PAIR_REQUIRED, PAIR_OPTIONAL, path, where)
        small, large = (_text(item[key], path, where, key, item) for key in ("small", "large"))
        if small == large:
            raise ConfigError(f"{path}: {where}key 'large'{at_line(item, 'large')}: {large!r} is also the small "
                              "benchmark; a pair needs two benchmarks")
        if large in large_at:
            raise ConfigError(f"{path}: {where}key 'large'{at_line(item, 'large')}: {large!r} is already the large "
                              f"benchmark of pairs[{large_at[large]}]; each large benchmark has one small one")
        large_at[large] = index
        title = _text(item["title"], path, where, "title", item) if item.get("title") is not None else None
        pairs.append(BenchmarkPair(small, large, title or f"{small} / {large}"))
    bases: dict[str, str] = {}
    given = content.get("base_protocols") or {}
    for protocol, base in given.items():
        where = "base_protocols: "
        if not isinstance(protocol, str) or not protocol.strip():
            raise ConfigError(f"{path}: {where}key {protocol!r}{at_line(given, protocol)} must be a protocol name")
        base = _text(base, path, where, protocol, given)
        if base == protocol:
            raise ConfigError(f"{path}: {where}key {protocol!r}{at_line(given, protocol)}: a protocol cannot be its "
                              "own base protocol")
        bases[protocol.strip()] = base
    return VocabularyPairs(path, tuple(pairs), bases)


@dataclass(frozen=True)
class PairValues:
    """A run's mIoU on the two benchmarks of a pair; the drop only where both exist."""

    small: float | None
    large: float | None

    @property
    def drop(self) -> float | None:
        """small - large, in mIoU points: positive where the large vocabulary scores lower."""
        if self.small is None or self.large is None:
            return None
        return round(self.small - self.large, 2)

    @property
    def drop_percent(self) -> float | None:
        """The drop in % of the small vocabulary's mIoU."""
        if self.small is None or self.large is None or self.small <= 0:
            return None
        return round(100 * (self.small - self.large) / self.small, 2)

    def get(self, kind: str) -> float | None:
        return {"small": self.small, "large": self.large, "drop": self.drop, "drop_percent": self.drop_percent}[kind]


@dataclass(frozen=True)
class PairColumn:
    """A pair on a board, and the protocol version its small benchmark comes from (None: from nowhere)."""

    pair: BenchmarkPair
    small_protocol: str | None
    small_hash: str | None


@dataclass
class VocabularyBoard:
    protocol: str  # the protocol version whose records give the large side, and the rows
    hash: str
    pairs: list[PairColumn]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)  # what was left out or is missing, and why

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    @property
    def has_backbone(self) -> bool:
        return any(row.backbone for row in self.rows)

    def values(self, row: Row, column: PairColumn) -> PairValues:
        def value(name: str) -> float | None:
            cell = row.overall.get(name)
            return cell.value if cell else None

        return PairValues(value(column.pair.small), value(column.pair.large))

    def borrowed(self) -> list[PairColumn]:
        """The pairs whose small side comes from another protocol than the board's."""
        return [c for c in self.pairs if c.small_protocol is not None
                and (c.small_protocol, c.small_hash) != (self.protocol, self.hash)]


VALUE_KINDS = ("small", "large", "drop", "drop_percent")
NOTE = ("mIoU (%) of each method run on the same images with a small and a large class list; drop: small minus "
        "large, in mIoU points and in % of the small one. Where a side has no record its cells and the drop stay "
        "empty.")
EMPTY_NOTE = "No records of a protocol with a large-vocabulary benchmark (leaderboard/vocabulary_pairs.yaml)."


def sources_sentence(board: VocabularyBoard) -> str | None:
    """Plain text: which small benchmarks come from another protocol version, e.g. "context59 and ade20k: from
    protocol tcl8 (hash 0123456789ab)."."""
    by_source: dict[tuple[str, str], list[str]] = {}
    for column in board.borrowed():
        by_source.setdefault((column.small_protocol or "", (column.small_hash or "")[:12]), []).append(
            column.pair.small)
    if not by_source:
        return None
    return " ".join(f"{' and '.join(names)}: from protocol {protocol} (hash {digest})."
                    for (protocol, digest), names in by_source.items())


def column_labels(column: PairColumn) -> list[str]:
    """The printed labels of a pair's four columns (small, large, drop, drop %)."""
    pair = column.pair
    return [pair.small, pair.large, f"{pair.large} drop", f"{pair.large} drop %"]


def current_protocol(name: str) -> tuple[str, set[str]] | None:
    """The hash and benchmarks of protocols/<name>.yaml, or None where there is no such file or it does not load."""
    from benchmark.protocol import list_protocols, load_protocol

    if name not in list_protocols():
        return None
    try:
        protocol = load_protocol(name)
    except ConfigError:
        return None
    return protocol.hash, set(protocol.benchmarks)


def _base_version(base: str, of: str, records: list[dict[str, Any]], lookup: ProtocolLookup,
                  notes: list[str]) -> str | None:
    """The hash of the base protocol's records to use: its current version where its file loads, else its only one."""
    hashes = list(dict.fromkeys(r["protocol"]["hash"] for r in records if r["protocol"]["name"] == base))
    found = lookup(base)
    if found is not None:
        others = [digest[:12] for digest in hashes if digest != found[0]]
        if others:
            notes.append(f"records of protocol {base} under other hashes ({', '.join(others)}) than its current "
                         f"{found[0][:12]} are left out")
        if found[0] in hashes:
            return found[0]
        notes.append(f"no records of protocol {base} (hash {found[0][:12]}), the base of {of}")
        return None
    if not hashes:
        notes.append(f"no records of protocol {base}, the base of {of}")
        return None
    check_one_hash_per_protocol([r for r in records if r["protocol"]["name"] == base])
    return hashes[0]


def _sort_key(board: VocabularyBoard) -> Callable[[Row], tuple]:
    """Full rows before partial ones; by mean large-vocabulary mIoU where a row has every large side, best first."""

    def key(row: Row) -> tuple:
        large = [value for column in board.pairs if (value := board.values(row, column).large) is not None]
        complete = len(large) == len(board.pairs)
        return (row.partial, not complete, -sum(large) / len(large) if complete else 0.0, row.label)

    return key


def build_vocabulary_boards(
    records: list[dict[str, Any]],
    pairs: VocabularyPairs,
    lookup: ProtocolLookup = current_protocol,
) -> list[VocabularyBoard]:
    """One board per protocol version holding a large benchmark (in its records or its protocol file), in order of
    protocol name. Rows are the runs with a record on a pair's benchmark in that protocol version; the small side
    comes from the same protocol where it has the small benchmark, else from its base protocol (pairs file), matched
    by run id and partial flag. A side without a record stays empty, and so does the drop."""
    cache: dict[str, tuple[str, set[str]] | None] = {}

    def found(name: str) -> tuple[str, set[str]] | None:
        if name not in cache:
            cache[name] = lookup(name)
        return cache[name]

    groups = group_by_protocol(records)
    boards = []
    for name, digest in sorted(groups):
        own = groups[(name, digest)]
        declared = (found(name) or ("", set()))[1] | {r["benchmark"] for r in own}
        shown = [pair for pair in pairs.pairs if pair.large in declared]
        if not shown:
            continue
        wanted = {benchmark for pair in shown for benchmark in (pair.small, pair.large)}
        rows: dict[tuple[str, bool], Row] = {}
        for record in own:
            if record["benchmark"] in wanted:
                key = (record["method"]["run_id"], bool(record.get("partial")))
                row = rows.setdefault(key, Row(label="", method=record["method"], partial=key[1]))
                row.overall[record["benchmark"]] = Cell(finite_value(record["miou"]))
        notes: list[str] = []
        columns = []
        for pair in shown:
            if pair.small in declared:
                columns.append(PairColumn(pair, name, digest))
                continue
            base = pairs.base_protocols.get(name)
            if base is None:
                notes.append(f"{pair.small}: not in protocol {name}, and {pairs.path.name} names no base protocol "
                             f"for {name}")
                columns.append(PairColumn(pair, None, None))
                continue
            base_hash = _base_version(base, name, records, found, notes)
            columns.append(PairColumn(pair, base if base_hash else None, base_hash))
            for record in groups.get((base, base_hash or ""), []):
                row = rows.get((record["method"]["run_id"], bool(record.get("partial"))))
                if row is not None and record["benchmark"] == pair.small:
                    row.overall[pair.small] = Cell(finite_value(record["miou"]))
        board = VocabularyBoard(name, digest, columns, list(rows.values()), list(dict.fromkeys(notes)))
        label_rows(board.rows)
        board.rows.sort(key=_sort_key(board))
        boards.append(board)
    return boards
