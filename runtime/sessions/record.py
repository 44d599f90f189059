"""The stored session record: a typed, immutable view of the JSON under ``s:{id}``.

:class:`SessionRecord` is what the manager and the sweeper work with; only
:meth:`SessionRecord.from_dict` and :meth:`SessionRecord.to_dict` know the
stored form, which is (key order included)::

    {"v": 1, "agent_id": str, "user_id": str, "metadata": {...},
     "created_at": float, "last_activity": float, "renewed_at": float,
     "timeout": {"timeout_minutes": float, "auto_renew": bool,
                 "max_duration_minutes": float, "warning_threshold_minutes": float},
     "renewal_count": int, "message_count": int,
     "first_message_at": float | null, "last_message_at": float | null,
     "state": "active" | "expired" | "ended", "expires_at": float, "id": str,
     "pending": [[first_seq, count, allocated_at], ...], "holes": int,
     "dead": [[first_seq, count], ...]}

``v`` is the format version (2; the first release wrote 1, without ``pending``
and ``holes``, which read as ``[]`` and ``0``). ``dead`` is written only when it
is not empty (missing reads as ``[]``), so a version-2 reader that predates it
reads the record too (see *Dead seqs* below). A pending range holding
exchanges sent with an idempotency key has a fourth element, its fences:
``[[seq, count, marker_key, owner], ...]`` (:class:`Fence`, see
:mod:`.idempotency`); a range without one has three.

Seqs ``0..message_count-1`` are allocated. A writer allocates a range, writes
its messages, then commits the range (removes it from ``pending``). Readers
never read at or past the *watermark*, the first seq of the oldest pending
range: below it every seq holds its message or, if its writer died before
writing it, a tombstone (counted in ``holes``). So a poller never walks past a
message that is still being written. A writer of the first release bumps
``message_count`` without a pending range, which keeps its old meaning.

*Dead seqs.* Giving up a range (its writer died or stalled) decides, once and
for all, which of its seqs hold a message and which are holes; the holes are
listed in ``dead``. Readers skip dead seqs whatever they hold, so a stalled
writer whose ``set_many`` lands after the give-up stores nothing visible, and
its commit tells it so: ``holes`` always counts what history leaves out.

A later format gets its own number and decoder in :data:`_DECODERS`;
:meth:`~SessionRecord.to_dict` always writes the newest, so a record is
upgraded the next time it is written. Timestamps are kept as
read (an int stays an int), so decoding and encoding again gives back the same
JSON.

Each transition (:meth:`~SessionRecord.with_message`,
:meth:`~SessionRecord.renewed`, ...) returns a new record with ``expires_at``
recomputed by ElizaOS's rule, ``min(base + timeout, created_at +
max_duration)``, where base is the last activity with auto-renew and the last
manual renewal (or creation) otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..errors import SessionRecordError
from .config import TIMEOUT_FIELDS, TimeoutConfig
from .models import Session

__all__ = [
    "RECORD_VERSION",
    "Fence",
    "Lifetime",
    "Pending",
    "RecordState",
    "SessionRecord",
    "Span",
    "StoredTimeout",
    "spans",
]

RECORD_VERSION: Final = 2
"""The format version :meth:`SessionRecord.to_dict` writes (the ``v`` field)."""

RecordState = Literal["active", "expired", "ended"]
"""``active``; ``expired`` once a sweeper claimed it; ``ended`` by ``SessionManager.end``."""

_STATES: Final[dict[object, RecordState]] = {
    "active": "active",
    "expired": "expired",
    "ended": "ended",
}

Fence = tuple[int, int, str, str]
"""Seqs of an exchange sent with an idempotency key: ``(first_seq, count, marker_key, owner)``."""

Pending = tuple[int, int, float, tuple[Fence, ...]]
"""An allocated, uncommitted range of seqs: ``(first_seq, count, allocated_at, fences)``."""

Span = tuple[int, int]
"""Consecutive seqs: ``(first_seq, count)``."""


@dataclass(frozen=True, slots=True)
class StoredTimeout:
    """A session's timeout settings as stored: every field resolved."""

    timeout_minutes: float
    auto_renew: bool
    max_duration_minutes: float
    warning_threshold_minutes: float

    @classmethod
    def resolved(cls, config: TimeoutConfig) -> StoredTimeout:
        """From the output of ``SessionsConfig.resolve`` (every field set)."""
        if (
            config.timeout_minutes is None
            or config.auto_renew is None
            or config.max_duration_minutes is None
            or config.warning_threshold_minutes is None
        ):
            raise ValueError(f"a stored timeout needs every field resolved, got {config!r}")
        return cls(
            config.timeout_minutes,
            config.auto_renew,
            config.max_duration_minutes,
            config.warning_threshold_minutes,
        )

    def to_config(self) -> TimeoutConfig:
        """The same settings as the public :class:`TimeoutConfig`."""
        return TimeoutConfig(**self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The stored form."""
        return {name: getattr(self, name) for name in TIMEOUT_FIELDS}

    def expiry(self, *, created_at: float, last_activity: float, renewed_at: float) -> float:
        """ElizaOS's rule: ``min(base + timeout, created_at + max_duration)``."""
        base = last_activity if self.auto_renew else renewed_at
        return float(
            min(
                base + self.timeout_minutes * 60.0,
                created_at + self.max_duration_minutes * 60.0,
            )
        )


@dataclass(frozen=True, slots=True)
class Lifetime:
    """What bounds a session's expiry: its creation time and timeout settings.

    No writer changes ``created_at``; only ``SessionManager.update_timeout``
    changes the timeout, and a writer that finds it changed fixes its TTL.
    """

    created_at: float
    timeout: StoredTimeout

    @classmethod
    def of(cls, session: Session) -> Lifetime:
        """The lifetime of a public :class:`Session` snapshot."""
        return cls(session.created_at, StoredTimeout.resolved(session.timeout_config))

    def expiry_bound(self, now: float) -> float:
        """An upper bound of ``expires_at`` after any activity at *now*."""
        return float(min(now + self.timeout.timeout_minutes * 60.0, self.latest_end))

    @property
    def latest_end(self) -> float:
        """The latest moment the session can possibly be alive (``created_at + max duration``)."""
        return float(self.created_at + self.timeout.max_duration_minutes * 60.0)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session as stored under ``s:{id}`` (see the module docs for the JSON form).

    Attributes:
        id: the session id.
        agent_id: the agent the session talks to.
        user_id: the user who opened it.
        metadata: JSON-compatible data given at creation.
        created_at: creation time, seconds since the epoch.
        last_activity: time of the last message, heartbeat or renewal.
        renewed_at: creation or last manual renewal (the expiry base without auto-renew).
        timeout: the resolved timeout settings.
        renewal_count: renewals so far (manual, heartbeat and message ones).
        message_count: sequence numbers allocated so far (messages are ``0..count-1``).
        first_message_at: ``created_at`` of message 0, if any.
        last_message_at: ``created_at`` of the newest message, if any.
        state: see :data:`RecordState`.
        expires_at: when the session expires unless renewed.
        pending: allocated ranges not committed yet (readers stop at the oldest).
        holes: seqs below the watermark that hold no visible message.
        dead: seqs of given-up ranges that are holes whatever they hold.
    """

    id: str
    agent_id: str
    user_id: str
    metadata: dict[str, Any]
    created_at: float
    last_activity: float
    renewed_at: float
    timeout: StoredTimeout
    renewal_count: int
    message_count: int
    first_message_at: float | None
    last_message_at: float | None
    state: RecordState
    expires_at: float
    pending: tuple[Pending, ...] = ()
    holes: int = 0
    dead: tuple[Span, ...] = ()

    @classmethod
    def new(
        cls,
        session_id: str,
        *,
        agent_id: str,
        user_id: str,
        metadata: dict[str, Any],
        timeout: StoredTimeout,
        now: float,
    ) -> SessionRecord:
        """A fresh active session created at *now*."""
        return cls(
            id=session_id,
            agent_id=agent_id,
            user_id=user_id,
            metadata=metadata,
            created_at=now,
            last_activity=now,
            renewed_at=now,
            timeout=timeout,
            renewal_count=0,
            message_count=0,
            first_message_at=None,
            last_message_at=None,
            state="active",
            expires_at=timeout.expiry(created_at=now, last_activity=now, renewed_at=now),
        )

    @property
    def latest_end(self) -> float:
        """The latest moment the session can possibly be alive (``created_at + max duration``)."""
        return self.lifetime.latest_end

    def expiry_bound(self, now: float) -> float:
        """An upper bound of ``expires_at`` after any activity at *now*.

        It depends only on fields no writer changes (``created_at``, ``timeout``),
        so it holds whatever a concurrent writer does meanwhile.
        """
        return self.lifetime.expiry_bound(now)

    @property
    def lifetime(self) -> Lifetime:
        """:class:`Lifetime` of this session."""
        return Lifetime(self.created_at, self.timeout)

    @property
    def watermark(self) -> int:
        """Readers read seqs below this: the oldest pending seq, else ``message_count``."""
        return min((entry[0] for entry in self.pending), default=self.message_count)

    @property
    def visible_count(self) -> int:
        """Messages below the watermark that history returns (tombstones excluded)."""
        return max(self.watermark - self.holes, 0)

    def stale(self, now: float, timeout: float) -> tuple[Pending, ...]:
        """Pending ranges allocated more than *timeout* seconds before *now*."""
        return tuple(entry for entry in self.pending if entry[2] < now - timeout)

    # -- transitions ----------------------------------------------------------------

    def with_messages(
        self, now: float, count: int, *, renewals: int, fences: tuple[Fence, ...] = ()
    ) -> SessionRecord:
        """*count* more messages, allocated as one pending range at *now*.

        Each gets its own whole millisecond (:meth:`stamps_after`): *now*'s, or the
        one after the previous message's when the clock has not moved on, so
        a burst may run a few milliseconds ahead of the clock. *renewals*: how
        many of them are user activity, each counting a renewal with auto-renew.
        *fences*: the range's keyed exchanges, seqs counted from the range's
        start (stored with seqs made absolute).
        """
        stamps = self.stamps_after(now, count)
        base = self.message_count
        activity = max(self.last_activity, now)
        return dataclasses.replace(
            self,
            message_count=self.message_count + count,
            last_message_at=stamps[-1],
            first_message_at=stamps[0] if self.first_message_at is None else self.first_message_at,
            last_activity=activity,
            renewal_count=self.renewal_count + (renewals if self.timeout.auto_renew else 0),
            expires_at=self._expiry(activity, self.renewed_at),
            pending=(
                *self.pending,
                (
                    self.message_count,
                    count,
                    now,
                    tuple((base + seq, n, key, owner) for seq, n, key, owner in fences),
                ),
            ),
        )

    def stamps_after(self, now: float, count: int) -> list[float]:
        """The ``created_at`` of the next *count* messages at *now*: distinct whole milliseconds."""
        # After the session's own creation too, so a poller can start from it.
        millis = max(math.floor(now * 1000.0), math.floor(self.created_at * 1000.0) + 1)
        if self.last_message_at is not None:
            millis = max(millis, math.floor(self.last_message_at * 1000.0) + 1)
        return [(millis + i) / 1000.0 for i in range(count)]

    def committed(self, first: int) -> SessionRecord:
        """The pending range starting at *first* is written: readers may see it."""
        return dataclasses.replace(
            self, pending=tuple(entry for entry in self.pending if entry[0] != first)
        )

    def given_up(self, first: int, tombstones: int, dead: tuple[Span, ...] = ()) -> SessionRecord:
        """The pending range at *first* was given up; *tombstones* of its seqs are holes.

        *dead*: those of its seqs that stay holes whatever a late writer puts
        there (a giver-up passes them; a writer dropping its own lost seqs
        need not, since nobody else writes them).
        """
        if not self.is_pending(first):
            return self
        return dataclasses.replace(
            self.committed(first), holes=self.holes + tombstones, dead=self.dead + dead
        )

    def is_pending(self, first: int) -> bool:
        """True while the range allocated at *first* is neither committed nor given up."""
        return any(entry[0] == first for entry in self.pending)

    def dead_seqs(self) -> frozenset[int]:
        """The seqs listed in :attr:`dead`."""
        return frozenset(seq for first, count in self.dead for seq in range(first, first + count))

    def renewed(self, now: float) -> SessionRecord:
        """A manual renewal at *now*: the timeout counts from now (up to the max duration)."""
        activity = max(self.last_activity, now)
        return dataclasses.replace(
            self,
            last_activity=activity,
            renewed_at=now,
            renewal_count=self.renewal_count + 1,
            expires_at=self._expiry(activity, now),
        )

    def beat(self, now: float) -> SessionRecord:
        """A heartbeat at *now*: activity, and a renewal with auto-renew."""
        activity = max(self.last_activity, now)
        return dataclasses.replace(
            self,
            last_activity=activity,
            renewal_count=self.renewal_count + (1 if self.timeout.auto_renew else 0),
            expires_at=self._expiry(activity, self.renewed_at),
        )

    def with_timeout(self, timeout: StoredTimeout) -> SessionRecord:
        """New timeout settings; ``expires_at`` recomputed from the same activity and renewal."""
        changed = dataclasses.replace(self, timeout=timeout)
        return dataclasses.replace(
            changed, expires_at=changed._expiry(self.last_activity, self.renewed_at)
        )

    def with_state(self, state: RecordState) -> SessionRecord:
        """The same record in *state* (claimed by a sweeper, or ended)."""
        return dataclasses.replace(self, state=state)

    def _expiry(self, last_activity: float, renewed_at: float) -> float:
        return self.timeout.expiry(
            created_at=self.created_at, last_activity=last_activity, renewed_at=renewed_at
        )

    # -- views ------------------------------------------------------------------------

    def to_session(self, clock: Callable[[], float]) -> Session:
        """The public snapshot, its status properties reading *clock*."""
        return Session(
            id=self.id,
            agent_id=self.agent_id,
            user_id=self.user_id,
            metadata=dict(self.metadata),
            created_at=self.created_at,
            last_activity=self.last_activity,
            expires_at=self.expires_at,
            timeout_config=self.timeout.to_config(),
            renewal_count=self.renewal_count,
            message_count=self.visible_count,
            last_message_at=self.last_message_at,
            clock=clock,
        )

    # -- the stored form ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON form, newest format version."""
        data: dict[str, Any] = {
            "v": RECORD_VERSION,
            "agent_id": self.agent_id,
            "user_id": self.user_id,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "last_activity": self.last_activity,
            "renewed_at": self.renewed_at,
            "timeout": self.timeout.to_dict(),
            "renewal_count": self.renewal_count,
            "message_count": self.message_count,
            "first_message_at": self.first_message_at,
            "last_message_at": self.last_message_at,
            "state": self.state,
            "expires_at": self.expires_at,
            "id": self.id,
            "pending": [_pending_to_list(entry) for entry in self.pending],
            "holes": self.holes,
        }
        if self.dead:
            data["dead"] = [list(span) for span in self.dead]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionRecord:
        """Decode a stored record of any known format version.

        Raises:
            SessionRecordError: an unknown version, or a field missing or of the
                wrong type (the store holds something else).
        """
        version = data.get("v", RECORD_VERSION)
        decode = _DECODERS.get(version) if type(version) is int else None
        if decode is None:
            raise SessionRecordError(
                f"session record {data.get('id')!r} has format version {version!r};"
                f" this version reads {sorted(_DECODERS)} (was it written by a newer one?)"
            )
        return decode(data)


# Exact types, as JSON decoding gives them (so a bool is not taken for a number).
_NUMBER: Final = (int, float)
_OPTIONAL_NUMBER: Final = (int, float, type(None))
_Schema = tuple[tuple[str, tuple[type, ...]], ...]
_V1: Final[_Schema] = (
    ("id", (str,)),
    ("agent_id", (str,)),
    ("user_id", (str,)),
    ("metadata", (dict,)),
    ("created_at", _NUMBER),
    ("last_activity", _NUMBER),
    ("renewed_at", _NUMBER),
    ("timeout", (dict,)),
    ("renewal_count", (int,)),
    ("message_count", (int,)),
    ("first_message_at", _OPTIONAL_NUMBER),
    ("last_message_at", _OPTIONAL_NUMBER),
    ("state", (str,)),
    ("expires_at", _NUMBER),
)
_V1_TIMEOUT: Final[_Schema] = (
    ("timeout_minutes", _NUMBER),
    ("auto_renew", (bool,)),
    ("max_duration_minutes", _NUMBER),
    ("warning_threshold_minutes", _NUMBER),
)
_MISSING: Final = object()


def _check_fields(data: Mapping[str, Any], schema: _Schema, record: Mapping[str, Any]) -> None:
    """Raise SessionRecordError naming the first field of *data* that *schema* refuses."""
    for name, kinds in schema:
        value = data.get(name, _MISSING)
        if type(value) in kinds:
            continue
        field = name if data is record else f"timeout.{name}"
        if value is _MISSING:
            problem = "is missing"
        else:
            wanted = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
            problem = f"is a {type(value).__name__}, not {wanted}"
        raise SessionRecordError(
            f"session record {record.get('id')!r}: field {field!r} {problem};"
            " is another program writing to the sessions store?"
        )


def _decode_v2(data: Mapping[str, Any]) -> SessionRecord:
    record = _decode_v1(data)
    pending, holes = data.get("pending"), data.get("holes")
    entries: list[Pending] = []
    if type(pending) is list and type(holes) is int:
        for entry in pending:
            decoded = _pending_from_list(entry)
            if decoded is None:
                break
            entries.append(decoded)
        else:
            dead = _spans_from_list(data.get("dead", []))
            if dead is not None:
                return dataclasses.replace(record, pending=tuple(entries), holes=holes, dead=dead)
    raise SessionRecordError(
        f"session record {data.get('id')!r}: fields 'pending'/'holes'/'dead' are malformed;"
        " is another program writing to the sessions store?"
    )


def spans(seqs: Iterable[int]) -> tuple[Span, ...]:
    """*seqs* as runs of consecutive seqs, in order."""
    runs: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if runs and runs[-1][0] + runs[-1][1] == seq:
            runs[-1][1] += 1
        else:
            runs.append([seq, 1])
    return tuple((first, count) for first, count in runs)


def _spans_from_list(stored: Any) -> tuple[Span, ...] | None:
    """Stored spans, or None if malformed."""
    if type(stored) is not list:
        return None
    decoded: list[Span] = []
    for span in stored:
        if type(span) is not list or len(span) != 2:
            return None
        first, count = span
        if type(first) is not int or type(count) is not int:
            return None
        decoded.append((first, count))
    return tuple(decoded)


def _pending_to_list(entry: Pending) -> list[Any]:
    first, count, at, fences = entry
    if not fences:
        return [first, count, at]
    return [first, count, at, [list(fence) for fence in fences]]


def _pending_from_list(entry: Any) -> Pending | None:
    """A stored pending range, or None if malformed."""
    if type(entry) is not list or len(entry) not in (3, 4):
        return None
    first, count, at = entry[:3]
    if type(first) is not int or type(count) is not int or type(at) not in _NUMBER:
        return None
    stored = entry[3] if len(entry) == 4 else []
    if type(stored) is not list:
        return None
    fences: list[Fence] = []
    for fence in stored:
        if type(fence) is not list or len(fence) != 4:
            return None
        seq, n, key, owner = fence
        if type(seq) is not int or type(n) is not int or type(key) is not str:
            return None
        if type(owner) is not str:
            return None
        fences.append((seq, n, key, owner))
    return (first, count, at, tuple(fences))


def _decode_v1(data: Mapping[str, Any]) -> SessionRecord:
    _check_fields(data, _V1, data)
    timeout = data["timeout"]
    _check_fields(timeout, _V1_TIMEOUT, data)
    state = _STATES.get(data["state"])
    if state is None:
        raise SessionRecordError(
            f"session record {data['id']!r}: field 'state' is {data['state']!r},"
            f" not one of {sorted(map(str, _STATES))}"
        )
    return SessionRecord(
        id=data["id"],
        agent_id=data["agent_id"],
        user_id=data["user_id"],
        metadata=data["metadata"],
        created_at=data["created_at"],
        last_activity=data["last_activity"],
        renewed_at=data["renewed_at"],
        timeout=StoredTimeout(
            timeout_minutes=timeout["timeout_minutes"],
            auto_renew=timeout["auto_renew"],
            max_duration_minutes=timeout["max_duration_minutes"],
            warning_threshold_minutes=timeout["warning_threshold_minutes"],
        ),
        renewal_count=data["renewal_count"],
        message_count=data["message_count"],
        first_message_at=data["first_message_at"],
        last_message_at=data["last_message_at"],
        state=state,
        expires_at=data["expires_at"],
    )


_DECODERS: Final[dict[int, Callable[[Mapping[str, Any]], SessionRecord]]] = {
    1: _decode_v1,
    2: _decode_v2,
}
