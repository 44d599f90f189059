"""Load: many sessions x 10 messages through SessionManager, on SQLite and Redis.

64 workers drive one :class:`~runtime.AgentRuntime` concurrently while its
sweeper runs (``async with sessions.running()``, every second). Each worker
takes the next session number, creates the session and sends its 10 messages
one after the other (each ``send_message`` stores the user message, composes
and caches the state, and stores the echo reply). Afterwards every session is
read back: it must hold exactly its 10 user messages and 10 replies, in order,
with strictly increasing timestamps. Sessions that do not are counted
(``wrong_sessions``), never hidden: a figure from a run that lost data is no
figure.

Reported per backend: sessions, exchanges per second while loading, seconds to
load and to verify, peak RSS of the process (``ru_maxrss``) and how much the
resident set grew during the run (a leak of per-message objects shows there).

    python bench/sessions_load.py [--quick] [--sessions N] [--redis-url redis://127.0.0.1:PORT/0]

SQLite (a temporary file) always runs; Redis only with ``--redis-url`` (point it
at a server of your own, never a shared one: the run writes and deletes keys).
Full size is 10 000 sessions per backend (a few minutes each on 2 cores);
``--quick`` runs 1 000. The test suite runs :func:`run_load` on 200 sessions
per backend as a smoke test of the same checks.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio

from kvstore import StoreService, open_service
from runtime import AgentRuntime, Message, SessionManager, SessionsConfig

__all__ = ["LoadFigures", "main", "measure", "run_load"]

SESSIONS: Final = 10_000
QUICK_SESSIONS: Final = 1_000
MESSAGES: Final = 10
WORKERS: Final = 64
SWEEP_INTERVAL: Final = 1.0


@dataclass(frozen=True)
class LoadFigures:
    """What one run measured, and what the read-back found wrong."""

    backend: str
    sessions: int
    messages: int
    workers: int
    sweep_interval: float
    load_seconds: float
    verify_seconds: float
    peak_rss_mib: float
    rss_growth_mib: float
    swept: bool
    """Whether the sweeper ran while the load did (it records how far it got)."""
    problems: tuple[str, ...]
    """One line per session whose history came back wrong (empty: nothing lost)."""

    @property
    def exchanges_per_second(self) -> float:
        """Messages sent (each with its reply) per second of the load phase."""
        return self.sessions * self.messages / self.load_seconds

    def __str__(self) -> str:
        verdict = (
            "every history intact"
            if not self.problems
            else f"{len(self.problems)} sessions WRONG, e.g. {list(self.problems[:3])}"
        )
        return (
            f"{self.backend}: {self.sessions} sessions x {self.messages} messages in"
            f" {self.load_seconds:.1f} s ({self.exchanges_per_second:.0f} exchanges/s,"
            f" {self.workers} workers, sweeper every {self.sweep_interval:g} s); verified in"
            f" {self.verify_seconds:.1f} s ({verdict}); peak RSS {self.peak_rss_mib:.0f} MiB"
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
    sweep_interval: float = SWEEP_INTERVAL,
) -> LoadFigures:
    """Drive *sessions* x *messages* exchanges through one runtime, then read every history."""
    runtime = AgentRuntime(
        agent_id=f"load-{backend}",
        sessions_config=SessionsConfig(cleanup_interval=sweep_interval),
        environ={},
    )
    runtime.register_service(service)
    ids: list[str] = [""] * sessions
    problems: list[str] = []
    resident_before = current_rss_mib()
    async with runtime:
        manager = runtime.sessions
        started = time.perf_counter()
        async with manager.running():
            next_session = iter(range(sessions))

            async def worker() -> None:
                for number in next_session:
                    session = await manager.create(user_id=f"user-{number}")
                    ids[number] = session.id
                    for index in range(messages):
                        reply = await manager.send_message(session.id, content(number, index))
                        if reply.content != f"Echo: {content(number, index)}":
                            problems.append(f"session {number}: reply {reply.content!r}")

            async with anyio.create_task_group() as tg:
                for _ in range(workers):
                    tg.start_soon(worker)
            load_seconds = time.perf_counter() - started
        swept = isinstance(await manager.store.get("c:sweep"), int)
        started = time.perf_counter()
        problems += await verify(manager, ids, messages, workers)
        verify_seconds = time.perf_counter() - started
    return LoadFigures(
        backend,
        sessions,
        messages,
        workers,
        sweep_interval,
        load_seconds,
        verify_seconds,
        peak_rss_mib(),
        current_rss_mib() - resident_before,
        swept,
        tuple(problems),
    )


async def verify(manager: SessionManager, ids: list[str], messages: int, workers: int) -> list[str]:
    """What is wrong with the sessions *ids*: each must hold exactly its messages and replies."""
    problems: list[str] = []
    if len(set(ids)) != len(ids) or not all(ids):
        problems.append(f"session ids missing or repeated: {len(set(ids))} distinct of {len(ids)}")
    pending = iter(enumerate(ids))

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
    return problems


async def measure(
    quick: bool = False, redis_url: str | None = None, sessions: int | None = None
) -> dict[str, dict[str, Any]]:
    """Run the load on SQLite and, when *redis_url* is given, on Redis; figures per backend.

    Each backend's figures: ``sessions``, ``exchanges_per_s``, ``load_s``,
    ``verify_s``, ``peak_rss_mib``, ``rss_growth_mib``, ``sweeper_ran`` and
    ``wrong_sessions`` (0 unless data was lost). *sessions* overrides the size
    (default 10 000, or 1 000 with *quick*).
    """
    count = sessions or (QUICK_SESSIONS if quick else SESSIONS)
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sessions-load-") as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'load.db'}"}
        if redis_url:
            urls["redis"] = redis_url
        for backend, url in urls.items():
            async with open_service(url) as service:
                await service.get_store("sessions").clear()
                run = await run_load(service, backend, sessions=count)
                await service.get_store("sessions").clear()
            print(f"  load {run}")
            figures[backend] = _figures(run)
    return figures


def _figures(run: LoadFigures) -> dict[str, Any]:
    return {
        "sessions": run.sessions,
        "exchanges_per_s": round(run.exchanges_per_second),
        "load_s": round(run.load_seconds, 1),
        "verify_s": round(run.verify_seconds, 1),
        "peak_rss_mib": round(run.peak_rss_mib, 1),
        "rss_growth_mib": round(run.rss_growth_mib, 1),  # NaN where /proc is missing
        "sweeper_ran": run.swept,
        "wrong_sessions": len(run.problems),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run :func:`measure`, print the figures; 1 if data was lost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SESSIONS:,} sessions")
    parser.add_argument("--sessions", type=int, help=f"sessions per backend (default {SESSIONS:,})")
    parser.add_argument("--redis-url", help="also load this Redis (your own server)")
    args = parser.parse_args(argv)
    figures = anyio.run(measure, args.quick, args.redis_url, args.sessions)
    return 1 if any(cells["wrong_sessions"] for cells in figures.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
