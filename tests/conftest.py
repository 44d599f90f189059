"""Shared fixtures. Backend-specific fixtures live in fixtures_*.py plugins."""

from __future__ import annotations

import pytest

pytest_plugins = ["fixtures_sqlite", "fixtures_redis", "fixtures_cluster"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
