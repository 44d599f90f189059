"""The bad-input catalogue: every malformed input gets its typed error and changes nothing.

Each case names the call, the :mod:`kvstore` error it must raise, the builtin
that error must also be (so ``except ValueError`` works), and words its message
must contain, so that the message says *what* was wrong. Store cases run on
every backend, through the service a user gets (``StoreService`` with metrics),
and check that the store's entries and TTLs are the same before and after.

The cases live in module-level lists, so the catalogue can be counted:
``test_catalogue_size`` prints the total (run with ``-s`` to see it).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from kvstore import (
    BackendUnavailableError,
    ConfigError,
    InvalidKeyError,
    InvalidTTLError,
    KVStore,
    MemoryStore,
    SerializationError,
    StoreService,
    UnsupportedBackendError,
    ValueTooLargeError,
    open_service,
    open_store,
    service_from_env,
)

pytestmark = pytest.mark.anyio

MIB: Final = 1024 * 1024
LONG_TTL: Final = 10_000.0


@dataclass(frozen=True)
class Case:
    """One malformed input.

    Attributes:
        id: the pytest id.
        error: the kvstore error class it must raise.
        builtin: the builtin exception that error must also be.
        words: lowercase fragments the message must contain.
    """

    id: str
    error: type[Exception]
    builtin: type[Exception]
    words: tuple[str, ...]


@dataclass(frozen=True)
class StoreCase(Case):
    """A call on a store; the store must be unchanged afterwards."""

    call: Callable[[KVStore], Awaitable[Any]]


@dataclass(frozen=True)
class NameCase(Case):
    """A store name given to ``service.get_store``."""

    name: Any


@dataclass(frozen=True)
class UrlCase(Case):
    """A URL given to ``open_store``; the error may come at once or on first use."""

    url: str
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EnvCase(Case):
    """An environment given to ``service_from_env``."""

    env: Mapping[str, str]


def _bump(value: int) -> int:
    return value + 1


async def _drain(store: KVStore, prefix: Any) -> list[tuple[str, Any]]:
    return [item async for item in store.entries(prefix)]


KEY: Final = (InvalidKeyError, ValueError)
TTL: Final = (InvalidTTLError, ValueError)
VALUE: Final = (SerializationError, TypeError)

STORE_CASES: Final[list[StoreCase]] = [
    # -- keys ---------------------------------------------------------------------------
    StoreCase("key-int-set", *KEY, ("key", "int"), lambda s: s.set(1, "v")),  # type: ignore[arg-type]
    StoreCase("key-none-get", *KEY, ("key", "nonetype"), lambda s: s.get(None)),  # type: ignore[arg-type]
    StoreCase("key-bytes-delete", *KEY, ("key", "bytes"), lambda s: s.delete(b"keep")),  # type: ignore[arg-type]
    StoreCase("key-tuple-ttl", *KEY, ("key", "tuple"), lambda s: s.ttl(("keep",))),  # type: ignore[arg-type]
    StoreCase("key-empty-set", *KEY, ("key", "empty"), lambda s: s.set("", 1)),
    StoreCase("key-1025-set", *KEY, ("1025", "1024"), lambda s: s.set("k" * 1025, 1)),
    StoreCase("key-1025-get", *KEY, ("1025", "1024"), lambda s: s.get("k" * 1025)),
    StoreCase("key-nul-set", *KEY, ("nul",), lambda s: s.set("ke\x00ep", 2)),
    StoreCase("key-nul-add", *KEY, ("nul",), lambda s: s.add("\x00", 2)),
    StoreCase("key-empty-update", *KEY, ("empty",), lambda s: s.update("", _bump, default=0)),
    StoreCase("key-float-expire", *KEY, ("key", "float"), lambda s: s.expire(1.5, 10)),  # type: ignore[arg-type]
    StoreCase("key-in-get_many", *KEY, ("key", "int"), lambda s: s.get_many(["keep", 7])),  # type: ignore[list-item]
    StoreCase(
        "key-in-set_many", *KEY, ("empty",), lambda s: s.set_many({"keep": 99, "fresh": 1, "": 2})
    ),
    StoreCase(
        "key-in-delete_many",
        *KEY,
        ("1025",),
        lambda s: s.delete_many(["keep", "timed", "k" * 1025]),
    ),
    StoreCase("prefix-nul", *KEY, ("prefix", "nul"), lambda s: _drain(s, "ke\x00")),
    StoreCase("prefix-int", *KEY, ("prefix", "int"), lambda s: _drain(s, 1)),
    # -- TTLs -----------------------------------------------------------------------------
    StoreCase("ttl-zero", *TTL, ("ttl", "> 0", "0"), lambda s: s.set("keep", 2, ttl=0)),
    StoreCase("ttl-negative", *TTL, ("ttl", "-1"), lambda s: s.set("fresh", 2, ttl=-1)),
    StoreCase("ttl-nan", *TTL, ("ttl", "nan"), lambda s: s.set("fresh", 2, ttl=math.nan)),
    StoreCase("ttl-inf", *TTL, ("ttl", "inf"), lambda s: s.set_many({"fresh": 2}, ttl=math.inf)),
    StoreCase("ttl-bool", *TTL, ("ttl", "bool"), lambda s: s.add("fresh", 2, ttl=True)),
    StoreCase(
        "ttl-str",
        *TTL,
        ("ttl", "str"),
        lambda s: s.update("keep", _bump, ttl="10"),  # type: ignore[arg-type]
    ),
    StoreCase("ttl-expire-zero", *TTL, ("ttl",), lambda s: s.expire("timed", 0)),
    StoreCase("ttl-expire-negative", *TTL, ("ttl", "-5"), lambda s: s.expire("keep", -5)),
    StoreCase("ttl-expire-none", *TTL, ("ttl", "nonetype"), lambda s: s.expire("keep", None)),  # type: ignore[arg-type]
    # -- values ---------------------------------------------------------------------------
    StoreCase("value-set", *VALUE, ("set",), lambda s: s.set("keep", {1, 2})),
    StoreCase("value-bytes", *VALUE, ("bytes",), lambda s: s.set("keep", b"raw")),
    StoreCase("value-object", *VALUE, ("object",), lambda s: s.set("fresh", object())),
    StoreCase("value-nan", *VALUE, ("nan",), lambda s: s.set("keep", math.nan)),
    StoreCase("value-nested-inf", *VALUE, ("infinite",), lambda s: s.add("fresh", [math.inf])),
    StoreCase("value-int-dict-key", *VALUE, ("dict",), lambda s: s.set("keep", {1: "x"})),
    StoreCase("value-int-65-bits", *VALUE, ("64",), lambda s: s.set("keep", 2**64)),
    StoreCase("value-lone-surrogate", *VALUE, ("surrogate",), lambda s: s.set("keep", "\ud800")),
    StoreCase(
        "value-in-set_many",
        *VALUE,
        ("set",),
        lambda s: s.set_many({"fresh": 1, "keep": 2, "bad": {3}}),
    ),
    StoreCase("value-from-update", *VALUE, ("set",), lambda s: s.update("keep", lambda v: {v})),
    StoreCase(
        "value-20-mib",
        ValueTooLargeError,
        ValueError,
        ("bytes", "max_value_bytes"),
        lambda s: s.set("keep", "x" * (20 * MIB)),
    ),
    StoreCase(
        "value-20-mib-in-set_many",
        ValueTooLargeError,
        ValueError,
        ("max_value_bytes",),
        lambda s: s.set_many({"fresh": 1, "big": {"blob": "y" * (20 * MIB)}}),
    ),
    # -- call shapes ------------------------------------------------------------------------
    StoreCase(
        "update-not-callable",
        TypeError,
        TypeError,
        ("callable",),
        lambda s: s.update("keep", 3),  # type: ignore[arg-type]
    ),
    StoreCase("get_many-single-str", TypeError, TypeError, ("str",), lambda s: s.get_many("keep")),
    StoreCase(
        "set_many-not-a-mapping",
        TypeError,
        TypeError,
        ("mapping",),
        lambda s: s.set_many([("keep", 5)]),  # type: ignore[arg-type]
    ),
]

NAME_CASES: Final[list[NameCase]] = [
    NameCase("name-empty", *KEY, ("store name", "1 to 64"), ""),
    NameCase("name-colon", *KEY, ("store name", "':'"), ":"),
    NameCase("name-star", *KEY, ("store name", "'*'"), "*"),
    NameCase("name-65-chars", *KEY, ("store name",), "n" * 65),
    NameCase("name-space", *KEY, ("store name",), "a b"),
    NameCase("name-unicode", *KEY, ("store name",), "é"),
    NameCase("name-glob-class", *KEY, ("store name",), "[a]"),
    NameCase("name-int", *KEY, ("store name", "int"), 5),
]

UNSUPPORTED: Final = (UnsupportedBackendError, ValueError)
CONFIG: Final = (ConfigError, ValueError)

URL_CASES: Final[list[UrlCase]] = [
    UrlCase("url-unknown-scheme", *UNSUPPORTED, ("ftp://", "memory://", "redis://"), "ftp://x/y"),
    UrlCase("url-garbage", *UNSUPPORTED, ("not a url", "sqlite://"), "not a url"),
    UrlCase("url-empty", *UNSUPPORTED, ("memory://",), ""),
    UrlCase("url-no-separator", *UNSUPPORTED, ("memory://",), "redis:127.0.0.1"),
    UrlCase("memory-bad-option", *CONFIG, ("bogus",), "memory://?bogus=1"),
    UrlCase("memory-bad-number", *CONFIG, ("max_entries", "many"), "memory://?max_entries=many"),
    UrlCase("memory-zero-entries", *CONFIG, ("max_entries", ">= 1"), "memory://?max_entries=0"),
    UrlCase("memory-negative-ttl", *CONFIG, ("default_ttl", "> 0"), "memory://?default_ttl=-1"),
    UrlCase("memory-repeated-option", *CONFIG, ("twice",), "memory://?default_ttl=1&default_ttl=2"),
    UrlCase("sqlite-host-part", *CONFIG, ("host",), "sqlite://host/kv.db"),
    UrlCase("sqlite-no-path", *CONFIG, ("sqlite:///",), "sqlite:///"),
    UrlCase("sqlite-bad-option", *CONFIG, ("bogus",), "sqlite:///kv.db?bogus=1"),
    UrlCase("sqlite-bad-timeout", *CONFIG, ("busy_timeout",), "sqlite:///kv.db?busy_timeout=-1"),
    UrlCase(
        "sqlite-missing-directory",
        BackendUnavailableError,
        ConnectionError,
        ("no/such/dir", "does not exist"),
        "sqlite:////no/such/dir/kv.db",
    ),
    UrlCase("redis-port-out-of-range", *CONFIG, ("port",), "redis://127.0.0.1:99999/0"),
    UrlCase("redis-port-not-a-number", *CONFIG, ("port",), "redis://127.0.0.1:sixty/0"),
    UrlCase("redis-db-not-a-number", *CONFIG, ("database", "zero"), "redis://127.0.0.1:6379/zero"),
    UrlCase("redis-db-query-not-a-number", *CONFIG, ("db",), "redis://127.0.0.1:6379?db=x"),
    UrlCase("redis-unknown-option", *CONFIG, ("nope",), "redis://127.0.0.1:6379/0?nope=1"),
    UrlCase("redis-negative-retries", *CONFIG, ("retries",), "redis://127.0.0.1:6379/0?retries=-1"),
    UrlCase(
        "redis-nan-timeout",
        *CONFIG,
        ("socket_timeout",),
        "redis://127.0.0.1:6379/0?socket_timeout=nan",
    ),
    UrlCase("redis-repeated-option", *CONFIG, ("twice",), "redis://h:6379/0?retries=1&retries=2"),
    UrlCase(
        "redis-bad-namespace", *CONFIG, ("namespace",), "redis://127.0.0.1:6379/0?namespace=a:b"
    ),
    UrlCase("unix-no-socket", *CONFIG, ("socket",), "unix://"),
    UrlCase(
        "redis-nothing-listening",
        BackendUnavailableError,
        ConnectionError,
        ("unavailable", "127.0.0.1:1"),
        "redis://127.0.0.1:1/0?retries=1&retry_backoff=0&socket_connect_timeout=1",
    ),
]

ENV_CASES: Final[list[EnvCase]] = [
    EnvCase(
        "env-backend-unknown",
        *CONFIG,
        ("kv_store_backend", "postgres"),
        {"KV_STORE_BACKEND": "postgres"},
    ),
    EnvCase(
        "env-redis-url-http",
        *CONFIG,
        ("redis_url", "http"),
        {"KV_STORE_BACKEND": "redis", "REDIS_URL": "http://x"},
    ),
    EnvCase(
        "env-redis-url-port",
        *CONFIG,
        ("redis_url", "port"),
        {"KV_STORE_BACKEND": "redis", "REDIS_URL": "redis://h:port/0"},
    ),
    EnvCase(
        "env-redis-url-option",
        *CONFIG,
        ("redis_url", "bogus"),
        {"KV_STORE_BACKEND": "redis", "REDIS_URL": "redis://h:6379/0?bogus=1"},
    ),
    EnvCase("env-ttl-word", *CONFIG, ("kv_store_ttl", "soon"), {"KV_STORE_TTL": "soon"}),
    EnvCase("env-ttl-negative", *CONFIG, ("kv_store_ttl", "-5"), {"KV_STORE_TTL": "-5"}),
    EnvCase("env-ttl-zero", *CONFIG, ("kv_store_ttl",), {"KV_STORE_TTL": "0"}),
    EnvCase("env-ttl-nan", *CONFIG, ("kv_store_ttl", "nan"), {"KV_STORE_TTL": "nan"}),
    EnvCase("env-ttl-too-long", *CONFIG, ("kv_store_ttl", "<= 1e+09"), {"KV_STORE_TTL": "1e10"}),
    EnvCase(
        "env-ttl-inf",
        *CONFIG,
        ("kv_store_ttl", "inf"),
        {"KV_STORE_BACKEND": "sqlite", "KV_STORE_TTL": "inf"},
    ),
]

CATALOGUE: Final[list[Case]] = [*STORE_CASES, *NAME_CASES, *URL_CASES, *ENV_CASES]

BACKENDS: Final = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]


def _check(err: BaseException, case: Case) -> None:
    """The error is the case's kvstore type, its builtin, and its message says what was wrong."""
    assert isinstance(err, case.error), f"{case.id}: {type(err).__name__}: {err}"
    assert isinstance(err, case.builtin), f"{case.id}: {type(err).__mro__}"
    message = str(err).lower()
    for word in case.words:
        assert word in message, f"{case.id}: {word!r} not in message {str(err)!r}"


@pytest.fixture(params=BACKENDS)
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreService]:
    """The service a user would build for each backend (metrics on)."""
    if request.param == "memory":
        svc = StoreService(MemoryStore())
    elif request.param == "sqlite":
        svc = open_service(f"sqlite:///{tmp_path / 'bad_input.db'}")
    else:
        svc = open_service(request.getfixturevalue("redis_url"))
    async with svc:
        yield svc


SEED: Final[dict[str, Any]] = {"keep": 1, "a*": [1, {"b": None}], "ключ": "v"}


async def _state(store: KVStore) -> tuple[dict[str, Any], bool]:
    """Everything observable: the entries, and whether "timed" still has its long TTL."""
    entries = {key: value async for key, value in store.entries()}
    remaining = await store.ttl("timed")
    keeps_ttl = remaining is not None and LONG_TTL - 60 < remaining <= LONG_TTL
    return entries, keeps_ttl


@pytest.fixture
async def store(service: StoreService) -> KVStore:
    """The store under test, seeded with SEED and a key with a long TTL."""
    store = service.get_store("bad_input")
    await store.clear()
    await store.set_many(SEED)
    await store.set("timed", "t", ttl=LONG_TTL)
    return store


@pytest.mark.parametrize("case", STORE_CASES, ids=lambda c: c.id)
async def test_store_call_is_rejected_and_changes_nothing(store: KVStore, case: StoreCase) -> None:
    before = await _state(store)
    assert before == ({**SEED, "timed": "t"}, True)
    with pytest.raises(Exception) as info:
        await case.call(store)
    _check(info.value, case)
    assert await _state(store) == before


@pytest.mark.parametrize("case", NAME_CASES, ids=lambda c: c.id)
async def test_bad_store_name_is_rejected(service: StoreService, case: NameCase) -> None:
    with pytest.raises(Exception) as info:
        service.get_store(case.name)
    _check(info.value, case)
    assert case.name not in service.store_names()


async def _open_and_use(url: str, options: Mapping[str, Any] | None) -> None:
    # A store connects lazily: errors that need the backend come on first use.
    store = open_store(url, **(options or {}))
    async with store:
        await store.get("probe")


@pytest.mark.parametrize("case", URL_CASES, ids=lambda c: c.id)
async def test_bad_url_is_rejected(case: UrlCase) -> None:
    with pytest.raises(Exception) as info:
        await _open_and_use(case.url, case.options)
    _check(info.value, case)
    if isinstance(info.value, BackendUnavailableError):
        assert info.value.__cause__ is not None, "the driver error must be chained"


@pytest.mark.parametrize("case", ENV_CASES, ids=lambda c: c.id)
def test_bad_environment_is_rejected(case: EnvCase) -> None:
    with pytest.raises(Exception) as info:
        service_from_env(case.env)
    _check(info.value, case)


def test_catalogue_size() -> None:
    """At least 30 malformed inputs, each with a unique id; prints the counts."""
    ids = [case.id for case in CATALOGUE]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CATALOGUE) >= 30
    print(
        f"\nbad-input catalogue: {len(CATALOGUE)} cases ({len(STORE_CASES)} store calls"
        f" x {len(BACKENDS)} backends, {len(NAME_CASES)} store names x {len(BACKENDS)} backends,"
        f" {len(URL_CASES)} URLs, {len(ENV_CASES)} environments)"
    )


# -- valid but tricky keys --------------------------------------------------------------

TRICKY_KEYS: Final = [
    "*",
    "?",
    "[",
    "]",
    "[a-z]",
    "a*",
    "a?",
    "a[b]",
    "a\\",
    "\\*",
    "a*b",
    "ab",
    "é",
    "e\u0301",  # the same text as "é" once normalised: must stay a different key
    "🔑",
    "ключ",
    "k" * 1024,
    "k" * 1023,
    " ",
    "a:b",
    "::",
    "%s",
    "{x}",
    "\n",
]


async def test_tricky_keys_round_trip_and_never_match_each_other(service: StoreService) -> None:
    store = service.get_store("tricky")
    neighbour = service.get_store("tricky2")
    await store.clear()
    await neighbour.clear()
    await neighbour.set_many({key: "neighbour" for key in TRICKY_KEYS})
    for index, key in enumerate(TRICKY_KEYS):
        await store.set(key, index)
    for index, key in enumerate(TRICKY_KEYS):
        assert await store.get(key) == index, repr(key)
        assert await store.ttl(key) is None
    assert await store.get_many(TRICKY_KEYS) == {k: i for i, k in enumerate(TRICKY_KEYS)}
    every = {key: value async for key, value in store.entries()}
    assert every == {key: index for index, key in enumerate(TRICKY_KEYS)}
    for prefix in [*TRICKY_KEYS, "a", "k", "\\", "e"]:
        found = sorted([key async for key, _ in store.entries(prefix)])
        expected = sorted(key for key in TRICKY_KEYS if key.startswith(prefix))
        assert found == expected, f"entries({prefix!r})"
    assert await store.delete_many(["*", "[a-z]", "a?"]) == 3
    assert await store.get_many(["a*", "a", "[", "a[b]"]) == {"a*": 5, "[": 2, "a[b]": 7}
    await store.clear()
    assert {key async for key, _ in neighbour.entries()} == set(TRICKY_KEYS)


async def test_lone_surrogate_key_round_trips_or_is_rejected(service: StoreService) -> None:
    # "\ud800" is a str that no UTF-8 encoder accepts. A backend may support it
    # (Redis stores keys with surrogatepass) or the key check may reject it as
    # InvalidKeyError; what it must never do is leak a raw UnicodeEncodeError.
    store = service.get_store("tricky")
    await store.clear()
    try:
        await store.set("\ud800", "lone")
    except InvalidKeyError as err:
        assert "surrogate" in str(err).lower() or "unicode" in str(err).lower(), str(err)
        for call in (store.get, store.delete, store.ttl):
            with pytest.raises(InvalidKeyError):
                await call("\ud800")
        assert [kv async for kv in store.entries()] == []
        return
    await store.set("\ud800x", "longer")
    assert await store.get("\ud800") == "lone"
    assert sorted([k async for k, _ in store.entries("\ud800")]) == ["\ud800", "\ud800x"]
    assert await store.delete("\ud800") is True


@pytest.mark.parametrize("ttl", [1e16, 1e300], ids=["1e16", "1e300"])
async def test_huge_ttl_works_or_is_an_invalid_ttl(store: KVStore, ttl: float) -> None:
    # A finite ttl > 0 passes the TTL check, so every backend must either
    # honour it (the key lives "forever") or reject it as InvalidTTLError
    # naming the limit, changing nothing. A backend-specific error is neither.
    before = await _state(store)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.set("keep", 2, ttl=ttl),
        lambda: store.set_many({"fresh": 1}, ttl=ttl),
        lambda: store.add("new", 1, ttl=ttl),
        lambda: store.update("keep", _bump, ttl=ttl),
        lambda: store.expire("timed", ttl),
    ]
    rejected = 0
    for call in calls:
        try:
            await call()
        except InvalidTTLError as err:
            assert "ttl" in str(err).lower()
            rejected += 1
    if rejected:
        assert rejected == len(calls), "a TTL one call accepts, another must not reject"
        assert await _state(store) == before
        return
    for key in ("keep", "fresh", "new", "timed"):
        remaining = await store.ttl(key)
        assert remaining is None or remaining > LONG_TTL, (key, remaining)
