"""API key authentication: ``ELIZA_SERVER_AUTH_TOKEN`` and the ``X-API-KEY`` header.

As on the ElizaOS server, a configured token guards every ``/api`` route; a
request without the header, or with another value, gets 401 and the same body
ElizaOS sends. Preflights (``OPTIONS``) pass without a key, so browsers can ask
first. Keys are compared in constant time (ElizaOS compares them with ``!==``).

:func:`api_key_matches` is the one check, also for the Socket.IO handshake.
"""

from __future__ import annotations

import hmac
from typing import Final

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import send_json

__all__ = ["API_KEY_HEADER", "AUTH_TOKEN_VARIABLE", "APIKeyMiddleware", "api_key_matches"]

API_KEY_HEADER: Final = "x-api-key"
"""The request header carrying the key (HTTP header names are case-insensitive)."""
AUTH_TOKEN_VARIABLE: Final = "ELIZA_SERVER_AUTH_TOKEN"
"""The environment variable ``python -m runtime serve`` reads the token from."""

# ElizaOS's 401 body, byte for byte (a flat shape, unlike its other errors).
_UNAUTHORIZED: Final = orjson.dumps(
    {"error": "API key required", "message": "Missing or invalid X-API-KEY header"}
)


def api_key_matches(expected: str, given: str | bytes | None) -> bool:
    """True if *given* equals *expected*, compared in constant time.

    >>> api_key_matches("s3cret", "s3cret"), api_key_matches("s3cret", None)
    (True, False)
    """
    if given is None:
        return False
    given_bytes = given if isinstance(given, bytes) else given.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(expected.encode("utf-8"), given_bytes)


def _guarded(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


class APIKeyMiddleware:
    """ASGI middleware answering 401 to ``/api`` requests without the right ``X-API-KEY``.

    Args:
        app: the application to guard.
        api_key: the token every ``/api`` request must present; must not be empty.
    """

    def __init__(self, app: ASGIApp, *, api_key: str) -> None:
        if not isinstance(api_key, str) or not api_key:
            raise ValueError(f"{AUTH_TOKEN_VARIABLE} must be a non-empty string")
        self.app = app
        self._api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 401 when it is an unauthenticated ``/api`` call."""
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not _guarded(scope["path"])
            or api_key_matches(self._api_key, _header(scope, API_KEY_HEADER.encode()))
        ):
            await self.app(scope, receive, send)
            return
        await send_json(send, 401, _UNAUTHORIZED)


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header *name* (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None
