"""Where ``kvstore.MemoryStore`` (bare and metered) spends its time under get/set.

cProfile runs apart from the timed rounds (it slows every call), once per
phase, and the report lists the functions with the most *own* time: the
places where an optimisation pays.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .systems import Ops, kvstore_ops
from .workloads import Dataset, mixed, sequential_get, sequential_set

__all__ = ["profile_memory_store"]

_ROOT = Path(__file__).resolve().parent.parent
_KVSTORE = str(_ROOT / "kvstore") + "/"


async def profile_memory_store(data: Dataset, top: int = 8) -> dict[str, Any]:
    """Profile MemoryStore phases: set, get, the 64-task mix, and MetricsStore get + set.

    Only kvstore's own functions and the builtins they call are listed, so the
    harness does not crowd the table. Returns ``{phase: {"total_s", "functions":
    [{"function", "where", "calls", "own_s", "own_share", "cumulative_s"}]}}``,
    heaviest first; ``own_share`` is the share of kvstore's time in that phase.
    """
    from kvstore import MemoryStore

    bare = kvstore_ops(MemoryStore())
    wrapped = kvstore_ops(MemoryStore(), metrics=True)
    phases: dict[str, Callable[[], Awaitable[object]]] = {
        "set": lambda: sequential_set(bare, data.keys, data.values),
        "get (hits, then misses)": lambda: _gets(bare, data),
        "mixed_64": lambda: mixed(bare, data),
        "set + get through MetricsStore": lambda: _sets_and_gets(wrapped, data),
    }
    # Fill and empty each store once first, as the timed rounds do: the first
    # fill of a process pays for page faults that would otherwise dominate.
    for ops in (bare, wrapped):
        await sequential_set(ops, data.keys, data.values)
        await ops.clear()
    report: dict[str, Any] = {}
    for phase, work in phases.items():
        profiler = cProfile.Profile()
        profiler.enable()
        await work()
        profiler.disable()
        report[phase] = _summarise(pstats.Stats(profiler), top)
    await bare.close()
    await wrapped.close()
    return report


async def _gets(ops: Ops, data: Dataset) -> None:
    await sequential_get(ops, data.keys)
    await sequential_get(ops, data.missing)


async def _sets_and_gets(ops: Ops, data: Dataset) -> None:
    await sequential_set(ops, data.keys, data.values)
    await _gets(ops, data)


def _ours(filename: str) -> bool:
    return filename.startswith(_KVSTORE)


def _summarise(stats: pstats.Stats, top: int) -> dict[str, Any]:
    rows = {
        where: row
        for where, row in stats.stats.items()  # type: ignore[attr-defined]
        if _ours(where[0]) or (where[0] == "~" and any(_ours(c[0]) for c in row[4]))
    }
    total = sum(row[2] for row in rows.values()) or 1.0
    heaviest = sorted(rows.items(), key=lambda item: item[1][2], reverse=True)[:top]
    functions = [
        {
            "function": name,
            "where": _where(filename, line),
            "calls": calls,
            "own_s": own,
            "own_share": own / total,
            "cumulative_s": cumulative,
        }
        for (filename, line, name), (_prim, calls, own, cumulative, _callers) in heaviest
    ]
    return {"total_s": total, "functions": functions}


def _where(filename: str, line: int) -> str:
    """A short location: repo-relative for our code, package-relative for the rest."""
    if filename == "~":
        return "builtin"
    path = Path(filename)
    try:
        return f"{path.resolve().relative_to(_ROOT)}:{line}"
    except ValueError:
        pass
    for entry in sys.path:
        if entry and filename.startswith(entry):
            return f"{filename[len(entry) :].lstrip('/')}:{line}"
    return f"{path.name}:{line}"
