"""BaseStore's portable defaults: a backend with only the round-1 primitives has every method.

:class:`DictStore` implements the primitives a backend had to write before
``keep_ttl``, ``persist`` and ``lock`` existed, and nothing else, so its
``set(keep_ttl=True)``, ``update(keep_ttl=True)``, ``persist`` and ``lock``
all run on BaseStore's defaults. It passes the whole contract.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, Self

import anyio
import pytest

from kvstore import LockNotOwnedError, StoreService
from kvstore.base import MISSING, BaseStore
from kvstore.testing import ContractBackend, KVStoreContract, ManualClock

pytestmark = pytest.mark.anyio

_Entry = tuple[Any, float | None]


class DictStore(BaseStore):
    """Round-1 primitives over a dict shared by namespaces, on an injected clock."""

    def __init__(
        self,
        *,
        clock: ManualClock,
        default_ttl: float | None = None,
        data: dict[tuple[str, str], _Entry] | None = None,
        namespace: str = "default",
    ) -> None:
        super().__init__(default_ttl=default_ttl)
        self._clock = clock
        self._data = {} if data is None else data
        self._ns = namespace

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        raise NotImplementedError  # pragma: no cover - not needed here

    def namespaced(self, name: str, **options: Any) -> Self:
        settings: dict[str, Any] = {"default_ttl": self._default_ttl} | options
        return type(self)(clock=self._clock, data=self._data, namespace=name, **settings)

    def _live(self, key: str) -> Any:
        entry = self._data.get((self._ns, key))
        if entry is None or (entry[1] is not None and entry[1] <= self._clock()):
            return MISSING
        return entry[0]

    def _put(self, key: str, stored: Any, ttl: float | None) -> None:
        self._data[self._ns, key] = (stored, None if ttl is None else self._clock() + ttl)

    async def _get(self, key: str) -> Any:
        await anyio.lowlevel.checkpoint()  # a real backend awaits: let others run
        return self._live(key)

    async def _set(self, key: str, stored: Any, ttl: float | None) -> None:
        self._put(key, stored, ttl)

    async def _delete(self, key: str) -> bool:
        live = self._live(key) is not MISSING
        self._data.pop((self._ns, key), None)
        return live

    async def _add(self, key: str, stored: Any, ttl: float | None) -> bool:
        if self._live(key) is not MISSING:
            return False
        self._put(key, stored, ttl)
        return True

    async def _update(self, key: str, transform: Callable[[Any], Any], ttl: float | None) -> None:
        self._put(key, transform(self._live(key)), ttl)

    async def _ttl(self, key: str) -> float | None:
        await anyio.lowlevel.checkpoint()
        if self._live(key) is MISSING:
            return None
        expires_at = self._data[self._ns, key][1]
        return None if expires_at is None else expires_at - self._clock()

    async def _expire(self, key: str, ttl: float) -> bool:
        stored = self._live(key)
        if stored is MISSING:
            return False
        self._put(key, stored, ttl)
        return True

    async def _entries(self, prefix: str) -> AsyncGenerator[tuple[str, Any], None]:
        for ns, key in list(self._data):
            if ns == self._ns and key.startswith(prefix):
                stored = self._live(key)
                if stored is not MISSING:
                    yield key, stored

    async def _clear(self) -> None:
        for name in [name for name in self._data if name[0] == self._ns]:
            del self._data[name]


class TestDefaultsContract(KVStoreContract):
    @pytest.fixture
    def kv_backend(self) -> ContractBackend:
        clock = ManualClock()
        data: dict[tuple[str, str], _Entry] = {}

        def open_service(default_ttl: float | None = None) -> StoreService:
            return StoreService(DictStore(clock=clock, default_ttl=default_ttl, data=data))

        return ContractBackend(open_service, advance=clock.advance, ttl_unit=10.0)


async def test_default_release_leaves_another_holders_lock() -> None:
    store = DictStore(clock=ManualClock())
    lock = store.lock("lock:x", ttl=10)
    await lock.__aenter__()
    await store.set("lock:x", "someone else's token")  # as if it expired and was taken
    with pytest.raises(LockNotOwnedError):
        await lock.__aexit__(None, None, None)
    assert await store.get("lock:x") == "someone else's token"


async def test_default_keep_ttl_retries_when_the_key_changes_between_its_steps() -> None:
    clock = ManualClock()
    store = DictStore(clock=clock)
    real_ttl = store._ttl
    calls = 0

    async def racing_ttl(key: str) -> float | None:
        # The first read sees a missing key, then another client creates it.
        nonlocal calls
        calls += 1
        remaining = await real_ttl(key)
        if calls == 1:
            await store.set("k", 1, ttl=50)
        return None if calls == 1 else remaining

    store._ttl = racing_ttl  # type: ignore[method-assign]
    assert await store.update("k", lambda n: n + 1, ttl=5, keep_ttl=True) == 2
    assert calls >= 2
    store._ttl = real_ttl  # type: ignore[method-assign]
    remaining = await store.ttl("k")
    assert remaining is not None and 45 < remaining <= 50  # the new key's own TTL, kept
