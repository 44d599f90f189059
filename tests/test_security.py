"""Security properties: no unpickling, unguessable session ids, namespaces that hold.

- Every backend (memory, SQLite, Redis, Redis Cluster) stores values as JSON:
  the raw bytes each keeps, read behind the store's back, are exact JSON. A
  pickle planted in the raw storage by another writer is refused with
  :class:`~kvstore.SerializationError` on every read path, and never unpickled
  (the payload would leave a trace if it were).
- Session ids carry at least 128 bits from the OS's randomness (what
  :mod:`secrets` reads): replaying ``os.urandom`` replays them, seeding
  :mod:`random` does not; a colliding id is drawn again rather than taking over
  a session; and statistically on thousands of real ids (alphabet, length,
  per-position entropy, uniqueness). A UUID4 (122 bits) fails.
- On a Redis database shared with other applications, a store's ``clear()``
  and ``entries()`` touch only its own namespace: foreign keys written with
  redis-py, including ones that share a textual prefix or contain glob
  characters, all survive. The same for SQLite namespaces and foreign tables.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import pickle
import random
import secrets
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from kvstore import (
    KVStore,
    KVStoreError,
    MemoryStore,
    RedisClusterStore,
    RedisStore,
    SerializationError,
    SQLiteStore,
    StoreService,
    open_service,
)
from runtime import AgentRuntime, SessionManager

pytestmark = pytest.mark.anyio

PICKLE_PROTOCOLS: Final = (0, 2, pickle.HIGHEST_PROTOCOL)
"""Protocol 0 is printable ASCII, the others binary: neither may be mistaken for data."""

JSON_SCALARS: Final = (str, int, float, bool, type(None))

STORED_VALUES: Final[dict[str, Any]] = {
    "dict": {"user": "ada", "langs": ["python", "ocaml"], "score": 1.5, "ok": True, "n": None},
    "list": [1, "two", [3.0], {"four": False}],
    "text": 'héllo 🔑 "quoted"',
    "int": 2**53 + 1,
    "float": -0.25,
    "bool": True,
    "none": None,
}

UNPICKLED: list[str] = []
"""Filled by :func:`_tripwire` if anything ever unpickles one of the payloads below."""


def _tripwire(who: str) -> str:
    UNPICKLED.append(who)
    return who


class _Tripwire:
    """Pickles to a call of :func:`_tripwire`: unpickling it leaves a trace."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_tripwire, ("a stored payload was unpickled",))


@dataclass
class RawAccess:
    """A store, and the bytes it keeps for each key, read and written behind its back."""

    store: KVStore
    read: Callable[[str], Awaitable[Any]]
    write: Callable[[str, bytes], Awaitable[None]]


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def raw_access(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RawAccess]:
    """Each backend's store with a way to its raw storage (as another writer would have)."""
    backend: str = request.param
    if backend == "memory":
        memory = MemoryStore()

        # A memory store is private to its process; its table is reached directly.
        async def read_memory(key: str) -> Any:
            return memory._data[key][0]

        async def write_memory(key: str, data: bytes) -> None:
            memory._data[key] = (data, None)

        async with memory:
            yield RawAccess(memory, read_memory, write_memory)
    elif backend == "sqlite":
        path = tmp_path / "kv.db"

        async def read_row(key: str) -> Any:
            with closing(sqlite3.connect(path)) as conn:
                (value,) = conn.execute(
                    "SELECT value FROM kv WHERE ns = 'default' AND key = ?", (key,)
                ).fetchone()
            return value

        async def write_row(key: str, data: bytes) -> None:
            with closing(sqlite3.connect(path)) as conn, conn:
                conn.execute(
                    "INSERT OR REPLACE INTO kv (ns, key, value) VALUES ('default', ?, ?)",
                    (key, data),
                )

        async with SQLiteStore(path) as sqlite_store:
            yield RawAccess(sqlite_store, read_row, write_row)
    else:
        url = request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url")
        store_class = RedisStore if backend == "redis" else RedisClusterStore
        async with store_class(url) as redis_store:
            client: Any = redis_store.client

            async def read_key(key: str) -> Any:
                return await client.get(f"kv:default:{key}")

            async def write_key(key: str, data: bytes) -> None:
                await client.set(f"kv:default:{key}", data)

            yield RawAccess(redis_store, read_key, write_key)


async def test_values_are_stored_as_json(raw_access: RawAccess) -> None:
    store = raw_access.store
    await store.set_many(STORED_VALUES)
    await store.set("one", STORED_VALUES["dict"])
    await store.update("updated", lambda _: STORED_VALUES["list"], default=None)
    assert await store.add("added", STORED_VALUES["text"])
    expected = {**STORED_VALUES, "one": STORED_VALUES["dict"]}
    expected |= {"updated": STORED_VALUES["list"], "added": STORED_VALUES["text"]}
    for key, value in expected.items():
        raw = await raw_access.read(key)
        if isinstance(raw, bytes):
            # Exact JSON, read by the standard library (true stays true, not 1).
            assert json.dumps(json.loads(raw.decode("utf-8"))) == json.dumps(value), key
        else:
            # The memory store keeps immutable scalars as they are: JSON values.
            assert type(raw) is type(value) and raw == value, key
            assert isinstance(raw, JSON_SCALARS), key


@pytest.mark.parametrize("protocol", PICKLE_PROTOCOLS)
async def test_a_pickled_payload_is_refused_not_unpickled(
    raw_access: RawAccess, protocol: int
) -> None:
    # Another writer on a shared database plants a pickle where a value should be.
    UNPICKLED.clear()
    payload = pickle.dumps(_Tripwire(), protocol=protocol)
    pickle.loads(payload)  # the tripwire works ...
    assert UNPICKLED
    UNPICKLED.clear()  # ... and no store may set it off
    store = raw_access.store
    await store.set_many({"planted": 0, "honest": {"a": 1}})
    await raw_access.write("planted", payload)
    reads: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.get("planted"),
        lambda: store.get_many(["honest", "planted"]),
        lambda: store.update("planted", lambda value: value),
        lambda: _drain(store),
    ]
    for read in reads:
        with pytest.raises(SerializationError):
            await read()
    assert UNPICKLED == []
    assert await raw_access.read("planted") == payload  # refused, and left as it was
    assert await store.get("honest") == {"a": 1}


async def _drain(store: KVStore) -> dict[str, Any]:
    return {key: value async for key, value in store.entries()}


# -- session ids -----------------------------------------------------------------------------

ID_SAMPLES: Final = 3000


class ReplayedRandomness:
    """Stands in for the OS's randomness: the same bytes, in the same order, every replay."""

    def __init__(self, *draws: bytes) -> None:
        self.draws = list(draws)
        self.counter = itertools.count()

    def __call__(self, size: int) -> bytes:
        seed = self.draws.pop(0) if self.draws else next(self.counter).to_bytes(8, "big")
        return hashlib.shake_256(seed).digest(size)


def replay_os_randomness(patch: pytest.MonkeyPatch, randomness: ReplayedRandomness) -> None:
    """Route every read of the OS CSPRNG through *randomness*.

    ``os.urandom`` for direct callers, and ``random._urandom``, the same function
    as bound by :class:`random.SystemRandom`, through which :mod:`secrets` reads.
    """
    patch.setattr(os, "urandom", randomness)
    patch.setattr(random, "_urandom", randomness)


async def _new_session_ids(count: int) -> list[str]:
    async with AgentRuntime(agent_id="security", environ={}) as runtime:
        return [(await runtime.sessions.create(user_id=f"u{i}")).id for i in range(count)]


async def test_session_ids_come_from_the_os_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not from the random module: the same seed twice still gives new ids.
    random.seed(1234)
    first = await _new_session_ids(3)
    random.seed(1234)
    assert set(first).isdisjoint(await _new_session_ids(3))
    # From the OS CSPRNG (what secrets reads): replaying it replays them.
    with monkeypatch.context() as patch:
        replay_os_randomness(patch, ReplayedRandomness())
        replayed = await _new_session_ids(3)
        replay_os_randomness(patch, ReplayedRandomness())
        assert await _new_session_ids(3) == replayed
        assert len(set(replayed)) == 3
    assert set(replayed).isdisjoint(first)


async def test_a_colliding_session_id_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The OS hands out the same bytes twice in a row: the second session must not
    # take over the first one's id (and with it, its history).
    replay_os_randomness(monkeypatch, ReplayedRandomness(b"same", b"same", b"other"))
    async with AgentRuntime(agent_id="security", environ={}) as runtime:
        sessions = runtime.sessions
        first = await sessions.create(user_id="first")
        await sessions.send_message(first.id, "mine")
        second = await sessions.create(user_id="second")
        assert second.id != first.id
        assert (await sessions.get(first.id)).user_id == "first"
        assert [m.content for m in await sessions.messages(first.id)] == ["Echo: mine", "mine"]


def entropy_bits(ids: list[str]) -> float:
    """Estimated entropy of an id: the sum of each position's (Miller-Madow) entropy.

    Never above ``length * log2(alphabet)``; a constant position adds nothing,
    a position with 4 possible values (UUID4's variant) adds 2 bits.
    """
    length = len(ids[0])
    assert all(len(i) == length for i in ids), "ids of one kind should have one length"
    alphabet = len(set("".join(ids)))
    total = 0.0
    for position in range(length):
        counts = Counter(i[position] for i in ids)
        n = len(ids)
        plug_in = -sum(c / n * math.log2(c / n) for c in counts.values())
        corrected = plug_in + (len(counts) - 1) / (2 * n * math.log(2))
        total += min(corrected, math.log2(alphabet))
    return total


def test_entropy_estimate_tells_128_bits_from_uuid4() -> None:
    import uuid

    assert entropy_bits([secrets.token_hex(16) for _ in range(ID_SAMPLES)]) >= 127
    assert entropy_bits([secrets.token_urlsafe(16) for _ in range(ID_SAMPLES)]) >= 127
    assert entropy_bits([str(uuid.uuid4()) for _ in range(ID_SAMPLES)]) < 124


@pytest.fixture
async def sessions() -> AsyncIterator[SessionManager]:
    """Sessions of an in-memory runtime."""
    async with AgentRuntime(agent_id="security", environ={}) as runtime:
        yield runtime.sessions


async def test_session_ids_have_at_least_128_bits(sessions: SessionManager) -> None:
    ids = [(await sessions.create(user_id=f"u{i}")).id for i in range(ID_SAMPLES)]
    assert len(set(ids)) == len(ids), "session ids repeat"
    lengths = {len(i) for i in ids}
    alphabet = set("".join(ids))
    bits = entropy_bits(ids)
    print(
        f"\nsession ids: {len(ids)} unique, length {lengths}, alphabet of {len(alphabet)},"
        f" estimated entropy {bits:.1f} bits"
    )
    assert alphabet <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    # The ceiling of what the format can carry, then what the sample shows.
    assert min(lengths) * math.log2(len(alphabet)) >= 128
    assert bits >= 128
    # No id is a prefix of another: ids are compared as whole keys.
    ordered = sorted(ids)
    assert not any(b.startswith(a) for a, b in itertools.pairwise(ordered))


# -- namespaces on a shared Redis database ---------------------------------------------------

FOREIGN_REDIS_KEYS: Final = [
    "other",
    "kv",
    "kv:",
    "kv:sessions",
    "kv:sessions*",
    "kv:sessionsX:k",
    "kv:sessions.y:k",
    "kv:session:k",
    "kv:Sessions:k",
    "KV:sessions:k",
    "kvx:sessions:k",
    "kv.x:sessions:k",
    "app:kv:sessions:k",
    "kv:[s]essions:k",
    "kv:?essions:k",
    "kv:*:k",
    "kv:s*:k",
    "\\kv:sessions:k",
    "kv:sessions\\:k",
    "kv2:sessions:k",
]
"""Keys another application (or another prefix) owns; none is in ``kv:sessions:``."""


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A plain redis-py client on the test database: the other application."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.mark.redis
async def test_redis_clear_and_entries_stay_in_their_namespace(
    redis_url: str, redis_client: Any
) -> None:
    for key in FOREIGN_REDIS_KEYS:
        redis_client.set(key, b"foreign")
    redis_client.hset("kv:sessionsH", mapping={"f": "v"})  # another type, too
    foreign = {*FOREIGN_REDIS_KEYS, "kv:sessionsH"}
    async with open_service(redis_url) as service:
        store = service.get_store("sessions")
        sibling = service.get_store("sessions.x")
        mine = {"k": 1, "*": 2, "a:b": 3, "[s]": 4, "\\": 5}
        await store.set_many(mine)
        await sibling.set("k", "sibling")
        assert {k: v async for k, v in store.entries()} == mine
        assert {k: v async for k, v in store.entries("k")} == {"k": 1}
        assert {k async for k, _ in store.entries("*")} == {"*"}
        await store.clear()
        assert [kv async for kv in store.entries()] == []
        assert await sibling.get("k") == "sibling"
    survivors = {key.decode() for key in redis_client.scan_iter(count=1000)}
    assert survivors == foreign | {"kv:sessions.x:k"}
    assert all(redis_client.get(key) == b"foreign" for key in FOREIGN_REDIS_KEYS)


@pytest.mark.redis
async def test_redis_entries_survive_undecodable_foreign_keys(
    redis_url: str, redis_client: Any
) -> None:
    # Every key a store writes is UTF-8 (with surrogatepass); another client on
    # the shared database can still create one that is not. Iterating must not
    # die with a raw UnicodeDecodeError: skip the key, or raise a KVStoreError.
    redis_client.set(b"kv:sessions:\xff\xfe", b"1")
    async with open_service(redis_url) as service:
        store = service.get_store("sessions")
        await store.set("mine", 1)
        try:
            found = {k: v async for k, v in store.entries()}
        except KVStoreError as err:
            assert "sessions" in str(err)
        else:
            assert found == {"mine": 1}
        await store.clear()
    assert redis_client.dbsize() == 0


@pytest.mark.redis
async def test_redis_prefixes_are_separate_services(redis_url: str, redis_client: Any) -> None:
    # Two applications on one database, told apart by their key prefix.
    async with (
        RedisStore(redis_url, prefix="app", namespace="s") as app,
        RedisStore(redis_url, prefix="app.x", namespace="s") as app_x,
        RedisStore(redis_url, prefix="ap", namespace="s") as ap,
    ):
        for store in (app, app_x, ap):
            await store.set("k", store.prefix)
        await app.clear()
        assert await app.get("k") is None
        assert await app_x.get("k") == "app.x"
        assert await ap.get("k") == "ap"
        assert [kv async for kv in app_x.entries()] == [("k", "app.x")]
    assert redis_client.dbsize() == 2


# -- SQLite namespaces and foreign tables ----------------------------------------------------


async def test_sqlite_clear_and_entries_stay_in_their_namespace(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    neighbours = ["sessionsX", "session", "sessions.x", "Sessions", "default", "s"]
    async with StoreService(SQLiteStore(db)) as service:
        for name in neighbours:
            await service.get_store(name).set_many({"k": name, "%": name, "_": name})
        store = service.get_store("sessions")
        mine = {"k": 1, "%": 2, "_": 3, "*": 4, "a'b": 5, 'a"b': 6, "x;DROP TABLE kv": 7}
        await store.set_many(mine)
        assert {k: v async for k, v in store.entries()} == mine
        # LIKE wildcards and quotes in a prefix are plain characters.
        assert {k async for k, _ in store.entries("%")} == {"%"}
        assert {k async for k, _ in store.entries("_")} == {"_"}
        assert {k async for k, _ in store.entries("a'")} == {"a'b"}
    # Another application's table in the same file.
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE other_app (k TEXT, v TEXT)")
        conn.execute("INSERT INTO other_app VALUES ('sessions', 'theirs')")
    async with StoreService(SQLiteStore(db)) as service:
        await service.get_store("sessions").clear()
        for name in neighbours:
            neighbour: KVStore = service.get_store(name)
            assert {k: v async for k, v in neighbour.entries()} == {
                "k": name,
                "%": name,
                "_": name,
            }
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM other_app").fetchall() == [("sessions", "theirs")]
        remaining = conn.execute("SELECT COUNT(*) FROM kv").fetchone()[0]
    assert remaining == 3 * len(neighbours)


async def test_memory_namespaces_are_separate() -> None:
    async with StoreService(MemoryStore()) as service:
        a, b = service.get_store("sessions"), service.get_store("sessionsX")
        await a.set("k", 1)
        await b.set("k", 2)
        await a.clear()
        assert await b.get("k") == 2
