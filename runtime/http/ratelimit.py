"""``HTTP_RATE_LIMIT``: at most N ``/api`` requests per client address per window.

A fixed window, starting at a client's first request, counted in the
runtime's key-value store (store ``rate_limit``), so replicas sharing a
backend share one budget per client. As on the ElizaOS
server: the default is 1000 requests per 900 s, a refused request gets ``429``
with ElizaOS's body, and answers carry ``RateLimit-Policy``, ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset`` (plus ``Retry-After`` on a 429).
``0`` turns the limit off. Preflights are not counted.

Requests are counted with atomic ``update()`` calls of the client's window.
Two things keep their cost low on Redis (bench/http_limiter.py): a client's
concurrent requests in one process share one call, each still getting its
exact place (:class:`_Coalescer`); and for limits of 200 and more, one call
reserves 1 % of the limit (at most 256 places) that the process then hands out
without asking the store (:func:`lease_size`). A replica may so hold a few
unused places of a client's budget while another refuses that client; limits
under 200 are counted exactly, one place per request.

If the store cannot answer, the request is let through (and logged once per
outage): a limiter must not turn a store hiccup into refusing every client.

Why not the ``limits`` library: its strategies read the window back for the
headers (two more store round trips per request), and its storage interface
would have been an adapter over this same ``update()``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvstore import KVStore, KVStoreError
from kvstore.options import check_int, parse_int

from .errors import send_json

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "RATE_LIMIT_STORE",
    "RateLimit",
    "RateLimitMiddleware",
    "Window",
    "lease_size",
]

logger = logging.getLogger(__name__)

_MAX_LEASE: Final = 256
_MAX_LEASES: Final = 4096

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


def _count(now: float, seconds: int, requests: int = 1) -> Callable[[Any], list[float]]:
    """The update of one client's window ``[count, resets_at]`` for *requests* at *now*."""

    def bump(window: Any) -> list[float]:
        if not isinstance(window, list) or len(window) != 2 or now >= window[1]:
            return [requests, now + seconds]
        return [window[0] + requests, window[1]]

    return bump


Window = tuple[float, float]
"""A client's window after a request: ``(count, resets_at)``."""


class _Waiter:
    """One request waiting for its place in a client's window."""

    __slots__ = ("event", "failure", "lead", "result", "update")

    def __init__(self, update: Callable[[int], Awaitable[Window]]) -> None:
        self.event = anyio.Event()
        self.update = update
        self.lead = False
        self.result: Window | None = None
        self.failure: Exception | None = None


class _Coalescer:
    """Counts a client's concurrent requests with one store update per batch.

    At most one update per client is in flight in a process; requests arriving
    meanwhile queue up, and the first of them, once that update is done, counts
    the whole queue with the next one. Each request still gets its own exact
    place (the count after its batch, minus those queued behind it), so a
    limit holds exactly as with one update per request; only the store round
    trips are shared. Without it, the concurrent requests of one client (all of
    those behind one proxy) would each update the same key and, on Redis, lose
    most of their WATCH transactions to each other.
    """

    def __init__(self) -> None:
        self._queues: dict[str, list[_Waiter]] = {}

    async def count(self, key: str, update: Callable[[int], Awaitable[Window]]) -> Window:
        """This request's window; ``update(n)`` counts *n* requests in the store.

        Raises:
            Exception: what the batch's ``update`` raised (each request of the batch gets it).
        """
        waiter = _Waiter(update)
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = [waiter]
            waiter.lead = True
        else:
            queue.append(waiter)
            try:
                await waiter.event.wait()
            except BaseException:
                self._withdraw(key, waiter)
                raise
        if waiter.lead:
            await self._lead(key)
        if waiter.failure is not None:
            raise waiter.failure
        assert waiter.result is not None  # set before the waiter was woken
        return waiter.result

    def _withdraw(self, key: str, waiter: _Waiter) -> None:
        """A waiter cancelled before its batch was taken leaves; leading passes on."""
        queue = self._queues.get(key)
        if queue is None or waiter not in queue:
            return  # its batch is being counted already
        queue.remove(waiter)
        if not waiter.lead:
            return
        if queue:
            queue[0].lead = True
            queue[0].event.set()
        else:
            del self._queues[key]

    async def _lead(self, key: str) -> None:
        """Count the queue of *key* (this waiter first) and wake it; hand over to the next."""
        batch = self._queues[key]
        following: list[_Waiter] = []
        self._queues[key] = following
        try:
            count, resets_at = await batch[0].update(len(batch))
        except Exception as err:
            for waiter in batch:
                waiter.failure = err
        except BaseException:
            # The leader's own request was cancelled: the others go back to
            # the front of the queue, uncounted, and the first of them leads.
            following[:0] = batch[1:]
            raise
        else:
            for place, waiter in enumerate(batch):
                waiter.result = (count - len(batch) + 1 + place, resets_at)
        finally:
            if following:
                following[0].lead = True
                following[0].event.set()
            else:
                del self._queues[key]
        for waiter in batch[1:]:
            waiter.event.set()


def lease_size(limit: RateLimit) -> int:
    """How many requests one store update reserves for a client: 1% of the limit, 1 to 256.

    A process serves its reserved requests without asking the store again
    (until the window ends), so a replica may hold at most this many requests
    of a client's budget unused while another refuses it; small limits (under
    200) are counted one request at a time, exactly.

    >>> lease_size(RateLimit(1000, 900)), lease_size(RateLimit(100, 60))
    (10, 1)
    """
    return max(1, min(_MAX_LEASE, limit.requests // 100))


@dataclass(slots=True)
class _Lease:
    """Places of a client's window this process reserved: ``next..last``, until *resets_at*."""

    next: float
    last: float
    resets_at: float


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
        self._counts = _Coalescer()
        self._leases: dict[str, _Lease] = {}
        self._lease_size = lease_size(limit)
        self._fixed_headers = (
            (b"ratelimit-policy", limit.policy.encode()),
            (b"ratelimit-limit", str(limit.requests).encode()),
        )

    async def _place(self, scope: Scope, client: str, now: float) -> Window:
        """The request's place in its client's window: from a lease, else from the store."""
        lease = self._leases.get(client)
        if lease is not None and lease.next <= lease.last and now < lease.resets_at:
            lease.next += 1
            return lease.next - 1, lease.resets_at
        store = self._store_for(scope)
        limit = self._limit

        async def update(requests: int) -> Window:
            # One key per client: its window starts with its first request, so
            # no boundary shared by every client resets all budgets at once.
            reserved = max(requests, self._lease_size)
            window = await store.update(
                client, _count(self._clock(), limit.seconds, reserved), ttl=limit.seconds + 1
            )
            count, resets_at = float(window[0]), float(window[1])
            if reserved > requests:
                self._lease(client, _Lease(count - reserved + requests + 1, count, resets_at))
            return count - reserved + requests, resets_at

        return await self._counts.count(client, update)

    def _lease(self, client: str, lease: _Lease) -> None:
        leases = self._leases
        if len(leases) >= _MAX_LEASES and client not in leases:
            now = self._clock()
            for name in [name for name, old in leases.items() if old.resets_at <= now]:
                del leases[name]
            if len(leases) >= _MAX_LEASES:
                leases.clear()  # unused credit is dropped: a client may be refused early
        leases[client] = lease

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
            count, resets_at = await self._place(scope, client, now)
        except KVStoreError as err:
            if not self._failing:
                logger.warning("rate limit not enforced while the store fails: %s", err)
            self._failing = True
            await self.app(scope, receive, send)
            return
        self._failing = False
        reset = str(max(1, math.ceil(resets_at - now))).encode()
        # Raw header pairs, appended as they are: no route sets these itself.
        headers = [
            *self._fixed_headers,
            (b"ratelimit-remaining", str(max(0, limit.requests - int(count))).encode()),
            (b"ratelimit-reset", reset),
        ]
        if count > limit.requests:
            await send_json(send, 429, _TOO_MANY, [(b"retry-after", reset), *headers])
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
