"""Reading requests: the JSON body (size-limited), its fields, and query parameters.

Each check raises :class:`~runtime.errors.APIError` (400 ``VALIDATION_ERROR``
unless said otherwise) with a message naming the field as the client spelled
it. Range checks on values (minutes > 0, ...) are the sessions layer's: its
``InvalidSessionInputError`` becomes a 400 like these.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson
from starlette.requests import ClientDisconnect, Request

from ..errors import APIError
from .errors import invalid, too_large

__all__ = [
    "DEFAULT_PAGE",
    "is_json_media_type",
    "json_type",
    "optional_object",
    "query_cursor",
    "query_limit",
    "read_json_object",
    "require_fields",
    "send_options",
    "string",
    "timeout_config",
]

DEFAULT_PAGE: Final = 50
"""History page size when the query gives no ``limit``."""

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


def json_type(value: object) -> str:
    """The JSON name of *value*'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def is_json_media_type(content_type: str | None) -> bool:
    """True for ``application/json``, with or without parameters such as ``charset``."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, at most *limit* bytes.

    A body must be sent as ``application/json`` (400 ``INVALID_CONTENT_TYPE``
    otherwise, as ElizaOS answers): a cross-site form or ``text/plain`` POST,
    which a browser sends without asking first, is refused before anything is
    read. ``Content-Length`` is checked next, and the size is enforced again
    while the body streams in, since a client may lie or send it chunked.

    Raises:
        APIError: 400 for another Content-Type, 413 when the body is too large,
            400 when it is not a JSON object.
    """
    declared = request.headers.get("content-length")
    if not (declared is not None and declared.strip() == "0") and not is_json_media_type(
        request.headers.get("content-type")
    ):
        raise APIError(400, "INVALID_CONTENT_TYPE", "Invalid or missing Content-Type header")
    if declared is not None:
        if not _CONTENT_LENGTH.fullmatch(declared.strip()):
            raise APIError(400, "BAD_REQUEST", f"invalid Content-Length header {declared!r}")
        if int(declared) > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
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
        raise invalid(f"the request body must be a JSON object, not {json_type(data)}")
    return data


def require_fields(body: Mapping[str, Any], *names: str) -> None:
    """Fail unless every field in *names* is present and not null."""
    missing = [name for name in names if body.get(name) is None]
    if missing:
        raise invalid(f"Missing required fields: {', '.join(missing)}")


def string(body: Mapping[str, Any], name: str) -> str:
    """Field *name* (present), which must be a string."""
    value = body[name]
    if not isinstance(value, str):
        raise invalid(f"'{name}' must be a string, not {json_type(value)}")
    return value


def optional_object(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """Field *name*: an object, or None when absent or null."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object, not {json_type(value)}")
    return value


def timeout_config(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``timeoutConfig`` as ``SessionManager.create(timeout=...)`` takes it."""
    raw = optional_object(body, "timeoutConfig")
    if raw is None:
        return None
    unknown = sorted(set(raw) - set(_TIMEOUT_FIELDS))
    if unknown:
        raise invalid(
            f"unknown timeoutConfig field(s) {unknown}; allowed: {sorted(_TIMEOUT_FIELDS)}"
        )
    config: dict[str, Any] = {}
    for wire, name in _TIMEOUT_FIELDS.items():
        value = raw.get(wire)
        if value is None:
            continue
        wanted = "boolean" if name == "auto_renew" else "number"
        if json_type(value) != wanted:
            raise invalid(f"timeoutConfig.{wire} must be a {wanted}, not {json_type(value)}")
        config[name] = value
    return config


def send_options(body: Mapping[str, Any]) -> None:
    """Check a send-message body's ``transport`` and legacy ``mode`` (all answered as http)."""
    for name, allowed in (("transport", _TRANSPORTS), ("mode", _LEGACY_MODES)):
        value = body.get(name)
        if value is not None and value not in allowed:
            raise invalid(f"'{name}' must be one of {sorted(allowed)}, got {value!r}")


def query_limit(request: Request, maximum: int) -> int:
    """The ``limit`` query parameter: :data:`DEFAULT_PAGE` (capped by *maximum*) when absent.

    Its range is the sessions layer's to check, against the same *maximum*.
    """
    raw = request.query_params.get("limit", "").strip()
    if not raw:
        return min(DEFAULT_PAGE, maximum)
    if not _DIGITS.fullmatch(raw):
        raise invalid(f"'limit' must be an integer from 1 to {maximum}, got {raw!r}")
    return int(raw)


def query_cursor(request: Request, name: str) -> float | None:
    """An epoch-milliseconds query parameter, or None when absent or empty."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    value = float(raw) if _NUMBER.fullmatch(raw) else math.nan
    if not math.isfinite(value):
        raise invalid(
            f"'{name}' must be a timestamp in epoch milliseconds (e.g. 1704067200000), got {raw!r}"
        )
    return value
