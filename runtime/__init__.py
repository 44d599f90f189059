"""runtime: an async agent runtime whose state cache and sessions live in a KV store.

>>> from runtime import AgentRuntime, Message
>>> async with AgentRuntime() as runtime:          # doctest: +SKIP
...     state = await runtime.compose_state(message)
...     session = await runtime.sessions.create(user_id="u1")
"""

from __future__ import annotations

from .agent import AgentRuntime
from .errors import (
    ContentTooLargeError,
    InvalidSessionInputError,
    ProviderError,
    RuntimeStateError,
    SessionError,
    SessionExpiredError,
    SessionNotFoundError,
    SessionRenewalError,
)
from .messages import Message
from .plugins import Plugin, Service
from .sessions import (
    Exchange,
    MessagePage,
    Session,
    SessionManager,
    SessionsConfig,
    TimeoutConfig,
)
from .state import StateCache

__all__ = [
    "AgentRuntime",
    "ContentTooLargeError",
    "Exchange",
    "InvalidSessionInputError",
    "Message",
    "MessagePage",
    "Plugin",
    "ProviderError",
    "RuntimeStateError",
    "Service",
    "Session",
    "SessionError",
    "SessionExpiredError",
    "SessionManager",
    "SessionNotFoundError",
    "SessionRenewalError",
    "SessionsConfig",
    "StateCache",
    "TimeoutConfig",
]
