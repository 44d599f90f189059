"""Checks of what callers hand the sessions layer; each raises :class:`InvalidSessionInputError`.

The generic number, int and bool checks are :mod:`kvstore.options`'; this
module adds what only sessions know (ids, content and metadata limits, cursors,
page sizes). A rejected call changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from kvstore import SerializationError
from kvstore.codec import JSONCodec
from kvstore.options import check_bool, check_int, check_number, check_seconds

from ..errors import ContentTooLargeError, InvalidSessionInputError, SessionNotFoundError

__all__ = [
    "MAX_METADATA_DEPTH",
    "MAX_MINUTES",
    "check_content",
    "check_cursor",
    "check_flag",
    "check_id",
    "check_limit",
    "check_metadata",
    "check_minutes",
    "check_name",
    "check_positive_int",
    "check_seconds_value",
]

MAX_MINUTES: Final = 10_000_000.0
"""~19 years: keeps every derived TTL within what backends (Redis PX) accept."""

_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_NAME_LENGTH: Final = 256
_CODEC: Final = JSONCodec()
MAX_METADATA_DEPTH: Final = 32
"""Deepest nesting of containers accepted in metadata (the dict itself is level 1).

Metadata is stored inside larger records (a session's, a message's), and JSON
encoders stop at a fixed depth (orjson: 254): without a bound well below it, a
deep enough value is accepted here and then breaks the record that holds it.
"""


def check_minutes(name: str, value: object) -> float:
    """*value* as float minutes: finite, > 0 and at most :data:`MAX_MINUTES`."""
    return check_number(
        name, value, above=0.0, maximum=MAX_MINUTES, unit="minutes", error=InvalidSessionInputError
    )


def check_seconds_value(name: str, value: object) -> float:
    """*value* as float seconds: finite and > 0."""
    return check_seconds(name, value, error=InvalidSessionInputError)


def check_positive_int(name: str, value: object) -> int:
    """*value* if it is an int >= 1 (not a bool)."""
    return check_int(name, value, minimum=1, error=InvalidSessionInputError)


def check_flag(name: str, value: object) -> bool:
    """*value* if it is a bool."""
    return check_bool(name, value, error=InvalidSessionInputError)


def check_id(session_id: object) -> str:
    """*session_id* if it has the form of an id this manager issues.

    Raises:
        InvalidSessionInputError: not a str.
        SessionNotFoundError: a str no session can have.
    """
    if not isinstance(session_id, str):
        raise InvalidSessionInputError(f"session id must be a str, not {type(session_id).__name__}")
    if not _ID_PATTERN.fullmatch(session_id):
        # Not an id this manager could have issued.
        raise SessionNotFoundError(session_id)
    return session_id


def check_name(what: str, value: object) -> str:
    """An agent or user id: a str of 1 to 256 characters without NUL."""
    if not isinstance(value, str):
        raise InvalidSessionInputError(f"{what} must be a str, not {type(value).__name__}")
    if not value or len(value) > _MAX_NAME_LENGTH or "\x00" in value:
        raise InvalidSessionInputError(
            f"{what} must be 1 to {_MAX_NAME_LENGTH} characters without NUL, got {value!r}"
        )
    return value


def check_content(content: object, max_bytes: int) -> str:
    """Message text: a str, not blank, valid Unicode, at most *max_bytes* in UTF-8."""
    if not isinstance(content, str):
        raise InvalidSessionInputError(
            f"message content must be a str, not {type(content).__name__}"
        )
    if not content.strip():
        raise InvalidSessionInputError("message content must not be empty or only whitespace")
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise InvalidSessionInputError(f"message content is not valid text: {err}") from err
    if size > max_bytes:
        raise ContentTooLargeError(
            f"message content is {size} bytes (UTF-8); at most"
            f" {max_bytes} are allowed (max_content_bytes)"
        )
    return content


def check_metadata(metadata: object, what: str, max_bytes: int) -> dict[str, Any]:
    """A JSON-compatible dict of at most *max_bytes* as JSON, copied; ``{}`` for None."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidSessionInputError(f"{what} must be a dict, not {type(metadata).__name__}")
    data = dict(metadata)
    if _depth(data) > MAX_METADATA_DEPTH:
        raise InvalidSessionInputError(
            f"{what} is nested more than {MAX_METADATA_DEPTH} levels deep"
        )
    try:
        encoded = _CODEC.encode(data)
    except SerializationError as err:
        raise InvalidSessionInputError(f"{what} must be JSON-compatible: {err}") from err
    if len(encoded) > max_bytes:
        raise ContentTooLargeError(
            f"{what} is {len(encoded)} bytes as JSON; at most {max_bytes}"
            " are allowed (max_metadata_bytes)"
        )
    # A decoded copy: later changes to the caller's dict do not leak in.
    copy: dict[str, Any] = _CODEC.decode(encoded)
    return copy


def _depth(value: object) -> int:
    """Nesting depth of dicts and lists in *value*, without recursion (bounded by the limit)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_cursor(name: str, value: object) -> float | None:
    """A ``before``/``after`` bound: None, or a finite timestamp in seconds."""
    if value is None:
        return None
    return check_number(name, value, unit="seconds (a timestamp)", error=InvalidSessionInputError)


def check_limit(limit: object, max_page: int) -> int:
    """A history page size: an int from 1 to *max_page* (``max_page_size``)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_page:
        raise InvalidSessionInputError(
            f"limit must be an int from 1 to {max_page} (max_page_size), got {limit!r}"
        )
    return limit
