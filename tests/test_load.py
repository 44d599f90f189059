"""Load smoke test: 200 sessions x 10 messages through SessionManager, on every backend.

The same code as the benchmark ``bench/sessions_load.py`` (10 000 sessions,
figures printed there), at a size that checks behaviour, not speed: 64
workers create sessions and send messages concurrently while the sweeper runs,
and afterwards every session holds exactly its 10 user messages and 10
replies, in order, with strictly increasing timestamps. Nothing is lost,
duplicated or reordered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest

from bench.sessions_load import run_load
from kvstore import StoreService, open_service

pytestmark = pytest.mark.anyio

SESSIONS: Final = 200
SWEEP_INTERVAL: Final = 0.01
"""Short enough that the sweeper runs many times during the load.

The sweeper and the workers share one event loop, so a slow machine slows
both alike: the load (2 000 exchanges, each several awaits) always outlasts a
10 ms sleep by far.
"""


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreService]:
    """A service on a fresh store of each backend."""
    backend: str = request.param
    if backend == "memory":
        url = "memory://"
    elif backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'load.db'}"
    else:
        url = request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url")
    async with open_service(url) as opened:
        yield opened


async def test_concurrent_sessions_lose_no_message(service: StoreService) -> None:
    figures = await run_load(
        service, service.backend.backend, sessions=SESSIONS, sweep_interval=SWEEP_INTERVAL
    )
    print(f"\nload smoke {figures}")
    assert not figures.problems, f"{len(figures.problems)} sessions wrong: {figures.problems[:3]}"
    assert figures.swept, "the sweeper never ran during the load"
    assert (figures.sessions, figures.messages) == (SESSIONS, 10)
