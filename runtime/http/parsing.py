"""Reading requests: the JSON body (size-limited), its fields, and query parameters.

Each check raises :class:`~runtime.errors.APIError` (400 ``VALIDATION_ERROR``
unless said otherwise) with a message naming the field as the client spelled
it. Range checks on values (minutes > 0, ...) are the sessions layer's: its
``InvalidSessionInputError`` becomes a 400 like these.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson
from starlette.requests import ClientDisconnect, Request

from ..errors import APIError
from ..sessions import SessionsConfig
from .errors import invalid, too_large
from .limits import SessionLimits

__all__ = [
    "DEFAULT_PAGE",
    "DEFAULT_TRANSPORT",
    "MAX_CONTENT_CHARS",
    "MAX_METADATA_CHARS",
    "check_message",
    "is_json_media_type",
    "json_type",
    "merge_timeout",
    "message_content",
    "metadata_field",
    "optional_object",
    "patched_timeout",
    "query_cursor",
    "query_int",
    "query_limit",
    "read_json_object",
    "require_fields",
    "send_options",
    "timeout_config",
    "uuid_field",
]

DEFAULT_PAGE: Final = 50
"""History page size when the query gives no ``limit``."""

# ElizaOS's transports ("http" answers with the reply, "sse" streams it,
# "websocket" answers at once and broadcasts it) and its legacy ``mode`` names.
_LEGACY_MODES: Final = {"sync": "http", "stream": "sse", "websocket": "websocket"}
_TRANSPORTS: Final = ("http", "sse", "websocket", "sync", "stream")
DEFAULT_TRANSPORT: Final = "websocket"
"""The transport of a send without ``transport`` (ElizaOS's default)."""
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_HEX: Final = re.compile(r"0[xX][0-9a-fA-F]+")
_LEADING_INT: Final = re.compile(r"\s*([+-]?[0-9]+)")
_STRICT_INT: Final = re.compile(r"[+-]?[0-9]{1,18}")
_ISO_START: Final = re.compile(r"\s*[0-9]{4}-[0-9]{2}")
_MAX_DATE_MS: Final = 8.64e15  # the JavaScript Date range
_CONTENT_LENGTH: Final = re.compile(r"[0-9]{1,19}")
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

MAX_CONTENT_CHARS: Final = 4000
"""ElizaOS's longest message content, in characters."""

MAX_METADATA_CHARS: Final = 10240
"""ElizaOS's largest metadata, in characters of its JSON."""


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
    """Fail unless every field in *names* is a string, naming them all as ElizaOS does."""
    if not all(isinstance(body.get(name), str) for name in names):
        raise invalid(
            f"Missing required fields: {', '.join(names)}", details={"missingFields": list(names)}
        )


def uuid_field(body: Mapping[str, Any], name: str) -> str:
    """Field *name* (a string), which must have the UUID form (any version, any case)."""
    value = str(body[name])
    if not _UUID.fullmatch(value):
        raise invalid(
            f"Invalid UUID format for field '{name}'",
            details={"providedValue": value, "expectedFormat": "UUID v4"},
        )
    return value


def optional_object(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """Field *name*: an object, or None when absent or null."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object, not {json_type(value)}")
    return value


def metadata_field(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``metadata``: an object of at most :data:`MAX_METADATA_CHARS` JSON characters."""
    metadata = optional_object(body, "metadata")
    if metadata is not None and len(orjson.dumps(metadata).decode()) > MAX_METADATA_CHARS:
        reason = f"Metadata exceeds maximum size of {MAX_METADATA_CHARS} bytes"
        raise invalid(f"Invalid metadata: {reason}", details={"reason": reason})
    return metadata


def message_content(body: Mapping[str, Any]) -> str:
    """A send body's ``content``: a string (checked before the session is looked up)."""
    content = body.get("content")
    if not isinstance(content, str):
        raise _content_error("Invalid message request format")
    return content


def check_message(content: str) -> None:
    """A send's *content* is non-empty and at most :data:`MAX_CONTENT_CHARS` characters."""
    if not content.strip():
        raise _content_error("Content cannot be empty")
    # ElizaOS counts UTF-16 code units (JavaScript's String.length).
    if len(content.encode("utf-16-le")) // 2 > MAX_CONTENT_CHARS:
        raise _content_error(f"Content exceeds maximum length of {MAX_CONTENT_CHARS} characters")


def _content_error(reason: str) -> APIError:
    return invalid(f"Invalid content: {reason}", details={"reason": reason})


def _number(value: object) -> float:
    """JavaScript's ``Number(value)`` for JSON values (NaN when it has none)."""
    if value is None or value is False:
        return 0.0
    if value is True:
        return 1.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        if _HEX.fullmatch(text):
            return float(int(text, 16))
        if _NUMBER.fullmatch(text):
            return float(text)
    return math.nan


def timeout_config(
    body: Mapping[str, Any], defaults: SessionsConfig, limits: SessionLimits
) -> dict[str, Any]:
    """ElizaOS's ``mergeTimeoutConfigs`` for create: every field clamped or defaulted.

    A non-object ``timeoutConfig`` is ignored, unknown keys are dropped,
    numbers sent as strings are read as JavaScript's ``Number`` reads them.
    """
    raw = body.get("timeoutConfig")
    if not isinstance(raw, dict):
        raw = {}
    return merge_timeout(raw, defaults, limits)


def merge_timeout(
    raw: Mapping[str, Any], defaults: SessionsConfig, limits: SessionLimits
) -> dict[str, Any]:
    """*raw* over *defaults*, clamped to *limits* (``SessionManager`` field names)."""
    timeout = defaults.default_timeout_minutes
    if "timeoutMinutes" in raw:
        value = _number(raw["timeoutMinutes"])
        timeout = limits.timeout(value) if math.isfinite(value) else limits.default_timeout
    maximum = defaults.max_duration_minutes
    if "maxDurationMinutes" in raw:
        value = _number(raw["maxDurationMinutes"])
        maximum = (
            min(max(value, timeout), 2 * limits.max_timeout)
            if math.isfinite(value)
            else limits.max_duration
        )
    warning = defaults.warning_threshold_minutes
    if "warningThresholdMinutes" in raw:
        value = _number(raw["warningThresholdMinutes"])
        warning = max(1.0, value) if math.isfinite(value) else limits.warning_threshold
    auto_renew = raw.get("autoRenew", defaults.auto_renew)
    return {
        "timeout_minutes": timeout,
        # ElizaOS stores any JSON value here; a session needs a bool.
        "auto_renew": auto_renew if isinstance(auto_renew, bool) else bool(auto_renew),
        "max_duration_minutes": maximum,
        "warning_threshold_minutes": warning,
    }


_TIMEOUT_NUMBERS: Final = ("timeoutMinutes", "maxDurationMinutes", "warningThresholdMinutes")


def patched_timeout(
    body: Mapping[str, Any], defaults: SessionsConfig, limits: SessionLimits
) -> dict[str, Any]:
    """ElizaOS's rules for ``PATCH .../timeout``: stricter than create's, then the same merge.

    The minute fields must be numbers or strings and ``autoRenew`` a boolean
    (else 400); a ``timeoutMinutes`` that is a number outside
    ``min_timeout..max_timeout`` is refused (create clamps it), one that is not
    a number takes the default. Every field not sent is reset to the server's
    default, as ElizaOS merges over its defaults, not over the session's settings.

    Raises:
        APIError: 400 ``VALIDATION_ERROR`` with ElizaOS's message.
    """
    malformed = any(
        name in body and (type(body[name]) not in (int, float, str)) for name in _TIMEOUT_NUMBERS
    ) or ("autoRenew" in body and not isinstance(body["autoRenew"], bool))
    if malformed:
        raise _timeout_error("Invalid timeout configuration format", body)
    if "timeoutMinutes" in body:
        value = _number(body["timeoutMinutes"])
        if math.isfinite(value) and not limits.min_timeout <= value <= limits.max_timeout:
            raise _timeout_error(
                f"Timeout must be between {_js_number(limits.min_timeout)}"
                f" and {_js_number(limits.max_timeout)} minutes",
                body,
            )
    return merge_timeout(body, defaults, limits)


def _timeout_error(reason: str, config: Mapping[str, Any]) -> APIError:
    return invalid(
        f"Invalid timeout configuration: {reason}",
        details={"reason": reason, "providedConfig": dict(config)},
    )


def _js_number(value: float) -> str:
    """*value* as JavaScript prints a number (``5``, ``0.5``)."""
    return str(int(value)) if value == int(value) else repr(value)


def send_options(body: Mapping[str, Any]) -> str:
    """A send body's transport (``transport``, else the legacy ``mode``), checked as ElizaOS does.

    Returns ``"http"``, ``"sse"`` or ``"websocket"``: the legacy names map as
    ElizaOS maps them (``sync`` → ``http``, ``stream`` → ``sse``), and a body
    without either gets :data:`DEFAULT_TRANSPORT`.
    """
    value = body.get("transport", body.get("mode"))
    if value is None:
        return DEFAULT_TRANSPORT
    if not isinstance(value, str):
        raise _content_error(
            f'Invalid transport type "{json_type(value)}". Transport must be a string.'
        )
    if value not in _TRANSPORTS:
        raise _content_error(
            f'Invalid transport "{value}". Must be one of: {", ".join(_TRANSPORTS)}'
        )
    return _LEGACY_MODES.get(value, value)


def query_limit(request: Request, maximum: int) -> int:
    """The ``limit`` query parameter as ElizaOS reads it: ``parseInt``, clamped to 1..*maximum*.

    Absent, empty or not a number: :data:`DEFAULT_PAGE`.
    """
    found = _LEADING_INT.match(request.query_params.get("limit", ""))
    if found is None:
        return min(DEFAULT_PAGE, maximum)
    return min(max(int(found.group(1)), 1), maximum)


def query_int(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """Query parameter *name*: a whole number from *minimum* to *maximum*; *default* when absent.

    Strict, unlike the ElizaOS-compatible :func:`query_limit`: these parameters
    are this server's own, so a value out of range is a 400 rather than a guess.
    """
    if name not in request.query_params:
        return default
    raw = request.query_params[name].strip()
    if _STRICT_INT.fullmatch(raw):
        value = int(raw)
        if minimum <= value <= maximum:
            return value
    raise invalid(
        f"'{name}' must be a whole number from {minimum} to {maximum}, got {raw!r}",
        details={"parameter": name, "minimum": minimum, "maximum": maximum},
    )


def query_cursor(request: Request, name: str) -> int | None:
    """A ``before``/``after`` cursor in whole epoch milliseconds, or None when absent or empty.

    Epoch milliseconds are read as ElizaOS reads them (``parseInt``: a
    fraction is truncated); an ISO 8601 time is parsed as a time (ElizaOS's
    ``parseInt`` reads its year: a listed difference).
    """
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    found = _LEADING_INT.match(raw)
    millis: float
    if found is not None and not _ISO_START.match(raw):
        millis = int(found.group(1))
    else:
        try:
            moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise _pagination(name, "Must be a valid timestamp") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        millis = math.floor(moment.timestamp() * 1000)
    if abs(millis) > _MAX_DATE_MS:
        raise _pagination(name, "Invalid date from timestamp")
    return int(millis)


def _pagination(name: str, reason: str) -> APIError:
    return invalid(f"Invalid pagination parameter '{name}': {reason}")
