"""The connections a root :class:`~kvstore.SQLiteStore` and its views share."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import aiosqlite

from ...errors import BackendUnavailableError, StoreClosedError
from .committer import GroupCommitter
from .sql import SCHEMA, Row, Run, Update, read_live

__all__ = ["MEMORY", "Engine"]

MEMORY: Final = ":memory:"
"""The path of a private in-memory database."""


class Engine:
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
        self._committer = GroupCommitter(self)

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
                for statement in SCHEMA:
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
            return await read_live(conn, wanted, self.clock())

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
        upserts: list[Row] | None = None,
        update: Update | None = None,
        run: Run | None = None,
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
