"""Idempotency keys of send-message: a retry returns the first answer and stores nothing new.

Scoped to the session, kept under ``i:{session_id}:{sha256(key)}`` for
``SessionsConfig.idempotency_window`` seconds (24 hours by default). The rules
are the IETF Idempotency-Key draft's:

1. The first request ``add``\\ s a *pending* marker (atomic: one request wins,
   on any replica) holding a fingerprint of its content and metadata.
2. The answer (user message and reply) is written *in the same* ``set_many``
   as the messages themselves (:mod:`.writer`), replacing the marker, so the
   messages are in history exactly when the answer is remembered.
3. A retry finding the answer returns it; finding a pending marker, it is
   refused as in flight (409); either with another fingerprint is refused as a
   reused key (422).

A pending marker lives ``idempotency_pending_seconds``: if the process serving
the first request died, a retry after that starts afresh. The first request
gives up before storing anything once 80 % of that time has passed, so it can
never store an answer after a retry took over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import orjson

from ..errors import IdempotencyInFlightError, IdempotencyKeyReusedError, InvalidSessionInputError
from ..messages import Message
from .models import Exchange

__all__ = [
    "MAX_KEY_LENGTH",
    "answer",
    "check_key",
    "fingerprint",
    "marker_key",
    "pending",
    "replay",
]

MAX_KEY_LENGTH: Final = 255
"""Longest idempotency key accepted (characters)."""


def check_key(key: object) -> str:
    """*key* if it is a usable idempotency key, else raise InvalidSessionInputError."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidSessionInputError(
            f"an idempotency key must be 1 to {MAX_KEY_LENGTH} printable characters, got {key!r}"
        )
    return key


def marker_key(session_id: str, key: str) -> str:
    """The store key remembering *key* in session *session_id*."""
    return f"i:{session_id}:{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def fingerprint(content: str, metadata: Mapping[str, Any]) -> str:
    """What must be equal for a retry to count as the same request."""
    body = orjson.dumps([content, metadata], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def pending(print_: str, now: float) -> dict[str, Any]:
    """The marker of a first request in flight."""
    return {"state": "pending", "fp": print_, "at": now}


def answer(print_: str, exchange: Exchange) -> dict[str, Any]:
    """The remembered answer of a finished request."""
    return {
        "state": "done",
        "fp": print_,
        "user": exchange.user.to_dict(),
        "reply": exchange.reply.to_dict(),
    }


def replay(found: Any, print_: str, key: str) -> Exchange:
    """The answer to a retry that found *found* under its key (or raise).

    Raises:
        IdempotencyKeyReusedError: the key was used for another request.
        IdempotencyInFlightError: the first request is still in flight.
    """
    if not isinstance(found, dict) or found.get("fp") != print_:
        raise IdempotencyKeyReusedError(
            f"idempotency key {key!r} was already used for a different message in this session"
        )
    if found.get("state") != "done":
        raise IdempotencyInFlightError(
            f"a request with idempotency key {key!r} is still in progress; retry later"
        )
    return Exchange(Message.from_dict(found["user"]), Message.from_dict(found["reply"]))
