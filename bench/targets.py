"""The issue's performance targets, as ratios computed from one run's figures.

Each :class:`Verdict` compares two systems measured in the same process run,
so load from the rest of the machine affects both sides alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from .systems import SystemSpec
from .workloads import WORKLOADS, Measurement

__all__ = ["Verdict", "evaluate"]

Results = Mapping[str, Mapping[str, Measurement]]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: the measured ratio, the goal, and whether it was met.

    ``kind`` says how to read ``measured``: ``"speedup"`` is ours/theirs
    (higher is better, at least ``goal``), shown as ``3.10x``; ``"share"`` is the
    same ratio shown as a percentage (of a floor's speed); ``"overhead"`` is the
    extra time per operation as a fraction (at most ``goal``). ``passed`` is
    None when a side was not measured. ``goal_label`` is the goal as the issue
    words it.
    """

    target: str
    workload: str
    ours: str
    versus: str
    kind: Literal["speedup", "share", "overhead"]
    measured: float | None
    goal: float
    passed: bool | None
    goal_label: str

    @property
    def measured_text(self) -> str:
        """The measured figure: ``3.10x``, ``62 %`` (share of a floor) or ``+4.2 %``."""
        if self.measured is None:
            return "n/a"
        if self.kind == "overhead":
            return _percent(self.measured, signed=True)
        return _percent(self.measured) if self.kind == "share" else f"{self.measured:.2f}x"

    @property
    def result(self) -> str:
        """PASS, MISS, or n/a."""
        return "n/a" if self.passed is None else "PASS" if self.passed else "MISS"


def _percent(fraction: float, *, signed: bool = False) -> str:
    text = f"{fraction * 100:+.1f}" if signed else f"{fraction * 100:.0f}"
    return f"{text} %"


def evaluate(specs: Iterable[SystemSpec], results: Results) -> list[Verdict]:
    """Every target of the issue, in the issue's order (n/a where a side is missing)."""
    every = [w.name for w in WORKLOADS]
    peers = [spec.name for spec in specs if spec.family == "memory" and spec.role == "peer"]
    verdicts = [_vs_fastest(results, workload, peers) for workload in every]
    for floor in ("dict", "dict+orjson"):
        verdicts += [
            _speedup(
                results,
                f"memory vs {floor} floor",
                w,
                "kvstore-memory",
                floor,
                0.5,
                kind="share",
                label="≥ 50 %",
            )
            for w in every
        ]
    verdicts += [
        _speedup(results, "Redis 64 tasks vs redis-py awaits", w, "kvstore-redis", "redis-py", 2)
        for w in ("mixed_64", "writes_64")
    ]
    # "Within 1.2x of the raw pipeline": at least 1/1.2 of its speed.
    verdicts += [
        _speedup(
            results,
            "Redis bulk vs raw pipeline",
            w,
            "kvstore-redis",
            "redis-py",
            1 / 1.2,
            label="within 1.2x (≥ 0.83x)",
        )
        for w in ("set_many", "get_many")
    ]
    verdicts.append(
        _speedup(
            results,
            "SQLite 64 writers vs aiosqlite commit per op",
            "writes_64",
            "kvstore-sqlite",
            "aiosqlite",
            5,
        )
    )
    verdicts += [_metrics_overhead(results, w) for w in every]
    return verdicts


def _rate(results: Results, system: str, workload: str) -> float | None:
    measured = results.get(system, {}).get(workload)
    return None if measured is None else measured.rate


def _vs_fastest(results: Results, workload: str, peers: list[str]) -> Verdict:
    rates = {name: rate for name in peers if (rate := _rate(results, name, workload))}
    fastest = max(rates, key=rates.__getitem__, default="-")
    return _speedup(
        results, "memory vs fastest memory peer", workload, "kvstore-memory", fastest, 2
    )


def _speedup(
    results: Results,
    target: str,
    workload: str,
    ours: str,
    versus: str,
    goal: float,
    *,
    kind: Literal["speedup", "share"] = "speedup",
    label: str | None = None,
) -> Verdict:
    mine, theirs = _rate(results, ours, workload), _rate(results, versus, workload)
    measured = mine / theirs if mine and theirs else None
    passed = None if measured is None else measured >= goal
    return Verdict(
        target, workload, ours, versus, kind, measured, goal, passed, label or f"≥ {goal:g}x"
    )


def _metrics_overhead(results: Results, workload: str) -> Verdict:
    bare = _rate(results, "kvstore-memory", workload)
    metered = _rate(results, "kvstore-memory+metrics", workload)
    # Extra time per operation: t_metered / t_bare - 1.
    measured = bare / metered - 1 if bare and metered else None
    return Verdict(
        "MetricsStore overhead on memory",
        workload,
        "kvstore-memory+metrics",
        "kvstore-memory",
        "overhead",
        measured,
        0.10,
        None if measured is None else measured <= 0.10,
        "≤ 10 %",
    )
