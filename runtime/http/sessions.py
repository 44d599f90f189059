"""The session routes: ElizaOS's ``/api/messaging/sessions`` router.

No body carries a top-level ``success`` key: ElizaOS's api-client reads one as
its ``{success, data}`` envelope and would return ``data`` (absent).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import APIError, SessionError, SessionNotFoundError
from ..sessions import Session, SessionManager
from .context import API_PREFIX, RouteTable, ServedAgent
from .parsing import (
    optional_object,
    query_cursor,
    query_limit,
    read_json_object,
    require_fields,
    send_options,
    string,
    timeout_config,
)
from .wire import (
    JSONResponse,
    cursor_after,
    cursor_before,
    message_json,
    session_json,
    status_json,
    to_ms,
)

__all__ = ["SessionRoutes"]


class SessionRoutes:
    """The session endpoints of one served agent.

    Args:
        served: the agent and its session manager.
        max_body_bytes: largest request body accepted; larger ones get 413.
    """

    def __init__(self, served: ServedAgent, *, max_body_bytes: int) -> None:
        self.served = served
        self.max_body_bytes = max_body_bytes

    @property
    def sessions(self) -> SessionManager:
        """The session manager served."""
        return self.served.sessions

    def routes(self) -> RouteTable:
        """``{path: {method: endpoint}}``; see the table in :mod:`runtime.http`."""
        one = f"{API_PREFIX}/{{session_id}}"
        return {
            API_PREFIX: {"GET": self.list_sessions, "POST": self.create_session},
            one: {"GET": self.get_session, "DELETE": self.delete_session},
            f"{one}/messages": {"GET": self.get_messages, "POST": self.send_message},
            f"{one}/renew": {"POST": self.renew},
            f"{one}/heartbeat": {"POST": self.heartbeat},
        }

    # -- sessions ------------------------------------------------------------------------------

    async def create_session(self, request: Request) -> Response:
        """POST /api/messaging/sessions: open a session with this server's agent."""
        body = await read_json_object(request, self.max_body_bytes)
        require_fields(body, "agentId", "userId")
        agent_id = string(body, "agentId")
        user_id = string(body, "userId")
        metadata = optional_object(body, "metadata")
        timeout = timeout_config(body)
        if agent_id != self.served.runtime.agent_id:
            # One server serves one agent; ElizaOS answers an unknown agent the same way.
            raise APIError(404, "AGENT_NOT_FOUND", f"Agent with ID '{agent_id}' not found")
        session = await self.sessions.create(
            agent_id=agent_id, user_id=user_id, metadata=metadata, timeout=timeout
        )
        return JSONResponse(
            session_json(session),
            status_code=201,
            headers={"Location": f"{API_PREFIX}/{session.id}"},
        )

    async def list_sessions(self, request: Request) -> Response:
        """GET /api/messaging/sessions: live sessions, newest first (``agentId`` filters)."""
        agent_id = request.query_params.get("agentId", "").strip() or None
        sessions = await self.sessions.list(agent_id=agent_id)
        return JSONResponse(
            {"sessions": [session_json(s) for s in sessions], "total": len(sessions)}
        )

    async def get_session(self, request: Request) -> Response:
        """GET /api/messaging/sessions/{id}: the session and its status fields."""
        session = await self.sessions.get(request.path_params["session_id"])
        return JSONResponse(session_json(session))

    async def delete_session(self, request: Request) -> Response:
        """DELETE /api/messaging/sessions/{id}: end the session, drop its messages."""
        session_id = request.path_params["session_id"]
        if not await self.sessions.end(session_id):
            raise SessionNotFoundError(session_id)
        # 204: ElizaOS's api-client turns it into {success: true}.
        return Response(status_code=204)

    async def renew(self, request: Request) -> Response:
        """POST .../{id}/renew: extend by the timeout from now, up to the max duration."""
        session = await self.sessions.renew(request.path_params["session_id"])
        return JSONResponse(session_json(session))

    async def heartbeat(self, request: Request) -> Response:
        """POST .../{id}/heartbeat: record activity (renews with auto-renew)."""
        session = await self.sessions.heartbeat(request.path_params["session_id"])
        return JSONResponse(session_json(session))

    # -- messages -------------------------------------------------------------------------------

    async def send_message(self, request: Request) -> Response:
        """POST .../{id}/messages: store the user message, answer with the agent's reply."""
        session_id = request.path_params["session_id"]
        body = await read_json_object(request, self.max_body_bytes)
        require_fields(body, "content")
        content = string(body, "content")
        metadata = optional_object(body, "metadata")
        send_options(body)
        # IETF Idempotency-Key draft: a retry with the key gets the first answer.
        key = request.headers.get("idempotency-key")
        exchange = await self.sessions.exchange(
            session_id, content, metadata=metadata, idempotency_key=key
        )
        session: Session | None
        try:
            session = await self.sessions.get(session_id)
        except SessionError:
            # Ended or expired in the instant after this exchange: both
            # messages are stored, there is just no status to report.
            session = None
        return JSONResponse(
            {
                "userMessage": message_json(exchange.user, session),
                "agentMessage": message_json(exchange.reply, session),
                "agentResponse": {"text": exchange.reply.content},
                "sessionStatus": None if session is None else status_json(session),
            },
            status_code=201,
        )

    async def get_messages(self, request: Request) -> Response:
        """GET .../{id}/messages: one page of history, newest first."""
        session_id = request.path_params["session_id"]
        limit = query_limit(request, self.sessions.config.max_page_size)
        before = query_cursor(request, "before")
        after = query_cursor(request, "after")
        session = await self.sessions.get(session_id)
        page = await self.sessions.history(
            session_id,
            limit=limit,
            before=None if before is None else cursor_before(before),
            after=None if after is None else cursor_after(after),
        )
        body: dict[str, Any] = {
            "messages": [message_json(m, session) for m in page.messages],
            "hasMore": page.has_more,
        }
        if page.messages:
            body["cursors"] = {
                "before": to_ms(page.messages[-1].created_at),
                "after": to_ms(page.messages[0].created_at),
            }
        return JSONResponse(body)
