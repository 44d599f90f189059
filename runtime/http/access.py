"""The access log, with route templates instead of paths: no session id in INFO logs.

uvicorn's access log prints each request's path and query, and a session id in
a path is a bearer secret (whoever has it can read and post into the session).
``python -m runtime serve`` turns uvicorn's access log off and wraps the app
in :class:`AccessLogMiddleware`, which logs the same line with the route's
template (logger ``runtime.http.access``)::

    127.0.0.1:51234 - "GET /api/messaging/sessions/{sessionId}/messages HTTP/1.1" 200

A path no route serves is logged with every segment that looks like an id
(a UUID, or a long hex or numeric string) replaced by ``{id}``; query strings
are never logged.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .openapi import documented_path

__all__ = ["ACCESS_LOGGER", "AccessLogMiddleware", "logged_path"]

ACCESS_LOGGER: Final = "runtime.http.access"
"""The logger the access lines go to (INFO)."""

logger = logging.getLogger(ACCESS_LOGGER)

_ID_SEGMENT: Final = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,}|[0-9]{6,}"
)


def _redacted(path: str) -> str:
    return "/".join(
        "{id}" if _ID_SEGMENT.fullmatch(part) else part for part in path[:200].split("/")
    )


def logged_path(scope: Scope) -> str:
    """The path to log for *scope*: its route's template, else the path with ids redacted.

    Works after the application ran (Starlette records the route it chose in the
    scope) and for answers given before routing (401, 429): the path is then
    matched against the application's routes.
    """
    route = scope.get("route")
    if isinstance(route, Route):
        return documented_path(route.path)
    app = scope.get("app")
    for candidate in getattr(app, "routes", ()):
        if isinstance(candidate, Route):
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                return documented_path(candidate.path)
    return _redacted(str(scope.get("path", "")))


class AccessLogMiddleware:
    """ASGI middleware logging one INFO line per HTTP answer, with the route template.

    Wrap the whole application (outside Starlette) so that every answer is
    logged, those of other middleware included.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; log its status with the client address and the route template."""
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return

        async def send_and_log(message: Message) -> None:
            if message["type"] == "http.response.start":
                client = scope.get("client")
                address = f"{client[0]}:{client[1]}" if client else "-"
                logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    address,
                    scope["method"],
                    logged_path(scope),
                    scope.get("http_version", "1.1"),
                    message["status"],
                )
            await send(message)

        await self.app(scope, receive, send_and_log)
