"""The SQLite backend's schema, statements and the query helpers they share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import aiosqlite

from ...base import MISSING

__all__ = [
    "MAX_BATCH",
    "RECLAIM_INTERVAL",
    "RECLAIM_LIMIT",
    "Row",
    "Run",
    "Update",
    "live_or_missing",
    "prefix_end",
    "read_live",
]

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS kv ("
    " ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires_at REAL,"
    " PRIMARY KEY (ns, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL",
)
# Every statement that reads or changes a *live* value carries this filter, so
# expired rows are invisible before they are reclaimed. Its parameter is "now".
LIVE: Final = "(expires_at IS NULL OR expires_at > ?)"
GET: Final = f"SELECT value FROM kv WHERE ns = ? AND key = ? AND {LIVE}"
GET_EXPIRY: Final = f"SELECT expires_at FROM kv WHERE ns = ? AND key = ? AND {LIVE}"
UPSERT: Final = (
    "INSERT INTO kv (ns, key, value, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
# An expired row counts as absent: add() overwrites it, and only it.
ADD: Final = UPSERT + " WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?"
DELETE: Final = f"DELETE FROM kv WHERE ns = ? AND key = ? AND {LIVE}"
# keep_ttl: a live row keeps its expires_at; an expired one counts as absent.
UPSERT_KEEP_TTL: Final = (
    "INSERT INTO kv (ns, key, value, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, expires_at = CASE"
    " WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= ? THEN excluded.expires_at"
    " ELSE kv.expires_at END"
)
GET_ROW: Final = f"SELECT value, expires_at FROM kv WHERE ns = ? AND key = ? AND {LIVE}"
PERSIST: Final = f"UPDATE kv SET expires_at = NULL WHERE ns = ? AND key = ? AND {LIVE}"
DELETE_IF: Final = f"DELETE FROM kv WHERE ns = ? AND key = ? AND value = ? AND {LIVE}"
EXPIRE: Final = f"UPDATE kv SET expires_at = ? WHERE ns = ? AND key = ? AND {LIVE}"
CLEAR: Final = "DELETE FROM kv WHERE ns = ?"
# Bounded, and driven by the expires_at index: cost O(limit), never a table scan.
RECLAIM: Final = (
    "DELETE FROM kv WHERE (ns, key) IN (SELECT ns, key FROM kv WHERE expires_at <= ? LIMIT ?)"
)
RECLAIM_LIMIT: Final = 1000
RECLAIM_INTERVAL: Final = 1.0  # seconds on the store's clock between reclaim passes

# Keys per IN (...) list; SQLite builds before 3.32 allow only 999 parameters.
IN_CHUNK: Final = 500
MAX_BATCH: Final = 512  # writes per group-commit transaction, to bound its latency

Row = tuple[str, str, bytes, float | None]  # (ns, key, value, expires_at)
Run = Callable[[aiosqlite.Connection, float], Awaitable[Any]]
Update = tuple[str, str, Callable[[Any], Any], float | None]  # (ns, key, transform, expires_at)


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with *prefix*.

    SQLite compares TEXT bytewise and UTF-8 preserves code point order, so
    bumping the last character that can be bumped gives the bound. None when
    there is none (empty prefix, or only U+10FFFF characters).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:  # surrogates cannot be encoded: skip over them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


async def read_live(
    conn: aiosqlite.Connection, wanted: list[tuple[str, str]], now: float
) -> dict[tuple[str, str], Any]:
    """Live stored values of *wanted* ``(ns, key)`` pairs, MISSING for absent ones."""
    by_ns: dict[str, list[str]] = {}
    for ns, key in dict.fromkeys(wanted):
        by_ns.setdefault(ns, []).append(key)
    found: dict[tuple[str, str], Any] = dict.fromkeys(wanted, MISSING)
    for ns, keys in by_ns.items():
        for chunk in chunks(keys):
            sql = f"SELECT key, value FROM kv WHERE ns = ? AND key IN ({marks(chunk)}) AND {LIVE}"
            for key, stored in await conn.execute_fetchall(sql, (ns, *chunk, now)):
                found[ns, key] = stored
    return found


def live_or_missing(stored: bytes, expires_at: float | None, now: float) -> Any:
    return stored if expires_at is None or expires_at > now else MISSING


def chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), IN_CHUNK):
        yield keys[start : start + IN_CHUNK]


def marks(chunk: list[str]) -> str:
    return ", ".join("?" * len(chunk))
