"""How a store's keys are named on Redis, and how SCAN patterns are escaped.

A key is stored as ``{prefix}:{namespace}:{key}``. Prefix and namespace are
store names (``[A-Za-z0-9_.-]{1,64}``), which cannot contain ``:``, so
namespace ``a`` never sees the keys of ``ab`` or ``a.b``; nor ``{`` or ``}``,
so the first hash tag of a full name is always in the caller's part of it.
"""

from __future__ import annotations

from typing import Final

from ...codec import check_store_name
from ...errors import ConfigError

__all__ = ["check_key_prefix", "glob_escape", "key_prefix"]

_GLOB_SPECIAL: Final = frozenset(b"*?[]\\")


def check_key_prefix(prefix: object) -> str:
    """Return *prefix* if it can be the first part of every key of a store."""
    if type(prefix) is not str:
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    try:
        return check_store_name(prefix)
    except ValueError:
        raise ConfigError(
            f"invalid key prefix {prefix!r}: use 1 to 64 characters from A-Z, a-z, 0-9, '_',"
            " '.' and '-' (no ':', which separates prefix, namespace and key)"
        ) from None


def key_prefix(prefix: str, namespace: str) -> bytes:
    """The bytes every stored name of namespace *namespace* starts with."""
    return f"{prefix}:{namespace}:".encode()


def glob_escape(raw: bytes) -> bytes:
    """Escape Redis glob characters so that *raw* matches only itself.

    >>> glob_escape(b"kv:default:a*")
    b'kv:default:a\\\\*'
    """
    if not _GLOB_SPECIAL.intersection(raw):
        return raw
    out = bytearray()
    for byte in raw:
        if byte in _GLOB_SPECIAL:
            out.append(0x5C)  # backslash
        out.append(byte)
    return bytes(out)
