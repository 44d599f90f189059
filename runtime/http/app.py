"""The application factory: route tables assembled into one Starlette app, and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from kvstore.options import check_int, check_seconds

from ..agent import AgentRuntime
from ..sessions import SessionManager
from .agents import AgentRoutes
from .auth import APIKeyMiddleware
from .context import Endpoint, RouteTable, ServedAgent
from .cors import cors_middleware
from .errors import guarded, http_exception
from .headers import SecurityHeadersMiddleware
from .hosts import AllowedHostsMiddleware
from .limits import SessionLimits
from .openapi import OpenAPIRoutes
from .ops import DEFAULT_HEALTH_TIMEOUT, OpsRoutes
from .ratelimit import RateLimit, RateLimitMiddleware
from .realtime import SOCKETIO_PATH, RealtimeHub
from .replies import DEFAULT_DRAIN_TIMEOUT, DEFAULT_REPLY_CONCURRENCY, ReplyWorker
from .sessions import SessionRoutes

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
"""Largest request body accepted (1 MiB); larger ones get 413."""


def create_app(
    runtime: AgentRuntime | None = None,
    *,
    sessions: SessionManager | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
    sweep: bool = True,
    api_key: str | None = None,
    cors_origins: tuple[str, ...] | None = None,
    session_limits: SessionLimits | None = None,
    rate_limit: RateLimit | None = None,
    allowed_hosts: tuple[str, ...] | None = None,
    reply_concurrency: int = DEFAULT_REPLY_CONCURRENCY,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
) -> Starlette:
    """The Sessions HTTP API of *runtime*, as a Starlette ASGI application.

    The application owns the runtime: its lifespan (run by uvicorn) awaits
    ``runtime.initialize()``, serves Socket.IO at ``/socket.io/`` and makes
    the replies of the ``sse`` and ``websocket`` transports on a task group of
    its own (:mod:`.realtime`, :mod:`.replies`), runs the session sweeper
    (``async with sessions.running()``) while serving, and on shutdown drains
    the replies in flight and closes the runtime. Servers that do not run the
    lifespan (``httpx.ASGITransport`` in tests) need the runtime initialised by
    the caller, and answer those two transports and Socket.IO with 503.

    Args:
        runtime: the agent served; default ``AgentRuntime()``, which keeps its
            state where ``KV_STORE_BACKEND`` and friends say (memory if unset).
        sessions: the session manager to serve instead of ``runtime.sessions``
            (e.g. one built with a test clock or an ``on_expired`` hook).
        max_body_bytes: largest request body accepted; larger ones get 413.
        health_timeout: seconds ``/health`` waits for the store.
        sweep: run the expired-session sweeper during the lifespan.
        api_key: when set, every ``/api`` request needs an ``X-API-KEY`` header
            equal to it (401 otherwise; preflights pass). ``python -m runtime
            serve`` takes it from ``ELIZA_SERVER_AUTH_TOKEN``.
        cors_origins: browser origins allowed to call the API; None allows
            every origin, as ElizaOS does (``serve`` reads ``CORS_ORIGIN``).
        session_limits: the ``SESSION_*`` bounds timeout input is clamped to
            (ElizaOS's defaults when None; ``serve`` reads the environment).
        rate_limit: requests per client address on ``/api``, counted in the
            runtime's store so replicas share it; None for no limit (``serve``
            reads ``HTTP_RATE_LIMIT``, default 1000 per 900 s as ElizaOS).
        allowed_hosts: the ``Host`` values served (``*.example.com`` for
            subdomains); others get 400 ``INVALID_HOST``. None serves every
            host (``serve`` reads ``HTTP_ALLOWED_HOSTS``).
        reply_concurrency: replies (sse, websocket) made at once; more wait.
        drain_timeout: seconds shutdown waits for the replies being made.

    Raises:
        TypeError: *max_body_bytes* is not an int, or *health_timeout* not a number.
        ValueError: *max_body_bytes* < 1, *health_timeout* not finite and > 0, or
            *api_key* empty.

    >>> app = create_app(AgentRuntime(agent_id="agent-1"))
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    check_int("max_body_bytes", max_body_bytes, minimum=1)
    check_seconds("health_timeout", health_timeout)
    if api_key is not None and (not isinstance(api_key, str) or not api_key):
        raise ValueError("api_key must be a non-empty str, or None for no authentication")
    served = ServedAgent(
        AgentRuntime() if runtime is None else runtime,
        sessions,
        SessionLimits() if session_limits is None else session_limits,
    )
    ops = OpsRoutes(served, health_timeout=health_timeout)
    worker = ReplyWorker(served, concurrency=reply_concurrency, drain_timeout=drain_timeout)
    realtime = RealtimeHub(served, worker, api_key=api_key)
    document = OpenAPIRoutes()
    # Ops first: its /api/messaging/sessions/health must win over the
    # session routes' /api/messaging/sessions/{session_id}.
    tables = [
        ops.routes(),
        SessionRoutes(served, max_body_bytes=max_body_bytes, realtime=realtime).routes(),
        AgentRoutes(served).routes(),
        document.routes(),
    ]
    # Outermost first: a foreign Host gets nothing else; CORS answers
    # preflights before the key is asked for.
    middleware = [Middleware(SecurityHeadersMiddleware)]
    if allowed_hosts is not None:
        middleware.append(Middleware(AllowedHostsMiddleware, allowed_hosts=allowed_hosts))
    middleware.append(cors_middleware(cors_origins))
    if api_key is not None:
        middleware.append(Middleware(APIKeyMiddleware, api_key=api_key))
    if rate_limit is not None:
        middleware.append(Middleware(RateLimitMiddleware, limit=rate_limit))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await served.runtime.initialize()
        try:
            probe = await ops.probe()
            logger.info(
                "serving agent %s, sessions on the %s backend",
                served.runtime.agent_id,
                ops.backend_label(),
            )
            if not probe.reachable:
                logger.warning(
                    "the %s backend is unreachable (%s): answering 503 until it is back",
                    ops.backend_label(),
                    probe.error,
                )
            async with realtime.running():
                if sweep:
                    async with served.sessions.running():
                        yield
                else:
                    yield
        finally:
            await served.runtime.aclose()

    routes = _routes(tables)
    document.describe(routes)
    app = Starlette(
        routes=[*routes, Mount(SOCKETIO_PATH, app=realtime.asgi)],
        middleware=middleware,
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
    app.state.runtime = served.runtime
    app.state.realtime = realtime
    return app


def _routes(tables: list[RouteTable]) -> list[Route]:
    """One route per path, so that a 405 lists every method the path allows."""
    merged: RouteTable = {}
    for table in tables:
        for path, handlers in table.items():
            methods = merged.setdefault(path, {})
            clash = methods.keys() & handlers.keys()
            if clash:
                raise ValueError(f"two route modules serve {sorted(clash)} {path}")
            methods.update(handlers)
    return [
        Route(path, guarded(_by_method(handlers)), methods=list(handlers))
        for path, handlers in merged.items()
    ]


def _by_method(handlers: Mapping[str, Endpoint]) -> Endpoint:
    """One endpoint calling the handler of the request's method (HEAD is served as GET)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint
