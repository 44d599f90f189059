"""One hot session: exchanges per second and p99 with 1 and with 64 concurrent senders;
and creates: the rate of the first and the last 1,000 of 6,000.

    python -m bench.sessions_hot [--exchanges 2000]

Runs on memory, SQLite (a temporary file) and Redis (a private ``redis-server``
on a free loopback port, started here). The runtime is an echo stand-in, so the
figures are the sessions layer's and the store's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

import kvstore
from kvstore import KVStoreService
from kvstore.testing.redis_server import RedisServer
from runtime.messages import Message
from runtime.sessions import SessionManager

__all__ = ["main"]


class _EchoHost:
    agent_id = "bench-agent"

    def __init__(self, service: KVStoreService) -> None:
        self.kv_service = service

    async def compose_state(self, message: Message) -> dict[str, Any]:
        return {}

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        return f"Echo: {message.content}"


def _p99(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) > 1 else samples[0]


async def _hot(manager: SessionManager, senders: int, exchanges: int) -> tuple[float, float]:
    session = await manager.create(user_id="hot")
    latencies: list[float] = []
    each = exchanges // senders

    async def sender(i: int) -> None:
        for j in range(each):
            started = time.perf_counter()
            await manager.send_message(session.id, f"{i}-{j}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for i in range(senders):
            group.start_soon(sender, i)
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, _p99(latencies) * 1000


async def _creates(manager: SessionManager) -> tuple[float, float]:
    rates = []
    for _ in range(6):
        started = time.perf_counter()
        for i in range(1000):
            await manager.create(user_id=f"u{i}")
        rates.append(1000 / (time.perf_counter() - started))
    return rates[0], rates[-1]


async def _measure(url: str, exchanges: int) -> dict[str, float]:
    async with kvstore.open_service(url) as service:
        manager = SessionManager(_EchoHost(service))
        one_rate, one_p99 = await _hot(manager, 1, exchanges // 4)
        many_rate, many_p99 = await _hot(manager, 64, exchanges)
        first, last = await _creates(manager)
    return {
        "1 sender/s": one_rate,
        "1 sender p99 ms": one_p99,
        "64 senders/s": many_rate,
        "64 senders p99 ms": many_p99,
        "creates first 1k/s": first,
        "creates last 1k/s": last,
    }


async def _run(exchanges: int) -> dict[str, dict[str, float]]:
    results = {"memory": await _measure("memory://", exchanges)}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = await _measure(f"sqlite:///{Path(tmp) / 'hot.db'}", exchanges)
    with RedisServer() as server:
        results["redis"] = await _measure(server.url, exchanges)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Print the figures as a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=2000)
    args = parser.parse_args(argv)
    results = anyio.run(_run, args.exchanges)
    names = list(next(iter(results.values())))
    print("| backend | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for backend, figures in results.items():
        print(f"| {backend} | " + " | ".join(f"{figures[n]:.0f}" for n in names) + " |")


if __name__ == "__main__":
    main()
