"""Session throughput and history latency as a conversation grows.

One session is grown to 10, 1 000 and 10 000 messages through the public
``send_message`` (each exchange stores a user message and a reply). At each
size the script measures:

- ``send``: exchanges per second and the latency of one ``send_message``,
  timed over the exchanges that follow (so from n to n + 2 x samples messages);
- ``page_newest``: latency of the newest page (``limit=50``, no cursor);
- ``page_before``: latency of a page at a random ``before`` cursor (a search
  over the history, then the page).

With the per-message key layout these stay flat as the history grows; a layout
that rewrote the history per message or loaded it per page would grow 1000x.
The runtime is a minimal stand-in (echo reply, empty state) so the figures are
the sessions layer's and the store's, not a model's.

    python bench/sessions_bench.py [--quick] [--redis-url redis://127.0.0.1:PORT/0]

Memory and SQLite (a temporary file) always run; Redis only with ``--redis-url``
(point it at a server of your own, never a shared one: the bench writes keys).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio

import kvstore
from kvstore import KVStoreService
from runtime.messages import Message
from runtime.sessions import SessionManager

__all__ = ["main", "measure"]

SIZES: Final = (10, 1_000, 10_000)
PAGE_LIMIT: Final = 50


class _EchoHost:
    """The four runtime members a SessionManager uses, doing as little as possible."""

    agent_id = "bench-agent"

    def __init__(self, service: KVStoreService) -> None:
        self.kv_service = service

    async def compose_state(self, message: Message) -> dict[str, Any]:
        return {}

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        return f"Echo: {message.content}"


def _percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


async def _measure_backend(url: str, *, samples: int, rng: random.Random) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with kvstore.open_service(url) as service:
        await service.get_store("sessions").clear()
        manager = SessionManager(_EchoHost(service))
        session = await manager.create(user_id="bench-user")
        stamps: list[float] = []
        sent = 0

        async def exchange() -> float:
            nonlocal sent
            start = time.perf_counter()
            reply = await manager.send_message(session.id, f"message {sent}")
            elapsed = time.perf_counter() - start
            stamps.append(reply.created_at)
            sent += 1
            return elapsed

        for size in SIZES:
            while 2 * sent < size:
                await exchange()
            newest: list[float] = []
            before: list[float] = []
            for _ in range(samples):
                start = time.perf_counter()
                page = await manager.messages(session.id, limit=PAGE_LIMIT)
                newest.append(time.perf_counter() - start)
                cursor = rng.choice(stamps)
                start = time.perf_counter()
                await manager.messages(session.id, limit=PAGE_LIMIT, before=cursor)
                before.append(time.perf_counter() - start)
                assert page, "the session has messages"
            messages = 2 * sent
            # Sends are timed right after, from `size` messages on.
            send_times = [await exchange() for _ in range(samples)]
            prefix = f"n{size}"
            figures[f"{prefix}.messages"] = messages
            figures[f"{prefix}.send.per_s"] = len(send_times) / sum(send_times)
            figures[f"{prefix}.send.p50_ms"] = statistics.median(send_times) * 1e3
            figures[f"{prefix}.send.p99_ms"] = _percentile(send_times, 0.99) * 1e3
            for name, times in (("page_newest", newest), ("page_before", before)):
                figures[f"{prefix}.{name}.p50_ms"] = statistics.median(times) * 1e3
                figures[f"{prefix}.{name}.p99_ms"] = _percentile(times, 0.99) * 1e3
        await manager.end(session.id)
    return figures


async def measure(quick: bool = False, redis_url: str | None = None) -> dict[str, float]:
    """Run the benchmark; figures are keyed ``"{backend}.n{size}.{metric}"``.

    Backends are ``memory``, ``sqlite`` and, when *redis_url* is given,
    ``redis``. Metrics per size: ``messages`` (history length measured at),
    ``send.per_s`` (exchanges per second), ``send.p50_ms``/``p99_ms``,
    ``page_newest.p50_ms``/``p99_ms``, ``page_before.p50_ms``/``p99_ms``.
    *quick* takes 30 samples per figure instead of 200 (the sizes stay).
    """
    samples = 30 if quick else 200
    rng = random.Random(7)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sessions-bench-") as tmp:
        urls = {"memory": "memory://", "sqlite": f"sqlite:///{Path(tmp) / 'sessions.db'}"}
        if redis_url:
            urls["redis"] = redis_url
        for backend, url in urls.items():
            measured = await _measure_backend(url, samples=samples, rng=rng)
            figures.update({f"{backend}.{key}": value for key, value in measured.items()})
    return figures


def _report(figures: dict[str, float]) -> str:
    lines = [
        f"{'backend':<8} {'messages':>8} {'send/s':>9} {'send p50':>9} {'send p99':>9}"
        f" {'newest p50':>11} {'newest p99':>11} {'before p50':>11} {'before p99':>11}"
    ]
    order = ["memory", "sqlite", "redis"]
    backends = sorted({key.split(".", 1)[0] for key in figures}, key=order.index)
    for backend in backends:
        for size in SIZES:
            p = f"{backend}.n{size}"
            lines.append(
                f"{backend:<8} {figures[f'{p}.messages']:>8,.0f}"
                f" {figures[f'{p}.send.per_s']:>9,.0f}"
                f" {figures[f'{p}.send.p50_ms']:>7.3f}ms {figures[f'{p}.send.p99_ms']:>7.3f}ms"
                f" {figures[f'{p}.page_newest.p50_ms']:>9.3f}ms"
                f" {figures[f'{p}.page_newest.p99_ms']:>9.3f}ms"
                f" {figures[f'{p}.page_before.p50_ms']:>9.3f}ms"
                f" {figures[f'{p}.page_before.p99_ms']:>9.3f}ms"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run :func:`measure` and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer samples per figure")
    parser.add_argument("--redis-url", help="also measure this Redis (your own server)")
    args = parser.parse_args(argv)
    figures = anyio.run(measure, args.quick, args.redis_url)
    print(f"Sessions: one session grown to {', '.join(f'{n:,}' for n in SIZES)} messages")
    print(f"(send = one send_message: user message + reply; pages of {PAGE_LIMIT})")
    print(_report(figures))


if __name__ == "__main__":
    main()
