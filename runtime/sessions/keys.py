"""The key scheme of the ``"sessions"`` store.

Chosen so that nothing grows with the length of a conversation or the number
of sessions:

=========================  ======================================================
key                        value
=========================  ======================================================
``s:{id}``                 the session record (:mod:`runtime.sessions.record`):
                           timestamps, counters, resolved timeout config,
                           metadata (bounded size)
``m:{id}:{seq:012d}``      message number *seq* of the session (0-based)
``a:{agent_id}:{id}``      per-agent index entry, listed by ``SessionManager.list``
``e:{bucket}``             expiry index: ids of sessions that expire in the
                           :data:`BUCKET_SECONDS`-wide time bucket *bucket*
``c:sweep``                the last expiry bucket every sweep is done with
=========================  ======================================================

Session ids never contain ``:``, which is what tells an agent's index entries
apart from those of an agent whose id extends it (``a:x:`` also prefixes
``a:x:y:...``).
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "BUCKET_PREFIX",
    "BUCKET_SECONDS",
    "CURSOR_KEY",
    "SESSIONS_STORE",
    "SESSION_PREFIX",
    "agent_prefix",
    "bucket_key",
    "bucket_of",
    "message_key",
    "session_key",
]

SESSIONS_STORE: Final = "sessions"
"""Name of the store (namespace) sessions live in."""

SESSION_PREFIX: Final = "s:"
"""Prefix of every session record key."""

BUCKET_PREFIX: Final = "e:"
"""Prefix of every expiry-bucket key."""

BUCKET_SECONDS: Final = 10.0
"""Width of one expiry bucket."""

CURSOR_KEY: Final = "c:sweep"
"""Holds the last expiry bucket every sweep is done with."""


def session_key(session_id: str) -> str:
    """The key of *session_id*'s record."""
    return f"{SESSION_PREFIX}{session_id}"


def message_key(session_id: str, seq: int) -> str:
    """The key of message number *seq* (0-based) of *session_id*."""
    return f"m:{session_id}:{seq:012d}"


def agent_prefix(agent_id: str) -> str:
    """The prefix of *agent_id*'s index entries (``a:{agent_id}:{session_id}``)."""
    return f"a:{agent_id}:"


def bucket_of(t: float) -> int:
    """The number of the expiry bucket holding time *t*."""
    return math.floor(t / BUCKET_SECONDS)


def bucket_key(bucket: int) -> str:
    """The key of expiry bucket number *bucket*."""
    return f"{BUCKET_PREFIX}{bucket}"
