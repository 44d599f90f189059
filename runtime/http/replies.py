"""Replies made after the answer: the agent work of the ``sse`` and ``websocket`` transports.

Both transports store the user's message first (``SessionManager.open_exchange``)
and answer before the reply exists. The reply is then made by a
:class:`ReplyWorker` job on a task group the application's lifespan owns, at
most ``concurrency`` at a time (an ``anyio.CapacityLimiter``): the handler's
pieces go to a :class:`ReplySink` as they come (SSE ``chunk`` events, Socket.IO
``messageStreamChunk``), and the reply is stored with ``close_exchange``; if
anything fails, an error marker is stored in its place, so history and counts
agree (every user message has an answer), and the sink hears of the failure.

A job runs to its end even if the client that asked went away (an SSE reader
that disconnected): the reply is in history for it to read. On shutdown the
worker drains: it takes no new job and waits up to ``drain_timeout`` seconds
for the running ones, then cancels the rest, which store their error marker.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Final, Protocol

import anyio
from anyio.abc import TaskGroup

from kvstore.options import check_int, check_seconds

from ..errors import APIError, SessionError
from ..messages import Message
from ..sessions import Session
from .context import ServedAgent

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_REPLY_CONCURRENCY",
    "REPLY_FAILED",
    "ReplySink",
    "ReplyWorker",
]

logger = logging.getLogger(__name__)

DEFAULT_REPLY_CONCURRENCY: Final = 64
"""Replies made at once by one process; more wait for a slot."""

DEFAULT_DRAIN_TIMEOUT: Final = 30.0
"""Seconds a stopping server waits for the replies still being made."""

REPLY_FAILED: Final = "the agent could not reply to this message"
"""The error marker's text when the handler failed (its details go to the log only)."""

_SHUT_DOWN: Final = "the server stopped before the reply was made"


class ReplySink(Protocol):
    """Where a reply being made goes: a stream of SSE events, a Socket.IO room."""

    async def chunk(self, message_id: str, piece: str, index: int) -> None:
        """One piece of the reply *message_id*, the *index*-th (from 0)."""

    async def done(self, reply: Message) -> None:
        """The reply is made and stored."""

    async def failed(self, message_id: str, error: str, partial_text: str) -> None:
        """The reply could not be made (an error marker was stored, if the store allowed)."""


class ReplyWorker:
    """Makes replies on a task group of its own, while :meth:`running`.

    Args:
        served: the agent and its sessions.
        concurrency: replies made at once; more wait for a slot.
        drain_timeout: seconds :meth:`running` waits on exit for running replies.
    """

    def __init__(
        self,
        served: ServedAgent,
        *,
        concurrency: int = DEFAULT_REPLY_CONCURRENCY,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        check_int("concurrency", concurrency, minimum=1)
        check_seconds("drain_timeout", drain_timeout)
        self.served = served
        self._concurrency = concurrency
        self._drain_timeout = drain_timeout
        self._group: TaskGroup | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def accepting(self) -> bool:
        """True while :meth:`running` and not draining: :meth:`start` takes jobs."""
        return self._group is not None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run jobs while inside; on exit, drain (see the module docs)."""
        self._limiter = anyio.CapacityLimiter(self._concurrency)
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                self._group = None
                # The group waits for its jobs on exit; past the deadline it
                # cancels them, and each stores its error marker (shielded).
                group.cancel_scope.deadline = anyio.current_time() + self._drain_timeout

    def check_accepting(self) -> None:
        """Raise unless :meth:`start` would take a job now.

        Raises:
            APIError: 503 when the worker is not running (no lifespan, or shutting down).
        """
        if self._group is None:
            raise APIError(
                503,
                "SERVICE_UNAVAILABLE",
                "replies after the answer need the server running (its lifespan); retry later",
                headers={"Retry-After": "1"},
            )

    def start(self, user: Message, session: Session, sink: ReplySink) -> None:
        """Make the reply to *user* (stored by ``open_exchange``) in the background.

        Raises:
            APIError: 503 when the worker is not running (no lifespan, or shutting down).
        """
        self.check_accepting()
        assert self._group is not None
        self._group.start_soon(self._make, user, session, sink, name=f"reply to {user.id}")

    async def _make(self, user: Message, session: Session, sink: ReplySink) -> None:
        assert self._limiter is not None  # set by running(), which owns the group
        message_id = str(uuid.uuid4())
        pieces: list[str] = []
        try:
            async with self._limiter:
                runtime = self.served.runtime
                state = await runtime.compose_state(user)
                async for piece in runtime.stream_reply(user, state):
                    await _quietly(sink.chunk(message_id, piece, len(pieces)))
                    pieces.append(piece)
                reply = await self.served.sessions.close_exchange(
                    user, "".join(pieces), reply_id=message_id, session=session
                )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._fail(user, sink, message_id, _SHUT_DOWN, pieces)
            raise
        except SessionError as err:
            # Ended or expired meanwhile: there is nothing left to store in.
            await _quietly(sink.failed(message_id, str(err), "".join(pieces)))
        except Exception:
            logger.exception("the reply to message %s failed", user.id)
            await self._fail(user, sink, message_id, REPLY_FAILED, pieces)
        else:
            await _quietly(sink.done(reply))

    async def _fail(
        self, user: Message, sink: ReplySink, message_id: str, error: str, pieces: list[str]
    ) -> None:
        try:
            await self.served.sessions.close_exchange(user, error=error, reply_id=message_id)
        except Exception:
            logger.exception("could not store the error marker of message %s", user.id)
        await _quietly(sink.failed(message_id, error, "".join(pieces)))


async def _quietly(call: Awaitable[None]) -> None:
    """Await a sink call; a sink failing (a client gone) must not stop the reply."""
    try:
        await call
    except Exception:
        logger.warning("a reply sink failed", exc_info=True)
