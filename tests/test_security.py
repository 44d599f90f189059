"""Security properties: no unpickling, unguessable session ids, namespaces that hold.

- No module of ``kvstore`` or ``runtime`` imports ``pickle``, ``marshal``,
  ``shelve`` (or the third-party picklers), checked on the AST, so a comment or
  a docstring mentioning them does not count but ``importlib.import_module``
  and ``__import__`` with a literal name do.
- Session ids carry at least 128 bits from :mod:`secrets`: checked by watching
  where the manager draws them and statistically on thousands of real ids
  (alphabet, length, per-position entropy, uniqueness). A UUID4 (122 bits) fails.
- On a Redis database shared with other applications, a store's ``clear()``
  and ``entries()`` touch only its own namespace: foreign keys written with
  redis-py, including ones that share a textual prefix or contain glob
  characters, all survive. The same for SQLite namespaces and foreign tables.
"""

from __future__ import annotations

import ast
import itertools
import math
import secrets
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from kvstore import (
    KVStore,
    KVStoreError,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    StoreService,
    open_service,
)
from runtime import AgentRuntime, SessionManager

pytestmark = pytest.mark.anyio

REPO: Final = Path(__file__).resolve().parent.parent
PACKAGES: Final = ("kvstore", "runtime")
FORBIDDEN_MODULES: Final = frozenset(
    {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
)
DYNAMIC_IMPORTERS: Final = frozenset({"import_module", "__import__"})


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """``file:line module`` for every import of a forbidden module in *source*."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if called in DYNAMIC_IMPORTERS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names = [first.value]
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{filename}:{getattr(node, 'lineno', '?')} {name}")
    return found


def test_the_import_check_finds_every_form() -> None:
    source = (
        "import os, pickle\n"
        "import marshal as m\n"
        "from shelve import open\n"
        "from pickle import loads\n"
        "import importlib\n"
        "importlib.import_module('cloudpickle')\n"
        "__import__('dill')\n"
        "# import pickle  (a comment does not count)\n"
        "'''pickle in a docstring does not count either'''\n"
        "from . import pickle_free\n"
    )
    assert [hit.split()[1] for hit in forbidden_imports(source)] == [
        "pickle",
        "marshal",
        "shelve",
        "pickle",
        "cloudpickle",
        "dill",
    ]


def test_no_pickle_marshal_or_shelve_in_the_packages() -> None:
    files = list(_sources())
    assert len(files) >= 10, "the source tree was not found"
    hits = [hit for path in files for hit in forbidden_imports(path.read_text(), str(path))]
    assert not hits, f"unsafe deserialisation modules imported: {hits}"


def test_no_pickle_in_what_the_packages_load() -> None:
    # The AST check reads our files; this one catches a dependency we import
    # that pulls pickle in on our behalf and hands it our data (e.g. a codec).
    import kvstore.codec

    assert "pickle" not in type(kvstore.codec.JSONCodec()).__module__
    for name in ("encode", "decode"):
        code = getattr(kvstore.codec.JSONCodec, name).__code__
        assert not FORBIDDEN_MODULES & set(code.co_names), name


# -- session ids -----------------------------------------------------------------------------

ID_SAMPLES: Final = 3000


async def test_session_ids_come_from_secrets(
    sessions: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every id is a token the manager drew from :mod:`secrets`, at least 16 bytes of it."""
    drawn: list[tuple[int | None, str]] = []
    draw = secrets.token_urlsafe

    def watched(nbytes: int | None = None) -> str:
        token = draw(nbytes)
        drawn.append((nbytes, token))
        return token

    monkeypatch.setattr(secrets, "token_urlsafe", watched)
    ids = [(await sessions.create(user_id=f"u{i}")).id for i in range(3)]
    assert [token for _, token in drawn] == ids, "ids must come from secrets"
    assert all(nbytes is not None and nbytes >= 16 for nbytes, _ in drawn)


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
