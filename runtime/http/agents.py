"""Discovery: ElizaOS's ``/api/agents``, ``/api/agents/{id}`` and ``/api/server/*`` routes.

ElizaOS's api-client finds the agent with ``agents.listAgents()`` or
``agents.getAgent(id)`` before it opens a session, and checks the server with
``server.ping()``. This server serves one agent; its answers carry the shapes
ElizaOS sends, and no settings or secrets (ElizaOS's ``getAgent`` lists the
character's settings with their values redacted; ours lists none).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from .context import RouteTable, ServedAgent
from .wire import JSONResponse

__all__ = ["AGENT_NAME", "DEFAULT_AGENT_ID", "DEFAULT_AGENT_NAME", "AgentRoutes", "is_uuid"]

DEFAULT_AGENT_NAME: Final = "kvstore-runtime default agent"
"""The name the default agent id is derived from."""

DEFAULT_AGENT_ID: Final = str(uuid.uuid5(uuid.NAMESPACE_URL, DEFAULT_AGENT_NAME))
"""``uuid5(NAMESPACE_URL, DEFAULT_AGENT_NAME)``: what ``serve`` uses without ``AGENT_ID``,
so replicas started without one still serve the same agent."""

AGENT_NAME: Final = "Agent"
"""The ``name`` the agent is listed with."""

_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def is_uuid(text: str) -> bool:
    """True when *text* has the UUID form ElizaOS checks (any version, any case).

    >>> is_uuid(DEFAULT_AGENT_ID), is_uuid("agent-1")
    (True, False)
    """
    return _UUID.fullmatch(text) is not None


def _failure(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"success": False, "error": {"code": code, "message": message}}, status_code=status
    )


class AgentRoutes:
    """The discovery endpoints of one served agent."""

    def __init__(self, served: ServedAgent) -> None:
        self.served = served
        self.started = time.time()

    def routes(self) -> RouteTable:
        """``{path: {method: endpoint}}``; see the table in :mod:`runtime.http`."""
        return {
            "/api/agents": {"GET": self.list_agents},
            "/api/agents/{agent_id}": {"GET": self.get_agent},
            "/api/server/ping": {"GET": self.ping},
        }

    def _summary(self) -> dict[str, Any]:
        return {
            "id": self.served.runtime.agent_id,
            "name": AGENT_NAME,
            "characterName": AGENT_NAME,
            "bio": "",
            "status": "active",
        }

    async def list_agents(self, request: Request) -> Response:
        """GET /api/agents: the one agent served."""
        return JSONResponse({"success": True, "data": {"agents": [self._summary()]}})

    async def get_agent(self, request: Request) -> Response:
        """GET /api/agents/{id}: the agent, if it is the one served."""
        agent_id = request.path_params["agent_id"]
        if not is_uuid(agent_id):
            return _failure(400, "INVALID_ID", "Invalid agent ID format")
        if agent_id != self.served.runtime.agent_id:
            return _failure(404, "NOT_FOUND", "Agent not found")
        created = int(self.started * 1000)
        data = {
            "id": agent_id,
            "enabled": True,
            "createdAt": created,
            "updatedAt": created,
            "name": AGENT_NAME,
            "username": AGENT_NAME.lower(),
            "bio": [],
            "plugins": [],
            "status": "active",
        }
        return JSONResponse({"success": True, "data": data})

    async def ping(self, request: Request) -> Response:
        """GET /api/server/ping: ``{pong: true, timestamp}`` (epoch ms, as ElizaOS)."""
        return JSONResponse({"pong": True, "timestamp": int(time.time() * 1000)})
