"""Checkpoint rates of KVCheckpointSaver against LangGraph's own savers, in one run.

Four savers: ``KVCheckpointSaver`` on a ``MemoryStore`` and on a ``SQLiteStore``,
LangGraph's ``InMemorySaver`` and ``AsyncSqliteSaver`` (langgraph-checkpoint-sqlite).
Each writes one thread of checkpoints the way a running graph does (each with
its parent, three channels of which one changes per step, two pending writes
per step), then reads the newest checkpoint back, and the ratio of each kvstore
saver to its LangGraph counterpart is printed. Rounds interleave the savers, so
a burst of load on the machine hits all alike; the best round counts.

    python -m bench.checkpoints [--quick] [--steps N] [--rounds R]

Needs ``.venv-integrations`` (``pip install -e '.[integration-tests]'``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from kvstore import MemoryStore, SQLiteStore
from kvstore.integrations.langgraph import KVCheckpointSaver

__all__ = ["main", "measure"]

Factory = Callable[[Path], AbstractAsyncContextManager[BaseCheckpointSaver[Any]]]


@asynccontextmanager
async def kv_memory(_: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """KVCheckpointSaver on a MemoryStore."""
    async with KVCheckpointSaver(MemoryStore(), owns_store=True) as saver:
        yield saver


@asynccontextmanager
async def kv_sqlite(scratch: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """KVCheckpointSaver on a SQLiteStore."""
    async with KVCheckpointSaver(SQLiteStore(scratch / "kv.db"), owns_store=True) as saver:
        yield saver


@asynccontextmanager
async def lg_memory(_: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """LangGraph's InMemorySaver."""
    yield InMemorySaver()


@asynccontextmanager
async def lg_sqlite(scratch: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """LangGraph's AsyncSqliteSaver."""
    async with AsyncSqliteSaver.from_conn_string(str(scratch / "lg.db")) as saver:
        yield saver


SAVERS: Final[dict[str, Factory]] = {
    "KVCheckpointSaver(MemoryStore)": kv_memory,
    "InMemorySaver": lg_memory,
    "KVCheckpointSaver(SQLiteStore)": kv_sqlite,
    "AsyncSqliteSaver": lg_sqlite,
}
OPS: Final = ("aput", "aput_writes", "aget_tuple")
PAIRS: Final = (
    ("KVCheckpointSaver(MemoryStore)", "InMemorySaver"),
    ("KVCheckpointSaver(SQLiteStore)", "AsyncSqliteSaver"),
)


def _checkpoint(step: int, versions: dict[str, Any], values: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        v=4,
        id=str(uuid6(clock_seq=-1)),
        ts=datetime.now(UTC).isoformat(),
        channel_values=dict(values),
        channel_versions=dict(versions),
        versions_seen={"node": dict(versions)},
        updated_channels=None,
    )


async def _write_thread(
    saver: BaseCheckpointSaver[Any], thread_id: str, steps: int
) -> tuple[float, float]:
    """Seconds spent in ``aput`` and in ``aput_writes`` writing *steps* steps of one thread."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    values: dict[str, Any] = {"messages": [], "topic": "kvstore", "count": 0}
    versions: dict[str, Any] = dict.fromkeys(values, saver.get_next_version(None, None))
    new_versions = dict(versions)
    in_put = in_writes = 0.0
    for step in range(steps):
        checkpoint = _checkpoint(step, versions, values)
        metadata: dict[str, Any] = {"source": "loop", "step": step, "parents": {}}
        started = time.perf_counter()
        config = await saver.aput(config, checkpoint, metadata, new_versions)  # type: ignore[arg-type]
        between = time.perf_counter()
        await saver.aput_writes(config, [("count", step), ("messages", f"m{step}")], f"task-{step}")
        in_put, in_writes = in_put + between - started, in_writes + time.perf_counter() - between
        values["count"] = step + 1
        versions["count"] = saver.get_next_version(versions["count"], None)
        new_versions = {"count": versions["count"]}
    return in_put, in_writes


async def _read_latest(saver: BaseCheckpointSaver[Any], thread_id: str, reads: int) -> float:
    """Seconds to read the thread's newest checkpoint *reads* times."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    started = time.perf_counter()
    for _ in range(reads):
        if await saver.aget_tuple(config) is None:
            raise RuntimeError("the thread just written is missing")
    return time.perf_counter() - started


async def measure(steps: int, rounds: int) -> dict[str, dict[str, float]]:
    """``{saver: {operation: calls per second}}`` for :data:`OPS`, best of *rounds*."""
    best = {name: dict.fromkeys(OPS, 0.0) for name in SAVERS}
    for round_ in range(rounds):
        for name, factory in SAVERS.items():
            with tempfile.TemporaryDirectory() as scratch:
                async with factory(Path(scratch)) as saver:
                    thread_id = f"bench-{round_}"
                    put, writes = await _write_thread(saver, thread_id, steps)
                    get = await _read_latest(saver, thread_id, steps)
            for op, seconds in zip(OPS, (put, writes, get), strict=True):
                best[name][op] = max(best[name][op], steps / seconds)
    return best


def report(rates: dict[str, dict[str, float]]) -> str:
    """The rates table and the kvstore/LangGraph ratios, as text."""
    lines = [f"{'calls per second':34}" + "".join(f"{op:>13}" for op in OPS)]
    for name, rate in rates.items():
        lines.append(f"{name:34}" + "".join(f"{rate[op]:13.0f}" for op in OPS))
    lines.append("")
    for ours, theirs in PAIRS:
        ratios = ", ".join(f"{op} x{rates[ours][op] / rates[theirs][op]:.2f}" for op in OPS)
        lines.append(f"{ours} / {theirs}: {ratios}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=500, help="checkpoints per thread")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best counts")
    parser.add_argument("--quick", action="store_true", help="100 steps, 1 round")
    args = parser.parse_args(argv)
    steps, rounds = (100, 1) if args.quick else (args.steps, args.rounds)
    rates = anyio.run(measure, steps, rounds)
    print(f"{steps} checkpoints per thread (3 channels, 2 writes each), best of {rounds}")
    print(report(rates))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
