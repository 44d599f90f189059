"""Every error the runtime raises on purpose, in one place.

Each error also derives from the builtin a caller would catch (``KeyError``,
``ValueError``, ``RuntimeError``), so code that does not know this module still
handles them sensibly. The classes are re-exported where they were first defined
(``runtime``, ``runtime.sessions``, ``runtime.plugins``, ``runtime.http``).

::

    SessionError
    ├── SessionNotFoundError        (also KeyError)
    ├── SessionExpiredError
    │   └── SessionRenewalError
    ├── InvalidSessionInputError    (also ValueError)
    │   └── ContentTooLargeError
    └── SessionRecordError          (also ValueError)
    RuntimeStateError               (RuntimeError)
    ProviderError                   (RuntimeError)
    APIError                        (Exception; the HTTP layer's answer)
"""

from __future__ import annotations

import time
from collections.abc import Mapping

__all__ = [
    "APIError",
    "ContentTooLargeError",
    "ExchangeNotStoredError",
    "IdempotencyInFlightError",
    "IdempotencyKeyReusedError",
    "InvalidSessionInputError",
    "ProviderError",
    "RuntimeStateError",
    "SessionError",
    "SessionExpiredError",
    "SessionNotFoundError",
    "SessionRecordError",
    "SessionRenewalError",
]


def _format_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) + f" ({t:.3f})"


# -- sessions --------------------------------------------------------------------------


class SessionError(Exception):
    """Base class of every error raised on purpose by :class:`~runtime.SessionManager`."""


class SessionNotFoundError(SessionError, KeyError):
    """Raised when no session has the id asked for.

    That is: it never existed, it was ended, it was swept after expiring, or
    the id has a form the manager never issues.

    Attributes:
        session_id: the id that was looked up.
    """

    def __init__(self, session_id: object, message: str | None = None) -> None:
        self.session_id = session_id
        self.message = message or f"session {session_id!r} not found (unknown, ended or expired)"
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument: keep the plain message.
        return self.message


class SessionExpiredError(SessionError):
    """Raised when the session has expired and is waiting for the sweeper to remove it.

    Attributes:
        session_id: the session's id.
        expired_at: when it expired (seconds since the epoch).
    """

    def __init__(self, session_id: str, expired_at: float, message: str | None = None) -> None:
        self.session_id = session_id
        self.expired_at = expired_at
        super().__init__(
            message
            or f"session {session_id!r} expired at {_format_time(expired_at)}; create a new one"
        )


class SessionRenewalError(SessionExpiredError):
    """Raised by ``SessionManager.renew`` when the session reached its maximum duration.

    A session that old has necessarily expired, hence the base class.
    """

    @classmethod
    def at_max_duration(
        cls, session_id: str, expired_at: float, max_minutes: float, ended_at: float
    ) -> SessionRenewalError:
        """The error for a session whose maximum duration (*max_minutes*) ended at *ended_at*."""
        return cls(
            session_id,
            expired_at,
            f"session {session_id!r} cannot be renewed: it reached its maximum duration of"
            f" {max_minutes:g} minutes at {_format_time(ended_at)}",
        )


class InvalidSessionInputError(SessionError, ValueError):
    """Raised when an argument is malformed.

    Content, metadata, ids, limits, cursors, timeouts or configuration: the
    message says which and what is allowed. Nothing was changed.
    """


class ContentTooLargeError(InvalidSessionInputError):
    """Raised when message content or metadata is larger than the configured limit."""


class SessionRecordError(SessionError, ValueError):
    """Raised when the sessions store holds a record this version cannot read.

    Either a newer version wrote it (an unknown format version) or another
    program wrote to the ``"sessions"`` store. Nothing is changed.
    """


class IdempotencyKeyReusedError(SessionError, ValueError):
    """Raised when an idempotency key comes back with a different request.

    The key was first used, in this session and within the idempotency window,
    for other content or metadata (HTTP 422, as in the IETF Idempotency-Key
    draft). Nothing was stored.
    """


class IdempotencyInFlightError(SessionError):
    """Raised when a retry arrives while the first request with its key is still in flight.

    Retry later (HTTP 409). Nothing was stored by the retry.
    """


class ExchangeNotStoredError(SessionError):
    """Raised when an exchange could not be stored, and nothing of it is in history.

    The store failed or was too slow between allocating the messages and
    committing them; a retry (with the same idempotency key) is safe.
    """


# -- the agent runtime -----------------------------------------------------------------


class RuntimeStateError(RuntimeError):
    """Raised when a runtime method is called in the wrong lifecycle phase.

    For example registering a service after :meth:`~runtime.AgentRuntime.initialize`,
    using ``runtime.state_cache`` before it, or initialising a closed runtime.
    """


class ProviderError(RuntimeError):
    """Raised by :meth:`~runtime.AgentRuntime.compose_state` when a provider failed.

    The provider raised, or returned something other than a dict; its own
    exception is chained as ``__cause__``. Nothing is cached.
    """


# -- HTTP ------------------------------------------------------------------------------


class APIError(Exception):
    """Raised by the HTTP layer to answer ``{"error": {"code", "message"}}`` with a status.

    Endpoints raise it for what they detect themselves (a malformed body, an
    unknown agent); the other errors above are translated to it at the edge.

    >>> APIError(400, "VALIDATION_ERROR", "limit must be an integer").status
    400
    """

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
