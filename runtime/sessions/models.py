"""What the sessions layer hands out (:class:`Session`, :class:`Exchange`, :class:`Posted`,
:class:`MessagePage`) and what it needs from its runtime (:class:`SessionsRuntime`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from kvstore import KVStoreService

from ..messages import Message
from .config import TimeoutConfig

__all__ = ["Exchange", "ExpiredHook", "MessagePage", "Posted", "Session", "SessionsRuntime"]


@dataclass(frozen=True, slots=True)
class Session:
    """A snapshot of a session; the status properties read the manager's clock.

    Attributes:
        id: the session id, a random UUID (uuid4: 122 bits from the OS's random source).
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
    """What ``SessionManager.exchange()`` stored: the user message and the reply."""

    user: Message
    reply: Message


class Posted(NamedTuple):
    """What ``SessionManager.post()`` stored, and the session right after storing it."""

    user: Message
    """The user's message as stored."""
    reply: Message | None
    """The agent's reply as stored; None when the reply follows (``reply=False``)."""
    session: Session
    """The session once the messages were stored (as it was before, if it ended meanwhile)."""
    renewed: bool
    """Whether the session's renewal count moved since the snapshot ``post()`` was given."""


class MessagePage(NamedTuple):
    """One page of history, newest first, and whether older messages match too."""

    messages: list[Message]
    has_more: bool


class SessionsRuntime(Protocol):
    """What a ``SessionManager`` needs from its runtime (an ``AgentRuntime``)."""

    @property
    def agent_id(self) -> str:
        """The agent's id, used when ``SessionManager.create()`` gets none."""
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
"""``on_expired``: called (sync or async) once per session a sweep removed."""
