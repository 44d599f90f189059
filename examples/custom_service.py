"""A custom key-value service, written from scratch, plugged into an agent runtime.

``FileKVStoreService`` keeps each named store in one JSON file of a directory.
It implements the :class:`kvstore.KVStore` and :class:`kvstore.KVStoreService`
protocols directly (no kvstore base class), the way a third party would, and
passes the shipped contract suite (see tests/test_custom_service_example.py)::

    class TestFileService(KVStoreContract):
        @pytest.fixture
        def kv_backend(self, tmp_path):
            return ContractBackend(lambda default_ttl=None: FileKVStoreService(tmp_path, ...))

Design, in short:

- the whole store is held in memory and every write rewrites its file
  atomically (temp file + ``os.replace``), so a crash leaves the old or the new
  file, never half of one; file I/O runs on a worker thread;
- values are validated and JSON-encoded on the way in and decoded on the way
  out, so callers never share a mutable object with the store;
- expiry is an absolute wall-clock time per key, kept in the file, so TTLs
  survive a restart;
- one lock per store makes ``add``, ``update`` and the compare-and-delete that
  releases a :class:`kvstore.StoreLock` atomic. It is a per-process lock: one
  process per directory (use SQLite or Redis to share a store).

Run it: ``python examples/custom_service.py`` (works in a temporary directory).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import anyio
import anyio.to_thread

from kvstore import (
    InvalidKeyError,
    InvalidTTLError,
    KVStore,
    MetricsStore,
    SerializationError,
    StoreClosedError,
    StoreLock,
    ValueTooLargeError,
    is_kv_store_service,
)
from runtime import AgentRuntime, Message, Plugin

MAX_KEY_LENGTH: Final = 1024
STORE_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FILE_FORMAT: Final = 1

# The JSON value rules of the KVStore contract: what every store must accept and refuse.
_INT_RANGE: Final = range(-(2**63), 2**64)


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a str, not {type(key).__name__}")
    key = str.__str__(key)  # a str subclass (a StrEnum member) is its plain text
    if not key:
        raise InvalidKeyError("key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"key is {len(key)} characters; at most {MAX_KEY_LENGTH} allowed")
    if "\x00" in key:
        raise InvalidKeyError("key must not contain NUL characters")
    return key


def _check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidTTLError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidTTLError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
    return float(ttl)


def _check_json(value: Any, path: str = "value") -> None:
    """Raise SerializationError unless *value* round-trips through JSON unchanged."""
    # Exact types: a subclass (an IntEnum, a str Enum, a dict subclass) would come
    # back as its base type. An int subclass would also make `in range` iterate.
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return
    if kind is int:
        if value not in _INT_RANGE:
            raise SerializationError(f"{path}: integers must fit in 64 bits")
    elif kind is float:
        if not math.isfinite(value):
            raise SerializationError(f"{path}: NaN and infinities are not JSON")
    elif kind is list or kind is tuple:
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
    elif kind is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(f"{path}: dict keys must be str, got {key!r}")
            _check_json(item, f"{path}[{key!r}]")
    else:
        raise SerializationError(
            f"{path}: a {type(value).__name__} is not JSON-compatible"
            " (allowed: dict, list, str, int, float, bool, None)"
        )


class JSONFileStore:
    """One store: a dict of ``key -> (JSON text, expires_at)`` mirrored to a JSON file.

    Satisfies :class:`kvstore.KVStore`. Get it from :meth:`FileKVStoreService.get_store`.
    """

    def __init__(
        self,
        path: Path,
        *,
        default_ttl: float | None,
        clock: Callable[[], float],
        max_value_bytes: int,
    ) -> None:
        self.path = path
        self._default_ttl = default_ttl
        self._clock = clock
        self._max_value_bytes = max_value_bytes
        self._data: dict[str, tuple[str, float | None]] | None = None  # None until loaded
        self._lock = anyio.Lock()
        self._closed = False

    # -- encoding and expiry ---------------------------------------------------

    def _encode(self, value: Any) -> str:
        try:
            _check_json(value)
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except RecursionError:
            raise SerializationError("value is nested too deeply to encode") from None
        size = len(text.encode())
        if size > self._max_value_bytes:
            raise ValueTooLargeError(
                f"encoded value is {size} bytes; this store accepts {self._max_value_bytes}"
            )
        return text

    def _expiry(self, ttl: float | None) -> float | None:
        seconds = self._default_ttl if ttl is None else _check_ttl(ttl)
        return None if seconds is None else self._clock() + seconds

    def _live(self, data: Mapping[str, tuple[str, float | None]], key: str) -> str | None:
        entry = data.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= self._clock()):
            return None
        return entry[0]

    # -- loading and saving ----------------------------------------------------------

    async def _load(self) -> dict[str, tuple[str, float | None]]:
        if self._closed:
            raise StoreClosedError(f"store {self.path.stem!r} is closed")
        if self._data is None:
            async with self._lock:
                if self._data is None:
                    self._data = await anyio.to_thread.run_sync(self._read_file)
        return self._data

    def _read_file(self) -> dict[str, tuple[str, float | None]]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(raw)
            return {
                key: (json.dumps(item["value"], ensure_ascii=False), item["expires_at"])
                for key, item in document["entries"].items()
            }
        except (ValueError, KeyError, TypeError) as err:
            raise SerializationError(f"{self.path} is not a store file: {err}") from err

    async def _commit(self, data: dict[str, tuple[str, float | None]]) -> None:
        """Write *data* to the file, then make it the store's content (lock held)."""
        now = self._clock()
        live = {k: e for k, e in data.items() if e[1] is None or e[1] > now}
        await anyio.to_thread.run_sync(self._write_file, live)
        self._data = live

    def _write_file(self, data: Mapping[str, tuple[str, float | None]]) -> None:
        # Values are JSON text already: splice them in instead of decoding them.
        entries = ",".join(
            f'{json.dumps(key)}:{{"value":{text},"expires_at":{json.dumps(exp)}}}'
            for key, (text, exp) in data.items()
        )
        document = f'{{"format":{FILE_FORMAT},"entries":{{{entries}}}}}'
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(document)
                file.flush()
                os.fsync(file.fileno())
            # Atomic on POSIX and Windows: readers see the old file or the new one.
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    # -- reads --------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of *key*, or *default* when missing or expired."""
        key = _check_key(key)
        text = self._live(await self._load(), key)
        return default if text is None else json.loads(text)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """``{key: value}`` for the live keys among *keys*."""
        wanted = [_check_key(key) for key in _key_list(keys)]
        data = await self._load()
        found = {key: self._live(data, key) for key in wanted}
        return {key: json.loads(text) for key, text in found.items() if text is not None}

    async def ttl(self, key: str) -> float | None:
        """Seconds left before *key* expires; None if missing or persistent."""
        key = _check_key(key)
        data = await self._load()
        if self._live(data, key) is None:
            return None
        expires_at = data[key][1]
        return None if expires_at is None else expires_at - self._clock()

    async def entries(self, prefix: str = "") -> AsyncGenerator[tuple[str, Any], None]:
        """Yield ``(key, value)`` for live keys starting with *prefix*."""
        if type(prefix) is not str or "\x00" in prefix or len(prefix) > MAX_KEY_LENGTH:
            raise InvalidKeyError("prefix must be a str of at most 1024 characters without NUL")
        data = await self._load()
        # Iterate over a snapshot of the keys; each is looked up again when its
        # turn comes, so writes by other tasks meanwhile are safe.
        for key in [key for key in data if key.startswith(prefix)]:
            text = self._live(await self._load(), key)
            if text is not None:
                yield key, json.loads(text)

    # -- writes (under the lock: read, change a copy, write the file, swap) ---------

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        """Store *value* under *key* for *ttl* seconds (None: the default TTL).

        With *keep_ttl*, a live key keeps its remaining TTL (*ttl* is for a new key).
        """
        await self._write({_check_key(key): value}, ttl, keep_ttl=keep_ttl)

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        """Store every item of *mapping* with one file write."""
        if not isinstance(mapping, Mapping):
            raise TypeError(f"set_many() takes a mapping, not {type(mapping).__name__}")
        await self._write(mapping, ttl, keep_ttl=False)

    async def _write(
        self, mapping: Mapping[str, Any], ttl: float | None, *, keep_ttl: bool
    ) -> None:
        keys = [_check_key(key) for key in mapping]
        expires_at = self._expiry(ttl)
        texts = [self._encode(value) for value in mapping.values()]
        if not keys:
            return
        await self._load()
        async with self._lock:
            data = dict(self._data or {})
            for key, text in zip(keys, texts, strict=True):
                data[key] = (text, self._kept_expiry(data, key, expires_at, keep_ttl))
            await self._commit(data)

    async def delete(self, key: str) -> bool:
        """Remove *key*; True if it was live."""
        return await self.delete_many([_check_key(key)]) == 1

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove *keys*; the number of live keys removed."""
        wanted = set(_check_key(key) for key in _key_list(keys))
        await self._load()
        async with self._lock:
            data = dict(self._data or {})
            removed = [key for key in wanted if self._live(data, key) is not None]
            if not removed:
                return 0
            for key in removed:
                del data[key]
            await self._commit(data)
            return len(removed)

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        """Store *value* only if *key* has no live value; True if stored."""
        key = _check_key(key)
        expires_at = self._expiry(ttl)
        text = self._encode(value)
        await self._load()
        async with self._lock:
            data = dict(self._data or {})
            if self._live(data, key) is not None:
                return False
            data[key] = (text, expires_at)
            await self._commit(data)
            return True

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        default: Any = None,
        ttl: float | None = None,
        keep_ttl: bool = False,
    ) -> Any:
        """Atomically store and return ``fn(current value or default)``.

        With *keep_ttl*, a live key keeps its remaining TTL (*ttl* is for a new key).
        """
        key = _check_key(key)
        expires_at = self._expiry(ttl)
        await self._load()
        async with self._lock:
            data = dict(self._data or {})
            text = self._live(data, key)
            result = fn(default if text is None else json.loads(text))
            data[key] = (self._encode(result), self._kept_expiry(data, key, expires_at, keep_ttl))
            await self._commit(data)
            return result

    def _kept_expiry(
        self,
        data: Mapping[str, tuple[str, float | None]],
        key: str,
        expires_at: float | None,
        keep_ttl: bool,
    ) -> float | None:
        """The expiry a write of *key* gets: the live key's own with *keep_ttl*."""
        if keep_ttl and self._live(data, key) is not None:
            return data[key][1]
        return expires_at

    async def persist(self, key: str) -> bool:
        """Remove the TTL of live *key*; False if it is missing."""
        key = _check_key(key)
        await self._load()
        async with self._lock:
            data = dict(self._data or {})
            text = self._live(data, key)
            if text is None:
                return False
            data[key] = (text, None)
            await self._commit(data)
            return True

    def lock(
        self, name: str, *, ttl: float, timeout: float | None = None, blocking: bool = True
    ) -> StoreLock:
        """A lock held under the key *name* (exclusive within this process, like the store)."""
        name = _check_key(name)
        token_ttl = _check_ttl(ttl)

        async def acquire(token: str) -> bool:
            return await self.add(name, token, ttl=token_ttl)

        async def release(token: str) -> bool:
            await self._load()
            async with self._lock:  # compare and delete in one step
                data = dict(self._data or {})
                text = self._live(data, name)
                if text is None or json.loads(text) != token:
                    return False
                del data[name]
                await self._commit(data)
                return True

        return StoreLock(
            name,
            ttl=token_ttl,
            timeout=timeout,
            blocking=blocking,
            acquire=acquire,
            release=release,
        )

    async def expire(self, key: str, ttl: float) -> bool:
        """Give live *key* a new TTL; False if it is missing."""
        key = _check_key(key)
        seconds = _check_ttl(ttl)
        await self._load()
        async with self._lock:
            data = dict(self._data or {})
            text = self._live(data, key)
            if text is None:
                return False
            data[key] = (text, self._clock() + seconds)
            await self._commit(data)
            return True

    async def clear(self) -> None:
        """Remove every key of this store."""
        await self._load()
        async with self._lock:
            await self._commit({})

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Forget the in-memory copy; the file stays. Idempotent."""
        self._closed = True
        self._data = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _key_list(keys: Iterable[str]) -> Iterable[str]:
    if isinstance(keys, str | bytes):
        raise TypeError("expected an iterable of keys, not a single str")
    return keys


class FileKVStoreService:
    """A :class:`kvstore.KVStoreService` keeping store ``name`` in ``<directory>/<name>.json``.

    Args:
        directory: created if missing.
        default_ttl: seconds for writes with ``ttl=None`` (None: keep forever).
        clock: wall-clock seconds; expiry times are stored in the files.
        max_value_bytes: largest encoded value accepted.
        metrics: wrap each store in :class:`kvstore.MetricsStore` (``get_metrics()``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        default_ttl: float | None = None,
        clock: Callable[[], float] = time.time,
        max_value_bytes: int = 16 * 1024 * 1024,
        metrics: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._default_ttl = None if default_ttl is None else _check_ttl(default_ttl)
        self._clock = clock
        self._max_value_bytes = max_value_bytes
        self._metrics = metrics
        self._stores: dict[str, tuple[JSONFileStore, KVStore]] = {}
        self._closed = False

    def get_store(self, name: str) -> KVStore:
        """The store *name* (``[A-Za-z0-9_.-]{1,64}``); the same object for the same name."""
        if self._closed:
            raise StoreClosedError("FileKVStoreService is closed")
        if not isinstance(name, str) or not STORE_NAME.fullmatch(name):
            raise InvalidKeyError(f"invalid store name {name!r}: use [A-Za-z0-9_.-], 1 to 64")
        if name not in self._stores:
            store = JSONFileStore(
                self.directory / f"{name}.json",
                default_ttl=self._default_ttl,
                clock=self._clock,
                max_value_bytes=self._max_value_bytes,
            )
            handle: KVStore = MetricsStore(store, name=name) if self._metrics else store
            self._stores[name] = (store, handle)
        return self._stores[name][1]

    async def aclose(self) -> None:
        """Close every store handed out. Idempotent; the files stay."""
        self._closed = True
        for store, _ in self._stores.values():
            await store.aclose()


# -- the demo --------------------------------------------------------------------------


async def weather_provider(runtime: AgentRuntime, message: Message) -> dict[str, Any]:
    """A provider: what the agent knows about the weather (fixed, for the demo)."""
    return {"weather": {"city": "Lisbon", "sky": "sunny", "celsius": 21}}


async def user_provider(runtime: AgentRuntime, message: Message) -> dict[str, Any]:
    """A provider: who is talking."""
    return {"user": {"session": message.session_id, "words": len(message.content.split())}}


async def main(directory: Path) -> None:
    """Compose and cache a state in a file-backed service, then read it back."""
    service = FileKVStoreService(directory)
    print("is a KVStoreService:", is_kv_store_service(service))
    plugin = Plugin(
        "file-storage",
        services=[service],
        providers=[weather_provider, user_provider],
        description="keeps agent state in JSON files",
    )
    message = Message(
        id="msg-1",
        session_id="demo-session",
        role="user",
        content="Will it rain today?",
        created_at=time.time(),
    )
    async with AgentRuntime(
        agent_id="demo-agent", plugins=[plugin], settings={"STATE_CACHE_TTL": 600}
    ) as runtime:
        print("kv service:", type(runtime.kv_service).__name__)
        state = await runtime.compose_state(message)
        cached = await runtime.compose_state(message)  # served by the cache
        print("state:", json.dumps(state, sort_keys=True))
        print("cached state equal:", cached == state)
        print("reply:", await runtime.generate_reply(message, state))

        store_file = directory / "state_cache.json"
        print("file:", store_file.name)
        print("file content:", store_file.read_text(encoding="utf-8"))

        store = service.get_store("state_cache")
        if isinstance(store, MetricsStore):
            m = store.get_metrics()
            print(f"metrics: gets={m.gets} hits={m.hits} misses={m.misses} sets={m.sets}")
        print("entries:", [key async for key, _ in runtime.state_cache.entries()])
    # The runtime never closes a service it was given: we own it.
    await service.aclose()

    # A "restart": a new service on the same directory finds the state again.
    reopened = FileKVStoreService(directory)
    survived = await reopened.get_store("state_cache").get("msg-1")
    print("after restart:", json.dumps(survived, sort_keys=True))
    await reopened.aclose()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="kv-files-") as tmp:
        anyio.run(main, Path(tmp))
