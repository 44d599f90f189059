"""Value codec and input validation shared by every backend.

Values are encoded to JSON bytes with :mod:`orjson`. Encoding is also how stores
guarantee that they never share a mutable object with the caller: what is
stored is bytes, and every read decodes a fresh object.
"""

from __future__ import annotations

import math
from typing import Any, Final, Protocol, runtime_checkable

import orjson

from .errors import InvalidKeyError, InvalidTTLError, SerializationError
from .options import check_seconds

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_TTL",
    "Codec",
    "JSONCodec",
    "check_key",
    "check_prefix",
    "check_store_name",
    "check_ttl",
    "is_utf8",
]

MAX_KEY_LENGTH: Final = 1024
MAX_STORE_NAME_LENGTH: Final = 64
_STORE_NAME_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)
MAX_TTL: Final = 1e9
"""Longest accepted TTL in seconds (about 31 years); ``ttl=None`` means no expiry."""
_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes and back. Implementations must not use pickle."""

    def encode(self, value: Any) -> bytes:
        """Encode *value*; raise :class:`SerializationError` if it cannot be encoded."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes produced by :meth:`encode`."""
        ...


# With these options orjson refuses, instead of converting, datetime/date/time,
# dataclasses and subclasses of builtins; the walk below refuses the rest
# (Enum members, UUID, NaN and infinities), which orjson converts or writes
# as null whatever the options.
_STRICT: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
# Exact types only: an IntEnum is an int and a StrEnum a str, but they would not
# come back as what was stored.
_PLAIN_SCALARS: Final = frozenset({str, int, bool, type(None)})
_ALLOWED: Final = (
    "allowed: dict with str keys, list, tuple (stored as a list), str, int within 64 bits,"
    " finite float, bool, None"
)


def _disallowed(item: Any) -> str | None:
    """Describe the first part of *item* the codec refuses, or None if every part is allowed."""
    kind = type(item)
    if kind is dict:
        for key, child in item.items():
            if type(key) is not str:
                return f"a dict key of type {type(key).__name__}"
            if type(child) not in _PLAIN_SCALARS and (found := _disallowed(child)):
                return found
        return None
    if kind is list or kind is tuple:
        for child in item:
            if type(child) not in _PLAIN_SCALARS and (found := _disallowed(child)):
                return found
        return None
    if kind is float:
        return None if math.isfinite(item) else "a NaN or infinite float"
    return None if kind in _PLAIN_SCALARS else f"a value of type {kind.__name__}"


class JSONCodec:
    """The default codec: compact UTF-8 JSON via orjson.

    Accepts exactly dict (with str keys), list, tuple (decoded as a list), str,
    int within the 64-bit range, finite float, bool and None, nested. Anything
    else raises :class:`~kvstore.SerializationError`, subclasses of those types
    included (``IntEnum``, ``StrEnum``, ``OrderedDict``), as do datetime, UUID,
    Decimal, bytes, set, dataclasses, NaN and infinities: a value always comes
    back as what was stored, never silently converted.

    >>> JSONCodec().decode(JSONCodec().encode({"a": [1, 2.5, None]}))
    {'a': [1, 2.5, None]}
    """

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        """Encode *value* as JSON bytes."""
        try:
            found = None if type(value) in _PLAIN_SCALARS else _disallowed(value)
        except RecursionError:
            # orjson refuses more than 254 levels anyway; this walk gives up first.
            raise SerializationError("cannot store a value nested this deeply") from None
        if found:
            raise SerializationError(f"cannot store {found} ({_ALLOWED})")
        try:
            return orjson.dumps(value, option=_STRICT)
        except TypeError as err:  # orjson.JSONEncodeError subclasses TypeError
            # What the walk lets through and orjson refuses: ints beyond 64 bits.
            raise SerializationError(f"cannot store this value: {err} ({_ALLOWED})") from err

    def decode(self, data: bytes) -> Any:
        """Decode JSON bytes."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as err:
            raise SerializationError(f"stored data is not valid JSON: {err}") from err


def check_key(key: object) -> str:
    """Return *key* as a plain ``str`` if it is a valid key, else raise :class:`InvalidKeyError`.

    A ``str`` subclass (a ``StrEnum`` member, say) is accepted as the plain
    string it holds, so every method of every backend treats it alike.
    """
    if type(key) is not str:
        if not isinstance(key, str):
            raise InvalidKeyError(f"key must be a str, not {type(key).__name__}")
        key = str.__str__(key)
    if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key or not is_utf8(key):
        if not key:
            raise InvalidKeyError("key must not be empty")
        if len(key) > MAX_KEY_LENGTH:
            raise InvalidKeyError(
                f"key is {len(key)} characters long; at most {MAX_KEY_LENGTH} are allowed"
            )
        if "\x00" in key:
            raise InvalidKeyError("key must not contain NUL characters")
        raise InvalidKeyError(
            f"key {key!r} is not valid unicode text: it contains a lone surrogate"
        )
    return key


def is_utf8(text: str) -> bool:
    """True if *text* encodes to UTF-8, i.e. has no lone surrogate (JSON and SQLite need that)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_prefix(prefix: object) -> str:
    """Validate an ``entries()`` prefix: a str (possibly empty) without NUL."""
    if type(prefix) is not str:
        raise InvalidKeyError(f"prefix must be a str, not {type(prefix).__name__}")
    if len(prefix) > MAX_KEY_LENGTH or "\x00" in prefix or not is_utf8(prefix):
        raise InvalidKeyError(
            f"prefix must be at most {MAX_KEY_LENGTH} characters of valid unicode text without NUL"
        )
    return prefix


def check_ttl(ttl: object) -> float:
    """Return *ttl* as a float if it is a finite number of seconds > 0, at most :data:`MAX_TTL`.

    Raises :class:`~kvstore.InvalidTTLError` (a ``ValueError``) otherwise, for a
    wrong type too: a TTL is user input as much as a key is.
    """
    # Every write with a TTL comes here: an exact int or float in range is
    # answered without the general validator's calls (NaN fails the comparison).
    if (type(ttl) is float or type(ttl) is int) and 0 < ttl <= MAX_TTL:
        return float(ttl)
    # Redis rejects millisecond TTLs beyond 2**63; MAX_TTL keeps backends alike.
    return check_seconds("ttl", ttl, maximum=MAX_TTL, error=InvalidTTLError)


def check_store_name(name: object) -> str:
    """Validate a store (namespace) name: ``[A-Za-z0-9_.-]{1,64}``."""
    if type(name) is not str:
        raise InvalidKeyError(f"store name must be a str, not {type(name).__name__}")
    if not 0 < len(name) <= MAX_STORE_NAME_LENGTH or not _STORE_NAME_CHARS.issuperset(name):
        raise InvalidKeyError(
            f"invalid store name {name!r}: use 1 to {MAX_STORE_NAME_LENGTH} characters"
            " from A-Z, a-z, 0-9, '_', '.' and '-'"
        )
    return name


def is_int64(value: int) -> bool:
    """True if *value* fits the integer range the JSON codec round-trips."""
    return _INT64_MIN <= value <= _UINT64_MAX
