"""MemoryStore's footprint per entry and its worst call after a mass expiry.

* ``bytes_per_entry``: growth of the process's resident set (RSS, from
  ``/proc/self/statm``) while 300,000 small dict values (``workloads.make_value``)
  are stored, divided by their number; keys and values included.
* ``worst_call_after_expiry_ms``: 1,000,000 keys (``--quick``: 200,000) set
  with a TTL on an injected clock, the clock moved past it, then 2,000 timed
  ``set`` calls (each reclaims a bounded batch); the slowest of them, and
  their median, in wall time; and the slowest in the thread's CPU time
  (``worst_call_after_expiry_cpu_ms``), which a loaded machine's scheduling
  does not inflate.

    python -m bench.memory_costs [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections.abc import Sequence
from typing import Final

__all__ = ["main", "measure"]

ENTRIES: Final = 300_000
TIMED_CALLS: Final = 2_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(quick: bool = False) -> dict[str, float]:
    """Figures: ``bytes_per_entry``, ``{worst,median}_call_after_expiry_ms``, ``expired_keys``."""
    from kvstore import MemoryStore
    from kvstore.testing import ManualClock

    from .workloads import make_value

    values = [make_value(i) for i in range(ENTRIES)]
    keys = [f"msg:{i:08d}" for i in range(ENTRIES)]
    store = MemoryStore()
    gc.collect()
    before = _rss_bytes()
    for key, value in zip(keys, values, strict=True):
        await store.set(key, value)
    gc.collect()
    figures = {"bytes_per_entry": (_rss_bytes() - before) / ENTRIES}
    await store.aclose()
    del store, values, keys
    gc.collect()

    clock = ManualClock()
    store = MemoryStore(clock=clock)
    expiring = 200_000 if quick else 1_000_000
    await store.set_many({f"e:{i}": i for i in range(expiring)}, ttl=10)
    clock.advance_by(20)
    value = make_value(1)
    gc.collect()  # as before every timed workload: a full collection is not the store's
    timings = []
    cpu_timings = []
    for i in range(TIMED_CALLS):
        start = time.perf_counter()
        cpu_start = time.thread_time()
        await store.set(f"after:{i}", value)
        cpu_timings.append(time.thread_time() - cpu_start)
        timings.append(time.perf_counter() - start)
    figures["worst_call_after_expiry_ms"] = max(timings) * 1000
    figures["median_call_after_expiry_ms"] = statistics.median(timings) * 1000
    # CPU time of the thread: what the call itself costs, without the time a
    # loaded machine kept the process off the CPU (which wall time includes).
    figures["worst_call_after_expiry_cpu_ms"] = max(cpu_timings) * 1000
    figures["expired_keys"] = float(expiring)
    await store.aclose()
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run :func:`measure`, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer expiring keys")
    args = parser.parse_args(argv)
    for name, figure in asyncio.run(measure(args.quick)).items():
        print(f"{name:<30} {figure:,.3f}")


if __name__ == "__main__":
    main()
