"""The Sessions HTTP API: ElizaOS-compatible endpoints over ``runtime.sessions``.

:func:`create_app` returns a Starlette (ASGI) application; ``python -m runtime
serve`` runs it under uvicorn. The wire format follows ElizaOS's
``/api/messaging/sessions`` router so that its clients work unchanged: JSON
bodies with camelCase names, timestamps as epoch milliseconds
(:mod:`.wire`), errors as ``{"error": {"code", "message"}}`` with ElizaOS's
codes (:mod:`.errors`).

Routes (see docs/sessions-http.md for the reference and curl examples):

==========  ===========================================  ================================
method      path                                         answer
==========  ===========================================  ================================
POST        /api/messaging/sessions                      201 session
GET         /api/messaging/sessions                      200 ``{sessions, total}``
GET         /api/messaging/sessions/health               200/503 ElizaOS health shape
GET         /api/messaging/sessions/{id}                 200 session
DELETE      /api/messaging/sessions/{id}                 204
POST        /api/messaging/sessions/{id}/messages        201 user message (+ reply: http);
                                                         SSE stream (sse)
GET         /api/messaging/sessions/{id}/messages        200 ``{messages, hasMore, cursors}``
POST        /api/messaging/sessions/{id}/renew           200 session
POST        /api/messaging/sessions/{id}/heartbeat       200 session
PATCH       /api/messaging/sessions/{id}/timeout         200 session
GET         /health                                      200/503 backend reachability
GET         /metrics                                     200 store metrics (JSON/Prometheus)
GET, POST   /socket.io/                                  Socket.IO 4 (ElizaOS's events)
==========  ===========================================  ================================

The modules:

===============  ================================================================
``app``          :func:`create_app`: route tables and middleware into one app, and
                 the lifespan (initialise, sweep, close)
``context``      :class:`~.context.ServedAgent` and the route-table type every
                 route module shares
``errors``       the JSON error body; exception → status and code
``wire``         sessions and messages as JSON; epoch-ms cursors
``parsing``      the size-limited JSON body, its fields, query parameters
``sessions``     the ``/api/messaging/sessions`` routes
``ops``          ``/health``, the sessions health, ``/metrics``
``replies``      the reply worker of the ``sse`` and ``websocket`` transports: a
                 lifespan-owned task group, bounded, draining on shutdown
``sse``          the ``sse`` transport's ``text/event-stream`` answer
``realtime``     Socket.IO at ``/socket.io/`` and its fan-out across replicas
===============  ================================================================

A new group of routes (agents, SSE streams) is a module with a ``routes()``
table that ``create_app`` merges; a middleware (auth, CORS, rate limit) is a
module of its own, listed in ``create_app``'s middleware stack.
"""

from __future__ import annotations

from ..errors import APIError
from .app import DEFAULT_MAX_BODY_BYTES, create_app
from .context import API_PREFIX
from .ops import HEALTH_STORE, backend_name
from .parsing import read_json_object
from .wire import cursor_after, cursor_before, history_json, iso, ms, session_json

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BODY_BYTES",
    "HEALTH_STORE",
    "APIError",
    "backend_name",
    "create_app",
    "cursor_after",
    "cursor_before",
    "history_json",
    "iso",
    "ms",
    "read_json_object",
    "session_json",
]
