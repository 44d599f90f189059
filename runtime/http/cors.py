"""CORS: which browser origins may call the API (``CORS_ORIGIN``), on Starlette's middleware.

As on the ElizaOS server: allowed methods ``GET, POST, PUT, DELETE, PATCH,
OPTIONS``, allowed request headers ``Content-Type, Authorization, X-API-KEY``,
credentials allowed, and preflights answered before authentication (so they
need no key). ``CORS_ORIGIN`` is a comma-separated list of origins, or ``*``;
unset, every origin is allowed, as ElizaOS does — this server authenticates
with the ``X-API-KEY`` header, never with cookies, so an allowed origin gains
nothing a page could not do with the key; set ``CORS_ORIGIN`` to the origins
of your web clients in production (docs/security.md).
"""

from __future__ import annotations

from typing import Final

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

__all__ = ["ALLOWED_HEADERS", "ALLOWED_METHODS", "cors_middleware", "parse_cors_origin"]

ALLOWED_METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
ALLOWED_HEADERS: Final = ("Content-Type", "Authorization", "X-API-KEY", "Idempotency-Key")


def parse_cors_origin(text: str | None) -> tuple[str, ...] | None:
    """The origins of a ``CORS_ORIGIN`` value; None (any origin) when unset or empty.

    >>> parse_cors_origin("https://a.example, https://b.example")
    ('https://a.example', 'https://b.example')
    """
    if text is None or not text.strip():
        return None
    origins = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for origin in origins:
        if origin != "*" and "://" not in origin:
            raise ValueError(
                f"CORS_ORIGIN: {origin!r} is not an origin: use scheme://host[:port] or *"
            )
    return origins


def cors_middleware(origins: tuple[str, ...] | None) -> Middleware:
    """Starlette's CORS middleware for *origins* (None: every origin, reflected)."""
    if origins is None or "*" in origins:
        # A reflected origin rather than "*": browsers refuse "*" with credentials.
        return Middleware(
            CORSMiddleware,
            allow_origin_regex=".*",
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=True,
        )
    return Middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        allow_credentials=True,
    )
