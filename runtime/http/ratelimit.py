"""``HTTP_RATE_LIMIT``: at most N ``/api`` requests per client address per window.

A fixed window, starting at a client's first request, counted in the
runtime's key-value store (store ``rate_limit``), so replicas sharing a
backend share one budget per client. As on the ElizaOS
server: the default is 1000 requests per 900 s, a refused request gets ``429``
with ElizaOS's body, and answers carry ``RateLimit-Policy``, ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset`` (plus ``Retry-After`` on a 429).
``0`` turns the limit off. Preflights are not counted.

Each counted request is one atomic ``update()`` of the client's window. If the
store cannot answer, the request is let through (and logged once per outage):
a limiter must not turn a store hiccup into refusing every client.

Why not the ``limits`` library: its strategies read the window back for the
headers (two more store round trips per request), and its storage interface
would have been an adapter over this same ``update()``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvstore import KVStore, KVStoreError
from kvstore.options import check_int, parse_int

__all__ = ["DEFAULT_RATE_LIMIT", "RATE_LIMIT_STORE", "RateLimit", "RateLimitMiddleware"]

logger = logging.getLogger(__name__)

RATE_LIMIT_STORE: Final = "rate_limit"
"""The name of the store holding the counters."""

_TOO_MANY: Final = orjson.dumps(
    {
        "success": False,
        "error": {
            "code": "RATE_LIMIT_EXCEEDED",
            "message": "Too many requests. Please try again later.",
        },
    }
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """*requests* per client address per *seconds*-long window."""

    requests: int
    seconds: int

    def __post_init__(self) -> None:
        check_int("requests", self.requests, minimum=1)
        check_int("seconds", self.seconds, minimum=1)

    @classmethod
    def parse(cls, text: str | None) -> RateLimit | None:
        """A ``HTTP_RATE_LIMIT`` value: ``N/SECONDS``; ``0`` is None (off); unset is the default.

        >>> RateLimit.parse("100/60")
        RateLimit(requests=100, seconds=60)
        """
        if text is None or not text.strip():
            return DEFAULT_RATE_LIMIT
        if text.strip() == "0":
            return None
        count, slash, window = text.partition("/")
        try:
            if not slash:
                raise ValueError("no '/'")
            return cls(parse_int(count), parse_int(window))
        except (TypeError, ValueError):
            raise ValueError(
                f"HTTP_RATE_LIMIT={text!r} is invalid: use N/SECONDS (e.g. 1000/900), or 0 for none"
            ) from None

    @property
    def policy(self) -> str:
        """The ``RateLimit-Policy`` header value (``1000;w=900``)."""
        return f"{self.requests};w={self.seconds}"


DEFAULT_RATE_LIMIT: Final = RateLimit(1000, 900)
"""ElizaOS's limit on its API: 1000 requests per 15 minutes per client."""


def _count(now: float, seconds: int) -> Callable[[Any], list[float]]:
    """The update of one client's window ``[count, resets_at]`` for a request at *now*."""

    def bump(window: Any) -> list[float]:
        if not isinstance(window, list) or len(window) != 2 or now >= window[1]:
            return [1, now + seconds]
        return [window[0] + 1, window[1]]

    return bump


class RateLimitMiddleware:
    """ASGI middleware enforcing a :class:`RateLimit` on ``/api`` requests.

    Args:
        app: the application.
        limit: the budget per client address.
        store: the store counting requests; by default the served runtime's
            ``rate_limit`` store (``app.state.runtime``), shared by its replicas.
        clock: wall-clock seconds (replicas must agree on it).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: RateLimit,
        store: KVStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self._limit = limit
        self._store = store
        self._clock = clock
        self._failing = False

    def _store_for(self, scope: Scope) -> KVStore:
        if self._store is None:
            self._store = scope["app"].state.runtime.kv_service.get_store(RATE_LIMIT_STORE)
        return self._store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request; answer 429 past the limit, else add the headers to the answer."""
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not (path == "/api" or path.startswith("/api/"))
        ):
            await self.app(scope, receive, send)
            return
        limit = self._limit
        client = (scope.get("client") or ("unknown", 0))[0]
        now = self._clock()
        try:
            # One key per client: its window starts with its first request, so
            # no boundary shared by every client resets all budgets at once.
            count, resets_at = await self._store_for(scope).update(
                client, _count(now, limit.seconds), ttl=limit.seconds + 1
            )
        except KVStoreError as err:
            if not self._failing:
                logger.warning("rate limit not enforced while the store fails: %s", err)
            self._failing = True
            await self.app(scope, receive, send)
            return
        self._failing = False
        reset = max(1, math.ceil(resets_at - now))
        headers = [
            ("ratelimit-policy", limit.policy),
            ("ratelimit-limit", str(limit.requests)),
            ("ratelimit-remaining", str(max(0, limit.requests - int(count)))),
            ("ratelimit-reset", str(reset)),
        ]
        if count > limit.requests:
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_TOO_MANY)).encode()),
                        (b"retry-after", str(reset).encode()),
                        *((name.encode(), value.encode()) for name, value in headers),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _TOO_MANY})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in headers:
                    response_headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
