"""The wire format: sessions and messages as the real ElizaOS server's JSON bodies.

Timestamp forms follow ElizaOS 1.7.2 field by field: session, history, health
and error times are ISO 8601 strings in whole milliseconds
(``2026-12-01T10:21:43.334Z``); the send answer's ``userMessage.created_at``,
history ``cursors`` and the ``before``/``after`` query parameters are integer
epoch milliseconds. The Python side keeps float seconds; this module maps.
A cursor names a whole millisecond: ``before=N`` keeps messages whose
millisecond is below ``N``, ``after=N`` those whose millisecond is above it,
the same truncation the ISO ``createdAt`` shows.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any, Final

import orjson
from starlette.responses import Response

from ..messages import Message
from ..sessions import Session

__all__ = [
    "CHANNEL_NAMESPACE",
    "MESSAGE_SERVER_ID",
    "JSONResponse",
    "agent_response_json",
    "broadcast_json",
    "channel_id",
    "channel_metadata",
    "created_json",
    "cursor_after",
    "cursor_before",
    "history_json",
    "iso",
    "message_metadata",
    "ms",
    "now_iso",
    "send_json",
    "session_json",
    "status_json",
    "stream_chunk_json",
    "stream_error_json",
    "user_broadcast_json",
    "user_message_json",
    "websocket_send_json",
]

CHANNEL_NAMESPACE: Final = uuid.UUID("6f0b3d1e-2c4a-5b8e-9d7f-0a1b2c3d4e5f")
"""The uuid5 namespace a session's ``channelId`` is derived in (from its session id)."""

MESSAGE_SERVER_ID: Final = "00000000-0000-0000-0000-000000000000"
"""ElizaOS's default message server id, as its ``userMessage.message_server_id``."""


class JSONResponse(Response):
    """JSON via orjson, ``application/json; charset=utf-8`` as ElizaOS sends it."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """*content* as compact JSON bytes."""
        return orjson.dumps(content)


def ms(seconds: float) -> int:
    """Epoch seconds as whole epoch milliseconds (truncated, as a JS ``Date`` holds them).

    >>> ms(1.5009)
    1500
    """
    return math.floor(seconds * 1000.0)


def iso(seconds: float) -> str:
    """Epoch seconds as ElizaOS's ISO 8601 form (``Date.toISOString``: UTC, milliseconds).

    >>> iso(0.0015)
    '1970-01-01T00:00:00.001Z'
    """
    whole = ms(seconds)
    moment = dt.datetime.fromtimestamp(whole // 1000, tz=dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{whole % 1000:03d}Z"


def now_iso() -> str:
    """The current time in :func:`iso` form."""
    return iso(dt.datetime.now(dt.UTC).timestamp())


def cursor_before(millis: int) -> float:
    """The ``before`` bound in seconds for the cursor *millis*.

    It is the smallest float ``s`` with ``s * 1000 >= millis``, so
    ``created_at < s`` exactly when ``ms(created_at) < millis``.

    >>> cursor_before(1500)
    1.5
    """
    seconds = millis / 1000.0
    while seconds * 1000.0 < millis:
        seconds = math.nextafter(seconds, math.inf)
    while (lower := math.nextafter(seconds, -math.inf)) * 1000.0 >= millis:
        seconds = lower
    return seconds


def cursor_after(millis: int) -> float:
    """The ``after`` bound in seconds for the cursor *millis*.

    ``created_at > s`` exactly when ``ms(created_at) > millis``, i.e. when
    ``created_at >= cursor_before(millis + 1)``.

    >>> cursor_after(1500) < 1.501 <= math.nextafter(cursor_after(1500), 2.0)
    True
    """
    return math.nextafter(cursor_before(millis + 1), -math.inf)


def channel_id(session: Session) -> str:
    """The session's ``channelId``: a UUID derived from its id, so every replica agrees."""
    return str(uuid.uuid5(CHANNEL_NAMESPACE, session.id))


def _timeout_json(session: Session) -> dict[str, Any]:
    config = session.timeout_config
    return {
        "timeoutMinutes": config.timeout_minutes,
        "autoRenew": config.auto_renew,
        "maxDurationMinutes": config.max_duration_minutes,
        "warningThresholdMinutes": config.warning_threshold_minutes,
    }


def created_json(session: Session) -> dict[str, Any]:
    """The create answer: ElizaOS sends no status fields with it."""
    return {
        "sessionId": session.id,
        "channelId": channel_id(session),
        "agentId": session.agent_id,
        "userId": session.user_id,
        "createdAt": iso(session.created_at),
        "metadata": session.metadata,
        "expiresAt": iso(session.expires_at),
        "timeoutConfig": _timeout_json(session),
    }


def session_json(session: Session) -> dict[str, Any]:
    """A session as ElizaOS's session info (GET, list, renew, heartbeat)."""
    return {
        "sessionId": session.id,
        "channelId": channel_id(session),
        "agentId": session.agent_id,
        "userId": session.user_id,
        "createdAt": iso(session.created_at),
        "lastActivity": iso(session.last_activity),
        "metadata": session.metadata,
        "expiresAt": iso(session.expires_at),
        "timeoutConfig": _timeout_json(session),
        "renewalCount": session.renewal_count,
        "timeRemaining": _remaining_ms(session),
        "isNearExpiration": _near(session),
    }


def channel_metadata(session: Session) -> dict[str, Any]:
    """What ElizaOS stores as the session's channel metadata (merged into user messages)."""
    return {
        "userId": session.user_id,
        "agentId": session.agent_id,
        "sessionId": session.id,
        "timeoutConfig": _timeout_json(session),
        **session.metadata,
    }


def message_metadata(message: Message, session: Session | None) -> dict[str, Any]:
    """A user message's metadata with the channel's merged under it (message keys win)."""
    if session is None or message.role == "agent":
        return dict(message.metadata)
    return {**channel_metadata(session), **message.metadata}


def history_json(message: Message, session: Session) -> dict[str, Any]:
    """A history entry as ElizaOS's simplified message."""
    author = session.agent_id if message.role == "agent" else session.user_id
    return {
        "id": message.id,
        "content": message.content,
        "authorId": author,
        "isAgent": message.role == "agent",
        "createdAt": iso(message.created_at),
        "metadata": message_metadata(message, session),
    }


def user_message_json(message: Message, session: Session) -> dict[str, Any]:
    """The send answer's ``userMessage``: ElizaOS's message-bus shape (snake_case)."""
    return {
        "id": message.id,
        "channel_id": channel_id(session),
        "message_server_id": MESSAGE_SERVER_ID,
        "author_id": session.user_id,
        "content": message.content,
        "created_at": ms(message.created_at),
        "source_type": "user",
        "raw_message": {"content": message.content},
        "metadata": message_metadata(message, session),
    }


def agent_response_json(reply: Message, user: Message) -> dict[str, Any]:
    """The send answer's ``agentResponse`` (transport http): the reply's content fields."""
    thought = reply.metadata.get("thought")
    actions = reply.metadata.get("actions")
    return {
        "thought": thought if isinstance(thought, str) else "",
        "actions": actions if isinstance(actions, list) else ["REPLY"],
        "providers": [],
        "text": reply.content,
        "simple": True,
        "responseId": reply.id,
        "inReplyTo": user.id,
    }


def status_json(session: Session, *, was_renewed: bool) -> dict[str, Any]:
    """The ``sessionStatus`` of a send-message answer."""
    return {
        "expiresAt": iso(session.expires_at),
        "renewalCount": session.renewal_count,
        "wasRenewed": was_renewed,
        "isNearExpiration": _near(session),
    }


def send_json(
    user: Message, reply: Message, session: Session, *, was_renewed: bool
) -> dict[str, Any]:
    """The whole send-message answer (transport http)."""
    return {
        "success": True,
        "userMessage": user_message_json(user, session),
        "agentResponse": agent_response_json(reply, user),
        "sessionStatus": status_json(session, was_renewed=was_renewed),
    }


def websocket_send_json(user: Message, session: Session, *, was_renewed: bool) -> dict[str, Any]:
    """The send-message answer of transports that answer at once (websocket): no reply yet."""
    return {
        "success": True,
        "userMessage": user_message_json(user, session),
        "sessionStatus": status_json(session, was_renewed=was_renewed),
    }


def broadcast_json(reply: Message, user: Message, session: Session) -> dict[str, Any]:
    """The Socket.IO ``messageBroadcast`` of an agent reply.

    ElizaOS's fields as its ``/api/messaging/submit`` broadcasts an agent's
    answer (``senderName`` is its default ``"Agent"``: this runtime's agent has
    no character name), plus ``channelId`` (the same as ``roomId``), which its
    socket path sends and its web client reads first, and ``inReplyTo``.
    """
    content = agent_response_json(reply, user)
    room = channel_id(session)
    return {
        "id": reply.id,
        "senderId": session.agent_id,
        "senderName": "Agent",
        "text": reply.content,
        "channelId": room,
        "roomId": room,
        "serverId": MESSAGE_SERVER_ID,
        "createdAt": ms(reply.created_at),
        "source": "agent_response",
        "thought": content["thought"],
        "actions": content["actions"],
        "inReplyTo": user.id,
    }


def user_broadcast_json(
    user: Message, session: Session, *, sender_name: str, source: str
) -> dict[str, Any]:
    """The ``messageBroadcast`` of a user message sent over Socket.IO (ElizaOS's socket path)."""
    room = channel_id(session)
    return {
        "id": user.id,
        "senderId": session.user_id,
        "senderName": sender_name,
        "text": user.content,
        "channelId": room,
        "roomId": room,
        "messageServerId": MESSAGE_SERVER_ID,
        "createdAt": ms(user.created_at),
        "source": source,
    }


def stream_chunk_json(
    session: Session, *, message_id: str, chunk: str, index: int
) -> dict[str, Any]:
    """ElizaOS's ``messageStreamChunk`` payload: one piece of a reply being made."""
    return {
        "messageId": message_id,
        "chunk": chunk,
        "index": index,
        "agentId": session.agent_id,
        "channelId": channel_id(session),
    }


def stream_error_json(
    session: Session, *, message_id: str, error: str, partial_text: str
) -> dict[str, Any]:
    """ElizaOS's ``messageStreamError`` payload: the reply could not be made."""
    return {
        "messageId": message_id,
        "channelId": channel_id(session),
        "agentId": session.agent_id,
        "error": error,
        "partialText": partial_text,
    }


def _near(session: Session) -> bool:
    # ElizaOS: 0 < timeRemaining <= the warning threshold.
    return _remaining_ms(session) > 0 and session.is_near_expiration


def _remaining_ms(session: Session) -> int:
    return math.floor(session.time_remaining * 1000.0)
