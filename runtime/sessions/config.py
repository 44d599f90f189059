"""Session timeouts (:class:`TimeoutConfig`) and a manager's defaults (:class:`SessionsConfig`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ..errors import InvalidSessionInputError
from .validation import check_flag, check_minutes, check_positive_int, check_seconds_value

__all__ = ["TIMEOUT_FIELDS", "SessionsConfig", "TimeoutConfig"]

TIMEOUT_FIELDS: Final = (
    "timeout_minutes",
    "auto_renew",
    "max_duration_minutes",
    "warning_threshold_minutes",
)
"""The timeout settings, in the order every dict form lists them."""


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
                object.__setattr__(self, name, check_minutes(name, value))
        if self.auto_renew is not None:
            check_flag("auto_renew", self.auto_renew)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TimeoutConfig:
        """Build from a dict of the field names (unknown names are an error).

        >>> TimeoutConfig.from_mapping({"timeout_minutes": 0.5}).timeout_minutes
        0.5
        """
        allowed = set(TIMEOUT_FIELDS)
        unknown = set(data) - allowed
        if unknown:
            raise InvalidSessionInputError(
                f"unknown timeout setting(s) {sorted(map(str, unknown))};"
                f" allowed: {sorted(allowed)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-compatible dict."""
        return {name: getattr(self, name) for name in TIMEOUT_FIELDS}


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    """Defaults and limits of a :class:`~runtime.SessionManager`.

    Attributes:
        default_timeout_minutes: timeout of sessions created without one.
        auto_renew: default of :attr:`TimeoutConfig.auto_renew`.
        max_duration_minutes: default hard limit on a session's life.
        warning_threshold_minutes: default near-expiration warning window.
        cleanup_interval: seconds between sweeps in ``SessionManager.running()``.
        max_page_size: largest ``limit`` accepted by ``SessionManager.messages()``.
        max_content_bytes: largest message content, in UTF-8 bytes.
        max_metadata_bytes: largest session or message metadata, as JSON bytes.
        grace_seconds: how long an expired session's keys outlive its expiry in
            the store, so that the sweeper (and ``on_expired``) normally sees it
            before the store's own TTL removes it. Keep it above
            ``cleanup_interval``.
        idempotency_window: seconds a send-message idempotency key is
            remembered: a retry with the same key within it returns the first
            answer (default 24 hours).
        idempotency_pending_seconds: life of the "in flight" marker of a key
            whose first request runs (retries meanwhile are refused). The
            request keeps it alive, so a reply may take longer; if the process
            serving it died, a retry after this long starts afresh. A request
            that could not extend its marker stores nothing once 80 % of its
            last known life has passed, so a late answer never doubles a retry's.
        commit_timeout: seconds after which seqs allocated but not committed (a
            writer died, or the store failed, between the two steps) are given
            up, so readers can see past them: after such a fault, messages
            behind them become visible within this long. A writer that takes
            half of it between allocating and writing gives up itself. Keep it
            well above a store call's worst latency.
        max_clock_skew: the largest clock difference between replicas the
            sweeper is built for: each sweep re-reads the expiry buckets of the
            last ``max_clock_skew + 2 * cleanup_interval`` seconds, so a replica
            whose clock ran ahead cannot make the others skip sessions.

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
    idempotency_window: float = 24 * 3600.0
    idempotency_pending_seconds: float = 10.0
    commit_timeout: float = 10.0
    max_clock_skew: float = 3600.0

    def __post_init__(self) -> None:
        for name in (
            "default_timeout_minutes",
            "max_duration_minutes",
            "warning_threshold_minutes",
        ):
            object.__setattr__(self, name, check_minutes(name, getattr(self, name)))
        check_flag("auto_renew", self.auto_renew)
        for name in (
            "cleanup_interval",
            "grace_seconds",
            "idempotency_window",
            "idempotency_pending_seconds",
            "commit_timeout",
            "max_clock_skew",
        ):
            object.__setattr__(self, name, check_seconds_value(name, getattr(self, name)))
        for name in ("max_page_size", "max_content_bytes", "max_metadata_bytes"):
            check_positive_int(name, getattr(self, name))

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
