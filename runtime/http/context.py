"""What every route module shares: the agent served and the shape of an endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from starlette.requests import Request
from starlette.responses import Response

from ..agent import AgentRuntime
from ..sessions import SessionManager

__all__ = ["API_PREFIX", "Endpoint", "RouteTable", "ServedAgent"]

API_PREFIX: Final = "/api/messaging/sessions"
"""Where the session routes (and ElizaOS's sessions health) live."""

Endpoint: TypeAlias = Callable[[Request], Awaitable[Response]]
"""An async ``request -> response`` function."""

RouteTable: TypeAlias = dict[str, dict[str, Endpoint]]
"""``{path: {method: endpoint}}``: what a route module contributes to the app."""


@dataclass(frozen=True, slots=True)
class ServedAgent:
    """The runtime an application serves, and the session manager it serves.

    Attributes:
        runtime: the agent.
        manager: a session manager to serve instead of ``runtime.sessions``
            (one built with a test clock or an ``on_expired`` hook, say).
    """

    runtime: AgentRuntime
    manager: SessionManager | None = None

    @property
    def sessions(self) -> SessionManager:
        """The manager served: :attr:`manager` if given, else ``runtime.sessions``."""
        return self.manager if self.manager is not None else self.runtime.sessions
