"""Chat sessions with expiry and paginated history, kept in a key-value store.

The semantics are those of the ElizaOS Sessions API: a session has an inactivity
timeout, optional auto-renewal on activity, and a hard maximum duration.

- Sending a message allocates ``seq`` and ``created_at`` in one atomic
  :meth:`~kvstore.KVStore.update` of the small session record, then writes the
  message under its own key: appending costs O(1) bytes whatever the history
  length, and works across processes on SQLite and Redis.
- A history page finds its bounds by a k-ary search over ``seq``, O(log n)
  keys, then reads at most ``limit + 1`` message keys (:mod:`.history`).
- Every key has a store TTL, so an idle session disappears even if no sweeper
  ever runs: the record lives until ``expires_at`` plus a grace period, messages
  and index entries until the latest possible end of the session (``created_at
  + max duration``) plus the grace period, so renewals never touch them.
- :meth:`SessionManager.sweep` reads only the expiry buckets that came due
  since the last sweep (:mod:`.sweeper`).

The modules, from the bottom up:

=================  ==============================================================
``validation``     checks of caller input (ids, content, metadata, limits, cursors)
``config``         :class:`TimeoutConfig`, :class:`SessionsConfig`
``models``         :class:`Session`, :class:`Exchange`, :class:`Posted`,
                   :class:`MessagePage`, :class:`SessionsRuntime` (what the
                   manager needs of a runtime)
``keys``           the key scheme of the ``"sessions"`` store
``record``         :class:`~.record.SessionRecord`, the stored record, typed
``history``        the history search and page reads
``lanes``          concurrent jobs on one key of a process, run in batches
``idempotency``    the markers of ``Idempotency-Key`` sends
``writer``         appending messages (allocate, write, commit; give-ups)
``sweeper``        the expiry bucket index and the sweep
``manager``        :class:`SessionManager`
=================  ==============================================================

The errors live in :mod:`runtime.errors` and are re-exported here.
"""

from __future__ import annotations

from ..errors import (
    ContentTooLargeError,
    ExchangeNotStoredError,
    IdempotencyInFlightError,
    IdempotencyKeyReusedError,
    InvalidSessionInputError,
    SessionError,
    SessionExpiredError,
    SessionNotFoundError,
    SessionRecordError,
    SessionRenewalError,
)
from .config import SessionsConfig, TimeoutConfig
from .keys import SESSIONS_STORE
from .manager import SessionManager
from .models import Exchange, ExpiredHook, MessagePage, Posted, Session, SessionsRuntime

__all__ = [
    "SESSIONS_STORE",
    "ContentTooLargeError",
    "Exchange",
    "ExchangeNotStoredError",
    "ExpiredHook",
    "IdempotencyInFlightError",
    "IdempotencyKeyReusedError",
    "InvalidSessionInputError",
    "MessagePage",
    "Posted",
    "Session",
    "SessionError",
    "SessionExpiredError",
    "SessionManager",
    "SessionNotFoundError",
    "SessionRecordError",
    "SessionRenewalError",
    "SessionsConfig",
    "SessionsRuntime",
    "TimeoutConfig",
]
