"""The cross-protocol matrix: every method under every protocol, and how stable the methods' ranking is.

Per benchmark (those every protocol has, or those asked for) and on the average, a table of mIoU with methods
as rows and protocols as columns; between each pair of protocols, Kendall's tau-b of the two rankings of the
methods (computed here: ties handled, no scipy) and the pairs of methods that swap places. It answers "does
our gain hold under every protocol?". Records are those of `zsbench eval`: an existing full record of the same
protocol hash and run is read, not recomputed; protocols that differ only on the text side share a pass.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import mean
from typing import Any

from benchmark.errors import ConfigError
from benchmark.protocol import Protocol
from benchmark.protocol_passes import ProtocolsEvaluation

AVERAGE = "avg"


def kendall_tau_b(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b of two paired score lists: (C - D) / sqrt((n0 - n1)(n0 - n2)), with n0 the pairs,
    n1 and n2 the pairs tied in x and in y; None where either list is constant (or has under two items)."""
    if len(x) != len(y):
        raise ValueError(f"tau needs paired lists, got {len(x)} and {len(y)} items")
    concordant = discordant = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        tied_x += dx == 0
        tied_y += dy == 0
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    pairs = len(x) * (len(x) - 1) // 2
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


def swapped_pairs(methods: list[str], x: list[float], y: list[float]) -> list[tuple[str, str]]:
    """Pairs (a, b) of methods that `x` orders a above b and `y` orders b above a (ties are no swap)."""
    return [(methods[i], methods[j]) if x[i] > x[j] else (methods[j], methods[i])
            for i, j in itertools.combinations(range(len(methods)), 2) if (x[i] - x[j]) * (y[i] - y[j]) < 0]


def ranks(scores: dict[str, float | None]) -> dict[str, int]:
    """Competition ranks (1 = best; equal scores share a rank) of the methods that have a score."""
    known = {name: value for name, value in scores.items() if value is not None}
    return {name: 1 + sum(other > value for other in known.values()) for name, value in known.items()}


def shared_benchmarks(protocols: list[Protocol], asked: list[str] | None) -> list[str]:
    """The benchmarks every protocol has (the first protocol's order), or those asked for, each checked."""
    if asked:
        for protocol in protocols:
            missing = [name for name in asked if name not in protocol.benchmarks]
            if missing:
                common = [name for name in protocols[0].benchmarks if all(name in p.benchmarks for p in protocols)]
                raise ConfigError(f"--benchmarks {','.join(missing)}: protocol {protocol.name!r} has no such benchmark;"
                                  f" every protocol has: {', '.join(common) or 'none'}")
        return list(asked)
    common = [name for name in protocols[0].benchmarks if all(name in p.benchmarks for p in protocols)]
    if not common:
        raise ConfigError(f"--protocols {','.join(p.name for p in protocols)}: no benchmark is in every protocol")
    return common


@dataclass(frozen=True)
class PairStability:
    """How two protocols rank the methods on one column (a benchmark or the average)."""

    a: str
    b: str
    column: str
    tau: float | None
    methods: int  # methods scored under both
    swaps: list[tuple[str, str]]  # (above under a, above under b)


@dataclass(frozen=True)
class MatrixResult:
    methods: list[str]
    run_ids: dict[str, str]
    protocols: list[Protocol]
    benchmarks: list[str]
    evaluations: dict[str, ProtocolsEvaluation]  # per method

    def miou(self, method: str, protocol: str, column: str) -> float | None:
        if column == AVERAGE:
            values = [self.miou(method, protocol, name) for name in self.benchmarks]
            return None if any(v is None for v in values) else round(mean(values), 2)
        record = self.evaluations[method].records.get((protocol, column))
        return None if record is None else record.get("miou")

    @property
    def columns(self) -> list[str]:
        return [*self.benchmarks, AVERAGE] if len(self.benchmarks) > 1 else list(self.benchmarks)

    def stability(self, column: str) -> list[PairStability]:
        """Every pair of protocols on one column: tau over the methods scored under both, and the swaps."""
        found = []
        for a, b in itertools.combinations([p.name for p in self.protocols], 2):
            scored = [m for m in self.methods
                      if self.miou(m, a, column) is not None and self.miou(m, b, column) is not None]
            x = [self.miou(m, a, column) for m in scored]
            y = [self.miou(m, b, column) for m in scored]
            found.append(PairStability(a, b, column, kendall_tau_b(x, y), len(scored), swapped_pairs(scored, x, y)))
        return found


def run_matrix(
    methods: list[str],
    protocols: list[Protocol],
    benchmarks: list[str] | None,
    evaluate: Callable[[str, list[tuple[Protocol, list[str]]]], tuple[str, ProtocolsEvaluation]],
) -> MatrixResult:
    """Every method under every protocol on the shared benchmarks; `evaluate(method, targets)` builds the method's
    run and returns its id and `protocol_passes.evaluate_protocols`'s result (the CLI reuses existing records)."""
    repeated = sorted({name for name in methods if methods.count(name) > 1})
    if repeated:
        raise ConfigError(f"--methods: {repeated[0]!r} is listed twice")
    names = [protocol.name for protocol in protocols]
    if len(set(names)) != len(names) or len(protocols) < 2:
        raise ConfigError(f"--protocols {','.join(names)}: give two or more different protocols")
    selected = shared_benchmarks(protocols, benchmarks)
    run_ids, evaluations = {}, {}
    for method in methods:
        run_ids[method], evaluations[method] = evaluate(method, [(protocol, selected) for protocol in protocols])
    return MatrixResult(list(methods), run_ids, list(protocols), selected, evaluations)


def _cell(value: float | None, rank: int | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if rank is None else f"{value:.2f} ({rank})"


def _tau(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def render_markdown(result: MatrixResult) -> str:
    from tabulate import tabulate

    from benchmark.formats.markdown import code, escape

    def table(headers: list[str], rows: list[list[str]]) -> str:
        return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)

    names = [protocol.name for protocol in result.protocols]
    headers = ["method", *[f"{p.name} ({p.short_hash[:8]})" for p in result.protocols]]
    lines = [f"# Cross-protocol matrix: {len(result.methods)} methods x {len(names)} protocols", "",
             "mIoU (%), the method's rank under each protocol in parentheses.", ""]
    for column in result.columns:
        title = "Average over " + ", ".join(f"`{b}`" for b in result.benchmarks) if column == AVERAGE \
            else f"`{column}`"
        column_ranks = {p: ranks({m: result.miou(m, p, column) for m in result.methods}) for p in names}
        rows = [[escape(m), *[_cell(result.miou(m, p, column), column_ranks[p].get(m)) for p in names]]
                for m in result.methods]
        lines += [f"## {title}", "", table(headers, rows), ""]
    pairs = [(a, b) for a, b in itertools.combinations(names, 2)]
    by_column = {column: result.stability(column) for column in result.columns}
    rows = [[f"{code(a)} vs {code(b)}", *[_tau(by_column[c][k].tau) for c in result.columns]]
            for k, (a, b) in enumerate(pairs)]
    lines += ["## Ranking stability (Kendall's tau-b)", "",
              "+1: the same order of methods; -1: reversed; - : undefined (fewer than two methods or all tied).", "",
              table(["protocols", *result.columns], rows), ""]
    swaps = [f"- {code(column) if column != AVERAGE else 'average'}, {code(s.a)} vs {code(s.b)}: "
             + "; ".join(f"{escape(x)} above {escape(y)} under {code(s.a)}, below under {code(s.b)}"
                         for x, y in s.swaps)
             for column in result.columns for s in by_column[column] if s.swaps]
    lines += ["Methods that swap places:", "", *(swaps or ["- none: every pair of protocols ranks the methods alike"]),
              ""]
    lines += ["## Runs", "", *[_run_line(result, m) for m in result.methods], ""]
    return "\n".join(lines)


def _run_line(result: MatrixResult, method: str) -> str:
    evaluation = result.evaluations[method]
    computed = sum(len(keys) for keys in evaluation.passes)
    return (f"- `{result.run_ids[method]}`: {computed} records computed in {len(evaluation.passes)} passes over "
            f"the images, {len(evaluation.reused)} read back from earlier runs")


def as_json(result: MatrixResult) -> dict[str, Any]:
    names = [protocol.name for protocol in result.protocols]
    return {
        "methods": [{"name": m, "run_id": result.run_ids[m]} for m in result.methods],
        "protocols": [{"name": p.name, "hash": p.hash} for p in result.protocols],
        "benchmarks": result.benchmarks,
        "miou": {c: {m: {p: result.miou(m, p, c) for p in names} for m in result.methods} for c in result.columns},
        "ranks": {c: {p: ranks({m: result.miou(m, p, c) for m in result.methods}) for p in names}
                  for c in result.columns},
        "stability": {c: [{"a": s.a, "b": s.b, "tau": s.tau, "methods": s.methods, "swaps": [list(w) for w in s.swaps]}
                          for s in result.stability(c)] for c in result.columns},
        "passes": {m: [[list(key) for key in keys] for keys in result.evaluations[m].passes] for m in result.methods},
        "reused": {m: [list(key) for key in result.evaluations[m].reused] for m in result.methods},
    }


def render_csv(result: MatrixResult) -> str:
    """One line per (benchmark or avg, method, protocol): mIoU and rank."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["benchmark", "method", "run_id", "protocol", "protocol_hash", "miou", "rank"])
    for column in result.columns:
        for protocol in result.protocols:
            column_ranks = ranks({m: result.miou(m, protocol.name, column) for m in result.methods})
            for method in result.methods:
                writer.writerow([column, method, result.run_ids[method], protocol.name, protocol.hash,
                                 _cell(result.miou(method, protocol.name, column)), column_ranks.get(method, "")])
    return out.getvalue()


def render(result: MatrixResult, fmt: str) -> str:
    if fmt == "csv":
        return render_csv(result)
    if fmt == "json":
        return json.dumps(as_json(result), indent=2) + "\n"
    return render_markdown(result)
