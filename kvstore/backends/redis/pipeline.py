"""Auto-pipelining: the single commands of concurrent tasks go out as one pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["AutoPipeline", "Deliver", "Sender"]

Deliver = Callable[[list[int], list[Any]], None]
"""Receives the replies to some commands of a batch: ``deliver(indexes, replies)``."""
Sender = Callable[[tuple[Any, ...]], Awaitable[Any]]
"""Sends one command (its arguments) and resolves to its reply."""


class AutoPipeline:
    """Sends the single commands issued in one event-loop iteration as one pipeline.

    When many tasks each await one command, each would otherwise take a pooled
    connection and pay a full round trip plus redis-py's per-call overhead.
    Instead :meth:`execute` queues the command with a future for its reply.
    The first command queued starts a flush task; a new task first runs in the
    next loop iteration, after every task woken in this one has had its turn to
    queue. The flush sends the whole queue as one non-transactional pipeline on
    one connection (on a cluster, one per node, concurrently) and resolves each
    future with that command's own reply or error (e.g. WRONGTYPE goes to its
    caller alone). A connection error fails every command of the batch (on a
    cluster, of that node); each caller's retry policy then re-sends its own.
    Commands queued while a flush is in flight go out in the next flush.

    Semantics are those of awaiting each command alone: a caller resumes only
    after its own reply, and commands of different tasks were never ordered.
    Transactions (MULTI/EXEC) never go through here.

    With *direct* given, a command that finds nothing queued and nothing in
    flight is sent at once by its caller's own task (like redis-py alone),
    sparing the flush task's extra loop iterations. Commands that arrive while
    it is in flight queue up as above, so concurrency still batches.
    """

    def __init__(
        self,
        send: Callable[[list[tuple[Any, ...]], Deliver], Awaitable[None]],
        direct: Sender | None = None,
    ) -> None:
        self._send = send
        self._direct = direct
        self._direct_in_flight = 0
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    def execute(self, args: tuple[Any, ...]) -> Awaitable[Any]:
        """Send or queue one command; the awaitable resolves to its reply."""
        if (
            self._direct is not None
            and not self._queue
            and not self._flushes
            and not self._direct_in_flight
        ):
            return self._execute_direct(self._direct, args)
        return self._enqueue(args)

    async def _execute_direct(self, direct: Sender, args: tuple[Any, ...]) -> Any:
        self._direct_in_flight += 1
        try:
            return await direct(args)
        finally:
            self._direct_in_flight -= 1

    def _enqueue(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if len(self._queue) == 1:
            flush = loop.create_task(self._flush())
            # The loop keeps only weak references to tasks.
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return future

    async def _flush(self) -> None:
        batch, self._queue = self._queue, []
        futures = [future for _, future in batch]

        def deliver(indexes: list[int], replies: list[Any]) -> None:
            for index, reply in zip(indexes, replies, strict=True):
                future = futures[index]
                if future.done():  # its caller was cancelled meanwhile
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

        try:
            await self._send([args for args, _ in batch], deliver)
        except BaseException as err:
            for future in futures:
                if future.done():  # delivered, or its caller was cancelled
                    continue
                if isinstance(err, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(err)
            if not isinstance(err, Exception):
                raise

    async def drain(self) -> None:
        """Wait for the flushes in flight (used before closing the client).

        Direct commands need no waiting: they run in their callers' own tasks.
        """
        while self._flushes:
            await asyncio.wait(list(self._flushes))
