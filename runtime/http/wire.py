"""The wire format: sessions and messages as ElizaOS's JSON bodies.

Every timestamp is **epoch milliseconds as a JSON number**, in bodies and in
the ``before``/``after`` query parameters alike (ElizaOS's own cursors and query
parameters are epoch milliseconds). Message timestamps keep their
sub-millisecond part, so a ``createdAt`` passed back verbatim as a cursor is
exact: pages never overlap and never skip a message. Durations
(``timeRemaining``) are whole milliseconds; timeouts are minutes.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import Response

from ..messages import Message
from ..sessions import Session

__all__ = [
    "JSONResponse",
    "cursor_after",
    "cursor_before",
    "message_json",
    "session_json",
    "status_json",
    "to_ms",
]


class JSONResponse(Response):
    """JSON via orjson: floats in their shortest exact form, so cursors round-trip."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """*content* as compact JSON bytes."""
        return orjson.dumps(content)


def to_ms(seconds: float) -> float:
    """Epoch seconds (the Python side) as epoch milliseconds (the wire).

    The exact product is kept, fraction included; see :func:`cursor_before`.

    >>> to_ms(1.5)
    1500.0
    """
    return seconds * 1000.0


def cursor_before(ms: float) -> float:
    """The ``before`` bound in seconds equivalent to *ms* on the wire.

    It is the smallest float ``s`` with ``to_ms(s) >= ms``, so for every
    message ``created_at < s`` exactly when ``to_ms(created_at) < ms``: the
    exclusive cursor means the same on both sides even though the division
    by 1000 does not undo the multiplication exactly.

    >>> cursor_before(1500.0)
    1.5
    """
    seconds = ms / 1000.0
    while to_ms(seconds) < ms:
        seconds = math.nextafter(seconds, math.inf)
    while to_ms(lower := math.nextafter(seconds, -math.inf)) >= ms:
        seconds = lower
    return seconds


def cursor_after(ms: float) -> float:
    """The ``after`` bound in seconds: the largest float ``s`` with ``to_ms(s) <= ms``.

    For every message ``created_at > s`` exactly when ``to_ms(created_at) > ms``.

    >>> cursor_after(1500.0)
    1.5
    """
    seconds = ms / 1000.0
    while to_ms(seconds) > ms:
        seconds = math.nextafter(seconds, -math.inf)
    while to_ms(higher := math.nextafter(seconds, math.inf)) <= ms:
        seconds = higher
    return seconds


def session_json(session: Session) -> dict[str, Any]:
    """A session as ElizaOS's session info response, status fields included."""
    config = session.timeout_config
    last_message = session.last_message_at
    return {
        "sessionId": session.id,
        "agentId": session.agent_id,
        "userId": session.user_id,
        "createdAt": to_ms(session.created_at),
        "lastActivity": to_ms(session.last_activity),
        "expiresAt": to_ms(session.expires_at),
        "timeoutConfig": {
            "timeoutMinutes": config.timeout_minutes,
            "autoRenew": config.auto_renew,
            "maxDurationMinutes": config.max_duration_minutes,
            "warningThresholdMinutes": config.warning_threshold_minutes,
        },
        "metadata": session.metadata,
        "renewalCount": session.renewal_count,
        "messageCount": session.message_count,
        "lastMessageAt": None if last_message is None else to_ms(last_message),
        "timeRemaining": _remaining_ms(session),
        "isNearExpiration": session.is_near_expiration,
    }


def message_json(message: Message, session: Session | None) -> dict[str, Any]:
    """A message as ElizaOS's simplified message (``authorId`` needs its *session*)."""
    author: str | None = None
    if session is not None:
        author = session.agent_id if message.role == "agent" else session.user_id
    return {
        "id": message.id,
        "sessionId": message.session_id,
        "role": message.role,
        "authorId": author,
        "isAgent": message.role == "agent",
        "content": message.content,
        "createdAt": to_ms(message.created_at),
        "metadata": message.metadata,
    }


def status_json(session: Session) -> dict[str, Any]:
    """The ``sessionStatus`` of a send-message answer."""
    return {
        "expiresAt": to_ms(session.expires_at),
        "renewalCount": session.renewal_count,
        # Activity renews whenever auto-renew is on (up to the max duration).
        "wasRenewed": bool(session.timeout_config.auto_renew),
        "isNearExpiration": session.is_near_expiration,
        "timeRemaining": _remaining_ms(session),
    }


def _remaining_ms(session: Session) -> int:
    return math.floor(session.time_remaining * 1000.0)
