"""Stateful property tests: every backend against a plain dict model with expiry times.

Hypothesis drives a store and a model through random sequences of every
``KVStore`` operation and checks that they agree after each step. Keys come
from a tiny alphabet that includes the glob characters ``* ? [ ] \\``, ``:``
and non-ASCII characters, so collisions, shared prefixes and escaping bugs
come up within a few steps.

Each machine runs its store on its own event loop in a worker thread (an anyio
blocking portal opened in ``__init__`` and closed in ``teardown``): rules are
plain synchronous methods that hop into that loop, which is far cheaper than
``anyio.run`` per rule.

Time: memory and SQLite stores take ``clock=``, so they get a
:class:`~kvstore.testing.ManualClock` and an ``advance`` rule moves it. TTLs
are ``n + 0.25`` seconds and the clock moves in multiples of 0.5 s, so no
deadline ever falls exactly on the clock and the ``<`` versus ``<=`` choice at
the boundary never matters. Redis expires keys on the server's own clock, which
cannot be moved: against Redis the TTLs are long (≥ 1000 s), nothing expires
during a run, there is no ``advance`` rule, and ``ttl()`` is checked against
the real time elapsed since the write. Expiry on Redis is covered by the
contract suite (deadlines moved closer on the server, then expired by it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from kvstore import KVStore, MemoryStore, RedisStore, SQLiteStore
from kvstore.base import MISSING, BaseStore
from kvstore.testing import ManualClock

T = TypeVar("T")

KEY_ALPHABET: Final = "ab:*?[]\\é🔑"
"""Glob characters, the namespace separator most backends use, and non-ASCII."""

KEY_POOL: Final = ("a", "ab", "a*", "a?", "a[", "a[b]", "a]", "a\\", "*", "a:b", "é", "🔑")
"""Keys that are prefixes or glob patterns of one another; drawn often so they collide."""


keys = st.sampled_from(KEY_POOL)
odd_keys = st.text(alphabet=KEY_ALPHABET, min_size=1, max_size=4)
"""Any key over the alphabet; used by writes, so prefix queries meet unplanned keys."""
prefixes = st.sampled_from(("", "a", "a*", "a[", "a\\", "*", "a:", "é")) | st.text(
    alphabet=KEY_ALPHABET, max_size=2
)
key_lists = st.lists(keys, max_size=5)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
# An index into the machine's TTL table, or None for "no TTL".
ttl_choices = st.none() | st.integers(min_value=0, max_value=3)

MANUAL_TTLS: Final = (1.25, 5.25, 30.25, 1000.25)
REDIS_TTLS: Final = (1000.25, 2000.25, 5000.25, 9000.25)
ADVANCES: Final = (0.5, 1.0, 2.5, 10.0, 50.0)
REDIS_TTL_SLACK: Final = 2.0
"""Seconds of real time a Redis ``ttl()`` may lag the model (round trips, a loaded CI box)."""

SIBLING_DATA: Final = {"a": "sibling", "a:b": 1, "*": [2], "[a]": {"k": None}}
"""What each neighbouring namespace holds; the machine's ``clear()`` must not touch it."""

PROPERTY_SETTINGS: Final = settings(
    # max_examples comes from the loaded profile (tests/conftest.py): 100 locally, 50 on CI.
    stateful_step_count=30,
    deadline=None,
    database=None,  # every run is fresh: no example database to replay or to write
    suppress_health_check=[HealthCheck.too_slow],
)


class Boom(Exception):
    """Raised by the failing ``update`` function; must propagate unchanged."""


def _canon(value: Any) -> Any:
    """A comparable form that tells bool from int and int from float (``==`` does not)."""
    if isinstance(value, dict):
        return ("dict", sorted((k, _canon(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("list", [_canon(v) for v in value])
    if isinstance(value, float) and value == 0:
        return ("float", 0.0)  # JSON keeps -0.0, but 0.0 == -0.0 is all callers see
    return (type(value).__name__, value)


def _increment(current: Any) -> Any:
    return current + 1 if type(current) is int and current < 2**62 else 1


def _wrap(current: Any) -> Any:
    return {"was": current}


def _explode(current: Any) -> Any:
    raise Boom(f"refusing {current!r}")


UPDATE_FUNCTIONS: Final[dict[str, Callable[[Any], Any]]] = {
    "increment": _increment,
    "wrap": _wrap,
    "explode": _explode,
}


@dataclass
class Opened:
    """A store under test, its neighbouring namespaces, and how to release them."""

    store: KVStore
    siblings: Sequence[KVStore]
    close: Callable[[], Awaitable[None]]


@dataclass
class PropertyBackend:
    """How a machine opens its stores (inside its own event loop)."""

    name: str
    open: Callable[[ManualClock], Awaitable[Opened]]
    manual_clock: bool
    ttls: tuple[float, ...] = field(default=MANUAL_TTLS)


async def _open_namespaces(root: BaseStore) -> Opened:
    """The store ``prop`` plus namespaces that share a textual prefix with it."""
    store = root.namespaced("prop")
    siblings = [root.namespaced("pro"), root.namespaced("prop.a"), root.namespaced("prop_")]
    await store.clear()
    for sibling in siblings:
        await sibling.clear()
        await sibling.set_many(SIBLING_DATA)
    return Opened(store, siblings, root.aclose)


def memory_backend() -> PropertyBackend:
    """A fresh MemoryStore per run, on the machine's manual clock."""

    async def open_(clock: ManualClock) -> Opened:
        store = MemoryStore(clock=clock)
        return Opened(store, [], store.aclose)

    return PropertyBackend("memory", open_, manual_clock=True)


def sqlite_backend(path: Path) -> PropertyBackend:
    """Namespaces of one SQLite file (cleared per run), on the machine's manual clock."""

    async def open_(clock: ManualClock) -> Opened:
        return await _open_namespaces(SQLiteStore(path, clock=clock))

    return PropertyBackend("sqlite", open_, manual_clock=True)


def redis_backend(url: str) -> PropertyBackend:
    """Namespaces of a Redis database (cleared per run); long TTLs, see the module doc."""

    async def open_(clock: ManualClock) -> Opened:
        return await _open_namespaces(RedisStore(url))

    return PropertyBackend("redis", open_, manual_clock=False, ttls=REDIS_TTLS)


class StoreMachine(RuleBasedStateMachine):
    """Drives one store and a ``{key: (value, expires_at | None)}`` model in lockstep.

    Each rule is named after the store method it calls; after every step the
    invariant compares the whole store, every TTL and the neighbouring
    namespaces with the model.
    """

    backend: ClassVar[PropertyBackend]
    """Set by :func:`machine_for`: each backend gets its own subclass."""

    def __init__(self) -> None:
        super().__init__()
        backend = self.backend
        self.clock = ManualClock()
        self.model: dict[str, tuple[Any, float | None]] = {}
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        try:
            self.opened = self.portal.call(backend.open, self.clock)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self.store = self.opened.store

    # -- plumbing ---------------------------------------------------------------

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` on the machine's event loop and return its result."""
        return self.portal.call(fn)

    def now(self) -> float:
        """The time the model's deadlines are on (the store's clock)."""
        return self.clock() if self.backend.manual_clock else time.monotonic()

    def ttl_of(self, choice: int | None) -> float | None:
        """The TTL a drawn index stands for on this backend."""
        return None if choice is None else self.backend.ttls[choice]

    def deadline(self, ttl: float | None) -> float | None:
        """The model's expiry time of a write made now."""
        return None if ttl is None else self.now() + ttl

    def live(self, key: str) -> bool:
        """Whether *key* is live in the model (dropping it if it expired)."""
        entry = self.model.get(key)
        if entry is None:
            return False
        expires_at = entry[1]
        if expires_at is not None and expires_at <= self.now():
            del self.model[key]
            return False
        return True

    def live_model(self) -> dict[str, Any]:
        """The live part of the model, as ``entries()`` should show it."""
        return {key: self.model[key][0] for key in list(self.model) if self.live(key)}

    async def _collect(self, store: KVStore, prefix: str) -> list[tuple[str, Any]]:
        return [item async for item in store.entries(prefix)]

    def snapshot(self, prefix: str = "", store: KVStore | None = None) -> dict[str, Any]:
        """``entries(prefix)`` of *store* (default: the one under test); no key may repeat."""
        rows = self.call(partial(self._collect, store or self.store, prefix))
        found = [key for key, _ in rows]
        assert len(found) == len(set(found)), f"entries({prefix!r}) repeated a key: {found}"
        return dict(rows)

    def assert_same(self, actual: dict[str, Any], expected: dict[str, Any]) -> None:
        """Same keys, and values equal down to their JSON types."""
        assert sorted(actual) == sorted(expected)
        for key, value in expected.items():
            assert _canon(actual[key]) == _canon(value), key

    # -- rules --------------------------------------------------------------------

    @initialize(items=st.lists(st.tuples(keys, values, ttl_choices), min_size=3, max_size=8))
    def seed(self, items: list[tuple[str, Any, int | None]]) -> None:
        # Start from a populated store: swarm testing often disables the write
        # rules for a whole run, and reads of an empty store prove little.
        assert self.snapshot() == {}
        for key, value, ttl in items:
            self.set(key, value, ttl)

    @rule(key=keys | odd_keys, value=values, ttl=ttl_choices)
    def set(self, key: str, value: Any, ttl: int | None) -> None:
        seconds = self.ttl_of(ttl)
        self.call(partial(self.store.set, key, value, ttl=seconds))
        self.model[key] = (value, self.deadline(seconds))

    @rule(key=keys)
    def get(self, key: str) -> None:
        missing = object()
        got = self.call(partial(self.store.get, key, missing))
        if self.live(key):
            assert got is not missing, f"{key!r} should be live"
            assert _canon(got) == _canon(self.model[key][0])
        else:
            assert got is missing, f"{key!r} should be absent, got {got!r}"

    @rule(key=keys)
    def delete(self, key: str) -> None:
        removed = self.call(partial(self.store.delete, key))
        assert removed is self.live(key)
        self.model.pop(key, None)

    @rule(key=keys, value=values, ttl=ttl_choices)
    def add(self, key: str, value: Any, ttl: int | None) -> None:
        seconds = self.ttl_of(ttl)
        added = self.call(partial(self.store.add, key, value, ttl=seconds))
        expected = not self.live(key)
        assert added is expected
        if expected:
            self.model[key] = (value, self.deadline(seconds))

    @rule(
        key=keys,
        fn=st.sampled_from(sorted(UPDATE_FUNCTIONS)),
        default=values,
        ttl=ttl_choices,
    )
    def update(self, key: str, fn: str, default: Any, ttl: int | None) -> None:
        seconds = self.ttl_of(ttl)
        function = UPDATE_FUNCTIONS[fn]
        current = self.model[key][0] if self.live(key) else default
        call = partial(self.store.update, key, function, default=default, ttl=seconds)
        if fn == "explode":
            with pytest.raises(Boom):
                self.call(call)
            return
        result = self.call(call)
        expected = function(current)
        assert _canon(result) == _canon(expected)
        self.model[key] = (expected, self.deadline(seconds))

    @rule(key=keys, ttl=st.integers(min_value=0, max_value=3))
    def expire(self, key: str, ttl: int) -> None:
        seconds = self.backend.ttls[ttl]
        changed = self.call(partial(self.store.expire, key, seconds))
        assert changed is self.live(key)
        if changed:
            self.model[key] = (self.model[key][0], self.deadline(seconds))

    def assert_ttl(self, key: str, remaining: float | None, asked_at: float) -> None:
        """*remaining* is what the model expects ``ttl(key)`` to report.

        *asked_at* is ``now()`` just before the call. It matters only on Redis,
        whose clock runs on while replies travel: the model's deadlines are
        taken after each write returned, so they are never earlier than the
        server's (give or take its 1 ms rounding), and the server read its clock
        after *asked_at* and before now.
        """
        if not self.live(key) or self.model[key][1] is None:
            assert remaining is None, f"{key!r}: expected no TTL, got {remaining!r}"
            return
        expires_at = self.model[key][1]
        assert expires_at is not None and remaining is not None, f"{key!r}: TTL lost"
        if self.backend.manual_clock:
            expected = expires_at - self.now()
            assert math.isclose(remaining, expected, abs_tol=1e-3), (key, remaining, expected)
        else:
            low, high = expires_at - self.now() - REDIS_TTL_SLACK, expires_at - asked_at + 0.002
            assert low <= remaining <= high, (key, low, remaining, high)

    @rule(key=keys)
    def ttl(self, key: str) -> None:
        asked_at = self.now()
        self.assert_ttl(key, self.call(partial(self.store.ttl, key)), asked_at)

    @precondition(lambda self: len(self.model) >= 3)  # else it would reset most runs early
    @rule()
    def clear(self) -> None:
        self.call(self.store.clear)
        self.model.clear()

    @rule(prefix=prefixes)
    def entries(self, prefix: str) -> None:
        expected = {k: v for k, v in self.live_model().items() if k.startswith(prefix)}
        self.assert_same(self.snapshot(prefix), expected)

    @rule(wanted=key_lists)
    def get_many(self, wanted: list[str]) -> None:
        got = self.call(partial(self.store.get_many, wanted))
        expected = {key: self.model[key][0] for key in wanted if self.live(key)}
        self.assert_same(got, expected)

    @rule(mapping=st.dictionaries(keys | odd_keys, values, max_size=4), ttl=ttl_choices)
    def set_many(self, mapping: dict[str, Any], ttl: int | None) -> None:
        seconds = self.ttl_of(ttl)
        self.call(partial(self.store.set_many, mapping, ttl=seconds))
        for key, value in mapping.items():
            self.model[key] = (value, self.deadline(seconds))

    @rule(wanted=key_lists)
    def delete_many(self, wanted: list[str]) -> None:
        removed = self.call(partial(self.store.delete_many, wanted))
        distinct = set(wanted)
        assert removed == sum(self.live(key) for key in distinct)
        for key in distinct:
            self.model.pop(key, None)

    @precondition(lambda self: self.backend.manual_clock)
    @rule(seconds=st.sampled_from(ADVANCES))
    def advance(self, seconds: float) -> None:
        self.clock.advance_by(seconds)

    async def _ttls(self, keys: list[str]) -> dict[str, float | None]:
        # Asked concurrently: on Redis the store pipelines them into one round trip.
        found: dict[str, float | None] = {}

        async def ask(key: str) -> None:
            found[key] = await self.store.ttl(key)

        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(ask, key)
        return found

    @invariant()
    def agrees_with_model(self) -> None:
        # After every step, not only when a rule happens to look: the whole
        # store, each TTL, and the neighbouring namespaces. Cheap at this size.
        self.assert_same(self.snapshot(), self.live_model())
        asked_at = self.now()
        for key, remaining in self.call(partial(self._ttls, list(self.model))).items():
            self.assert_ttl(key, remaining, asked_at)
        for sibling in self.opened.siblings:
            self.assert_same(self.snapshot(store=sibling), SIBLING_DATA)

    def teardown(self) -> None:
        try:
            self.call(self.opened.close)
        finally:
            self._portal_cm.__exit__(None, None, None)


def machine_for(backend: PropertyBackend) -> type[StoreMachine]:
    """A :class:`StoreMachine` subclass bound to *backend* (named after it in reports)."""

    class Machine(StoreMachine):
        pass

    Machine.backend = backend
    Machine.__name__ = Machine.__qualname__ = f"{backend.name.capitalize()}StoreMachine"
    return Machine


def _run(backend: PropertyBackend) -> None:
    run_state_machine_as_test(machine_for(backend), settings=PROPERTY_SETTINGS)


def test_memory_store_matches_the_model() -> None:
    _run(memory_backend())


def test_sqlite_store_matches_the_model(tmp_path: Path) -> None:
    _run(sqlite_backend(tmp_path / "properties.db"))


@pytest.mark.redis
def test_redis_store_matches_the_model(redis_url: str) -> None:
    _run(redis_backend(redis_url))


# -- the harness itself must be able to fail --------------------------------------------


class _LeakyExpiryStore(MemoryStore):
    """A deliberately broken store: ``expire`` does nothing but claims success."""

    async def _expire(self, key: str, ttl: float) -> bool:
        return await self._get(key) is not MISSING


def test_the_machine_catches_a_broken_store() -> None:
    async def open_(clock: ManualClock) -> Opened:
        store = _LeakyExpiryStore(clock=clock)
        return Opened(store, [], store.aclose)

    broken = PropertyBackend("broken", open_, manual_clock=True)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            machine_for(broken),
            # Detection is the point here; shrinking the failure would only cost time.
            settings=settings(
                PROPERTY_SETTINGS,
                max_examples=300,
                phases=[Phase.generate],
                report_multiple_bugs=False,
                derandomize=True,  # the same runs every time: this test must not flake
            ),
        )
