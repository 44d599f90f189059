"""Chat sessions with expiry and paginated history, kept in a key-value store.

The semantics are those of the ElizaOS Sessions API: a session has an inactivity
timeout, optional auto-renewal on activity, and a hard maximum duration.

Storage layout (store ``"sessions"``), chosen so that nothing grows with the
length of a conversation or the number of sessions:

=========================  ======================================================
key                        value
=========================  ======================================================
``s:{id}``                 the session record: timestamps, counters, resolved
                           timeout config, metadata (bounded size)
``m:{id}:{seq:012d}``      message number *seq* of the session (0-based)
``a:{agent_id}:{id}``      per-agent index entry, listed by :meth:`SessionManager.list`
``e:{bucket}``             expiry index: ids of sessions that expire in the
                           ``_BUCKET_SECONDS``-wide time bucket *bucket*
``c:sweep``                the last expiry bucket every sweep is done with
=========================  ======================================================

- Sending a message allocates ``seq`` and ``created_at`` in one atomic
  :meth:`~kvstore.KVStore.update` of the small session record, then writes the
  message under its own key: appending costs O(1) bytes whatever the history
  length, and works across processes on SQLite and Redis.
- A history page finds its ``before``/``after`` bounds by a k-ary search over
  ``seq`` (message timestamps strictly increase with ``seq``), O(log n) keys,
  then reads at most ``limit + 1`` message keys with ``get_many``.
- Every key has a store TTL, so an idle session disappears even if no sweeper
  ever runs: the record lives until ``expires_at`` plus a grace period, messages
  and index entries until the latest possible end of the session (``created_at
  + max duration``) plus the grace period, so renewals never touch them.
- :meth:`SessionManager.sweep` reads only the expiry buckets that came due since
  the last sweep. A session renewed since it was indexed is found there, still
  alive, and moved to the bucket of its new expiry; renewals themselves never
  touch the index. Its cost grows with the sessions that came due, not with all
  sessions.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Final, NamedTuple, Protocol, Self, TypeVar

import anyio

from kvstore import KVStore, KVStoreService, SerializationError
from kvstore.codec import JSONCodec

from .messages import Message, Role

__all__ = [
    "ContentTooLargeError",
    "Exchange",
    "InvalidSessionInputError",
    "MessagePage",
    "Session",
    "SessionError",
    "SessionExpiredError",
    "SessionManager",
    "SessionNotFoundError",
    "SessionRenewalError",
    "SessionsConfig",
    "SessionsRuntime",
    "TimeoutConfig",
]

logger = logging.getLogger(__name__)

SESSIONS_STORE: Final = "sessions"
"""Name of the store (namespace) sessions live in."""

_RECORD_VERSION: Final = 1
_BUCKET_SECONDS: Final = 10.0
# Sweeping walks bucket numbers one by one (in get_many batches); after a very
# long pause it is cheaper to list the few buckets that exist instead.
_MAX_BUCKET_WALK: Final = 4096
_BUCKET_BATCH: Final = 256
_DELETE_BATCH: Final = 512
# Probes per round of the history search: log(n)/log(FANOUT + 1) round trips.
_SEARCH_FANOUT: Final = 4
# When two messages of a session get the same clock reading, the later one is
# bumped by this much so that timestamps stay strictly increasing (and usable
# as exclusive pagination cursors). 1 µs is still exact at epoch magnitudes.
_TICK: Final = 1e-6
# ~19 years: keeps every derived TTL within what backends (Redis PX) accept.
_MAX_MINUTES: Final = 10_000_000.0
_ID_BYTES: Final = 18  # 144 bits from secrets, encoded as 24 url-safe characters
_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_NAME_LENGTH: Final = 256
_CURSOR_KEY: Final = "c:sweep"
_CODEC: Final = JSONCodec()


# -- errors -------------------------------------------------------------------------


class SessionError(Exception):
    """Base class of every error raised on purpose by :class:`SessionManager`."""


class SessionNotFoundError(SessionError, KeyError):
    """No session has this id (never existed, ended, or already swept).

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
    """The session has expired and is waiting for the sweeper to remove it.

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
    """:meth:`SessionManager.renew` refused: the session reached its maximum duration.

    A session that old has necessarily expired, hence the base class.
    """


class InvalidSessionInputError(SessionError, ValueError):
    """An argument is malformed: content, metadata, ids, limits, cursors, timeouts, config."""


class ContentTooLargeError(InvalidSessionInputError):
    """Message content or metadata is larger than the configured limit."""


# -- configuration ------------------------------------------------------------------


def _check_minutes(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSessionInputError(
            f"{name} must be a number of minutes (int or float), not {type(value).__name__}"
        )
    minutes = float(value)
    if not math.isfinite(minutes) or not 0 < minutes <= _MAX_MINUTES:
        raise InvalidSessionInputError(
            f"{name} must be a finite number of minutes > 0 and <= {_MAX_MINUTES:.0f},"
            f" got {value!r}"
        )
    return minutes


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSessionInputError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSessionInputError(
            f"{name} must be a number of seconds, not {type(value).__name__}"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidSessionInputError(
            f"{name} must be a finite number of seconds > 0, got {value!r}"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Per-session timeout settings; ``None`` fields take the :class:`SessionsConfig` default.

    Minutes are floats (fractions allowed) and must be > 0. A session's
    ``timeout_config`` has every field resolved, with ``timeout_minutes``
    capped by ``max_duration_minutes``.

    Attributes:
        timeout_minutes: inactivity (or, without auto-renew, lifetime) timeout.
        auto_renew: whether activity (messages, heartbeats) extends the expiry.
        max_duration_minutes: hard limit on a session's life, renewals included.
        warning_threshold_minutes: ``is_near_expiration`` turns true within this.

    >>> TimeoutConfig(timeout_minutes=5, auto_renew=False).timeout_minutes
    5.0
    """

    timeout_minutes: float | None = None
    auto_renew: bool | None = None
    max_duration_minutes: float | None = None
    warning_threshold_minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("timeout_minutes", "max_duration_minutes", "warning_threshold_minutes"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_minutes(name, value))
        if self.auto_renew is not None and not isinstance(self.auto_renew, bool):
            raise InvalidSessionInputError(
                f"auto_renew must be True, False or None, not {self.auto_renew!r}"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TimeoutConfig:
        """Build from a dict of the field names (unknown names are an error).

        >>> TimeoutConfig.from_mapping({"timeout_minutes": 0.5}).timeout_minutes
        0.5
        """
        allowed = {f.name for f in fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise InvalidSessionInputError(
                f"unknown timeout setting(s) {sorted(map(str, unknown))};"
                f" allowed: {sorted(allowed)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-compatible dict."""
        return {
            "timeout_minutes": self.timeout_minutes,
            "auto_renew": self.auto_renew,
            "max_duration_minutes": self.max_duration_minutes,
            "warning_threshold_minutes": self.warning_threshold_minutes,
        }


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    """Defaults and limits of a :class:`SessionManager`.

    Attributes:
        default_timeout_minutes: timeout of sessions created without one.
        auto_renew: default of :attr:`TimeoutConfig.auto_renew`.
        max_duration_minutes: default hard limit on a session's life.
        warning_threshold_minutes: default near-expiration warning window.
        cleanup_interval: seconds between sweeps in :meth:`SessionManager.running`.
        max_page_size: largest ``limit`` accepted by :meth:`SessionManager.messages`.
        max_content_bytes: largest message content, in UTF-8 bytes.
        max_metadata_bytes: largest session or message metadata, as JSON bytes.
        grace_seconds: how long an expired session's keys outlive its expiry in
            the store, so that the sweeper (and ``on_expired``) normally sees it
            before the store's own TTL removes it. Keep it above
            ``cleanup_interval``.

    >>> SessionsConfig(default_timeout_minutes=10, cleanup_interval=60)  # doctest: +ELLIPSIS
    SessionsConfig(default_timeout_minutes=10.0, ...)
    """

    default_timeout_minutes: float = 30
    auto_renew: bool = True
    max_duration_minutes: float = 720
    warning_threshold_minutes: float = 5
    cleanup_interval: float = 300.0
    max_page_size: int = 100
    max_content_bytes: int = 64 * 1024
    max_metadata_bytes: int = 16 * 1024
    grace_seconds: float = 900.0

    def __post_init__(self) -> None:
        for name in (
            "default_timeout_minutes",
            "max_duration_minutes",
            "warning_threshold_minutes",
        ):
            object.__setattr__(self, name, _check_minutes(name, getattr(self, name)))
        if not isinstance(self.auto_renew, bool):
            raise InvalidSessionInputError(f"auto_renew must be a bool, not {self.auto_renew!r}")
        for name in ("cleanup_interval", "grace_seconds"):
            object.__setattr__(self, name, _check_seconds(name, getattr(self, name)))
        for name in ("max_page_size", "max_content_bytes", "max_metadata_bytes"):
            _check_positive_int(name, getattr(self, name))

    def resolve(self, timeout: TimeoutConfig | Mapping[str, Any] | None = None) -> TimeoutConfig:
        """A :class:`TimeoutConfig` with every field set: *timeout* over these defaults.

        The timeout is capped by the max duration.

        >>> SessionsConfig().resolve(TimeoutConfig(timeout_minutes=1000)).timeout_minutes
        720.0
        """
        if timeout is None:
            timeout = TimeoutConfig()
        elif isinstance(timeout, Mapping):
            timeout = TimeoutConfig.from_mapping(timeout)
        elif not isinstance(timeout, TimeoutConfig):
            raise InvalidSessionInputError(
                f"timeout must be a TimeoutConfig, a dict or None, not {type(timeout).__name__}"
            )
        max_duration = _default(timeout.max_duration_minutes, self.max_duration_minutes)
        return TimeoutConfig(
            timeout_minutes=min(
                _default(timeout.timeout_minutes, self.default_timeout_minutes), max_duration
            ),
            auto_renew=_default(timeout.auto_renew, self.auto_renew),
            max_duration_minutes=max_duration,
            warning_threshold_minutes=_default(
                timeout.warning_threshold_minutes, self.warning_threshold_minutes
            ),
        )


_T = TypeVar("_T")


def _default(value: _T | None, fallback: _T) -> _T:
    return fallback if value is None else value


# -- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """A snapshot of a session; the status properties read the manager's clock.

    Attributes:
        id: the session id (≥ 128 bits from :mod:`secrets`, URL-safe).
        agent_id: the agent the session talks to.
        user_id: the user who opened it.
        metadata: JSON-compatible data given at creation.
        created_at: seconds since the epoch.
        last_activity: time of the last message, heartbeat or renewal.
        expires_at: ``min(base + timeout, created_at + max_duration)``; base is
            ``last_activity`` with auto-renew, else the creation or last manual
            renewal time.
        timeout_config: the resolved timeout settings (every field set).
        renewal_count: renewals so far (manual, heartbeat and message ones).
        message_count: messages stored (user messages and replies).
        last_message_at: ``created_at`` of the newest message, if any.
    """

    id: str
    agent_id: str
    user_id: str
    metadata: dict[str, Any]
    created_at: float
    last_activity: float
    expires_at: float
    timeout_config: TimeoutConfig
    renewal_count: int
    message_count: int
    last_message_at: float | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    @property
    def time_remaining(self) -> float:
        """Seconds until expiry (0.0 once expired)."""
        return max(self.expires_at - self.clock(), 0.0)

    @property
    def is_expired(self) -> bool:
        """True once ``expires_at`` has passed."""
        return self.clock() >= self.expires_at

    @property
    def is_near_expiration(self) -> bool:
        """True when at most ``warning_threshold_minutes`` remain (expired included)."""
        threshold = (self.timeout_config.warning_threshold_minutes or 0.0) * 60.0
        return self.time_remaining <= threshold

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict including the status fields at this instant."""
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "user_id": self.user_id,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "last_activity": self.last_activity,
            "expires_at": self.expires_at,
            "timeout_config": self.timeout_config.to_dict(),
            "renewal_count": self.renewal_count,
            "message_count": self.message_count,
            "last_message_at": self.last_message_at,
            "time_remaining": self.time_remaining,
            "is_near_expiration": self.is_near_expiration,
            "is_expired": self.is_expired,
        }


class Exchange(NamedTuple):
    """What :meth:`SessionManager.exchange` stored: the user message and the reply."""

    user: Message
    reply: Message


class MessagePage(NamedTuple):
    """One page of history, newest first, and whether older messages match too."""

    messages: list[Message]
    has_more: bool


class SessionsRuntime(Protocol):
    """What a :class:`SessionManager` needs from its runtime (an ``AgentRuntime``)."""

    @property
    def agent_id(self) -> str:
        """The agent's id, used when :meth:`SessionManager.create` gets none."""
        ...

    @property
    def kv_service(self) -> KVStoreService:
        """The store service; sessions use its ``"sessions"`` store."""
        ...

    async def compose_state(self, message: Message) -> dict[str, Any]:
        """The state for *message*."""
        ...

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        """The agent's reply to *message*."""
        ...


ExpiredHook = Callable[[Session], Awaitable[None] | None]


# -- keys and record helpers -----------------------------------------------------------


def _session_key(session_id: str) -> str:
    return f"s:{session_id}"


def _message_key(session_id: str, seq: int) -> str:
    return f"m:{session_id}:{seq:012d}"


def _agent_prefix(agent_id: str) -> str:
    return f"a:{agent_id}:"


def _bucket(t: float) -> int:
    return math.floor(t / _BUCKET_SECONDS)


def _bucket_key(bucket: int) -> str:
    return f"e:{bucket}"


def _expires_at(record: Mapping[str, Any]) -> float:
    """ElizaOS's rule: ``min(base + timeout, created_at + max_duration)``."""
    timeout = record["timeout"]
    base = record["last_activity"] if timeout["auto_renew"] else record["renewed_at"]
    return float(
        min(
            base + timeout["timeout_minutes"] * 60.0,
            record["created_at"] + timeout["max_duration_minutes"] * 60.0,
        )
    )


def _latest_end(record: Mapping[str, Any]) -> float:
    """The latest moment the session can possibly be alive."""
    return float(record["created_at"] + record["timeout"]["max_duration_minutes"] * 60.0)


def _format_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) + f" ({t:.3f})"


class _Skip(Exception):
    """Control flow inside ``update``: leave the record as it is."""

    def __init__(self, record: dict[str, Any] | None) -> None:
        super().__init__()
        self.record = record


class _NotExpired(Exception):
    """The sweeper's claim found the session renewed meanwhile."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__()
        self.record = record


# -- the manager ------------------------------------------------------------------------


class SessionManager:
    """Chat sessions of an agent runtime, stored in its ``"sessions"`` KV store.

    Several managers (several processes) may share one backend: every
    read-modify-write goes through the store's atomic ``update``.

    Args:
        runtime: supplies ``agent_id``, ``kv_service``, ``compose_state`` and
            ``generate_reply`` (an ``AgentRuntime`` does).
        config: defaults and limits (``SessionsConfig()`` if None).
        clock: seconds since the epoch; inject a fake one in tests.
        on_expired: called once per expired session removed by :meth:`sweep`
            (sync or async), even when several replicas sweep concurrently.
            Errors it raises are logged, not propagated.

    >>> async with AgentRuntime() as runtime:                  # doctest: +SKIP
    ...     sessions = runtime.sessions
    ...     session = await sessions.create(user_id="u1")
    ...     reply = await sessions.send_message(session.id, "hello")
    ...     page = await sessions.messages(session.id, limit=20)
    """

    def __init__(
        self,
        runtime: SessionsRuntime,
        *,
        config: SessionsConfig | None = None,
        clock: Callable[[], float] = time.time,
        on_expired: ExpiredHook | None = None,
    ) -> None:
        if config is not None and not isinstance(config, SessionsConfig):
            raise InvalidSessionInputError(
                f"config must be a SessionsConfig, not {type(config).__name__}"
            )
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        if on_expired is not None and not callable(on_expired):
            raise TypeError(f"on_expired must be callable, not {type(on_expired).__name__}")
        self._runtime = runtime
        self.config: SessionsConfig = config or SessionsConfig()
        """Defaults and limits."""
        self.on_expired: ExpiredHook | None = on_expired
        """Hook called once per swept session; may be set after construction."""
        self._clock = clock
        self._store: KVStore = runtime.kv_service.get_store(SESSIONS_STORE)

    @property
    def store(self) -> KVStore:
        """The store holding the sessions."""
        return self._store

    @property
    def clock(self) -> Callable[[], float]:
        """The clock (seconds since the epoch) every timestamp comes from."""
        return self._clock

    # -- lifecycle of a session --------------------------------------------------------------

    async def create(
        self,
        *,
        agent_id: str | None = None,
        user_id: str,
        metadata: Mapping[str, Any] | None = None,
        # The name is the Sessions API's (a session timeout, not a call deadline).
        timeout: TimeoutConfig | Mapping[str, Any] | None = None,  # noqa: ASYNC109
    ) -> Session:
        """Open a session between *user_id* and *agent_id* (default: the runtime's agent).

        Raises:
            InvalidSessionInputError: bad ids, metadata or timeout values.
        """
        agent = self._check_name(
            "agent_id", self._runtime.agent_id if agent_id is None else agent_id
        )
        user = self._check_name("user_id", user_id)
        meta = self._check_metadata(metadata, "session metadata")
        timeout_config = self.config.resolve(timeout)
        now = self._clock()
        record: dict[str, Any] = {
            "v": _RECORD_VERSION,
            "agent_id": agent,
            "user_id": user,
            "metadata": meta,
            "created_at": now,
            "last_activity": now,
            "renewed_at": now,
            "timeout": timeout_config.to_dict(),
            "renewal_count": 0,
            "message_count": 0,
            "first_message_at": None,
            "last_message_at": None,
            "state": "active",
        }
        record["expires_at"] = _expires_at(record)
        grace = self.config.grace_seconds
        while True:
            session_id = secrets.token_urlsafe(_ID_BYTES)
            record["id"] = session_id
            # add(): a 144-bit collision is not going to happen, but if it did
            # it must not overwrite someone else's session.
            if await self._store.add(
                _session_key(session_id), record, ttl=record["expires_at"] - now + grace
            ):
                break
        await self._store.set(
            _agent_prefix(agent) + session_id, now, ttl=_latest_end(record) - now + grace
        )
        await self._index_expiry(session_id, record["expires_at"], now)
        return self._session(record)

    async def get(self, session_id: str) -> Session:
        """The live session *session_id*.

        Raises:
            SessionNotFoundError: unknown, ended or already swept.
            SessionExpiredError: expired, not yet swept.
        """
        sid = self._check_id(session_id)
        record = await self._load(sid, self._clock())
        return self._session(record)

    async def renew(self, session_id: str) -> Session:
        """Extend the session by its timeout from now, up to its max duration.

        Works whether auto-renew is on or off, and counts a renewal.

        Raises:
            SessionRenewalError: the session reached its max duration.
            SessionExpiredError: it expired (timed out) before being renewed.
            SessionNotFoundError: unknown id.
        """
        sid = self._check_id(session_id)
        now = self._clock()

        def renew(current: Any) -> dict[str, Any]:
            record = self._check_live(current, sid, now, renewing=True)
            record["last_activity"] = max(record["last_activity"], now)
            record["renewed_at"] = now
            record["renewal_count"] += 1
            record["expires_at"] = _expires_at(record)
            return record

        return self._session(await self._modify(sid, now, renew, renewing=True))

    async def heartbeat(self, session_id: str) -> Session:
        """Record activity: updates ``last_activity`` and, with auto-renew, the expiry.

        Raises:
            SessionExpiredError: the session expired.
            SessionNotFoundError: unknown id.
        """
        sid = self._check_id(session_id)
        now = self._clock()

        def beat(current: Any) -> dict[str, Any]:
            record = self._check_live(current, sid, now)
            record["last_activity"] = max(record["last_activity"], now)
            if record["timeout"]["auto_renew"]:
                record["renewal_count"] += 1
            record["expires_at"] = _expires_at(record)
            return record

        return self._session(await self._modify(sid, now, beat))

    async def end(self, session_id: str) -> bool:
        """Remove the session and its messages; False if there was no such session.

        An expired session that was not swept yet is removed too (``on_expired``
        is then not called for it).
        """
        sid = self._check_id(session_id)

        def close(current: Any) -> dict[str, Any]:
            if not isinstance(current, dict) or current.get("state") != "active":
                raise _Skip(current if isinstance(current, dict) else None)
            return {**current, "state": "ended"}

        try:
            # Marking first fences concurrent writers: no seq is allocated after
            # this, so the record's message_count covers every message key.
            record = await self._store.update(
                _session_key(sid), close, ttl=self.config.grace_seconds
            )
        except _Skip:
            return False
        await self._purge(sid, record)
        return True

    async def list(self, *, agent_id: str | None = None) -> builtins.list[Session]:
        """Live (not expired) sessions, newest first; only *agent_id*'s if given.

        Without *agent_id* this scans every session record of the store.
        """
        now = self._clock()
        records: builtins.list[Any]
        if agent_id is None:
            records = [record async for _, record in self._store.entries("s:")]
        else:
            prefix = _agent_prefix(self._check_name("agent_id", agent_id))
            # An agent id may contain ':', so "a:x:" also matches agent "x:y"'s
            # keys; session ids never contain ':', which tells them apart.
            ids = [
                key[len(prefix) :]
                async for key, _ in self._store.entries(prefix)
                if ":" not in key[len(prefix) :]
            ]
            found = await self._store.get_many(_session_key(sid) for sid in ids)
            records = [found[key] for key in map(_session_key, ids) if key in found]
        sessions = [
            self._session(record)
            for record in records
            if isinstance(record, dict)
            and record.get("state") == "active"
            and record["expires_at"] > now
            and (agent_id is None or record["agent_id"] == agent_id)
        ]
        sessions.sort(key=lambda s: s.created_at, reverse=True)
        return sessions

    # -- messages ------------------------------------------------------------------------------

    async def send_message(
        self, session_id: str, content: str, *, metadata: Mapping[str, Any] | None = None
    ) -> Message:
        """Store the user's *content*, generate the agent's reply, store and return it.

        The reply comes from ``runtime.compose_state`` then
        ``runtime.generate_reply``. With auto-renew the session's expiry moves
        (never past its max duration).

        Raises:
            SessionNotFoundError, SessionExpiredError: as :meth:`get`.
            InvalidSessionInputError: empty or non-str content, bad metadata.
            ContentTooLargeError: content or metadata above the configured limit.
        """
        return (await self.exchange(session_id, content, metadata=metadata)).reply

    async def exchange(
        self, session_id: str, content: str, *, metadata: Mapping[str, Any] | None = None
    ) -> Exchange:
        """Like :meth:`send_message`, returning both the stored user message and the reply.

        If generating the reply fails, the user message stays stored and the
        error propagates.
        """
        sid = self._check_id(session_id)
        text = self._check_content(content)
        meta = self._check_metadata(metadata, "message metadata")
        user = await self._append(sid, "user", text, meta, activity_renews=True)
        state = await self._runtime.compose_state(user)
        reply_text = await self._runtime.generate_reply(user, state)
        if not isinstance(reply_text, str):
            raise TypeError(f"generate_reply returned a {type(reply_text).__name__}, not a str")
        reply = await self._append(
            sid, "agent", reply_text, {"in_reply_to": user.id}, activity_renews=False
        )
        return Exchange(user, reply)

    async def messages(
        self,
        session_id: str,
        *,
        limit: int = 50,
        before: float | None = None,
        after: float | None = None,
    ) -> builtins.list[Message]:
        """Up to *limit* messages, newest first, with ``after < created_at < before``.

        To page back, pass the oldest ``created_at`` of a page as the next
        *before*: timestamps are strictly increasing, so pages never overlap.

        Raises:
            InvalidSessionInputError: *limit* not in ``1..max_page_size``, or a
                cursor that is not a finite number.
            SessionNotFoundError, SessionExpiredError: as :meth:`get`.
        """
        page = await self.history(session_id, limit=limit, before=before, after=after)
        return page.messages

    async def history(
        self,
        session_id: str,
        *,
        limit: int = 50,
        before: float | None = None,
        after: float | None = None,
    ) -> MessagePage:
        """Like :meth:`messages`, also telling whether older matching messages exist."""
        sid = self._check_id(session_id)
        max_page = self.config.max_page_size
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_page:
            raise InvalidSessionInputError(
                f"limit must be an int from 1 to {max_page} (max_page_size), got {limit!r}"
            )
        before = self._check_cursor("before", before)
        after = self._check_cursor("after", after)
        record = await self._load(sid, self._clock())
        count: int = record["message_count"]
        first, last = record["first_message_at"], record["last_message_at"]
        if count == 0 or first is None or last is None:
            return MessagePage([], False)
        # Seqs [lower, upper) hold the matching messages. The record's first and
        # last timestamps settle the common cases without a search.
        if before is not None and after is not None and after >= before:
            return MessagePage([], False)
        upper = count
        if before is not None and before <= last:
            upper = 0 if before <= first else await self._search(sid, count, before, strict=True)
        lower = 0
        if after is not None and after >= first:
            # Every message at or above `upper` is after `before > after`: the
            # boundary for `after` lies in [0, upper].
            lower = upper if after >= last else await self._search(sid, upper, after, strict=False)
        collected: builtins.list[Message] = []
        seq = upper
        while seq > lower and len(collected) <= limit:
            want = min(limit + 1 - len(collected), seq - lower)
            seqs = range(seq - 1, seq - 1 - want, -1)
            found = await self._store.get_many(_message_key(sid, s) for s in seqs)
            for s in seqs:
                data = found.get(_message_key(sid, s))
                if data is not None:  # a hole: allocated, never written
                    collected.append(Message.from_dict(data))
            seq -= want
        return MessagePage(collected[:limit], len(collected) > limit)

    # -- expiry --------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Remove the sessions that expired, with their messages and index entries.

        Calls ``on_expired`` once for each session this call removed; with
        several replicas sweeping one backend, each expired session is claimed
        (and reported) by exactly one of them. Returns the number it removed.
        """
        now = self._clock()
        current = _bucket(now)
        # Buckets up to `settled` are finished after this sweep; the two newest
        # are kept because other replicas' clocks may be a little behind ours.
        settled = current - 2
        cursor = await self._store.get(_CURSOR_KEY)
        buckets: Iterable[int]
        walkable = isinstance(cursor, int) and not isinstance(cursor, bool)
        if walkable and current - cursor <= _MAX_BUCKET_WALK:
            buckets = range(cursor + 1, current + 1)
        else:
            buckets = await self._existing_buckets(current)
        removed = 0
        batch: builtins.list[int] = []
        for bucket in buckets:
            batch.append(bucket)
            if len(batch) == _BUCKET_BATCH:
                removed += await self._sweep_buckets(batch, now, settled)
                batch = []
        if batch:
            removed += await self._sweep_buckets(batch, now, settled)
        await self._store.update(
            _CURSOR_KEY,
            lambda old: max(old, settled) if isinstance(old, int) else settled,
        )
        return removed

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """Sweep every ``cleanup_interval`` seconds in the background while inside.

        The sweeper is a task of an anyio task group owned by this context: it
        is cancelled on exit and nothing is left running. A failing sweep is
        logged and retried at the next interval.

        >>> async with runtime.sessions.running():    # doctest: +SKIP
        ...     await serve_forever()
        """
        error: BaseException | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._sweep_forever, name="session sweeper")
            try:
                yield self
            except BaseException as exc:
                # Raised again below, outside the task group, so the caller sees
                # their own exception rather than an ExceptionGroup around it
                # (the sweeper task itself never fails).
                error = exc
            finally:
                group.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _sweep_forever(self) -> None:
        while True:
            await anyio.sleep(self.config.cleanup_interval)
            try:
                removed = await self.sweep()
            except Exception:
                logger.exception(
                    "session sweep failed; retrying in %ss", self.config.cleanup_interval
                )
            else:
                if removed:
                    logger.info("session sweep removed %d expired session(s)", removed)

    async def _existing_buckets(self, current: int) -> builtins.list[int]:
        found: set[int] = set()
        async for key, _ in self._store.entries("e:"):
            suffix = key[2:]
            if suffix.lstrip("-").isdigit() and int(suffix) <= current:
                found.add(int(suffix))
        return sorted(found)

    async def _sweep_buckets(self, buckets: builtins.list[int], now: float, settled: int) -> int:
        found = await self._store.get_many(_bucket_key(b) for b in buckets)
        removed = 0
        for bucket in buckets:
            ids = found.get(_bucket_key(bucket))
            if isinstance(ids, builtins.list) and ids:
                removed += await self._sweep_bucket(bucket, ids, now, settled)
        done = [_bucket_key(b) for b in buckets if b <= settled and _bucket_key(b) in found]
        if done:
            await self._store.delete_many(done)
        return removed

    async def _sweep_bucket(
        self, bucket: int, ids: builtins.list[Any], now: float, settled: int
    ) -> int:
        unique = [sid for sid in dict.fromkeys(ids) if isinstance(sid, str)]
        records = await self._store.get_many(_session_key(sid) for sid in unique)
        removed = 0
        handled: set[str] = set()
        for sid in unique:
            record = records.get(_session_key(sid))
            if not isinstance(record, dict):
                handled.add(sid)  # ended, or removed by the store's TTL
            elif record["expires_at"] <= now or record.get("state") != "active":
                removed += await self._expire(sid, now)
                handled.add(sid)
            elif _bucket(record["expires_at"]) != bucket:
                # Renewed since it was indexed: check again when the new expiry comes.
                await self._index_expiry(sid, record["expires_at"], now)
                handled.add(sid)
        if bucket > settled and handled:
            # This bucket stays (it is still filling); forget what was dealt with.
            await self._store.update(
                _bucket_key(bucket),
                lambda current: [i for i in current or [] if i not in handled],
                ttl=self._bucket_ttl(bucket, now),
            )
        return removed

    async def _expire(self, sid: str, now: float) -> int:
        def claim(current: Any) -> dict[str, Any]:
            if not isinstance(current, dict) or current.get("state") != "active":
                raise _Skip(current if isinstance(current, dict) else None)
            if current["expires_at"] > now:
                raise _NotExpired(current)
            return {**current, "state": "expired"}

        try:
            # The atomic claim is what makes on_expired exactly-once across
            # replicas, and it also fences a renewal racing with this sweep:
            # whichever lands first wins, the other sees it.
            record = await self._store.update(
                _session_key(sid), claim, ttl=self.config.grace_seconds
            )
        except _NotExpired as renewed:
            await self._index_expiry(sid, renewed.record["expires_at"], now)
            return 0
        except _Skip as skipped:
            # Claimed by another sweeper or ended: cleaning up again is harmless
            # and finishes the job if that one died half-way.
            if skipped.record is not None:
                await self._purge(sid, skipped.record)
            return 0
        await self._purge(sid, record)
        await self._notify(self._session(record))
        return 1

    async def _notify(self, session: Session) -> None:
        hook = self.on_expired
        if hook is None:
            return
        try:
            result = hook(session)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_expired hook failed for session %r", session.id)

    async def _purge(self, sid: str, record: Mapping[str, Any]) -> None:
        count = int(record.get("message_count", 0))
        for start in range(0, count, _DELETE_BATCH):
            stop = min(start + _DELETE_BATCH, count)
            await self._store.delete_many(_message_key(sid, s) for s in range(start, stop))
        agent = record.get("agent_id")
        if isinstance(agent, str):
            await self._store.delete(_agent_prefix(agent) + sid)
        # The record goes last: if this process dies half-way, the record (now
        # claimed) is still there for the next sweep to finish the cleanup.
        await self._store.delete(_session_key(sid))

    async def _index_expiry(self, sid: str, expires_at: float, now: float) -> None:
        bucket = _bucket(expires_at)
        await self._store.update(
            _bucket_key(bucket),
            lambda ids: ids if sid in ids else [*ids, sid],
            default=[],
            ttl=self._bucket_ttl(bucket, now),
        )

    def _bucket_ttl(self, bucket: int, now: float) -> float:
        return max((bucket + 1) * _BUCKET_SECONDS - now, 0.0) + self.config.grace_seconds

    # -- internals -------------------------------------------------------------------------

    async def _append(
        self,
        sid: str,
        role: Role,
        content: str,
        metadata: dict[str, Any],
        *,
        activity_renews: bool,
    ) -> Message:
        now = self._clock()

        def allocate(current: Any) -> dict[str, Any]:
            record = self._check_live(current, sid, now)
            last = record["last_message_at"]
            created = now if last is None or now > last else last + _TICK
            record["message_count"] += 1
            record["last_message_at"] = created
            if record["first_message_at"] is None:
                record["first_message_at"] = created
            record["last_activity"] = max(record["last_activity"], now)
            if activity_renews and record["timeout"]["auto_renew"]:
                record["renewal_count"] += 1
            record["expires_at"] = _expires_at(record)
            return record

        record = await self._modify(sid, now, allocate)
        seq = record["message_count"] - 1
        message = Message(
            id=str(uuid.uuid4()),
            session_id=sid,
            role=role,
            content=content,
            created_at=record["last_message_at"],
            metadata=metadata,
        )
        await self._store.set(
            _message_key(sid, seq),
            message.to_dict(),
            ttl=_latest_end(record) - now + self.config.grace_seconds,
        )
        return message

    async def _modify(
        self,
        sid: str,
        now: float,
        fn: Callable[[Any], dict[str, Any]],
        *,
        renewing: bool = False,
    ) -> dict[str, Any]:
        """Atomically apply *fn* to the live record of *sid*; return the new record."""
        # The record's TTL is needed before fn runs: read it first, and use an
        # upper bound of the new expiry that does not depend on fields a
        # concurrent writer could change (created_at and timeout never change).
        record = await self._load(sid, now, renewing=renewing)
        bound = min(now + record["timeout"]["timeout_minutes"] * 60.0, _latest_end(record))
        ttl = max(bound - now, 0.0) + self.config.grace_seconds
        result: dict[str, Any] = await self._store.update(_session_key(sid), fn, ttl=ttl)
        return result

    async def _load(self, sid: str, now: float, *, renewing: bool = False) -> dict[str, Any]:
        record = await self._store.get(_session_key(sid))
        return self._check_live(record, sid, now, renewing=renewing)

    def _check_live(
        self, current: Any, sid: str, now: float, *, renewing: bool = False
    ) -> dict[str, Any]:
        """*current* as a fresh dict if it is a live session record, else raise."""
        if not isinstance(current, dict) or current.get("state") == "ended":
            raise SessionNotFoundError(sid)
        record = dict(current)
        if renewing and now >= _latest_end(record):
            max_minutes = record["timeout"]["max_duration_minutes"]
            raise SessionRenewalError(
                sid,
                record["expires_at"],
                f"session {sid!r} cannot be renewed: it reached its maximum duration of"
                f" {max_minutes:g} minutes at {_format_time(_latest_end(record))}",
            )
        if record.get("state") != "active" or now >= record["expires_at"]:
            raise SessionExpiredError(sid, record["expires_at"])
        return record

    def _session(self, record: Mapping[str, Any]) -> Session:
        return Session(
            id=record["id"],
            agent_id=record["agent_id"],
            user_id=record["user_id"],
            metadata=dict(record["metadata"]),
            created_at=record["created_at"],
            last_activity=record["last_activity"],
            expires_at=record["expires_at"],
            timeout_config=TimeoutConfig(**record["timeout"]),
            renewal_count=record["renewal_count"],
            message_count=record["message_count"],
            last_message_at=record["last_message_at"],
            clock=self._clock,
        )

    async def _search(self, sid: str, count: int, cursor: float, *, strict: bool) -> int:
        """First seq below *count* whose ``created_at`` is ``>= cursor`` (strict) or ``> cursor``.

        Returns *count* when there is none.

        A k-ary search: each round reads ``_SEARCH_FANOUT`` messages with one
        ``get_many``. Holes (allocated seqs whose message was never written)
        carry no timestamp; they are skipped at the edges of the interval, and
        a round that finds only holes falls back to probing consecutive seqs,
        so the search always terminates.
        """
        # Invariant: present messages below `low` are before the cursor, present
        # messages at or above `high` are not.
        low, high = 0, count
        dense = False
        while low < high:
            span = high - low
            if dense or span <= _SEARCH_FANOUT:
                probes = builtins.list(range(low, min(low + _SEARCH_FANOUT, high)))
            else:
                probes = sorted(
                    {low + span * (i + 1) // (_SEARCH_FANOUT + 1) for i in range(_SEARCH_FANOUT)}
                )
            found = await self._store.get_many(_message_key(sid, s) for s in probes)
            new_low, new_high = low, high
            missing: set[int] = set()
            for seq in probes:
                data = found.get(_message_key(sid, seq))
                if data is None:
                    missing.add(seq)
                    continue
                created = data["created_at"]
                if created < cursor or (not strict and created == cursor):
                    new_low = max(new_low, seq + 1)
                else:
                    new_high = min(new_high, seq)
                    break
            while new_low < new_high and new_low in missing:
                new_low += 1
            while new_low < new_high and new_high - 1 in missing:
                new_high -= 1
            dense = (new_low, new_high) == (low, high)
            low, high = new_low, new_high
        return low

    # -- validation ----------------------------------------------------------------------------

    @staticmethod
    def _check_id(session_id: object) -> str:
        if not isinstance(session_id, str):
            raise InvalidSessionInputError(
                f"session id must be a str, not {type(session_id).__name__}"
            )
        if not _ID_PATTERN.fullmatch(session_id):
            # Not an id this manager could have issued.
            raise SessionNotFoundError(session_id)
        return session_id

    @staticmethod
    def _check_name(what: str, value: object) -> str:
        if not isinstance(value, str):
            raise InvalidSessionInputError(f"{what} must be a str, not {type(value).__name__}")
        if not value or len(value) > _MAX_NAME_LENGTH or "\x00" in value:
            raise InvalidSessionInputError(
                f"{what} must be 1 to {_MAX_NAME_LENGTH} characters without NUL, got {value!r}"
            )
        return value

    def _check_content(self, content: object) -> str:
        if not isinstance(content, str):
            raise InvalidSessionInputError(
                f"message content must be a str, not {type(content).__name__}"
            )
        if not content.strip():
            raise InvalidSessionInputError("message content must not be empty or only whitespace")
        try:
            size = len(content.encode("utf-8"))
        except UnicodeEncodeError as err:
            raise InvalidSessionInputError(f"message content is not valid text: {err}") from err
        if size > self.config.max_content_bytes:
            raise ContentTooLargeError(
                f"message content is {size} bytes (UTF-8); at most"
                f" {self.config.max_content_bytes} are allowed (max_content_bytes)"
            )
        return content

    def _check_metadata(self, metadata: object, what: str) -> dict[str, Any]:
        if metadata is None:
            return {}
        if not isinstance(metadata, Mapping):
            raise InvalidSessionInputError(f"{what} must be a dict, not {type(metadata).__name__}")
        data = dict(metadata)
        try:
            size = len(_CODEC.encode(data))
        except SerializationError as err:
            raise InvalidSessionInputError(f"{what} must be JSON-compatible: {err}") from err
        if size > self.config.max_metadata_bytes:
            raise ContentTooLargeError(
                f"{what} is {size} bytes as JSON; at most {self.config.max_metadata_bytes}"
                " are allowed (max_metadata_bytes)"
            )
        # A decoded copy: later changes to the caller's dict do not leak in.
        copy: dict[str, Any] = _CODEC.decode(_CODEC.encode(data))
        return copy

    @staticmethod
    def _check_cursor(name: str, value: object) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidSessionInputError(
                f"{name} must be a timestamp in seconds (float) or None, not {type(value).__name__}"
            )
        if not math.isfinite(value):
            raise InvalidSessionInputError(f"{name} must be a finite timestamp, got {value!r}")
        return float(value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} agent={self._runtime.agent_id!r} config={self.config!r}>"
