"""The session routes: ElizaOS's ``/api/messaging/sessions`` router.

Bodies are the real ElizaOS 1.7.2 server's, ``success: true`` included where
it sends one (the send answer, DELETE): its api-client then unwraps the
absent ``data`` and resolves to ``undefined`` on both servers alike.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from ..errors import APIError, SessionExpiredError, SessionNotFoundError
from ..sessions import SessionManager
from .context import API_PREFIX, RouteTable, ServedAgent
from .parsing import (
    check_message,
    message_content,
    metadata_field,
    patched_timeout,
    query_cursor,
    query_int,
    query_limit,
    read_json_object,
    require_fields,
    send_options,
    timeout_config,
    uuid_field,
)
from .realtime import RealtimeHub
from .replies import REPLY_FAILED
from .sse import replayed_stream, reply_stream
from .wire import (
    JSONResponse,
    broadcast_json,
    created_json,
    cursor_after,
    cursor_before,
    history_json,
    ms,
    send_json,
    session_json,
    websocket_send_json,
)

__all__ = ["MAX_LIST_OFFSET", "MAX_LIST_PAGE", "SessionRoutes"]

MAX_LIST_PAGE: Final = 1000
"""Most sessions one list answer holds (and its default ``limit``)."""
MAX_LIST_OFFSET: Final = 10**12
"""Largest ``offset`` accepted by the list."""

_T = TypeVar("_T")


class SessionRoutes:
    """The session endpoints of one served agent.

    Args:
        served: the agent and its session manager.
        max_body_bytes: largest request body accepted; larger ones get 413.
        realtime: the Socket.IO hub and reply worker of the sse and websocket transports.
    """

    def __init__(self, served: ServedAgent, *, max_body_bytes: int, realtime: RealtimeHub) -> None:
        self.served = served
        self.max_body_bytes = max_body_bytes
        self.realtime = realtime

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
            f"{one}/timeout": {"PATCH": self.update_timeout},
        }

    # -- sessions ------------------------------------------------------------------------------

    async def create_session(self, request: Request) -> Response:
        """POST /api/messaging/sessions: open a session with this server's agent."""
        body = await read_json_object(request, self.max_body_bytes)
        require_fields(body, "agentId", "userId")
        agent_id = uuid_field(body, "agentId")
        user_id = uuid_field(body, "userId")
        metadata = metadata_field(body)
        timeout = timeout_config(body, self.sessions.config, self.served.limits)
        if agent_id != self.served.runtime.agent_id:
            # One server serves one agent; ElizaOS answers an unknown agent the same way.
            raise APIError(404, "AGENT_NOT_FOUND", f"Agent with ID '{agent_id}' not found")
        session = await self.sessions.create(
            agent_id=agent_id, user_id=user_id, metadata=metadata, timeout=timeout
        )
        return JSONResponse(
            created_json(session),
            status_code=201,
            headers={"Location": f"{API_PREFIX}/{session.id}"},
        )

    async def list_sessions(self, request: Request) -> Response:
        """GET /api/messaging/sessions: live sessions, newest first (``agentId`` filters).

        ``limit`` (0..1000, default 1000) and ``offset`` (default 0) page the
        answer; ``total`` counts every live session, not just the page.
        """
        agent_id = request.query_params.get("agentId", "").strip() or None
        limit = query_int(request, "limit", default=MAX_LIST_PAGE, minimum=0, maximum=MAX_LIST_PAGE)
        offset = query_int(request, "offset", default=0, minimum=0, maximum=MAX_LIST_OFFSET)
        sessions = await self.sessions.list(agent_id=agent_id)
        # The manager lists live sessions only; expired ones are gone for clients.
        total = len(sessions)
        stats = {"totalSessions": total, "activeSessions": total, "expiredSessions": 0}
        page = sessions[offset : offset + limit]
        return JSONResponse(
            {"sessions": [session_json(s) for s in page], "total": total, "stats": stats}
        )

    async def get_session(self, request: Request) -> Response:
        """GET /api/messaging/sessions/{id}: the session and its status fields."""
        session = await self._live(self.sessions.get(request.path_params["session_id"]))
        return JSONResponse(session_json(session))

    async def delete_session(self, request: Request) -> Response:
        """DELETE /api/messaging/sessions/{id}: end the session, drop its messages."""
        session_id = request.path_params["session_id"]
        if not await self.sessions.end(session_id):
            raise SessionNotFoundError(session_id)
        return JSONResponse(
            {"success": True, "message": f"Session {session_id} deleted successfully"}
        )

    async def renew(self, request: Request) -> Response:
        """POST .../{id}/renew: extend by the timeout from now, up to the max duration."""
        session = await self._live(self.sessions.renew(request.path_params["session_id"]))
        return JSONResponse(session_json(session))

    async def heartbeat(self, request: Request) -> Response:
        """POST .../{id}/heartbeat: record activity (renews with auto-renew)."""
        session = await self._live(self.sessions.heartbeat(request.path_params["session_id"]))
        return JSONResponse(session_json(session))

    async def update_timeout(self, request: Request) -> Response:
        """PATCH .../{id}/timeout: new timeout settings, ElizaOS's rules (unsent fields reset)."""
        session_id = request.path_params["session_id"]
        body = await read_json_object(request, self.max_body_bytes)
        # ElizaOS's order: the session (404, or 410 and deleted), then the body.
        await self._live(self.sessions.get(session_id))
        timeout = patched_timeout(body, self.sessions.config, self.served.limits)
        session = await self._live(self.sessions.update_timeout(session_id, timeout))
        return JSONResponse(session_json(session))

    # -- messages -------------------------------------------------------------------------------

    async def send_message(self, request: Request) -> Response:
        """POST .../{id}/messages: store the user message; the reply as the transport says.

        ``http`` answers with the reply; ``sse`` streams it (:mod:`.sse`);
        ``websocket`` (the default) answers at once and emits the reply to the
        session's Socket.IO room (:mod:`.realtime`). With an ``Idempotency-Key``
        the reply is made before the answer on every transport, so that a
        retry can be answered with the first reply.
        """
        session_id = request.path_params["session_id"]
        body = await read_json_object(request, self.max_body_bytes)
        # ElizaOS's order: transport, content type, the session, then content and metadata.
        transport = send_options(body)
        content = message_content(body)
        before = await self._live(self.sessions.get(session_id))
        check_message(content)
        metadata = metadata_field(body)
        # IETF Idempotency-Key draft: a retry with the key gets the first answer.
        key = request.headers.get("idempotency-key")
        if transport == "http" or key is not None:
            posted = await self._live(
                self.sessions.post(before, content, metadata=metadata, idempotency_key=key)
            )
            user, reply, session = posted.user, posted.reply, posted.session
            assert reply is not None  # post() with reply=True stores one
            if transport == "sse":
                return replayed_stream(user, reply, session)
            if transport == "websocket":
                await self.realtime.emit(
                    "messageBroadcast", broadcast_json(reply, user, session), session
                )
                return JSONResponse(
                    websocket_send_json(user, session, was_renewed=posted.renewed),
                    status_code=201,
                )
            return JSONResponse(
                send_json(user, reply, session, was_renewed=posted.renewed), status_code=201
            )
        worker = self.realtime.worker
        worker.check_accepting()  # before storing: a 503 must leave nothing behind
        posted = await self._live(
            self.sessions.post(before, content, metadata=metadata, reply=False)
        )
        user, session = posted.user, posted.session
        try:
            if transport == "sse":
                return reply_stream(worker, user, session)
            self.realtime.reply_to_room(user, session)
        except APIError:
            # Stopping between the check above and now: the message has its answer.
            await self.sessions.close_exchange(user, error=REPLY_FAILED)
            raise
        return JSONResponse(
            websocket_send_json(user, session, was_renewed=posted.renewed), status_code=201
        )

    async def get_messages(self, request: Request) -> Response:
        """GET .../{id}/messages: one page of history, newest first."""
        session_id = request.path_params["session_id"]
        limit = query_limit(request, self.sessions.config.max_page_size)
        before = query_cursor(request, "before")
        after = query_cursor(request, "after")
        session = await self._live(self.sessions.get(session_id))
        page = await self._live(
            self.sessions.history(
                session_id,
                limit=limit,
                before=None if before is None else cursor_before(before),
                after=None if after is None else cursor_after(after),
            )
        )
        body: dict[str, Any] = {
            "messages": [history_json(m, session) for m in page.messages],
            "hasMore": page.has_more,
        }
        if page.messages:
            body["cursors"] = {
                "before": ms(page.messages[-1].created_at),
                "after": ms(page.messages[0].created_at),
            }
        return JSONResponse(body)

    async def _live(self, call: Awaitable[_T]) -> _T:
        """Await *call*; a session found expired is ended, as ElizaOS deletes it (404 next)."""
        try:
            return await call
        except SessionExpiredError as err:
            await self.sessions.end(err.session_id)
            raise
