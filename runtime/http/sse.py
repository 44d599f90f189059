"""The ``sse`` transport: a send-message answered as ``text/event-stream``.

ElizaOS 1.7.2's events, each ``event: NAME`` and one ``data:`` line of JSON:

``user_message``  the stored user message (the ``userMessage`` of the other answers)
``chunk``         ``{messageId, chunk, index}``: one piece of the reply (an async
                  generator handler yields several; a plain one gives one)
``done``          the reply's content (the http answer's ``agentResponse``)
``error``         ``{error}``: the reply failed; an error marker is in history

The stream is Starlette's ``StreamingResponse`` with the two-line framing
written here rather than sse-starlette: every payload is one line of JSON, so
the framing is all the SSE spec asks of a writer, and sse-starlette would patch
uvicorn's signal handling process-wide on import. A comment line (``: ping``)
goes out when nothing else did for :data:`PING_SECONDS`, so proxies keep an idle
stream open while the agent thinks.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.responses import StreamingResponse

from ..messages import Message
from ..sessions import Session
from .replies import ReplySink, ReplyWorker
from .wire import agent_response_json, user_message_json

__all__ = ["PING_SECONDS", "SSE_HEADERS", "event_bytes", "replayed_stream", "reply_stream"]

PING_SECONDS: Final = 15.0
"""Longest silence on a stream before a ``: ping`` comment."""

SSE_HEADERS: Final = {
    # ElizaOS's three, with no charset parameter (it sets the header as is).
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "connection": "keep-alive",
    # Tells nginx not to buffer the stream.
    "x-accel-buffering": "no",
}

_PING: Final = b": ping\n\n"

Event = tuple[str, dict[str, Any]]


def event_bytes(name: str, data: dict[str, Any]) -> bytes:
    """One SSE event: ``event: NAME``, ``data: JSON``, a blank line.

    >>> event_bytes("done", {"text": "hi"})
    b'event: done\\ndata: {"text":"hi"}\\n\\n'
    """
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class _StreamSink(ReplySink):
    """A reply's events into a memory stream the response reads (the client may be gone)."""

    def __init__(self, send: MemoryObjectSendStream[Event], user: Message) -> None:
        self._send = send
        self._user = user

    async def chunk(self, message_id: str, piece: str, index: int) -> None:
        await self._put("chunk", {"messageId": message_id, "chunk": piece, "index": index})

    async def done(self, reply: Message) -> None:
        await self._put("done", agent_response_json(reply, self._user))
        await self._send.aclose()

    async def failed(self, message_id: str, error: str, partial_text: str) -> None:
        await self._put("error", {"error": error})
        await self._send.aclose()

    async def _put(self, name: str, data: dict[str, Any]) -> None:
        try:
            self._send.send_nowait((name, data))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the client went away: the reply is still stored


def reply_stream(
    worker: ReplyWorker, user: Message, session: Session, *, ping_seconds: float = PING_SECONDS
) -> StreamingResponse:
    """The SSE answer to *user* (already stored), its reply made by *worker*.

    Raises:
        APIError: 503 when *worker* is not running.
    """
    send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
    worker.start(user, session, _StreamSink(send, user))
    return StreamingResponse(
        _events(user_message_json(user, session), receive, ping_seconds), headers=SSE_HEADERS
    )


def replayed_stream(user: Message, reply: Message, session: Session) -> StreamingResponse:
    """An SSE answer for a reply made already (a send with an ``Idempotency-Key``)."""
    send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=3)
    send.send_nowait(("chunk", {"messageId": reply.id, "chunk": reply.content, "index": 0}))
    send.send_nowait(("done", agent_response_json(reply, user)))
    send.close()
    return StreamingResponse(
        _events(user_message_json(user, session), receive, PING_SECONDS), headers=SSE_HEADERS
    )


async def _events(
    first: dict[str, Any], receive: MemoryObjectReceiveStream[Event], ping_seconds: float
) -> AsyncIterator[bytes]:
    yield event_bytes("user_message", first)
    with receive:
        while True:
            with anyio.move_on_after(ping_seconds) as quiet:
                try:
                    name, data = await receive.receive()
                except anyio.EndOfStream:
                    return
            if quiet.cancelled_caught:
                yield _PING
                continue
            yield event_bytes(name, data)
