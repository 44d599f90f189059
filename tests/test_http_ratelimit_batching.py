"""The limiter's cheap paths keep its counts: coalesced updates and leased places.

- Concurrent requests of one client share store updates but each gets its own
  place: exactly the limit is admitted, with distinct ``RateLimit-Remaining``.
- A cancelled leader hands its batch on; nobody waits for ever.
- With a lease (limits of 200 and more), two replicas on one store admit at
  most the limit, and at most a lease per replica fewer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from kvstore import MemoryStore
from kvstore.testing import ManualClock
from runtime import AgentRuntime
from runtime.http import create_app
from runtime.http.ratelimit import RateLimit, RateLimitMiddleware, _Coalescer, lease_size

pytestmark = pytest.mark.anyio

AGENT = "6b1f0c3e-2d4a-4c8e-9f10-1a2b3c4d5e6f"


class SlowStore(MemoryStore):
    """A memory store whose updates take a while and are counted."""

    updates = 0

    async def update(self, key: str, fn: Any, **kwargs: Any) -> Any:
        SlowStore.updates += 1
        await anyio.sleep(0.01)
        return await super().update(key, fn, **kwargs)


@pytest.fixture
async def runtime() -> AsyncIterator[AgentRuntime]:
    async with AgentRuntime(agent_id=AGENT, environ={}) as agent:
        yield agent


def _app(runtime: AgentRuntime, store: MemoryStore, limit: RateLimit, clock: ManualClock) -> Any:
    app = create_app(runtime, sweep=False)
    app.add_middleware(RateLimitMiddleware, limit=limit, store=store, clock=clock)
    return app


async def test_concurrent_requests_get_exact_places(runtime: AgentRuntime) -> None:
    store = SlowStore()
    SlowStore.updates = 0
    app = _app(runtime, store, RateLimit(20, 60), ManualClock(1_000_000.0))
    statuses: list[int] = []
    remaining: list[str] = []
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def one() -> None:
            answer = await client.get("/api/server/ping")
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                remaining.append(answer.headers["ratelimit-remaining"])

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(one)
    assert statuses.count(200) == 20 and statuses.count(429) == 30
    assert sorted(remaining, key=int) == [str(n) for n in range(20)]
    assert SlowStore.updates < 50  # shared round trips
    assert (await store.get("10.0.0.1"))[0] == 50


async def test_a_cancelled_leader_hands_over() -> None:
    counts = _Coalescer()
    stored = 0
    started = anyio.Event()

    async def update(requests: int) -> tuple[float, float]:
        nonlocal stored
        started.set()
        await anyio.sleep(0.05)
        stored += requests
        return float(stored), 60.0

    places: list[float] = []

    async def follower() -> None:
        places.append((await counts.count("c", update))[0])

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            async with anyio.create_task_group() as leader:
                leader.start_soon(counts.count, "c", update)
                await started.wait()
                for _ in range(5):
                    group.start_soon(follower)
                await anyio.sleep(0.01)
                leader.cancel_scope.cancel()
    assert sorted(places) == [1.0, 2.0, 3.0, 4.0, 5.0]


async def test_leases_keep_two_replicas_within_the_limit(runtime: AgentRuntime) -> None:
    limit = RateLimit(1000, 60)
    assert lease_size(limit) == 10
    store = MemoryStore()
    clock = ManualClock(1_000_000.0)
    apps = [_app(runtime, store, limit, clock) for _ in range(2)]
    admitted = 0
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 1)), base_url="http://t"
        )
        for app in apps
    ]
    try:
        for index in range(1100):
            answer = await clients[index % 2].get("/api/server/ping")
            admitted += answer.status_code == 200
    finally:
        for client in clients:
            await client.aclose()
    assert 1000 - 2 * lease_size(limit) <= admitted <= 1000
    # A new window starts afresh, leases included.
    clock.advance_by(61)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=apps[0], client=("10.0.0.9", 1)), base_url="http://t"
    ) as client:
        assert (await client.get("/api/server/ping")).status_code == 200
