"""``SQLiteStore``: the store methods, on the shared engine."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, ClassVar, Final, Self
from urllib.parse import unquote

import aiosqlite

from ...base import DEFAULT_MAX_VALUE_BYTES, MISSING, URL_OPTIONS, BaseStore
from ...codec import Codec, check_store_name
from ...errors import ConfigError
from ...options import TextOption, check_int, check_seconds, int_option, parse_query, seconds_option
from .engine import MEMORY, Engine
from .sql import (
    ADD,
    CLEAR,
    DELETE,
    DELETE_IF,
    EXPIRE,
    GET,
    GET_EXPIRY,
    GET_ROW,
    LIVE,
    PERSIST,
    UPSERT,
    UPSERT_KEEP_TTL,
    chunks,
    marks,
    prefix_end,
)

__all__ = ["SQLiteStore"]

# Options a URL query may carry, and how each is read from text.
_URL_OPTIONS: Final[dict[str, TextOption]] = {
    "busy_timeout": seconds_option(allow_zero=True),
    "page_size": int_option(minimum=1),
    **URL_OPTIONS,
}
# Options a namespaced view may override; the others belong to the shared connection.
_VIEW_OPTIONS: Final = frozenset({"default_ttl", "max_value_bytes", "codec", "page_size"})


class SQLiteStore(BaseStore):
    """A durable store in one SQLite file, shareable by several processes.

    The database runs in WAL mode with ``synchronous=FULL``: once a write call
    returns, its transaction is in the fsynced WAL and survives a crash of the
    process and a power loss (as far as the disk honours fsync). Writes use
    ``BEGIN IMMEDIATE``, so :meth:`update` and :meth:`add` are atomic across
    processes; a process waits up to *busy_timeout* for another one's write lock.

    Writes of concurrent tasks are group-committed: they share one transaction
    and one fsync, and each call still returns only after that COMMIT. Reads run on
    a read-only connection of their own, so a read sees only committed writes
    and never waits behind a batch (``:memory:`` reads share the writer
    connection and wait for the open batch to end).

    The connection opens on first use (or in ``async with``); the database file
    is created if needed, but its directory must exist and be writable, else
    :class:`~kvstore.BackendUnavailableError` names the path. Every sqlite3
    error is raised as a :class:`~kvstore.KVStoreError` with the driver error as
    ``__cause__``. Expiry uses the wall clock *clock*, so processes sharing a
    file agree on it; expired rows are invisible at once and deleted in bounded
    passes piggybacked on writes.

    ``":memory:"`` gives a private in-memory database that lives as long as this
    store (its namespaced views share it); it is neither durable nor shareable.

    Args:
        path: database file (``str`` or path-like), or ``":memory:"``.
        default_ttl: seconds for writes with ``ttl=None``; None keeps keys forever.
        clock: wall-clock seconds since the epoch (inject a fake one in tests).
        namespace: this store's namespace in the file (``[A-Za-z0-9_.-]{1,64}``).
        max_value_bytes: largest encoded value accepted (default 16 MiB).
        codec: value codec (default JSON).
        busy_timeout: seconds to wait for another connection's lock before failing.
        page_size: rows fetched per query by :meth:`entries`.

    >>> async with SQLiteStore("state.db", default_ttl=3600) as store:  # doctest: +SKIP
    ...     await store.update("visits", lambda n: n + 1, default=0)
    1
    """

    backend: ClassVar[str] = "sqlite"
    """Backend name, e.g. for metrics labels."""

    _engine: Engine
    _namespace: str
    _page_size: int
    _owns_engine: bool

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        default_ttl: float | None = None,
        clock: Callable[[], float] = time.time,
        namespace: str = "default",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        codec: Codec | None = None,
        busy_timeout: float = 30.0,
        page_size: int = 500,
    ) -> None:
        location = os.fspath(path)
        if not isinstance(location, str) or not location:
            raise ValueError(f"path must be a non-empty str or path-like, got {path!r}")
        seconds = check_seconds("busy_timeout", busy_timeout, allow_zero=True)
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self._setup(
            Engine(location, seconds, clock),
            namespace,
            owns_engine=True,
            default_ttl=default_ttl,
            max_value_bytes=max_value_bytes,
            codec=codec,
            page_size=page_size,
        )

    def _setup(
        self,
        engine: Engine,
        namespace: str,
        *,
        owns_engine: bool,
        default_ttl: float | None,
        max_value_bytes: int,
        codec: Codec | None,
        page_size: int,
    ) -> None:
        super().__init__(default_ttl=default_ttl, max_value_bytes=max_value_bytes, codec=codec)
        self._engine = engine
        self._namespace = check_store_name(namespace)
        self._page_size = check_int("page_size", page_size, minimum=1)
        self._owns_engine = owns_engine

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build from ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite:///:memory:``.

        Query options: ``busy_timeout`` (seconds), ``page_size``, ``default_ttl``
        and ``max_value_bytes``; keyword *options* that are not None win over
        them. An unknown or malformed option raises :class:`~kvstore.ConfigError`.

        >>> SQLiteStore.from_url("sqlite:////var/lib/app/kv.db?busy_timeout=5").path
        '/var/lib/app/kv.db'
        """
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != "sqlite":
            raise ConfigError(f"not a SQLite URL: {url!r} (expected sqlite:///path.db)")
        location, _, query = rest.partition("?")
        if location in (MEMORY, "/" + MEMORY):
            path = MEMORY
        elif location.startswith("/") and len(location) > 1:
            # One slash ends the (empty) authority; what follows is the path, so
            # a fourth slash makes it absolute.
            path = unquote(location[1:])
        else:
            raise ConfigError(
                f"invalid SQLite URL {url!r}: use sqlite:///relative.db or"
                " sqlite:////absolute/path.db (a host part is not allowed)"
            )
        for name, value in parse_query(query, _URL_OPTIONS, source=url).items():
            if options.get(name) is None:
                options[name] = value
        return cls(path, **options)

    def namespaced(self, name: str, **options: Any) -> Self:
        """A store for namespace *name* on this store's connection.

        *options* may override ``default_ttl``, ``max_value_bytes``, ``codec`` and
        ``page_size``. Closing the returned store leaves the connection open; it
        closes with the store that created it.
        """
        check_store_name(name)
        unknown = set(options) - _VIEW_OPTIONS
        if unknown:
            raise ConfigError(
                f"namespaced() cannot set {', '.join(sorted(unknown))}: a namespace may override"
                f" only {', '.join(sorted(_VIEW_OPTIONS))} (the rest belongs to the connection)"
            )
        settings: dict[str, Any] = {
            "default_ttl": self._default_ttl,
            "max_value_bytes": self._max_value_bytes,
            "codec": self._codec,
            "page_size": self._page_size,
        }
        view = type(self).__new__(type(self))
        view._setup(self._engine, name, owns_engine=False, **(settings | options))
        return view

    @property
    def path(self) -> str:
        """The database file (or ``":memory:"``)."""
        return self._engine.path

    @property
    def namespace(self) -> str:
        """This store's namespace inside the database."""
        return self._namespace

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, namespace={self._namespace!r})"

    def _expires_at(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._engine.clock() + ttl

    # -- primitives: reads -----------------------------------------------------

    async def _open(self) -> None:
        await self._engine.connection()

    async def _get(self, key: str) -> Any:
        rows = await self._engine.read(GET, (self._namespace, key, self._engine.clock()))
        return rows[0][0] if rows else MISSING

    async def _get_many(self, keys: list[str]) -> list[Any]:
        ns = self._namespace
        found = await self._engine.read_live([(ns, key) for key in keys])
        return [found[ns, key] for key in keys]

    async def _ttl(self, key: str) -> float | None:
        now = self._engine.clock()
        rows = await self._engine.read(GET_EXPIRY, (self._namespace, key, now))
        expires_at = rows[0][0] if rows else None
        return None if expires_at is None else max(expires_at - now, 0.0)

    async def _entries(self, prefix: str) -> AsyncGenerator[tuple[str, Any], None]:
        # Keyset pagination: each page is one short query starting after the last
        # key seen, so nothing holds a cursor between yields, other tasks may write
        # meanwhile, and a key live throughout is seen exactly once.
        end = prefix_end(prefix)
        bound, first = prefix, True
        while True:
            sql = (
                f"SELECT key, value FROM kv WHERE ns = ? AND key {'>=' if first else '>'} ?"
                f"{'' if end is None else ' AND key < ?'} AND {LIVE} ORDER BY key LIMIT ?"
            )
            upper = () if end is None else (end,)
            params = (self._namespace, bound, *upper, self._engine.clock(), self._page_size)
            rows = await self._engine.read(sql, params)
            for key, stored in rows:
                yield key, stored
            if len(rows) < self._page_size:
                return
            bound, first = rows[-1][0], False

    # -- primitives: writes (group-committed) -------------------------------------

    async def _set(self, key: str, stored: Any, ttl: float | None) -> None:
        await self._engine.write(upserts=[(self._namespace, key, stored, self._expires_at(ttl))])

    async def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        expires_at = self._expires_at(ttl)
        ns = self._namespace
        await self._engine.write(upserts=[(ns, key, stored, expires_at) for key, stored in items])

    async def _delete(self, key: str) -> bool:
        ns = self._namespace

        async def run(conn: aiosqlite.Connection, now: float) -> bool:
            cursor = await conn.execute(DELETE, (ns, key, now))
            return cursor.rowcount > 0

        removed: bool = await self._engine.write(run=run)
        return removed

    async def _delete_many(self, keys: list[str]) -> int:
        ns = self._namespace

        async def run(conn: aiosqlite.Connection, now: float) -> int:
            removed = 0
            for chunk in chunks(keys):
                sql = f"DELETE FROM kv WHERE ns = ? AND key IN ({marks(chunk)}) AND {LIVE}"
                cursor = await conn.execute(sql, (ns, *chunk, now))
                removed += cursor.rowcount
            return removed

        count: int = await self._engine.write(run=run)
        return count

    async def _add(self, key: str, stored: Any, ttl: float | None) -> bool:
        row = (self._namespace, key, stored, self._expires_at(ttl))

        async def run(conn: aiosqlite.Connection, now: float) -> bool:
            cursor = await conn.execute(ADD, (*row, now))
            return cursor.rowcount > 0

        added: bool = await self._engine.write(run=run)
        return added

    async def _update(self, key: str, transform: Callable[[Any], Any], ttl: float | None) -> None:
        await self._engine.write(update=(self._namespace, key, transform, self._expires_at(ttl)))

    async def _expire(self, key: str, ttl: float) -> bool:
        ns, expires_at = self._namespace, self._engine.clock() + ttl

        async def run(conn: aiosqlite.Connection, now: float) -> bool:
            cursor = await conn.execute(EXPIRE, (expires_at, ns, key, now))
            return cursor.rowcount > 0

        changed: bool = await self._engine.write(run=run)
        return changed

    async def _set_keep_ttl(self, key: str, stored: Any, ttl: float | None) -> None:
        row = (self._namespace, key, stored, self._expires_at(ttl))

        async def run(conn: aiosqlite.Connection, now: float) -> None:
            await conn.execute(UPSERT_KEEP_TTL, (*row, now))

        await self._engine.write(run=run)

    async def _update_keep_ttl(
        self, key: str, transform: Callable[[Any], Any], ttl: float | None
    ) -> None:
        ns, expires_at = self._namespace, self._expires_at(ttl)

        async def run(conn: aiosqlite.Connection, now: float) -> Exception | None:
            rows = list(await conn.execute_fetchall(GET_ROW, (ns, key, now)))
            stored, kept = rows[0] if rows else (MISSING, expires_at)
            try:
                new = transform(stored)
            except Exception as err:  # the caller's fn or codec: this write alone fails
                return err
            await conn.execute(UPSERT, (ns, key, new, kept))
            return None

        failure: Exception | None = await self._engine.write(run=run)
        if failure is not None:
            raise failure

    async def _persist(self, key: str) -> bool:
        return await self._run_counting(PERSIST, (self._namespace, key))

    async def _release_lock(self, key: str, token: Any, ttl: float) -> bool:
        return await self._run_counting(DELETE_IF, (self._namespace, key, token))

    async def _run_counting(self, sql: str, params: tuple[Any, ...]) -> bool:
        """Run the write *sql* with *params* and "now"; True if it changed a row."""

        async def run(conn: aiosqlite.Connection, now: float) -> bool:
            cursor = await conn.execute(sql, (*params, now))
            return cursor.rowcount > 0

        changed: bool = await self._engine.write(run=run)
        return changed

    async def _clear(self) -> None:
        ns = self._namespace

        async def run(conn: aiosqlite.Connection, now: float) -> None:
            await conn.execute(CLEAR, (ns,))

        await self._engine.write(run=run)

    async def _aclose(self) -> None:
        # Views share the root's connection; only the root closes it.
        if self._owns_engine:
            await self._engine.aclose()
