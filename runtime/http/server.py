"""Serving under uvicorn: request read timeout, connection cap, JSON framing errors, fd limits.

uvicorn bounds idle keep-alive (``timeout_keep_alive``) but not how long a
client may take to send a request: a connection holding half its headers, or
half its body, stays open for ever, and a few hundred of them hold every file
descriptor. :func:`http_protocol` returns a subclass of uvicorn's h11 protocol
that closes such connections, passed to uvicorn as ``http=`` (a class):

- **Request timeout** (``HTTP_REQUEST_TIMEOUT``): a timer is armed when the
  connection is made and when the first byte of each later request arrives, and
  disarmed once the request's headers *and* body have arrived (h11's state for
  the client leaves ``IDLE``/``SEND_BODY``). If it fires, the client gets ``408``
  in the JSON error format (when no answer has started) and the connection is
  closed. It is one deadline per request, not per read, so trickling a byte at a
  time does not extend it. Idle keep-alive between requests is uvicorn's
  ``timeout_keep_alive``; a WebSocket upgrade and a long answer (SSE, long
  polling) are exempt once their request has arrived.
- **Connection cap** (``HTTP_MAX_CONNECTIONS``): a connection made while the
  process already holds that many (HTTP and WebSocket alike, uvicorn's
  ``server_state.connections``) gets ``503`` and is closed at once, so
  descriptors never run out from connections. uvicorn's ``limit_concurrency``
  was not used: it still accepts and keeps every connection and only answers
  503 per *request* (logging a warning for each).
- **Framing errors** (a malformed request line or header) answer ``400`` in the
  JSON error format instead of uvicorn's plain text.

Why a protocol subclass rather than a middleware: an ASGI application is only
called once the headers are complete, so nothing in the application can see a
client that never finishes them. The subclass overrides five small methods of
``H11Protocol`` and calls the originals; h11 is uvicorn's default parser when
httptools is not installed (``serve`` always uses it, so the checks hold).

Running out of descriptors anyway (other files, a low ``ulimit -n``) used to
flood the log: asyncio's accept loop logs one traceback per pending connection
per second. :func:`raise_fd_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard
one at start, :func:`connection_budget` keeps the cap below it with headroom,
and :class:`AcceptErrorLogFilter` collapses asyncio's accept errors into one
line per interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from kvstore.options import check_int, check_seconds, parse_float, parse_int

from .errors import error_body

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUEST_TIMEOUT",
    "MAX_CONNECTIONS_VARIABLE",
    "REQUEST_TIMEOUT_VARIABLE",
    "AcceptErrorLogFilter",
    "GuardedH11Protocol",
    "ServerLimits",
    "connection_budget",
    "error_bytes",
    "http_protocol",
    "raise_fd_limit",
]

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_VARIABLE: Final = "HTTP_REQUEST_TIMEOUT"
MAX_CONNECTIONS_VARIABLE: Final = "HTTP_MAX_CONNECTIONS"

DEFAULT_REQUEST_TIMEOUT: Final = 30.0
"""Seconds a request's headers and body may take to arrive."""

DEFAULT_MAX_CONNECTIONS: Final = 2048
"""Concurrent connections per process: room for 1,000 idle realtime sockets and HTTP traffic."""

_FD_RESERVE_MIN: Final = 16
_FD_RESERVE_MAX: Final = 256
# A hard limit of "unlimited" is not a value setrlimit accepts for NOFILE on
# Linux (the kernel's nr_open caps it); this is far above any cap we need.
_FD_TARGET_UNLIMITED: Final = 1 << 16
_LOG_INTERVAL: Final = 60.0

# Readable to the client's h11 state machine: still sending its request.
_READING: Final = (h11.IDLE, h11.SEND_BODY)


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer in the JSON error format, closing the connection.

    For answers written straight to the transport, where no ASGI app runs.
    """
    body = error_body(code, message)
    reason = {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, '')}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The connection-level limits of ``serve``.

    Attributes:
        request_timeout: seconds a request's headers and body may take to arrive.
        max_connections: concurrent connections accepted per process.
    """

    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        check_seconds("request_timeout", self.request_timeout)
        check_int("max_connections", self.max_connections, minimum=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServerLimits:
        """The limits from ``HTTP_REQUEST_TIMEOUT`` and ``HTTP_MAX_CONNECTIONS`` (unset: defaults).

        Raises:
            ValueError: a value that is not a positive number (seconds) or a
                positive whole number (connections), naming the variable.

        >>> ServerLimits.from_env({"HTTP_REQUEST_TIMEOUT": "10"}).request_timeout
        10.0
        """
        timeout = DEFAULT_REQUEST_TIMEOUT
        connections = DEFAULT_MAX_CONNECTIONS
        raw = environ.get(REQUEST_TIMEOUT_VARIABLE, "").strip()
        if raw:
            try:
                timeout = check_seconds(
                    REQUEST_TIMEOUT_VARIABLE, parse_float(raw), error=ValueError
                )
            except ValueError:
                raise ValueError(
                    f"{REQUEST_TIMEOUT_VARIABLE}={raw!r} is invalid: use a number of seconds > 0"
                ) from None
        raw = environ.get(MAX_CONNECTIONS_VARIABLE, "").strip()
        if raw:
            try:
                connections = check_int(
                    MAX_CONNECTIONS_VARIABLE, parse_int(raw), minimum=1, error=ValueError
                )
            except ValueError:
                raise ValueError(
                    f"{MAX_CONNECTIONS_VARIABLE}={raw!r} is invalid: use a whole number >= 1"
                ) from None
        return cls(timeout, connections)


class _Tally:
    """Counts events and logs them at most once per interval (never a flood)."""

    def __init__(self, message: str, *, interval: float = _LOG_INTERVAL) -> None:
        self._message = message
        self._interval = interval
        self._count = 0
        self._last = -math.inf

    def add(self, log: Callable[[str], None]) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self._interval:
            log(self._message.format(count=self._count))
            self._count = 0
            self._last = now


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request read timeout, a connection cap and JSON 400s.

    Configured through class attributes; :func:`http_protocol` makes a subclass
    with the values of one server (uvicorn builds protocols from the class).
    """

    request_timeout: ClassVar[float] = DEFAULT_REQUEST_TIMEOUT
    max_connections: ClassVar[int] = DEFAULT_MAX_CONNECTIONS
    _timeouts: ClassVar[_Tally]
    _refusals: ClassVar[_Tally]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; refuse it past the cap, else start the first request's clock."""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refusals.add(logger.warning)
            self.transport.write(
                error_bytes(503, "SERVICE_UNAVAILABLE", "too many connections; retry later")
            )
            self.transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Start the clock at a request's first byte; stop it once the request is in."""
        if self._request_timer is None and self.conn.their_state in _READING:
            self._arm()
        super().data_received(data)
        self._disarm_if_received()

    def on_response_complete(self) -> None:
        """As uvicorn does; a pipelined request already begun gets its own deadline."""
        super().on_response_complete()
        if (
            self._request_timer is None
            and not self.transport.is_closing()
            and self.conn.their_state in _READING
            and self.conn.trailing_data[0]
        ):
            self._arm()
        self._disarm_if_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """As uvicorn does, and stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """An upgraded connection is exempt: its request has arrived."""
        self._disarm()
        super().handle_websocket_upgrade(event)

    def send_400_response(self, msg: str) -> None:
        """A framing error (bad request line or header), answered in the JSON error format."""
        body = error_body("BAD_REQUEST", msg)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"connection", b"close"),
        ]
        self._disarm()
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._request_timer = self.loop.call_later(self.request_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _disarm_if_received(self) -> None:
        if self.conn.their_state not in _READING:
            self._disarm()

    def _timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        self._timeouts.add(logger.info)
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(
                error_bytes(
                    408,
                    "REQUEST_TIMEOUT",
                    f"the request did not arrive within {self.request_timeout:g}s",
                )
            )
        self.transport.close()


def http_protocol(limits: ServerLimits) -> type[GuardedH11Protocol]:
    """The protocol class to pass to uvicorn as ``http=`` for *limits*.

    >>> protocol = http_protocol(ServerLimits(request_timeout=10, max_connections=100))
    >>> # uvicorn.run(app, http=protocol, ...)
    """
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "request_timeout": limits.request_timeout,
            "max_connections": limits.max_connections,
            "_timeouts": _Tally(
                "closed {count} connection(s) whose request did not arrive within"
                f" {limits.request_timeout:g}s ({REQUEST_TIMEOUT_VARIABLE})"
            ),
            "_refusals": _Tally(
                f"refused {{count}} connection(s): {limits.max_connections} open"
                f" ({MAX_CONNECTIONS_VARIABLE})"
            ),
        },
    )


def raise_fd_limit() -> int:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit now in force.

    Returns 0 where the ``resource`` module does not exist (Windows): no known limit.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _FD_TARGET_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as err:
            logger.warning(
                "could not raise the open-file limit from %d to %d: %s", soft, target, err
            )
    return _FD_TARGET_UNLIMITED if soft == resource.RLIM_INFINITY else int(soft)


def connection_budget(wanted: int, fd_limit: int) -> int:
    """*wanted* connections, lowered to leave descriptors for everything else under *fd_limit*.

    A quarter of the limit (16 to 256 descriptors) is kept for the store's
    connections, files and the event loop itself. *fd_limit* 0 means unknown.

    >>> connection_budget(2048, 1024), connection_budget(2048, 1 << 20), connection_budget(10, 64)
    (768, 2048, 10)
    """
    if fd_limit <= 0:
        return wanted
    reserve = min(_FD_RESERVE_MAX, max(_FD_RESERVE_MIN, fd_limit // 4))
    return max(1, min(wanted, fd_limit - reserve))


class AcceptErrorLogFilter(logging.Filter):
    """Collapses asyncio's "socket.accept() out of system resource" records.

    When descriptors run out, asyncio's accept loop logs that error with a
    traceback once per pending connection (up to the listen backlog) every
    second. This filter, on the ``asyncio`` logger, lets one short line
    through per *interval* seconds, counting the ones it dropped, and passes
    every other record unchanged.
    """

    MESSAGE: ClassVar[str] = "socket.accept() out of system resource"

    def __init__(
        self, *, interval: float = _LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._dropped = 0
        self._last = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a repeated accept error; the first of an interval loses its traceback."""
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        now = self._clock()
        if now - self._last < self._interval:
            self._dropped += 1
            return False
        error = record.exc_info[1] if record.exc_info else None
        record.msg = "%s (%s); %d more since the last report: new connections wait"
        record.args = (self.MESSAGE, error, self._dropped)
        record.exc_info = None
        record.exc_text = None
        self._dropped = 0
        self._last = now
        return True

    def install(self) -> AcceptErrorLogFilter:
        """Add this filter to the ``asyncio`` logger (idempotent); returns it."""
        target = logging.getLogger("asyncio")
        if self not in target.filters:
            target.addFilter(self)
        return self
