"""Group commit: the writes of concurrent tasks in one transaction and one fsync."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiosqlite

from .sql import (
    MAX_BATCH,
    RECLAIM,
    RECLAIM_INTERVAL,
    RECLAIM_LIMIT,
    UPSERT,
    Row,
    Run,
    Update,
    live_or_missing,
    read_live,
)

__all__ = ["Connector", "GroupCommitter", "Write"]


class Connector(Protocol):
    """What the committer needs of the engine that owns it."""

    clock: Callable[[], float]

    async def connection(self) -> aiosqlite.Connection:
        """The writer connection, opened on first use."""
        ...

    def translate(self, err: Exception, action: str) -> Exception:
        """A driver error as a :class:`~kvstore.KVStoreError`."""
        ...


@dataclass(eq=False, slots=True)
class Write:
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
    upserts: list[Row] | None = None
    update: Update | None = None
    run: Run | None = None
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


class GroupCommitter:
    """Commits the writes of concurrent tasks together: one transaction, one fsync.

    Callers queue a :class:`Write` and await its future. A drain task takes
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

    def __init__(self, engine: Connector) -> None:
        self._engine = engine
        self._queue: deque[Write] = deque()
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
        write = Write(loop.create_future(), upserts=[])
        # Retrieve the outcome, so a failure is not reported as never retrieved.
        write.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append(write)
        self._drainer = loop.create_task(self._drain())

    async def submit(
        self,
        *,
        upserts: list[Row] | None = None,
        update: Update | None = None,
        run: Run | None = None,
    ) -> Any:
        """Queue a write and return its result once its batch has committed."""
        loop = asyncio.get_running_loop()
        write = Write(loop.create_future(), upserts, update, run)
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
        batch: list[Write] = []
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

    async def _commit(self, batch: list[Write]) -> None:
        self.outside_transaction.clear()
        try:
            await self._commit_batch(batch)
        finally:
            self.outside_transaction.set()

    async def _commit_batch(self, batch: list[Write]) -> None:
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

    async def _apply(self, conn: aiosqlite.Connection, batch: list[Write], now: float) -> None:
        rows: list[Row] = []  # upserts not sent yet

        async def flush() -> None:
            if rows:
                await conn.executemany(UPSERT, rows)
                rows.clear()

        # The live value (or MISSING) of keys whose value this transaction knows,
        # so updates need not ask SQLite; forgotten when a `run` write changes rows.
        known = await read_live(conn, [w.update[:2] for w in batch if w.update], now)
        for write in batch:
            write.result = write.error = None  # a retry starts afresh
            if write.upserts is not None:
                rows.extend(write.upserts)
                for ns, key, stored, expires_at in write.upserts:
                    if (ns, key) in known:
                        known[ns, key] = live_or_missing(stored, expires_at, now)
            elif write.update is not None:
                ns, key, transform, expires_at = write.update
                if (ns, key) not in known:  # forgotten since the batch began
                    await flush()
                    known.update(await read_live(conn, [(ns, key)], now))
                try:
                    stored = transform(known[ns, key])
                except Exception as err:  # the caller's fn or codec: fail this write alone
                    write.error = err
                    continue
                rows.append((ns, key, stored, expires_at))
                known[ns, key] = live_or_missing(stored, expires_at, now)
            elif write.run is not None:
                await flush()  # earlier writes first: arrival order holds
                write.result = await write.run(conn, now)
                known.clear()
        await flush()
        if now >= self._next_reclaim:
            # Scheduled before running, so a failing reclaim is not repeated by the
            # one-by-one retries and cannot fail their writes.
            self._next_reclaim = now + RECLAIM_INTERVAL
            cursor = await conn.execute(RECLAIM, (now, RECLAIM_LIMIT))
            if cursor.rowcount >= RECLAIM_LIMIT:  # a backlog: continue next batch
                self._next_reclaim = now

    async def _rollback(self, conn: aiosqlite.Connection) -> None:
        try:
            await conn.execute("ROLLBACK")
        except Exception:
            # SQLite rolls back by itself on some errors; either way the error
            # worth reporting is the one that made us roll back.
            pass
