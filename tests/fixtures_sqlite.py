"""SQLite fixtures: the contract backend on a fresh database file per test."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kvstore import SQLiteStore, StoreService
from kvstore.testing import ContractBackend, ManualClock


@pytest.fixture
def sqlite_contract_backend(tmp_path: Path) -> ContractBackend:
    """Services over one SQLite file in *tmp_path*, with a clock the tests move."""
    # Near the wall clock: the cross-process lock tests' children use that one.
    clock = ManualClock(time.time())
    path = tmp_path / "kv.db"

    def open_service(default_ttl: float | None = None) -> StoreService:
        store = SQLiteStore(path, clock=clock, default_ttl=default_ttl)
        return StoreService(store)

    return ContractBackend(
        open_service, advance=clock.advance, ttl_unit=10.0, url=f"sqlite:///{path}"
    )
