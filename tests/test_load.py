"""Load: 10 000 sessions x 10 messages through SessionManager, on Redis and SQLite.

64 workers drive one :class:`~runtime.AgentRuntime` concurrently while its
sweeper runs (``async with sessions.running()``, every second). Each worker
takes the next session number, creates the session and sends its 10 messages
one after the other (each ``send_message`` stores the user message, composes
and caches the state, and stores the echo reply). Afterwards every session
must hold exactly its 10 user messages and 10 replies, in order.

Peak RSS (``ru_maxrss``, the whole pytest process so far) is printed and must
stay below a generous bound that a leak of per-message objects would break.
Figures are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import pytest

from kvstore import StoreService, open_service
from runtime import AgentRuntime, Message, SessionManager, SessionsConfig

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SESSIONS: Final = 10_000
MESSAGES: Final = 10
WORKERS: Final = 64
SWEEP_INTERVAL: Final = 1.0
RSS_LIMIT_MIB: Final = 1536
TIME_LIMIT: Final = 840
"""Seconds for one backend's whole run (pytest's own timeout is raised to match)."""


@dataclass
class LoadFigures:
    """What one run measured."""

    backend: str
    sessions: int
    messages: int
    load_seconds: float
    verify_seconds: float
    peak_rss_mib: float
    rss_growth_mib: float

    def __str__(self) -> str:
        exchanges = self.sessions * self.messages
        return (
            f"{self.backend}: {self.sessions} sessions x {self.messages} messages in"
            f" {self.load_seconds:.1f} s ({exchanges / self.load_seconds:.0f} exchanges/s,"
            f" {WORKERS} workers, sweeper every {SWEEP_INTERVAL:g} s); verified in"
            f" {self.verify_seconds:.1f} s; peak RSS {self.peak_rss_mib:.0f} MiB"
            f" (resident grew by {self.rss_growth_mib:.0f} MiB during the run)"
        )


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float:
    """Resident set size right now (Linux ``/proc``; NaN elsewhere)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return math.nan
    return resident_pages * resource.getpagesize() / (1024 * 1024)


def content(session: int, message: int) -> str:
    """The text of user message *message* of session *session*."""
    return f"session {session} message {message}"


async def run_load(
    service: StoreService,
    backend: str,
    *,
    sessions: int = SESSIONS,
    messages: int = MESSAGES,
    workers: int = WORKERS,
) -> LoadFigures:
    """Drive *sessions* x *messages* exchanges, then check every history."""
    runtime = AgentRuntime(
        agent_id=f"load-{backend}",
        sessions_config=SessionsConfig(cleanup_interval=SWEEP_INTERVAL),
        environ={},
    )
    runtime.register_service(service)
    ids: list[str] = [""] * sessions
    resident_before = current_rss_mib()
    async with runtime:
        manager = runtime.sessions
        started = time.monotonic()
        async with manager.running():
            next_session = iter(range(sessions))

            async def worker() -> None:
                for number in next_session:
                    session = await manager.create(user_id=f"user-{number}")
                    ids[number] = session.id
                    for index in range(messages):
                        reply = await manager.send_message(session.id, content(number, index))
                        assert reply.content == f"Echo: {content(number, index)}"

            async with anyio.create_task_group() as tg:
                for _ in range(workers):
                    tg.start_soon(worker)
            load_seconds = time.monotonic() - started
        # The sweeper ran while we loaded (it records how far it got).
        assert isinstance(await manager.store.get("c:sweep"), int), "the sweeper never ran"
        started = time.monotonic()
        await verify(manager, ids, messages, workers)
        verify_seconds = time.monotonic() - started
    return LoadFigures(
        backend,
        sessions,
        messages,
        load_seconds,
        verify_seconds,
        peak_rss_mib(),
        current_rss_mib() - resident_before,
    )


async def verify(manager: SessionManager, ids: list[str], messages: int, workers: int) -> None:
    """Every session holds exactly its user messages and replies, oldest to newest."""
    assert len(set(ids)) == len(ids) and all(ids)
    pending = iter(enumerate(ids))
    problems: list[str] = []

    async def checker() -> None:
        for number, sid in pending:
            page = await manager.history(sid, limit=min(2 * messages + 1, 100))
            history: list[Message] = list(reversed(page.messages))
            expected = [
                (role, text)
                for index in range(messages)
                for role, text in (
                    ("user", content(number, index)),
                    ("agent", f"Echo: {content(number, index)}"),
                )
            ]
            got = [(m.role, m.content) for m in history]
            if got != expected or page.has_more:
                problems.append(f"session {number} ({sid}): {got[:4]}... ({len(got)} messages)")
            times = [m.created_at for m in history]
            if times != sorted(set(times)):
                problems.append(f"session {number}: timestamps not strictly increasing")

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(checker)
    assert not problems, f"{len(problems)} sessions are wrong, e.g. {problems[:3]}"


def _report(figures: LoadFigures) -> None:
    print(f"\nload {figures}")
    assert figures.peak_rss_mib < RSS_LIMIT_MIB, f"peak RSS {figures.peak_rss_mib:.0f} MiB"


@pytest.fixture
async def sqlite_service(tmp_path: Path) -> AsyncIterator[StoreService]:
    """A service on a fresh SQLite file."""
    async with open_service(f"sqlite:///{tmp_path / 'load.db'}") as service:
        yield service


@pytest.fixture
async def redis_service(redis_url: str) -> AsyncIterator[StoreService]:
    """A service on the (flushed) test Redis server."""
    async with open_service(redis_url) as service:
        yield service


@pytest.mark.timeout(TIME_LIMIT + 60)
async def test_sessions_under_load_on_sqlite(sqlite_service: StoreService) -> None:
    with anyio.fail_after(TIME_LIMIT):
        _report(await run_load(sqlite_service, "sqlite"))


@pytest.mark.redis
@pytest.mark.timeout(TIME_LIMIT + 60)
async def test_sessions_under_load_on_redis(redis_service: StoreService) -> None:
    with anyio.fail_after(TIME_LIMIT):
        _report(await run_load(redis_service, "redis"))
