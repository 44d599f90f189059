"""MetricsStore's overhead on MemoryStore in CPU instructions per call, not seconds.

``bench/metrics_overhead.py`` times calls, and on a shared 2-core machine its
figures move by tens of percent between runs. This counts instructions under
valgrind's callgrind instead: the same binary, script and inputs give the same
count whatever else the machine is doing, so the overheads are exact ratios.

For each operation and each way of calling the store, a child process runs
the operation ``CALLS`` times; a second child runs the same script with no
calls; the difference divided by ``CALLS`` is the cost of one call (the loop
that issues it included). The ways of calling:

* ``bare``: the MemoryStore itself.
* ``floor``: a plain method that returns the inner store's coroutine without
  awaiting it and counts nothing: the least any wrapper can add (one call).
* ``forward``: :class:`~kvstore.wrapper.StoreWrapper`, an ``async def`` that
  awaits the inner call: the least a wrapper that sees the result can add.
* ``metrics``: :class:`~kvstore.MetricsStore` with its default sampling.

    python -m bench.metrics_instructions [--calls N]

Needs ``valgrind`` on PATH; prints a note and exits 0 without it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

import anyio

__all__ = ["OPERATIONS", "WAYS", "main", "measure"]

CALLS: Final = 20_000
KEYS: Final = 1000
OPERATIONS: Final = ("get_hit", "get_miss", "get_hit_dict", "set", "set_dict")
WAYS: Final = ("bare", "floor", "forward", "metrics")
_REFS: Final = re.compile(r"refs:\s+([\d,]+)")


class _Floor:
    """Hands back the inner store's coroutine: no frame of its own, no counting."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get(self, key: str, default: Any = None) -> Coroutine[Any, Any, Any]:
        return self._inner.get(key, default)  # type: ignore[no-any-return]

    def set(self, key: str, value: Any) -> Coroutine[Any, Any, None]:
        return self._inner.set(key, value)  # type: ignore[no-any-return]


def _store(way: str, inner: Any) -> Any:
    from kvstore import MetricsStore
    from kvstore.wrapper import StoreWrapper

    makers: dict[str, Callable[[Any], Any]] = {
        "bare": lambda store: store,
        "floor": _Floor,
        "forward": StoreWrapper,
        "metrics": MetricsStore,
    }
    return makers[way](inner)


async def _child(way: str, operation: str, calls: int) -> None:
    """The measured program: *calls* calls of *operation* through *way*."""
    from kvstore import MemoryStore

    inner = MemoryStore()
    value: Any = {"user": "u-42", "count": 7} if operation.endswith("_dict") else 12345
    for i in range(KEYS):
        await inner.set(f"k{i}", value)
    store = _store(way, inner)
    prefix = "absent:" if operation == "get_miss" else ""
    keys = [f"{prefix}k{i % KEYS}" for i in range(calls)]
    if operation.startswith("get"):
        get = store.get
        for key in keys:
            await get(key)
    else:
        put = store.set
        for key in keys:
            await put(key, value)


def _instructions(way: str, operation: str, calls: int) -> int:
    """Instructions callgrind counts for one child run."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.metrics_instructions",
        "--child",
        way,
        operation,
        str(calls),
    ]
    env = os.environ | {"PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    found = _REFS.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(found.group(1).replace(",", ""))


def measure(calls: int = CALLS) -> dict[str, dict[str, float]]:
    """``{operation: {way: instructions per call}}``."""
    baseline = {way: _instructions(way, "get_hit", 0) for way in WAYS}
    return {
        operation: {
            way: (_instructions(way, operation, calls) - baseline[way]) / calls for way in WAYS
        }
        for operation in OPERATIONS
    }


def _report(figures: dict[str, dict[str, float]]) -> str:
    lines = [
        "Instructions per call (callgrind; + is the overhead against bare)",
        f"{'operation':<14}{'bare':>10}" + "".join(f"{way:>20}" for way in WAYS[1:]),
    ]
    for operation, row in figures.items():
        bare = row["bare"]
        cells = "".join(
            f"{row[way]:>10,.0f} {100 * (row[way] / bare - 1):+7.1f}%  " for way in WAYS[1:]
        )
        lines.append(f"{operation:<14}{bare:>10,.0f}  {cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print instructions per call for every operation and way of calling."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=CALLS, help="calls per measured run")
    parser.add_argument(
        "--child", nargs=3, metavar=("WAY", "OPERATION", "CALLS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        way, operation, calls = args.child
        anyio.run(_child, way, operation, int(calls))
        return
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: no instruction counts (apt-get install valgrind)")
        return
    print(_report(measure(args.calls)))


if __name__ == "__main__":
    main()
