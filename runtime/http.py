"""The Sessions HTTP API: ElizaOS-compatible endpoints over ``runtime.sessions``.

:func:`create_app` returns a Starlette (ASGI) application; ``python -m runtime
serve`` runs it under uvicorn. The wire format follows ElizaOS's
``/api/messaging/sessions`` router so that its clients work unchanged:

- JSON bodies with camelCase names; errors are ``{"error": {"code", "message"}}``
  with ElizaOS's codes (``SESSION_NOT_FOUND`` 404, ``SESSION_EXPIRED`` 410,
  ``VALIDATION_ERROR`` 400, ...), plus 413 ``PAYLOAD_TOO_LARGE`` and 503
  ``SERVICE_UNAVAILABLE`` when the key-value backend cannot be reached.
- Every timestamp is **epoch milliseconds as a JSON number**, in bodies and in
  the ``before``/``after`` query parameters alike (ElizaOS's own cursors and
  query parameters are epoch milliseconds). Message timestamps keep their
  sub-millisecond part, so a ``createdAt`` passed back verbatim as a cursor is
  exact: pages never overlap and never skip a message. Durations
  (``timeRemaining``) are whole milliseconds; timeouts are minutes.
- No body carries a top-level ``success`` key: ElizaOS's api-client reads one
  as its ``{success, data}`` envelope and would return ``data`` (absent).

Routes (see docs/sessions-http.md for the reference and curl examples):

==========  ===========================================  ================================
method      path                                         answer
==========  ===========================================  ================================
POST        /api/messaging/sessions                      201 session
GET         /api/messaging/sessions                      200 ``{sessions, total}``
GET         /api/messaging/sessions/health               200/503 ElizaOS health shape
GET         /api/messaging/sessions/{id}                 200 session
DELETE      /api/messaging/sessions/{id}                 204
POST        /api/messaging/sessions/{id}/messages        201 user message and agent reply
GET         /api/messaging/sessions/{id}/messages        200 ``{messages, hasMore, cursors}``
POST        /api/messaging/sessions/{id}/renew           200 session
POST        /api/messaging/sessions/{id}/heartbeat       200 session
GET         /health                                      200/503 backend reachability
GET         /metrics                                     200 store metrics (JSON/Prometheus)
==========  ===========================================  ================================
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from kvstore import BackendUnavailableError, KVStoreError, StoreClosedError, StoreMetrics

from .agent import AgentRuntime
from .messages import Message
from .plugins import RuntimeStateError
from .sessions import (
    InvalidSessionInputError,
    Session,
    SessionError,
    SessionExpiredError,
    SessionManager,
    SessionNotFoundError,
    SessionRenewalError,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BODY_BYTES",
    "HEALTH_STORE",
    "APIError",
    "backend_name",
    "create_app",
    "cursor_after",
    "cursor_before",
    "message_json",
    "read_json_object",
    "session_json",
    "to_ms",
]

logger = logging.getLogger(__name__)

API_PREFIX: Final = "/api/messaging/sessions"
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
"""Largest request body accepted (1 MiB); larger ones get 413."""
DEFAULT_HEALTH_TIMEOUT: Final = 2.0
HEALTH_STORE: Final = "health"
"""The store ``/health`` reads from, so probes never skew the sessions store's metrics."""
_DEFAULT_PAGE: Final = 50
_RETRY_AFTER_SECONDS: Final = "1"
# ElizaOS's transports: "http" answers with the reply, "sse" and "websocket"
# stream it. This server always answers with the reply, so each is served as "http".
_TRANSPORTS: Final = frozenset({"http", "sse", "websocket"})
_LEGACY_MODES: Final = frozenset({"sync", "stream", "websocket"})
_DIGITS: Final = re.compile(r"[0-9]{1,9}")
_CONTENT_LENGTH: Final = re.compile(r"[0-9]{1,19}")
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TIMEOUT_FIELDS: Final = {
    "timeoutMinutes": "timeout_minutes",
    "autoRenew": "auto_renew",
    "maxDurationMinutes": "max_duration_minutes",
    "warningThresholdMinutes": "warning_threshold_minutes",
}


# -- errors ---------------------------------------------------------------------------


class APIError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with an HTTP status.

    >>> APIError(400, "VALIDATION_ERROR", "limit must be an integer").status
    400
    """

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


# First match wins: SessionRenewalError is a SessionExpiredError, and ElizaOS
# answers a refused renewal with 400, not 410.
_SESSION_ERRORS: Final[tuple[tuple[type[Exception], int, str], ...]] = (
    (SessionNotFoundError, 404, "SESSION_NOT_FOUND"),
    (SessionRenewalError, 400, "SESSION_RENEWAL_FAILED"),
    (SessionExpiredError, 410, "SESSION_EXPIRED"),
    (InvalidSessionInputError, 400, "VALIDATION_ERROR"),
)

_HTTP_CODES: Final = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
}


def _as_api_error(err: Exception) -> APIError:
    """The HTTP answer for *err*; anything unexpected becomes a logged 500."""
    if isinstance(err, APIError):
        return err
    for kind, status, code in _SESSION_ERRORS:
        if isinstance(err, kind):
            return APIError(status, code, str(err))
    if isinstance(err, BackendUnavailableError | StoreClosedError | RuntimeStateError):
        # The detail may name hosts: it goes to the log, not to the client.
        logger.warning("answering 503: %s: %s", type(err).__name__, err)
        return APIError(
            503,
            "SERVICE_UNAVAILABLE",
            "the session store is unavailable right now; retry later",
            headers={"Retry-After": _RETRY_AFTER_SECONDS},
        )
    logger.error("unexpected error while handling a request", exc_info=err)
    return APIError(500, "INTERNAL_SERVER_ERROR", "an unexpected error occurred")


class _JSONResponse(Response):
    """JSON via orjson: floats in their shortest exact form, so cursors round-trip."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error_response(error: APIError) -> Response:
    return _JSONResponse(
        {"error": {"code": error.code, "message": error.message}},
        status_code=error.status,
        headers=error.headers,
    )


Endpoint = Callable[[Request], Awaitable[Response]]


def _endpoint(fn: Endpoint) -> Endpoint:
    """Answer every exception an endpoint raises with a JSON error."""

    @functools.wraps(fn)
    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as err:
            return _error_response(_as_api_error(err))

    return endpoint


def _by_method(handlers: Mapping[str, Endpoint]) -> Endpoint:
    """One endpoint calling the handler of the request's method (HEAD is served as GET)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method), as JSON errors."""
    http = cast(HTTPException, exc)
    code = _HTTP_CODES.get(http.status_code, "HTTP_ERROR")
    return _error_response(APIError(http.status_code, code, http.detail, headers=http.headers))


# -- wire format ------------------------------------------------------------------------


def to_ms(seconds: float) -> float:
    """Epoch seconds (the Python side) as epoch milliseconds (the wire).

    The exact product is kept, fraction included; see :func:`cursor_before`.

    >>> to_ms(1.5)
    1500.0
    """
    return seconds * 1000.0


def cursor_before(ms: float) -> float:
    """The ``before`` bound in seconds equivalent to *ms* on the wire.

    It is the smallest float ``s`` with ``to_ms(s) >= ms``, so for every
    message ``created_at < s`` exactly when ``to_ms(created_at) < ms``: the
    exclusive cursor means the same on both sides even though the division
    by 1000 does not undo the multiplication exactly.

    >>> cursor_before(1500.0)
    1.5
    """
    seconds = ms / 1000.0
    while to_ms(seconds) < ms:
        seconds = math.nextafter(seconds, math.inf)
    while to_ms(lower := math.nextafter(seconds, -math.inf)) >= ms:
        seconds = lower
    return seconds


def cursor_after(ms: float) -> float:
    """The ``after`` bound in seconds: the largest float ``s`` with ``to_ms(s) <= ms``.

    For every message ``created_at > s`` exactly when ``to_ms(created_at) > ms``.

    >>> cursor_after(1500.0)
    1.5
    """
    seconds = ms / 1000.0
    while to_ms(seconds) > ms:
        seconds = math.nextafter(seconds, -math.inf)
    while to_ms(higher := math.nextafter(seconds, math.inf)) <= ms:
        seconds = higher
    return seconds


def session_json(session: Session) -> dict[str, Any]:
    """A session as ElizaOS's session info response, status fields included."""
    config = session.timeout_config
    last_message = session.last_message_at
    return {
        "sessionId": session.id,
        "agentId": session.agent_id,
        "userId": session.user_id,
        "createdAt": to_ms(session.created_at),
        "lastActivity": to_ms(session.last_activity),
        "expiresAt": to_ms(session.expires_at),
        "timeoutConfig": {
            "timeoutMinutes": config.timeout_minutes,
            "autoRenew": config.auto_renew,
            "maxDurationMinutes": config.max_duration_minutes,
            "warningThresholdMinutes": config.warning_threshold_minutes,
        },
        "metadata": session.metadata,
        "renewalCount": session.renewal_count,
        "messageCount": session.message_count,
        "lastMessageAt": None if last_message is None else to_ms(last_message),
        "timeRemaining": math.floor(session.time_remaining * 1000.0),
        "isNearExpiration": session.is_near_expiration,
    }


def message_json(message: Message, session: Session | None) -> dict[str, Any]:
    """A message as ElizaOS's simplified message (``authorId`` needs its *session*)."""
    author: str | None = None
    if session is not None:
        author = session.agent_id if message.role == "agent" else session.user_id
    return {
        "id": message.id,
        "sessionId": message.session_id,
        "role": message.role,
        "authorId": author,
        "isAgent": message.role == "agent",
        "content": message.content,
        "createdAt": to_ms(message.created_at),
        "metadata": message.metadata,
    }


def _status_json(session: Session) -> dict[str, Any]:
    return {
        "expiresAt": to_ms(session.expires_at),
        "renewalCount": session.renewal_count,
        # Activity renews whenever auto-renew is on (up to the max duration).
        "wasRenewed": bool(session.timeout_config.auto_renew),
        "isNearExpiration": session.is_near_expiration,
        "timeRemaining": math.floor(session.time_remaining * 1000.0),
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _metrics_json(metrics: StoreMetrics) -> dict[str, Any]:
    data = dataclasses.asdict(metrics)
    ops = data.pop("ops")
    result = {_camel(key): value for key, value in data.items()}
    # Operation names stay as the Prometheus `op` label spells them.
    result["ops"] = {
        op: {_camel(key): value for key, value in fields.items()} for op, fields in ops.items()
    }
    return result


def backend_name(service: object) -> str:
    """A short name for the backend behind a KV store service (``redis``, ``sqlite``, ...).

    >>> from kvstore import StoreService
    >>> backend_name(StoreService())
    'memory'
    """
    root = getattr(service, "backend", None)
    if isinstance(root, str):
        return root
    target = service if root is None else root
    label = getattr(target, "backend", None)
    if isinstance(label, str):
        return label
    name = type(target).__name__
    return name.removesuffix("Store").lower() if name.endswith("Store") else name


# -- request parsing -------------------------------------------------------------------------


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _invalid(message: str) -> APIError:
    return APIError(400, "VALIDATION_ERROR", message)


def _require_fields(body: Mapping[str, Any], *names: str) -> None:
    missing = [name for name in names if body.get(name) is None]
    if missing:
        raise _invalid(f"Missing required fields: {', '.join(missing)}")


def _string(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise _invalid(f"'{name}' must be a string, not {_json_type(value)}")
    return value


def _optional_object(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"'{name}' must be an object, not {_json_type(value)}")
    return value


def _timeout_config(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``timeoutConfig`` as ``SessionManager.create(timeout=...)`` takes it."""
    raw = _optional_object(body, "timeoutConfig")
    if raw is None:
        return None
    unknown = sorted(set(raw) - set(_TIMEOUT_FIELDS))
    if unknown:
        raise _invalid(
            f"unknown timeoutConfig field(s) {unknown}; allowed: {sorted(_TIMEOUT_FIELDS)}"
        )
    config: dict[str, Any] = {}
    for wire, name in _TIMEOUT_FIELDS.items():
        value = raw.get(wire)
        if value is None:
            continue
        wanted = "boolean" if name == "auto_renew" else "number"
        if _json_type(value) != wanted:
            raise _invalid(f"timeoutConfig.{wire} must be a {wanted}, not {_json_type(value)}")
        config[name] = value
    # Range checks (minutes > 0, finite, ...) are the sessions layer's: its
    # InvalidSessionInputError becomes a 400 like every validation error.
    return config


def _query_limit(request: Request, maximum: int) -> int:
    raw = request.query_params.get("limit", "").strip()
    if not raw:
        return min(_DEFAULT_PAGE, maximum)
    if not _DIGITS.fullmatch(raw):
        raise _invalid(f"'limit' must be an integer from 1 to {maximum}, got {raw!r}")
    return int(raw)


def _query_cursor(request: Request, name: str) -> float | None:
    """An epoch-milliseconds query parameter, or None when absent or empty."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    value = float(raw) if _NUMBER.fullmatch(raw) else math.nan
    if not math.isfinite(value):
        raise _invalid(
            f"'{name}' must be a timestamp in epoch milliseconds (e.g. 1704067200000), got {raw!r}"
        )
    return value


def _too_large(limit: int) -> APIError:
    return APIError(
        413, "PAYLOAD_TOO_LARGE", f"the request body is larger than the {limit} bytes allowed"
    )


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, at most *limit* bytes.

    ``Content-Length`` is checked first, and the size is enforced again while
    the body streams in, since a client may lie or send it chunked. The body
    is parsed as JSON whatever ``Content-Type`` says (``curl -d`` sends a
    form type by default).

    Raises:
        APIError: 413 when the body is too large, 400 when it is not a JSON object.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _CONTENT_LENGTH.fullmatch(declared.strip()):
            raise APIError(400, "BAD_REQUEST", f"invalid Content-Length header {declared!r}")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise APIError(400, "BAD_REQUEST", "the client disconnected while sending") from None
    body = b"".join(chunks)
    if not body.strip():
        raise APIError(400, "INVALID_JSON", "the request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise APIError(400, "INVALID_JSON", f"the request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise _invalid(f"the request body must be a JSON object, not {_json_type(data)}")
    return data


# -- the endpoints -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Probe:
    reachable: bool
    latency_ms: float
    error: str | None = None


class _SessionsAPI:
    """The endpoints, bound to one runtime (and optionally another session manager)."""

    def __init__(
        self,
        runtime: AgentRuntime,
        *,
        sessions: SessionManager | None,
        max_body_bytes: int,
        health_timeout: float,
    ) -> None:
        self.runtime = runtime
        self._sessions = sessions
        self.max_body_bytes = max_body_bytes
        self.health_timeout = health_timeout
        self.started = time.monotonic()
        self._registry: CollectorRegistry | None = None

    @property
    def sessions(self) -> SessionManager:
        """The manager served: the one given to :func:`create_app`, else ``runtime.sessions``."""
        return self._sessions if self._sessions is not None else self.runtime.sessions

    def routes(self) -> list[Route]:
        """One route per path, so that a 405 lists every method the path allows."""
        one = f"{API_PREFIX}/{{session_id}}"
        table: dict[str, dict[str, Endpoint]] = {
            "/health": {"GET": self.health},
            "/metrics": {"GET": self.metrics},
            API_PREFIX: {"GET": self.list_sessions, "POST": self.create_session},
            # Before {session_id}, which would otherwise take "health" for an id.
            f"{API_PREFIX}/health": {"GET": self.sessions_health},
            one: {"GET": self.get_session, "DELETE": self.delete_session},
            f"{one}/messages": {"GET": self.get_messages, "POST": self.send_message},
            f"{one}/renew": {"POST": self.renew},
            f"{one}/heartbeat": {"POST": self.heartbeat},
        }
        return [
            Route(path, _endpoint(_by_method(handlers)), methods=list(handlers))
            for path, handlers in table.items()
        ]

    # -- sessions ------------------------------------------------------------------------------

    async def create_session(self, request: Request) -> Response:
        """POST /api/messaging/sessions: open a session with this server's agent."""
        body = await read_json_object(request, self.max_body_bytes)
        _require_fields(body, "agentId", "userId")
        agent_id = _string(body, "agentId")
        user_id = _string(body, "userId")
        metadata = _optional_object(body, "metadata")
        timeout = _timeout_config(body)
        if agent_id != self.runtime.agent_id:
            # One server serves one agent; ElizaOS answers an unknown agent the same way.
            raise APIError(404, "AGENT_NOT_FOUND", f"Agent with ID '{agent_id}' not found")
        session = await self.sessions.create(
            agent_id=agent_id, user_id=user_id, metadata=metadata, timeout=timeout
        )
        return _JSONResponse(
            session_json(session),
            status_code=201,
            headers={"Location": f"{API_PREFIX}/{session.id}"},
        )

    async def list_sessions(self, request: Request) -> Response:
        """GET /api/messaging/sessions: live sessions, newest first (``agentId`` filters)."""
        agent_id = request.query_params.get("agentId", "").strip() or None
        sessions = await self.sessions.list(agent_id=agent_id)
        return _JSONResponse(
            {"sessions": [session_json(s) for s in sessions], "total": len(sessions)}
        )

    async def get_session(self, request: Request) -> Response:
        """GET /api/messaging/sessions/{id}: the session and its status fields."""
        session = await self.sessions.get(request.path_params["session_id"])
        return _JSONResponse(session_json(session))

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
        return _JSONResponse(session_json(session))

    async def heartbeat(self, request: Request) -> Response:
        """POST .../{id}/heartbeat: record activity (renews with auto-renew)."""
        session = await self.sessions.heartbeat(request.path_params["session_id"])
        return _JSONResponse(session_json(session))

    # -- messages -------------------------------------------------------------------------------

    async def send_message(self, request: Request) -> Response:
        """POST .../{id}/messages: store the user message, answer with the agent's reply."""
        session_id = request.path_params["session_id"]
        body = await read_json_object(request, self.max_body_bytes)
        _require_fields(body, "content")
        content = _string(body, "content")
        metadata = _optional_object(body, "metadata")
        for name, allowed in (("transport", _TRANSPORTS), ("mode", _LEGACY_MODES)):
            value = body.get(name)
            if value is not None and value not in allowed:
                raise _invalid(f"'{name}' must be one of {sorted(allowed)}, got {value!r}")
        exchange = await self.sessions.exchange(session_id, content, metadata=metadata)
        session: Session | None
        try:
            session = await self.sessions.get(session_id)
        except SessionError:
            # Ended or expired in the instant after this exchange: both
            # messages are stored, there is just no status to report.
            session = None
        return _JSONResponse(
            {
                "userMessage": message_json(exchange.user, session),
                "agentMessage": message_json(exchange.reply, session),
                "agentResponse": {"text": exchange.reply.content},
                "sessionStatus": None if session is None else _status_json(session),
            },
            status_code=201,
        )

    async def get_messages(self, request: Request) -> Response:
        """GET .../{id}/messages: one page of history, newest first."""
        session_id = request.path_params["session_id"]
        limit = _query_limit(request, self.sessions.config.max_page_size)
        before = _query_cursor(request, "before")
        after = _query_cursor(request, "after")
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
        return _JSONResponse(body)

    # -- operations ------------------------------------------------------------------------------

    async def probe(self) -> _Probe:
        """Read one key of the ``health`` store, within ``health_timeout`` seconds."""
        start = time.perf_counter()
        try:
            with anyio.fail_after(self.health_timeout):
                await self.runtime.kv_service.get_store(HEALTH_STORE).get("probe")
        except TimeoutError:
            error = f"no answer within {self.health_timeout:g}s"
        except (KVStoreError, RuntimeStateError, ConnectionError, OSError) as err:
            logger.warning("health probe failed: %s: %s", type(err).__name__, err)
            error = type(err).__name__
        else:
            return _Probe(True, (time.perf_counter() - start) * 1000.0)
        return _Probe(False, (time.perf_counter() - start) * 1000.0, error)

    def backend_label(self) -> str:
        """The backend's short name, or "unknown" before the runtime is initialised."""
        try:
            return backend_name(self.runtime.kv_service)
        except RuntimeStateError:
            return "unknown"

    async def health(self, request: Request) -> Response:
        """GET /health: 200 when the store answers, else 503."""
        probe = await self.probe()
        store: dict[str, Any] = {
            "reachable": probe.reachable,
            "latencyMs": round(probe.latency_ms, 3),
        }
        if probe.error is not None:
            store["error"] = probe.error
        return _JSONResponse(
            {
                "status": "ok" if probe.reachable else "unavailable",
                "agentId": self.runtime.agent_id,
                "backend": self.backend_label(),
                "store": store,
            },
            status_code=200 if probe.reachable else 503,
        )

    async def sessions_health(self, request: Request) -> Response:
        """ElizaOS's ``GET /api/messaging/sessions/health`` (its api-client's checkHealth)."""
        probe = await self.probe()
        active: list[Session] = []
        if probe.reachable:
            active = await self.sessions.list(agent_id=self.runtime.agent_id)
        return _JSONResponse(
            {
                "status": "healthy" if probe.reachable else "unhealthy",
                "activeSessions": len(active),
                "expiringSoon": sum(1 for s in active if s.is_near_expiration),
                "timestamp": to_ms(time.time()),
                "uptime": time.monotonic() - self.started,
                "agentId": self.runtime.agent_id,
                "backend": self.backend_label(),
            },
            status_code=200 if probe.reachable else 503,
        )

    async def metrics(self, request: Request) -> Response:
        """GET /metrics: store metrics as JSON, or in the Prometheus text format."""
        wanted = request.query_params.get("format", "").strip().lower()
        if wanted not in ("", "json", "prometheus"):
            raise _invalid(f"'format' must be 'json' or 'prometheus', got {wanted!r}")
        accept = request.headers.get("accept", "")
        scraper = "text/plain" in accept or "openmetrics" in accept
        if wanted == "prometheus" or (not wanted and scraper):
            exposition = self._prometheus()
            if exposition is not None:
                body, content_type = exposition
                return Response(body, headers={"Content-Type": content_type})
            if wanted == "prometheus":
                raise APIError(
                    406,
                    "NOT_ACCEPTABLE",
                    "Prometheus output needs prometheus-client:"
                    " pip install 'kvstore-runtime[prometheus]'",
                )
        stores: dict[str, Any] = {}
        source = getattr(self.runtime.kv_service, "get_metrics", None)
        found = source() if callable(source) else None
        if isinstance(found, StoreMetrics):
            found = {found.name or "default": found}
        if isinstance(found, Mapping):
            stores = {
                str(name): _metrics_json(metrics)
                for name, metrics in found.items()
                if isinstance(metrics, StoreMetrics)
            }
        return _JSONResponse(
            {
                "agentId": self.runtime.agent_id,
                "backend": self.backend_label(),
                "available": callable(source),
                "stores": stores,
            }
        )

    def _prometheus(self) -> tuple[bytes, str] | None:
        """The Prometheus text exposition, or None without prometheus-client."""
        try:
            from kvstore import prometheus
        except ImportError:
            return None
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
            service = self.runtime.kv_service
            if callable(getattr(service, "get_metrics", None)):
                prometheus.register_prometheus(cast("prometheus.MetricsSource", service), registry)
            self._registry = registry
        return prometheus.exposition(self._registry), prometheus.CONTENT_TYPE


# -- the application -----------------------------------------------------------------------------


def create_app(
    runtime: AgentRuntime | None = None,
    *,
    sessions: SessionManager | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
    sweep: bool = True,
) -> Starlette:
    """The Sessions HTTP API of *runtime*, as a Starlette ASGI application.

    The application owns the runtime: its lifespan (run by uvicorn) awaits
    ``runtime.initialize()``, runs the session sweeper (``async with
    sessions.running()``) while serving, and closes the runtime on shutdown.
    Servers that do not run the lifespan (``httpx.ASGITransport`` in tests)
    need the runtime initialised by the caller.

    Args:
        runtime: the agent served; default ``AgentRuntime()``, which keeps its
            state where ``KV_STORE_BACKEND`` and friends say (memory if unset).
        sessions: the session manager to serve instead of ``runtime.sessions``
            (e.g. one built with a test clock or an ``on_expired`` hook).
        max_body_bytes: largest request body accepted; larger ones get 413.
        health_timeout: seconds ``/health`` waits for the store.
        sweep: run the expired-session sweeper during the lifespan.

    >>> app = create_app(AgentRuntime(agent_id="agent-1"))
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
        raise TypeError(f"max_body_bytes must be an int, not {type(max_body_bytes).__name__}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    if not 0 < health_timeout < math.inf:
        raise ValueError(
            f"health_timeout must be a finite number of seconds > 0, got {health_timeout}"
        )
    served = AgentRuntime() if runtime is None else runtime
    api = _SessionsAPI(
        served, sessions=sessions, max_body_bytes=max_body_bytes, health_timeout=health_timeout
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await served.initialize()
        try:
            probe = await api.probe()
            logger.info(
                "serving agent %s, sessions on the %s backend", served.agent_id, api.backend_label()
            )
            if not probe.reachable:
                logger.warning(
                    "the %s backend is unreachable (%s): answering 503 until it is back",
                    api.backend_label(),
                    probe.error,
                )
            if sweep:
                async with api.sessions.running():
                    yield
            else:
                yield
        finally:
            await served.aclose()

    app = Starlette(
        routes=api.routes(),
        exception_handlers={HTTPException: _http_exception},
        lifespan=lifespan,
    )
    app.state.runtime = served
    return app
