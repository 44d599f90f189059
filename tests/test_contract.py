"""The kvstore.testing contract, run unchanged against every backend.

Each backend contributes one fixture, ``<name>_contract_backend``, returning a
:class:`~kvstore.testing.ContractBackend`: memory here, SQLite in
fixtures_sqlite.py, Redis in fixtures_redis.py.
"""

from __future__ import annotations

import pytest

from kvstore import MemoryStore, StoreService
from kvstore.testing import ContractBackend, KVStoreContract, ManualClock


@pytest.fixture
def memory_contract_backend() -> ContractBackend:
    clock = ManualClock()

    def open_service(default_ttl: float | None = None) -> StoreService:
        return StoreService(MemoryStore(clock=clock, default_ttl=default_ttl))

    return ContractBackend(open_service, advance=clock.advance, ttl_unit=10.0)


BACKENDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]


class TestContract(KVStoreContract):
    @pytest.fixture(params=BACKENDS)
    def kv_backend(self, request: pytest.FixtureRequest) -> ContractBackend:
        backend: ContractBackend = request.getfixturevalue(f"{request.param}_contract_backend")
        return backend
