"""The OpenAPI 3.1 document of the served routes, at ``GET /openapi.json``.

The document is generated from the application's own route table, so a route
that is served is described and a route that is not is left out: each served
``(method, path)`` takes its operation from :data:`OPERATIONS`, and one without
an entry is described as undocumented (the test suite fails on that, and on a
committed ``docs/openapi.json`` that differs from what is served). Schemas are
JSON Schema 2020-12, OpenAPI 3.1's dialect, written for the bodies
:mod:`.wire` builds.

Why not Starlette's ``SchemaGenerator``: it reads YAML from docstrings and
targets OpenAPI 3.0; the route modules' docstrings are prose. Why not pydantic
models: the wire format is built as dicts, byte-compatible with ElizaOS, and a
second description of it as models would be the same length as the schemas here.

Regenerate the committed copy with ``python -m runtime openapi docs/openapi.json``.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .agents import DEFAULT_AGENT_ID
from .context import API_PREFIX, RouteTable
from .parsing import DEFAULT_PAGE, MAX_CONTENT_CHARS, MAX_METADATA_CHARS
from .sessions import MAX_LIST_OFFSET

__all__ = [
    "OPENAPI_PATH",
    "OPERATIONS",
    "SCHEMAS",
    "OpenAPIRoutes",
    "Operation",
    "documented_path",
    "openapi_document",
    "render",
]

OPENAPI_PATH: Final = "/openapi.json"
"""Where the document is served."""

_SESSION: Final = f"{API_PREFIX}/{{sessionId}}"
try:
    _VERSION = importlib.metadata.version("kvstore-runtime")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
    _VERSION = "unknown"
_REF: Final = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


_TIME: Final = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC, ms"}
_EPOCH_MS: Final = {"type": "integer", "description": "epoch milliseconds"}
_ID: Final = {"type": "string"}
_UUID: Final = {"type": "string", "format": "uuid"}
_OBJECT: Final = {"type": "object"}

_TIMEOUT_CONFIG: Final = {
    "type": "object",
    "required": ["timeoutMinutes", "autoRenew", "maxDurationMinutes", "warningThresholdMinutes"],
    "properties": {
        "timeoutMinutes": {"type": "number"},
        "autoRenew": {"type": "boolean"},
        "maxDurationMinutes": {"type": "number"},
        "warningThresholdMinutes": {"type": "number"},
    },
}
_CREATED_FIELDS: Final = {
    "sessionId": _ID,
    "channelId": _ID,
    "agentId": _ID,
    "userId": _ID,
    "createdAt": _TIME,
    "metadata": _OBJECT,
    "expiresAt": _TIME,
    "timeoutConfig": _ref("TimeoutConfig"),
}
_INFO_FIELDS: Final = {
    **_CREATED_FIELDS,
    "lastActivity": _TIME,
    "renewalCount": {"type": "integer", "minimum": 0},
    "timeRemaining": {"type": "integer", "description": "milliseconds until expiry"},
    "isNearExpiration": {"type": "boolean"},
}
_HEALTH_FIELDS: Final = {
    "status": {"enum": ["OK", "UNAVAILABLE"]},
    "version": {"type": "string"},
    "timestamp": _TIME,
    "dependencies": {
        "type": "object",
        "required": ["agents", "store"],
        "properties": {"agents": {"type": "string"}, "store": {"type": "string"}},
    },
}


def _strict(properties: dict[str, Any], optional: Sequence[str] = ()) -> dict[str, Any]:
    """An object with exactly *properties* (those in *optional* may be absent)."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
    }


def _failure_shape() -> dict[str, Any]:
    return _strict(
        {
            "success": {"const": False},
            "error": _strict({"code": {"type": "string"}, "message": {"type": "string"}}),
        }
    )


SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "description": "Every error this server answers itself: ElizaOS's Sessions error shape.",
        **_strict(
            {
                "error": _strict(
                    {
                        "code": {"type": "string", "examples": ["SESSION_NOT_FOUND"]},
                        "message": {"type": "string"},
                        "timestamp": _TIME,
                        "details": _OBJECT,
                    },
                    optional=["details"],
                )
            }
        ),
    },
    "Unauthorized": {
        "description": "ElizaOS's 401 body, byte for byte (ELIZA_SERVER_AUTH_TOKEN set).",
        **_strict({"error": {"const": "API key required"}, "message": {"type": "string"}}),
    },
    "RateLimited": {
        "description": "ElizaOS's 429 body (HTTP_RATE_LIMIT).",
        **_failure_shape(),
    },
    "Failure": {"description": "ElizaOS's discovery error shape.", **_failure_shape()},
    "TimeoutConfig": _TIMEOUT_CONFIG,
    "CreateSessionRequest": {
        "type": "object",
        "required": ["agentId", "userId"],
        "properties": {
            "agentId": {
                **_UUID,
                "description": "must be this server's agent",
                "examples": [DEFAULT_AGENT_ID],
            },
            "userId": _UUID,
            "metadata": {
                "type": ["object", "null"],
                "description": f"at most {MAX_METADATA_CHARS} characters of JSON, 32 levels deep",
            },
            "timeoutConfig": {
                "description": "read as ElizaOS reads it: numbers (or numeric strings) are"
                " clamped to the SESSION_* settings, anything else takes the default, and"
                " anything but an object is ignored",
                "properties": {
                    "timeoutMinutes": {"description": "minutes, a number"},
                    "autoRenew": {"description": "a boolean (others read as truthy or not)"},
                    "maxDurationMinutes": {"description": "minutes, a number"},
                    "warningThresholdMinutes": {"description": "minutes, a number"},
                },
            },
        },
    },
    "CreatedSession": _strict(_CREATED_FIELDS),
    "SessionInfo": _strict(_INFO_FIELDS),
    "SessionList": _strict(
        {
            "sessions": {"type": "array", "items": _ref("SessionInfo"), "maxItems": 1000},
            "total": {"type": "integer", "minimum": 0, "description": "every live session"},
            "stats": _strict(
                {
                    "totalSessions": {"type": "integer", "minimum": 0},
                    "activeSessions": {"type": "integer", "minimum": 0},
                    "expiredSessions": {"type": "integer", "minimum": 0},
                }
            ),
        }
    ),
    "Deleted": _strict({"success": {"const": True}, "message": {"type": "string"}}),
    "SendMessageRequest": {
        "type": "object",
        "required": ["content"],
        "properties": {
            "content": {"type": "string", "minLength": 1, "maxLength": MAX_CONTENT_CHARS},
            "metadata": {"type": ["object", "null"]},
            "transport": {"enum": ["http", "sse", "websocket", "sync", "stream"]},
            "mode": {
                "enum": ["http", "sse", "websocket", "sync", "stream"],
                "description": "legacy name of transport",
            },
        },
    },
    "SendMessageResponse": _strict(
        {
            "success": {"const": True},
            "userMessage": _strict(
                {
                    "id": _ID,
                    "channel_id": _ID,
                    "message_server_id": _ID,
                    "author_id": _ID,
                    "content": {"type": "string"},
                    "created_at": _EPOCH_MS,
                    "source_type": {"type": "string"},
                    "raw_message": _strict({"content": {"type": "string"}}),
                    "metadata": _OBJECT,
                }
            ),
            "agentResponse": _strict(
                {
                    "thought": {"type": "string"},
                    "actions": {"type": "array"},
                    "providers": {"type": "array"},
                    "text": {"type": "string"},
                    "simple": {"type": "boolean"},
                    "responseId": _ID,
                    "inReplyTo": _ID,
                }
            ),
            "sessionStatus": _strict(
                {
                    "expiresAt": _TIME,
                    "renewalCount": {"type": "integer", "minimum": 0},
                    "wasRenewed": {"type": "boolean"},
                    "isNearExpiration": {"type": "boolean"},
                }
            ),
        },
        # The websocket transport (the default) answers before the reply exists.
        optional=["agentResponse"],
    ),
    "History": _strict(
        {
            "messages": {
                "type": "array",
                "items": _strict(
                    {
                        "id": _ID,
                        "content": {"type": "string"},
                        "authorId": _ID,
                        "isAgent": {"type": "boolean"},
                        "createdAt": _TIME,
                        "metadata": _OBJECT,
                    }
                ),
            },
            "hasMore": {"type": "boolean"},
            "cursors": _strict({"before": _EPOCH_MS, "after": _EPOCH_MS}),
        },
        optional=["cursors"],
    ),
    "Health": _strict({**_HEALTH_FIELDS, "agentCount": {"type": "integer"}}),
    "ServerHealth": _strict(_HEALTH_FIELDS),
    "SessionsHealth": _strict(
        {
            "status": {"enum": ["healthy", "unhealthy"]},
            "activeSessions": {"type": "integer", "minimum": 0},
            "expiringSoon": {"type": "integer", "minimum": 0},
            "timestamp": _TIME,
            "uptime": {"type": "number", "description": "seconds"},
        }
    ),
    "Metrics": _strict(
        {
            "agentId": _ID,
            "backend": {"type": "string"},
            "available": {"type": "boolean"},
            "stores": {"type": "object", "additionalProperties": _OBJECT},
        }
    ),
    "AgentSummary": _strict(
        {
            "id": _ID,
            "name": {"type": "string"},
            "characterName": {"type": "string"},
            "bio": {"type": "string"},
            "status": {"type": "string"},
        }
    ),
    "AgentList": _strict(
        {
            "success": {"const": True},
            "data": _strict({"agents": {"type": "array", "items": _ref("AgentSummary")}}),
        }
    ),
    "Agent": _strict({"success": {"const": True}, "data": _OBJECT}),
    "Pong": _strict({"pong": {"const": True}, "timestamp": _EPOCH_MS}),
    "OpenAPI": {"type": "object", "required": ["openapi", "paths"]},
}
"""``components.schemas``: every body the server sends or reads."""


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("Error")}


_RETRY_AFTER: Final = {"Retry-After": {"schema": {"type": "string"}}}

_COMMON: Final[dict[str, Any]] = {
    "400": _error("BAD_REQUEST (malformed request), INVALID_HOST (HTTP_ALLOWED_HOSTS)"),
    "408": _error("REQUEST_TIMEOUT: headers and body did not arrive in HTTP_REQUEST_TIMEOUT"),
    "500": _error("INTERNAL_SERVER_ERROR: logged, no details"),
}
_API: Final[dict[str, Any]] = {
    "401": {
        "description": "missing or wrong X-API-KEY (when ELIZA_SERVER_AUTH_TOKEN is set)",
        "content": _json("Unauthorized"),
    },
    "429": {
        "description": "RATE_LIMIT_EXCEEDED (HTTP_RATE_LIMIT)",
        "headers": _RETRY_AFTER,
        "content": _json("RateLimited"),
    },
}
_STORE: Final[dict[str, Any]] = {
    "503": {
        "description": "SERVICE_UNAVAILABLE: the store cannot answer now; retry",
        "headers": _RETRY_AFTER,
        "content": _json("Error"),
    },
}
_BODY_ERRORS: Final[dict[str, Any]] = {
    "400": _error(
        "INVALID_CONTENT_TYPE (not application/json), INVALID_JSON, VALIDATION_ERROR,"
        " BAD_REQUEST, INVALID_HOST"
    ),
    "413": _error("PAYLOAD_TOO_LARGE: body above --max-body-bytes"),
}
_SESSION_GONE: Final[dict[str, Any]] = {
    "404": _error("SESSION_NOT_FOUND"),
    "410": _error("SESSION_EXPIRED: found expired, then deleted (404 next)"),
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the document (what OpenAPI calls an operation object, minus boilerplate).

    Attributes:
        operation_id: a unique name (the api-client's where it has one).
        summary: one line.
        responses: ``{status: response object}`` for this operation's own answers;
            the common errors (400, 408, 500; 401 and 429 under ``/api``) are added.
        tag: the group it is listed under.
        body: the request body's schema name, if it takes one.
        parameters: query and path parameter objects.
        description: more prose, if any.
    """

    operation_id: str
    summary: str
    responses: dict[str, Any]
    tag: str
    body: str | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_SESSION_ID: Final = _path("sessionId", _UUID)
_UUID_PATTERN: Final = (
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# ElizaOS reads cursors with parseInt (leading digits, the rest ignored): the
# schema says what is meant, the description how it is read.
_CURSOR: Final = {
    "anyOf": [
        {"type": "string", "pattern": "^[0-9]{1,15}$"},
        {"type": "string", "format": "date-time"},
    ],
    "examples": ["1704067260000", "2024-01-01T00:01:00Z"],
}


def _ok(description: str, schema: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": _json(schema)}}


OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("POST", API_PREFIX): Operation(
        "createSession",
        "Open a session with this server's agent",
        {
            **_ok("the session; Location names it", "CreatedSession", "201"),
            **_BODY_ERRORS,
            "404": _error("AGENT_NOT_FOUND: agentId is not this server's agent"),
            **_STORE,
        },
        "sessions",
        body="CreateSessionRequest",
    ),
    ("GET", API_PREFIX): Operation(
        "listSessions",
        "Live sessions, newest first, one page",
        {
            **_ok("a page of sessions; total counts them all", "SessionList"),
            "400": _error("VALIDATION_ERROR: limit or offset out of range; INVALID_HOST"),
            **_STORE,
        },
        "sessions",
        parameters=[
            _query("agentId", {"type": "string"}, "only this agent's sessions"),
            _query(
                "limit",
                {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1000},
                "sessions in the answer (a difference from ElizaOS, which answers all)",
            ),
            _query(
                "offset",
                {"type": "integer", "minimum": 0, "maximum": MAX_LIST_OFFSET, "default": 0},
                "how many of the newest to skip",
            ),
        ],
    ),
    ("GET", _SESSION): Operation(
        "getSession",
        "A session and its status fields",
        {**_ok("the session", "SessionInfo"), **_SESSION_GONE, **_STORE},
        "sessions",
        parameters=[_SESSION_ID],
    ),
    ("DELETE", _SESSION): Operation(
        "deleteSession",
        "End a session and drop its messages",
        {**_ok("deleted", "Deleted"), "404": _error("SESSION_NOT_FOUND"), **_STORE},
        "sessions",
        parameters=[_SESSION_ID],
    ),
    ("POST", f"{_SESSION}/messages"): Operation(
        "sendMessage",
        "Store a user message; the agent's reply as the transport says",
        {
            **_ok(
                "the stored message and the session's status, with the reply (agentResponse)"
                " for transport http; without it for websocket (the default), whose reply is"
                " emitted to the session's Socket.IO room (docs/realtime.md)",
                "SendMessageResponse",
                "201",
            ),
            "200": {
                "description": "transport sse: events user_message, chunk..., then done"
                " (agentResponse) or error (docs/realtime.md)",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_BODY_ERRORS,
            **_SESSION_GONE,
            "409": _error("IDEMPOTENCY_KEY_IN_FLIGHT: the same Idempotency-Key is being answered"),
            "422": _error("IDEMPOTENCY_KEY_REUSED: the key was used with another body"),
            **_STORE,
        },
        "messages",
        body="SendMessageRequest",
        parameters=[
            _SESSION_ID,
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "a retry with the same key gets the first answer",
            },
        ],
    ),
    ("GET", f"{_SESSION}/messages"): Operation(
        "getMessages",
        "One page of history, newest first",
        {
            **_ok("the page", "History"),
            "400": _error("VALIDATION_ERROR: a before/after that is no time; INVALID_HOST"),
            **_SESSION_GONE,
            **_STORE,
        },
        "messages",
        parameters=[
            _SESSION_ID,
            _query(
                "limit",
                {"type": "string", "examples": [str(DEFAULT_PAGE)]},
                "messages in the page: read with parseInt and clamped to 1..100 as ElizaOS"
                f" does; absent or not a number: {DEFAULT_PAGE}",
            ),
            _query(
                "before",
                _CURSOR,
                "exclusive: epoch ms (read with parseInt) or an ISO time; 400 if neither",
            ),
            _query(
                "after",
                _CURSOR,
                "exclusive: epoch ms (read with parseInt) or an ISO time; 400 if neither",
            ),
        ],
    ),
    ("POST", f"{_SESSION}/renew"): Operation(
        "renewSession",
        "Extend by the timeout from now, up to the max duration",
        {**_ok("the session", "SessionInfo"), **_SESSION_GONE, **_STORE},
        "sessions",
        parameters=[_SESSION_ID],
    ),
    ("POST", f"{_SESSION}/heartbeat"): Operation(
        "heartbeat",
        "Record activity (renews with autoRenew)",
        {**_ok("the session", "SessionInfo"), **_SESSION_GONE, **_STORE},
        "sessions",
        parameters=[_SESSION_ID],
    ),
    ("PATCH", f"{_SESSION}/timeout"): Operation(
        "updateTimeout",
        "Change a session's timeout configuration",
        {
            **_ok("the session", "SessionInfo"),
            **_BODY_ERRORS,
            **_SESSION_GONE,
            **_STORE,
        },
        "sessions",
        body="TimeoutConfig",
        parameters=[_SESSION_ID],
    ),
    ("GET", f"{API_PREFIX}/health"): Operation(
        "checkSessionsHealth",
        "ElizaOS's sessions health (counts this agent's sessions)",
        {
            **_ok("the store answers", "SessionsHealth"),
            "503": {"description": "the store does not answer", "content": _json("SessionsHealth")},
        },
        "health",
    ),
    ("GET", "/health"): Operation(
        "health",
        "Probe for load balancers: 200 when the store answers",
        {
            **_ok("the store answers", "Health"),
            "503": {"description": "the store does not answer", "content": _json("Health")},
        },
        "health",
    ),
    ("GET", "/api/server/health"): Operation(
        "serverHealth",
        "ElizaOS's server health",
        {
            **_ok("the store answers", "ServerHealth"),
            "503": {"description": "the store does not answer", "content": _json("ServerHealth")},
        },
        "health",
    ),
    ("GET", "/metrics"): Operation(
        "metrics",
        "Store metrics, as JSON or the Prometheus text format",
        {
            "200": {
                "description": "per-store metrics",
                "content": {
                    **_json("Metrics"),
                    "text/plain": {"schema": {"type": "string"}},
                },
            },
            "400": _error("VALIDATION_ERROR: format is neither json nor prometheus"),
            "406": _error("NOT_ACCEPTABLE: prometheus-client is not installed"),
        },
        "health",
        parameters=[_query("format", {"enum": ["json", "prometheus"]}, "default: by Accept")],
    ),
    ("GET", "/api/agents"): Operation(
        "listAgents",
        "The one agent served",
        _ok("the agent list", "AgentList"),
        "agents",
    ),
    ("GET", "/api/agents/{agentId}"): Operation(
        "getAgent",
        "The agent, if it is the one served",
        {
            **_ok("the agent", "Agent"),
            "400": {"description": "INVALID_ID: not a UUID", "content": _json("Failure")},
            "404": {"description": "NOT_FOUND: another agent", "content": _json("Failure")},
        },
        "agents",
        parameters=[_path("agentId", {"type": "string", "pattern": _UUID_PATTERN})],
    ),
    ("GET", "/api/server/ping"): Operation(
        "ping", "Liveness: pong and the server's time", _ok("pong", "Pong"), "agents"
    ),
    ("GET", OPENAPI_PATH): Operation(
        "openapi", "This document", _ok("OpenAPI 3.1", "OpenAPI"), "meta"
    ),
}
"""The operation of every route ``create_app`` serves, keyed by ``(method, documented path)``."""

_PARAM: Final = re.compile(r"\{([a-z0-9_]+)(?::[^}]*)?\}")


def documented_path(path: str) -> str:
    """A Starlette path template with ElizaOS's names: ``{session_id}`` → ``{sessionId}``.

    >>> documented_path("/api/messaging/sessions/{session_id}/messages")
    '/api/messaging/sessions/{sessionId}/messages'
    """

    def camel(match: re.Match[str]) -> str:
        head, *rest = match.group(1).split("_")
        return "{" + head + "".join(part.title() for part in rest) + "}"

    return _PARAM.sub(camel, path)


def _operation(method: str, path: str, operation: Operation) -> dict[str, Any]:
    responses = {**_COMMON, **(_API if path.startswith("/api/") else {}), **operation.responses}
    result: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": dict(sorted(responses.items())),
    }
    if operation.description:
        result["description"] = operation.description
    if operation.parameters:
        result["parameters"] = operation.parameters
    if operation.body is not None:
        result["requestBody"] = {"required": True, "content": _json(operation.body)}
    if path.startswith("/api/"):
        # Optional: the key is needed only when ELIZA_SERVER_AUTH_TOKEN is set.
        result["security"] = [{}, {"apiKey": []}]
    return result


def openapi_document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of *routes* (the application's ``app.routes``).

    A served route without an entry in :data:`OPERATIONS` is described with
    ``x-undocumented: true``; entries for routes not served are left out.
    """
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        path = documented_path(route.path)
        for method in sorted(route.methods - {"HEAD"}):
            found = OPERATIONS.get((method, path))
            if found is None:
                item: dict[str, Any] = {
                    "summary": "undocumented",
                    "x-undocumented": True,
                    "responses": {"default": {"description": "undocumented"}},
                }
            else:
                item = _operation(method, path, found)
            paths.setdefault(path, {})[method.lower()] = item
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "kvstore-runtime Sessions HTTP API",
            "version": _VERSION,
            "description": "ElizaOS-compatible /api/messaging/sessions, discovery, health"
            " and metrics. See docs/sessions-http.md and docs/security.md.",
        },
        "tags": [{"name": name} for name in ("sessions", "messages", "health", "agents", "meta")],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-KEY",
                    "description": "needed when ELIZA_SERVER_AUTH_TOKEN is set",
                }
            },
        },
    }


class OpenAPIRoutes:
    """Serves the document of the application's routes at :data:`OPENAPI_PATH`."""

    def __init__(self) -> None:
        self._body = b""

    def routes(self) -> RouteTable:
        """``{path: {method: endpoint}}``."""
        return {OPENAPI_PATH: {"GET": self.openapi}}

    def describe(self, routes: Iterable[BaseRoute]) -> None:
        """Build the document of *routes* once (the app's routes, this one included)."""
        self._body = orjson.dumps(openapi_document(routes))

    async def openapi(self, request: Request) -> Response:
        """GET /openapi.json: the OpenAPI 3.1 document."""
        return Response(self._body, media_type="application/json")


def render(document: dict[str, Any]) -> str:
    """*document* as the committed file holds it: indented, keys in document order."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
