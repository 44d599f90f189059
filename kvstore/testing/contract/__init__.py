"""The KVStore contract suite, shipped so custom backends and services can run it.

This module imports pytest; :mod:`kvstore.testing` imports it only when one of
its names is asked for.

Subclass :class:`KVStoreContract` in a pytest module and provide a
``kv_backend`` fixture returning a :class:`ContractBackend`::

    import pytest
    from kvstore.testing import ContractBackend, KVStoreContract

    class TestMyService(KVStoreContract):
        @pytest.fixture
        def kv_backend(self, tmp_path):
            return ContractBackend(lambda default_ttl=None: MyService(tmp_path, default_ttl))

Every test runs under anyio (``pytest.mark.anyio``), so anyio's pytest plugin
(installed with anyio) must be active; ``anyio_backend`` defaults to asyncio.
TTL tests call ``ContractBackend.advance``: pass a
:class:`~kvstore.testing.ManualClock`'s
``advance`` when your store takes a clock, or keep the default, which sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ...protocol import KVStore, KVStoreService
from .atomic import AtomicContract
from .backend import ContractBackend
from .core import CoreContract
from .inputs import InputContract
from .locks import LockContract
from .values import BAD_KEYS, BAD_TTLS, BAD_VALUES, JSON_VALUES

__all__ = [
    "BAD_KEYS",
    "BAD_TTLS",
    "BAD_VALUES",
    "JSON_VALUES",
    "ContractBackend",
    "KVStoreContract",
]


class KVStoreContract(CoreContract, AtomicContract, LockContract, InputContract):
    """The behaviour every :class:`~kvstore.KVStore` must have (see API.md).

    Requires a ``kv_backend`` fixture returning :class:`ContractBackend`.
    """

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    async def kv_service(self, kv_backend: ContractBackend) -> AsyncIterator[KVStoreService]:
        service = kv_backend.open_service()
        try:
            yield service
        finally:
            await service.aclose()

    @pytest.fixture
    async def store(self, kv_service: KVStoreService) -> KVStore:
        store = kv_service.get_store("contract")
        await store.clear()
        return store
