"""Idempotency keys of send-message: a retry returns the first answer and stores nothing new.

Scoped to the session, kept under ``i:{session_id}:{sha256(key)}`` for
``SessionsConfig.idempotency_window`` seconds (24 hours by default). The rules
are the IETF Idempotency-Key draft's:

1. The first request ``add``\\ s a *pending* marker (atomic: one request wins,
   on any replica) holding a fingerprint of its content and metadata and an
   *owner* token of its own. The marker is a lease of
   ``idempotency_pending_seconds`` that the request keeps alive, so that a retry
   on another replica is refused as in flight (409) while the first runs; if
   the process serving it died, the lease lapses and a retry takes over.
2. A lease can lapse under a live owner too (a stalled process), so the lease
   is not what keeps a key's exchange single: the *claim* is. The writer stores
   the messages (not yet visible), then turns the marker into the answer with an
   atomic ``update`` that checks the owner token (:func:`claim`); only then does
   it commit the messages (:mod:`.writer`). An owner whose marker was taken over
   meanwhile loses the claim: it overwrites its messages with tombstones and
   its client gets an error (409 while the new owner runs, or the new owner's
   answer once it is done), so the exchange is stored once whatever the timing.
3. A retry finding the answer returns it; finding a pending marker, it is
   refused as in flight (409); either with another fingerprint is refused as a
   reused key (422). A *free* marker (its request failed, or the writer's range
   was given up) is taken over by the next request, whatever its body.

The pending range of a keyed exchange lists its marker and owner
(:class:`~.record.Fence`): whoever gives up a stalled range (:mod:`.writer`)
first *revokes* a marker still pending under that owner, so its late claim
fails too, and keeps the messages only if the claim had been made.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ..errors import (
    ExchangeNotStoredError,
    IdempotencyInFlightError,
    IdempotencyKeyReusedError,
    InvalidSessionInputError,
)
from ..messages import Message
from .models import Exchange

__all__ = [
    "MAX_KEY_LENGTH",
    "ClaimLostError",
    "Lease",
    "after_loss",
    "check_key",
    "claim",
    "fingerprint",
    "freed",
    "is_free",
    "marker_key",
    "owned_by",
    "pending",
    "replay",
    "revoke",
    "take_over",
]

MAX_KEY_LENGTH: Final = 255
"""Longest idempotency key accepted (characters)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One request's hold on an idempotency key: its marker, owner token and fingerprint."""

    marker: str
    fingerprint: str
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)


class ClaimLostError(Exception):
    """The marker was no longer this request's when its answer was to be stored.

    Attributes:
        found: what the marker held instead (another owner's marker or answer, a
            free marker, or None).
    """

    def __init__(self, found: Any) -> None:
        super().__init__("the idempotency marker is no longer this request's")
        self.found = found


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


def pending(lease: Lease, now: float) -> dict[str, Any]:
    """The marker of a first request in flight."""
    return {"state": "pending", "fp": lease.fingerprint, "owner": lease.owner, "at": now}


def freed(found: Any) -> dict[str, Any]:
    """A marker anyone may take over (its request failed, or its range was given up)."""
    return {"state": "free", "fp": found.get("fp") if isinstance(found, dict) else None}


def is_free(found: Any) -> bool:
    """True if a request may take the marker *found* over (nothing, or a free marker)."""
    return found is None or (isinstance(found, dict) and found.get("state") == "free")


def owned_by(found: Any, owner: str, state: str = "pending") -> bool:
    """True if *found* is a marker in *state* held by *owner*."""
    return isinstance(found, dict) and found.get("state") == state and found.get("owner") == owner


def take_over(lease: Lease, now: float) -> Callable[[Any], dict[str, Any]]:
    """An ``update`` function: *lease*'s pending marker if the current one is free."""

    def apply(current: Any) -> dict[str, Any]:
        if not is_free(current):
            raise ClaimLostError(current)
        return pending(lease, now)

    return apply


def claim(lease: Lease, stored: Sequence[Message]) -> Callable[[Any], dict[str, Any]]:
    """An ``update`` function: the answer *stored*, if the marker is still *lease*'s.

    Raises ClaimLostError (so nothing is written) otherwise: the compare of the
    owner token and the write of the answer are one atomic step.
    """
    user, reply = stored

    def apply(current: Any) -> dict[str, Any]:
        if not owned_by(current, lease.owner):
            raise ClaimLostError(current)
        return {
            "state": "done",
            "fp": lease.fingerprint,
            "owner": lease.owner,
            "user": user.to_dict(),
            "reply": reply.to_dict(),
        }

    return apply


def revoke(owner: str) -> Callable[[Any], dict[str, Any]]:
    """An ``update`` function: free the marker if *owner* still holds it pending.

    For a request that failed, and for a given-up range. Raises ClaimLostError
    (nothing written) if it is not *owner*'s pending marker; ``found`` then
    tells whether *owner* made its claim (a ``done`` marker of that owner).
    """

    def apply(current: Any) -> dict[str, Any]:
        if not owned_by(current, owner):
            raise ClaimLostError(current)
        return freed(current)

    return apply


def replay(found: Any, print_: str, key: str) -> Exchange:
    """The answer to a retry that found *found* (not free) under its key, or raise.

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


def after_loss(found: Any, print_: str, key: str) -> Exchange:
    """The answer of a request that lost its claim, having found *found* instead (or raise).

    The exchange that won is the one stored: its answer if it is done, 409 while
    it runs, and "not stored" if nobody holds the key any more.

    Raises:
        IdempotencyInFlightError: another request holds the key.
        ExchangeNotStoredError: the marker lapsed and nobody took it over.
    """
    if is_free(found):
        raise ExchangeNotStoredError(
            f"the request with idempotency key {key!r} took longer than its marker's life"
            " and stored nothing; retry"
        )
    return replay(found, print_, key)
