"""SQLite backend: one table in one file, WAL, group commit, safe across processes.

Layout: a single ``kv`` table keyed by ``(ns, key)``, where ``ns`` is the store's
namespace, plus a partial index on ``expires_at`` so expired rows can be found
without scanning the table. Expiry times are absolute wall-clock seconds, which
is what lets several processes agree on them.

aiosqlite runs every statement on one worker thread per connection, so each
``await`` is a thread hop. Writes go through :class:`_GroupCommitter`, which
commits the writes of all concurrent tasks in one transaction on the writer
connection. Reads use a connection of their own (read-only, autocommit): each
read sees only committed rows, and never queues behind a batch that waits for
another process's lock (WAL readers do not wait for writers).

``:memory:`` is the exception: a private in-memory database exists for one
connection only (a shared-cache URI would share it, but shared cache locks
tables, so readers would wait for the writer anyway). There reads use the
writer connection and wait until no batch transaction is open, so they still
never see an uncommitted batch; no other process can hold its lock.

Expired rows are deleted in bounded batches (:data:`RECLAIM_LIMIT`) by write
transactions; when nothing writes, a read that finds a reclaim due queues an
empty write for it. That write runs on the committer's drain task, which ends
as soon as the queue is empty: no task outlives the calls.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self
from urllib.parse import unquote

import aiosqlite

from ..base import DEFAULT_MAX_VALUE_BYTES, MISSING, URL_OPTIONS, BaseStore
from ..codec import Codec, check_store_name
from ..errors import BackendUnavailableError, ConfigError, StoreClosedError
from ..options import TextOption, check_int, check_seconds, int_option, parse_query, seconds_option

__all__ = ["SQLiteStore"]

MEMORY: Final = ":memory:"

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS kv ("
    " ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires_at REAL,"
    " PRIMARY KEY (ns, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL",
)
# Every statement that reads or changes a *live* value carries this filter, so
# expired rows are invisible before they are reclaimed. Its parameter is "now".
_LIVE: Final = "(expires_at IS NULL OR expires_at > ?)"
_GET: Final = f"SELECT value FROM kv WHERE ns = ? AND key = ? AND {_LIVE}"
_GET_EXPIRY: Final = f"SELECT expires_at FROM kv WHERE ns = ? AND key = ? AND {_LIVE}"
_UPSERT: Final = (
    "INSERT INTO kv (ns, key, value, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
# An expired row counts as absent: add() overwrites it, and only it.
_ADD: Final = _UPSERT + " WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?"
_DELETE: Final = f"DELETE FROM kv WHERE ns = ? AND key = ? AND {_LIVE}"
# keep_ttl: a live row keeps its expires_at; an expired one counts as absent.
_UPSERT_KEEP_TTL: Final = (
    "INSERT INTO kv (ns, key, value, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, expires_at = CASE"
    " WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= ? THEN excluded.expires_at"
    " ELSE kv.expires_at END"
)
_GET_ROW: Final = f"SELECT value, expires_at FROM kv WHERE ns = ? AND key = ? AND {_LIVE}"
_PERSIST: Final = f"UPDATE kv SET expires_at = NULL WHERE ns = ? AND key = ? AND {_LIVE}"
_DELETE_IF: Final = f"DELETE FROM kv WHERE ns = ? AND key = ? AND value = ? AND {_LIVE}"
_EXPIRE: Final = f"UPDATE kv SET expires_at = ? WHERE ns = ? AND key = ? AND {_LIVE}"
_CLEAR: Final = "DELETE FROM kv WHERE ns = ?"
# Bounded, and driven by the expires_at index: cost O(limit), never a table scan.
_RECLAIM: Final = (
    "DELETE FROM kv WHERE (ns, key) IN (SELECT ns, key FROM kv WHERE expires_at <= ? LIMIT ?)"
)
RECLAIM_LIMIT: Final = 1000
RECLAIM_INTERVAL: Final = 1.0  # seconds on the store's clock between reclaim passes

# Keys per IN (...) list; SQLite builds before 3.32 allow only 999 parameters.
_IN_CHUNK: Final = 500
MAX_BATCH: Final = 512  # writes per group-commit transaction, to bound its latency

# Options a URL query may carry, and how each is read from text.
_URL_OPTIONS: Final[dict[str, TextOption]] = {
    "busy_timeout": seconds_option(allow_zero=True),
    "page_size": int_option(minimum=1),
    **URL_OPTIONS,
}
# Options a namespaced view may override; the others belong to the shared connection.
_VIEW_OPTIONS: Final = frozenset({"default_ttl", "max_value_bytes", "codec", "page_size"})

_Row = tuple[str, str, bytes, float | None]  # (ns, key, value, expires_at)
_Run = Callable[[aiosqlite.Connection, float], Awaitable[Any]]
_Update = tuple[str, str, Callable[[Any], Any], float | None]  # (ns, key, transform, expires_at)


class SQLiteStore(BaseStore):
    """A durable store in one SQLite file, shareable by several processes.

    The database runs in WAL mode with ``synchronous=FULL``: once a write call
    returns, its transaction is in the fsynced WAL and survives a crash of the
    process and a power loss (as far as the disk honours fsync). Writes use
    ``BEGIN IMMEDIATE``, so :meth:`update` and :meth:`add` are atomic across
    processes; a process waits up to *busy_timeout* for another one's write lock.

    Writes of concurrent tasks are group-committed: they share one transaction
    and one fsync, and each call still returns only after that COMMIT. Reads use
    the same connection without queueing, so a read may observe a write of the
    batch being committed at that moment (it is a write concurrent with the read).

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

    _engine: _Engine
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
            _Engine(location, seconds, clock),
            namespace,
            owns_engine=True,
            default_ttl=default_ttl,
            max_value_bytes=max_value_bytes,
            codec=codec,
            page_size=page_size,
        )

    def _setup(
        self,
        engine: _Engine,
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
        rows = await self._engine.read(_GET, (self._namespace, key, self._engine.clock()))
        return rows[0][0] if rows else MISSING

    async def _get_many(self, keys: list[str]) -> list[Any]:
        ns = self._namespace
        found = await self._engine.read_live([(ns, key) for key in keys])
        return [found[ns, key] for key in keys]

    async def _ttl(self, key: str) -> float | None:
        now = self._engine.clock()
        rows = await self._engine.read(_GET_EXPIRY, (self._namespace, key, now))
        expires_at = rows[0][0] if rows else None
        return None if expires_at is None else max(expires_at - now, 0.0)

    async def _entries(self, prefix: str) -> AsyncGenerator[tuple[str, Any], None]:
        # Keyset pagination: each page is one short query starting after the last
        # key seen, so nothing holds a cursor between yields, other tasks may write
        # meanwhile, and a key live throughout is seen exactly once.
        end = _prefix_end(prefix)
        bound, first = prefix, True
        while True:
            sql = (
                f"SELECT key, value FROM kv WHERE ns = ? AND key {'>=' if first else '>'} ?"
                f"{'' if end is None else ' AND key < ?'} AND {_LIVE} ORDER BY key LIMIT ?"
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
            cursor = await conn.execute(_DELETE, (ns, key, now))
            return cursor.rowcount > 0

        removed: bool = await self._engine.write(run=run)
        return removed

    async def _delete_many(self, keys: list[str]) -> int:
        ns = self._namespace

        async def run(conn: aiosqlite.Connection, now: float) -> int:
            removed = 0
            for chunk in _chunks(keys):
                sql = f"DELETE FROM kv WHERE ns = ? AND key IN ({_marks(chunk)}) AND {_LIVE}"
                cursor = await conn.execute(sql, (ns, *chunk, now))
                removed += cursor.rowcount
            return removed

        count: int = await self._engine.write(run=run)
        return count

    async def _add(self, key: str, stored: Any, ttl: float | None) -> bool:
        row = (self._namespace, key, stored, self._expires_at(ttl))

        async def run(conn: aiosqlite.Connection, now: float) -> bool:
            cursor = await conn.execute(_ADD, (*row, now))
            return cursor.rowcount > 0

        added: bool = await self._engine.write(run=run)
        return added

    async def _update(self, key: str, transform: Callable[[Any], Any], ttl: float | None) -> None:
        await self._engine.write(update=(self._namespace, key, transform, self._expires_at(ttl)))

    async def _expire(self, key: str, ttl: float) -> bool:
        ns, expires_at = self._namespace, self._engine.clock() + ttl

        async def run(conn: aiosqlite.Connection, now: float) -> bool:
            cursor = await conn.execute(_EXPIRE, (expires_at, ns, key, now))
            return cursor.rowcount > 0

        changed: bool = await self._engine.write(run=run)
        return changed

    async def _set_keep_ttl(self, key: str, stored: Any, ttl: float | None) -> None:
        row = (self._namespace, key, stored, self._expires_at(ttl))

        async def run(conn: aiosqlite.Connection, now: float) -> None:
            await conn.execute(_UPSERT_KEEP_TTL, (*row, now))

        await self._engine.write(run=run)

    async def _update_keep_ttl(
        self, key: str, transform: Callable[[Any], Any], ttl: float | None
    ) -> None:
        ns, expires_at = self._namespace, self._expires_at(ttl)

        async def run(conn: aiosqlite.Connection, now: float) -> Exception | None:
            rows = list(await conn.execute_fetchall(_GET_ROW, (ns, key, now)))
            stored, kept = rows[0] if rows else (MISSING, expires_at)
            try:
                new = transform(stored)
            except Exception as err:  # the caller's fn or codec: this write alone fails
                return err
            await conn.execute(_UPSERT, (ns, key, new, kept))
            return None

        failure: Exception | None = await self._engine.write(run=run)
        if failure is not None:
            raise failure

    async def _persist(self, key: str) -> bool:
        return await self._run_counting(_PERSIST, (self._namespace, key))

    async def _release_lock(self, key: str, token: Any, ttl: float) -> bool:
        return await self._run_counting(_DELETE_IF, (self._namespace, key, token))

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
            await conn.execute(_CLEAR, (ns,))

        await self._engine.write(run=run)

    async def _aclose(self) -> None:
        # Views share the root's connection; only the root closes it.
        if self._owns_engine:
            await self._engine.aclose()


@dataclass(eq=False, slots=True)
class _Write:
    """One caller's write, queued until the batch that commits it.

    Exactly one of *upserts*, *update* and *run* is set:

    - *upserts*: the rows of a plain ``set``/``set_many``; consecutive ones are
      sent as a single ``executemany``.
    - *update*: ``(ns, key, transform, expires_at)``; the batch reads the current
      values of all its updates at once and writes their results as upserts.
    - *run*: any other write, executed in the shared transaction with the
      connection and the batch's "now"; it returns the caller's result.
    """

    future: asyncio.Future[Any]
    upserts: list[_Row] | None = None
    update: _Update | None = None
    run: _Run | None = None
    result: Any = None
    error: BaseException | None = None

    def settle(self, error: BaseException | None = None) -> None:
        """Hand the outcome to the caller (unless it stopped waiting)."""
        if self.future.done():  # the caller was cancelled
            return
        if error is None:
            error = self.error
        if error is None:
            self.future.set_result(self.result)
        else:
            self.future.set_exception(error)


class _GroupCommitter:
    """Commits the writes of concurrent tasks together: one transaction, one fsync.

    Callers queue a :class:`_Write` and await its future. A drain task takes
    everything queued (up to :data:`MAX_BATCH`) and runs it in one
    ``BEGIN IMMEDIATE … COMMIT``, in arrival order. Sets and the results of
    updates are sent as one ``executemany``, and the values updates need are read
    with one query, so a batch of N sets or updates costs about four thread hops
    and one WAL fsync instead of N of each. Futures are resolved only after
    COMMIT returns, so every caller keeps durability.

    A failure stays with its owner. An update's ``fn`` runs before that write
    stores anything, so if it raises, that write alone fails and the others
    commit, without savepoints. If a statement fails, the batch is rolled back
    and each write retried in a transaction of its own, which finds whose it
    was. If the transaction itself cannot begin or commit (the file stays
    locked past ``busy_timeout``, an I/O error), every write of the batch fails.

    The drain task only lives while writes are queued; :meth:`wait_idle` waits
    for it. Each batch also deletes up to :data:`RECLAIM_LIMIT` expired rows,
    at most once per :data:`RECLAIM_INTERVAL` unless a backlog remains.
    """

    def __init__(self, engine: _Engine) -> None:
        self._engine = engine
        self._queue: deque[_Write] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._next_reclaim = -math.inf
        self.outside_transaction = asyncio.Event()
        """Set while no batch transaction is open on the writer connection."""
        self.outside_transaction.set()

    def reclaim_if_due(self, now: float) -> None:
        """Queue an empty write, which reclaims expired rows, if a reclaim is due.

        For readers: without writes nothing else would reclaim. Nothing waits
        for it; its failure (the file locked by another process, say) only
        postpones the reclaim to the next due read or write.
        """
        if now < self._next_reclaim or self._drainer is not None:
            return  # not due, or a batch is coming that reclaims when due
        loop = asyncio.get_running_loop()
        write = _Write(loop.create_future(), upserts=[])
        # Retrieve the outcome, so a failure is not reported as never retrieved.
        write.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append(write)
        self._drainer = loop.create_task(self._drain())

    async def submit(
        self,
        *,
        upserts: list[_Row] | None = None,
        update: _Update | None = None,
        run: _Run | None = None,
    ) -> Any:
        """Queue a write and return its result once its batch has committed."""
        loop = asyncio.get_running_loop()
        write = _Write(loop.create_future(), upserts, update, run)
        self._queue.append(write)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await write.future

    async def wait_idle(self) -> None:
        """Return once every queued write has been committed or failed."""
        if self._drainer is not None:
            # asyncio.wait, unlike awaiting the task, does not cancel it if we are.
            await asyncio.wait([self._drainer])

    async def _drain(self) -> None:
        batch: list[_Write] = []
        try:
            while self._queue:
                # Let tasks woken by the previous COMMIT queue their next write first.
                await asyncio.sleep(0)
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
                batch = [write for write in batch if not write.future.cancelled()]
                if batch:
                    await self._commit(batch)
        except BaseException:  # the event loop is going away: release every waiter
            for write in (*batch, *self._queue):
                write.future.cancel()
            self._queue.clear()
            raise
        finally:
            self._drainer = None

    async def _commit(self, batch: list[_Write]) -> None:
        self.outside_transaction.clear()
        try:
            await self._commit_batch(batch)
        finally:
            self.outside_transaction.set()

    async def _commit_batch(self, batch: list[_Write]) -> None:
        engine = self._engine
        try:
            conn = await engine.connection()
            await conn.execute("BEGIN IMMEDIATE")
            now = engine.clock()  # after the lock wait, which may last busy_timeout
        except Exception as err:
            for write in batch:
                write.settle(engine.translate(err, "begin a write transaction"))
            return
        try:
            await self._apply(conn, batch, now)
        except Exception as err:
            await self._rollback(conn)
            if len(batch) == 1:
                batch[0].settle(engine.translate(err, "write"))
            else:
                for write in batch:
                    await self._commit([write])
            return
        try:
            await conn.execute("COMMIT")
        except Exception as err:
            await self._rollback(conn)
            for write in batch:
                write.settle(engine.translate(err, "commit"))
            return
        for write in batch:
            write.settle()

    async def _apply(self, conn: aiosqlite.Connection, batch: list[_Write], now: float) -> None:
        rows: list[_Row] = []  # upserts not sent yet

        async def flush() -> None:
            if rows:
                await conn.executemany(_UPSERT, rows)
                rows.clear()

        # The live value (or MISSING) of keys whose value this transaction knows,
        # so updates need not ask SQLite; forgotten when a `run` write changes rows.
        known = await _read_live(conn, [w.update[:2] for w in batch if w.update], now)
        for write in batch:
            write.result = write.error = None  # a retry starts afresh
            if write.upserts is not None:
                rows.extend(write.upserts)
                for ns, key, stored, expires_at in write.upserts:
                    if (ns, key) in known:
                        known[ns, key] = _live_or_missing(stored, expires_at, now)
            elif write.update is not None:
                ns, key, transform, expires_at = write.update
                if (ns, key) not in known:  # forgotten since the batch began
                    await flush()
                    known.update(await _read_live(conn, [(ns, key)], now))
                try:
                    stored = transform(known[ns, key])
                except Exception as err:  # the caller's fn or codec: fail this write alone
                    write.error = err
                    continue
                rows.append((ns, key, stored, expires_at))
                known[ns, key] = _live_or_missing(stored, expires_at, now)
            elif write.run is not None:
                await flush()  # earlier writes first: arrival order holds
                write.result = await write.run(conn, now)
                known.clear()
        await flush()
        if now >= self._next_reclaim:
            # Scheduled before running, so a failing reclaim is not repeated by the
            # one-by-one retries and cannot fail their writes.
            self._next_reclaim = now + RECLAIM_INTERVAL
            cursor = await conn.execute(_RECLAIM, (now, RECLAIM_LIMIT))
            if cursor.rowcount >= RECLAIM_LIMIT:  # a backlog: continue next batch
                self._next_reclaim = now

    async def _rollback(self, conn: aiosqlite.Connection) -> None:
        try:
            await conn.execute("ROLLBACK")
        except Exception:
            # SQLite rolls back by itself on some errors; either way the error
            # worth reporting is the one that made us roll back.
            pass


class _Engine:
    """The connection a root :class:`SQLiteStore` and its namespaced views share."""

    def __init__(self, path: str, busy_timeout: float, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        self._busy_timeout = busy_timeout
        self._conn: aiosqlite.Connection | None = None
        self._read_conn: aiosqlite.Connection | None = None
        self._opening = asyncio.Lock()
        self._closing = False  # no new reads or writes
        self._closed = False  # the connection is gone for good
        self._committer = _GroupCommitter(self)

    async def connection(self) -> aiosqlite.Connection:
        """The open connection, opening it (and creating the schema) on first use."""
        conn = self._conn
        if conn is None:
            async with self._opening:
                if self._closed:
                    raise StoreClosedError(f"SQLiteStore {self.path!r} is closed")
                if self._conn is None:
                    self._conn = await self._connect()
                conn = self._conn
        return conn

    async def _connect(self, *, reader: bool = False) -> aiosqlite.Connection:
        conn = aiosqlite.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        thread = _worker_thread(conn)
        if thread is not None:
            # Not a daemon by default: a store the application forgot to close would
            # keep the interpreter from exiting. Stopping it abruptly is safe, as
            # SQLite ignores a transaction whose COMMIT never completed.
            thread.daemon = True
        try:
            await conn
        except sqlite3.Error as err:
            # aiosqlite stops its thread after a failed connect without waiting for
            # it; join it here, or it may report to an event loop that has closed.
            # It has nothing left to do but exit, so the join is immediate.
            if thread is not None:
                thread.join(timeout=5.0)
            raise BackendUnavailableError(_open_failure(self.path, err)) from err
        try:
            if reader:
                # The writer made the file WAL and created the schema already.
                await conn.execute("PRAGMA query_only = ON")
            else:
                await self._set_up(conn)
        except sqlite3.Error as err:
            try:
                await conn.close()
            except sqlite3.Error:
                pass  # the setup error is the one worth reporting
            raise BackendUnavailableError(_open_failure(self.path, err)) from err
        return conn

    async def _set_up(self, conn: aiosqlite.Connection) -> None:
        """Switch to WAL and create the schema, waiting out other processes doing the same.

        busy_timeout (set by connect(timeout=...)) does not cover the switch to
        WAL: when several processes open a new file at once, SQLite answers
        "database is locked" at once. So the setup is retried until busy_timeout.
        """
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.005
        while True:
            try:
                # WAL lets readers run beside the writer; synchronous=FULL fsyncs
                # the WAL at each COMMIT, which makes a returned write survive a
                # power loss.
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = FULL")
                for statement in _SCHEMA:
                    await conn.execute(statement)
                return
            except sqlite3.OperationalError as err:
                busy = err.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    async def read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Run a query on the reader connection and return all its rows."""
        conn = await self._reader()
        with self._translated("read"):
            return list(await conn.execute_fetchall(sql, params))

    async def read_live(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """Live stored values of ``(ns, key)`` pairs, MISSING for absent ones."""
        conn = await self._reader()
        with self._translated("read"):
            return await _read_live(conn, wanted, self.clock())

    async def _reader(self) -> aiosqlite.Connection:
        """The connection for the next read, which must be sent without awaiting anything else.

        (aiosqlite queues a statement as soon as it is awaited, so nothing can
        slip in between the check below and the read.)
        """
        if self._closing:
            raise StoreClosedError(f"SQLiteStore {self.path!r} is closed")
        committer = self._committer
        committer.reclaim_if_due(self.clock())
        conn = self._read_conn
        if conn is not None:
            return conn
        writer = await self.connection()
        if self.path == MEMORY:
            while not committer.outside_transaction.is_set():
                await committer.outside_transaction.wait()
            return writer
        async with self._opening:
            if self._closed:
                raise StoreClosedError(f"SQLiteStore {self.path!r} is closed")
            if self._read_conn is None:
                self._read_conn = await self._connect(reader=True)
            return self._read_conn

    async def write(
        self,
        *,
        upserts: list[_Row] | None = None,
        update: _Update | None = None,
        run: _Run | None = None,
    ) -> Any:
        """Commit a write through the group committer and return its result."""
        if self._closing:
            raise StoreClosedError(f"SQLiteStore {self.path!r} is closed")
        return await self._committer.submit(upserts=upserts, update=update, run=run)

    def translate(self, err: Exception, action: str) -> Exception:
        """Turn a driver error into a :class:`KVStoreError`; others pass through."""
        if not isinstance(err, sqlite3.Error):
            return err
        hint = ""
        # sqlite_errorcode is the extended code; its low byte is the primary one.
        if getattr(err, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
            hint = (
                f" (another connection held the lock for longer than"
                f" busy_timeout={self._busy_timeout:g}s)"
            )
        wrapped = BackendUnavailableError(
            f"cannot {action} on SQLite database {self.path!r}: {err}{hint}"
        )
        wrapped.__cause__ = err
        return wrapped

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            raise self.translate(err, action) from err

    async def aclose(self) -> None:
        """Commit the queued writes, then close the connection."""
        if self._closing:
            return
        self._closing = True
        await self._committer.wait_idle()
        async with self._opening:
            self._closed = True
            conn, self._conn = self._conn, None
            reader, self._read_conn = self._read_conn, None
        for each in (reader, conn):
            if each is not None:
                with self._translated("close"):
                    await each.close()


def _worker_thread(conn: aiosqlite.Connection) -> threading.Thread | None:
    """The thread aiosqlite runs *conn* on (aiosqlite < 0.21: the Connection itself)."""
    thread = getattr(conn, "_thread", conn)
    return thread if isinstance(thread, threading.Thread) else None


def _open_failure(path: str, err: sqlite3.Error) -> str:
    """Explain why *path* could not be opened, naming the likely cause."""
    if path == MEMORY:
        return f"cannot open an in-memory SQLite database: {err}"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        cause = f"its directory {directory!r} does not exist (or is not a directory)"
    elif getattr(err, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        cause = f"{err}: another process held the database longer than busy_timeout"
    else:
        cause = f"{err}; the directory {directory!r} must be writable"
    return f"cannot open SQLite database {path!r}: {cause}"


def _prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with *prefix*.

    SQLite compares TEXT bytewise and UTF-8 preserves code point order, so
    bumping the last character that can be bumped gives the bound. None when
    there is none (empty prefix, or only U+10FFFF characters).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:  # surrogates cannot be encoded: skip over them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


async def _read_live(
    conn: aiosqlite.Connection, wanted: list[tuple[str, str]], now: float
) -> dict[tuple[str, str], Any]:
    """Live stored values of *wanted* ``(ns, key)`` pairs, MISSING for absent ones."""
    by_ns: dict[str, list[str]] = {}
    for ns, key in dict.fromkeys(wanted):
        by_ns.setdefault(ns, []).append(key)
    found: dict[tuple[str, str], Any] = dict.fromkeys(wanted, MISSING)
    for ns, keys in by_ns.items():
        for chunk in _chunks(keys):
            sql = f"SELECT key, value FROM kv WHERE ns = ? AND key IN ({_marks(chunk)}) AND {_LIVE}"
            for key, stored in await conn.execute_fetchall(sql, (ns, *chunk, now)):
                found[ns, key] = stored
    return found


def _live_or_missing(stored: bytes, expires_at: float | None, now: float) -> Any:
    return stored if expires_at is None or expires_at > now else MISSING


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), _IN_CHUNK):
        yield keys[start : start + _IN_CHUNK]


def _marks(chunk: list[str]) -> str:
    return ", ".join("?" * len(chunk))
