"""Error answers: the JSON error body and which exception gets which status.

Every error is ``{"error": {"code", "message", "timestamp", "details"?}}``
as ElizaOS's Sessions router sends it, with its codes and messages
(``SESSION_NOT_FOUND`` 404, ``SESSION_EXPIRED`` 410, ``VALIDATION_ERROR`` 400,
...) but never its ``stack`` (a deliberate difference), plus 413
``PAYLOAD_TOO_LARGE`` and 503 ``SERVICE_UNAVAILABLE`` (with ``Retry-After``)
when the key-value backend cannot be reached or an update lost every conflict
retry (``UpdateConflictError``). Anything
unexpected is logged and answered 500 without its details: never a stack trace.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from kvstore import BackendUnavailableError, StoreClosedError, UpdateConflictError

from ..errors import (
    APIError,
    ExchangeNotStoredError,
    IdempotencyInFlightError,
    IdempotencyKeyReusedError,
    InvalidSessionInputError,
    RuntimeStateError,
    SessionExpiredError,
    SessionNotFoundError,
)
from .context import Endpoint
from .wire import JSONResponse, iso, now_iso

__all__ = [
    "APIError",
    "as_api_error",
    "error_body",
    "error_response",
    "guarded",
    "http_exception",
    "invalid",
    "too_large",
]

logger = logging.getLogger(__name__)

_RETRY_AFTER_SECONDS: Final = "1"

# A session past its maximum duration has expired: ElizaOS answers 410 (its
# SESSION_RENEWAL_FAILED is unreachable over HTTP), so SessionRenewalError,
# a SessionExpiredError, needs no entry of its own.
_SESSION_ERRORS: Final[tuple[tuple[type[Exception], int, str], ...]] = (
    (InvalidSessionInputError, 400, "VALIDATION_ERROR"),
    # The IETF Idempotency-Key draft's statuses.
    (IdempotencyKeyReusedError, 422, "IDEMPOTENCY_KEY_REUSED"),
    (IdempotencyInFlightError, 409, "IDEMPOTENCY_KEY_IN_FLIGHT"),
)

# Errors meaning "the store cannot answer now": the client should retry. An
# update that lost every conflict retry stored nothing, so a retry is safe too.
_UNAVAILABLE: Final = (
    BackendUnavailableError,
    UpdateConflictError,
    StoreClosedError,
    RuntimeStateError,
    ExchangeNotStoredError,
)

_HTTP_CODES: Final = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
}


def invalid(message: str, *, details: Mapping[str, Any] | None = None) -> APIError:
    """A 400 ``VALIDATION_ERROR``, with ElizaOS's ``details`` where it sends them."""
    return APIError(400, "VALIDATION_ERROR", message, details=details)


def too_large(limit: int) -> APIError:
    """A 413 for a body above *limit* bytes."""
    return APIError(
        413, "PAYLOAD_TOO_LARGE", f"the request body is larger than the {limit} bytes allowed"
    )


def as_api_error(err: Exception) -> APIError:
    """The HTTP answer for *err*; anything unexpected becomes a logged 500."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, SessionNotFoundError):
        return APIError(404, "SESSION_NOT_FOUND", f"Session with ID '{err.session_id}' not found")
    if isinstance(err, SessionExpiredError):
        return APIError(
            410,
            "SESSION_EXPIRED",
            f"Session '{err.session_id}' expired at {iso(err.expired_at)}",
        )
    for kind, status, code in _SESSION_ERRORS:
        if isinstance(err, kind):
            return APIError(status, code, str(err))
    if isinstance(err, _UNAVAILABLE):
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


def error_response(error: APIError) -> Response:
    """*error* as its JSON response."""
    body: dict[str, Any] = {"code": error.code, "message": error.message, "timestamp": now_iso()}
    if error.details is not None:
        body["details"] = error.details
    return JSONResponse(
        {"error": body},
        status_code=error.status,
        headers=error.headers,
    )


def error_body(code: str, message: str) -> bytes:
    """The JSON error body as bytes, for answers sent below Starlette (middleware, protocol)."""
    return orjson.dumps({"error": {"code": code, "message": message, "timestamp": now_iso()}})


async def send_json(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer a raw ASGI request with a JSON *body* (for middleware that answers itself)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def guarded(fn: Endpoint) -> Endpoint:
    """*fn*, answering every exception it raises with a JSON error."""

    @functools.wraps(fn)
    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as err:
            return error_response(as_api_error(err))

    return endpoint


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method), as JSON errors."""
    http = cast(HTTPException, exc)
    code = _HTTP_CODES.get(http.status_code, "HTTP_ERROR")
    return error_response(APIError(http.status_code, code, http.detail, headers=http.headers))
