"""The state cache: the composed state of each message, kept in a key-value store.

The runtime composes a state dict per message (see
:meth:`AgentRuntime.compose_state`) and keeps it here under the message id, with
a TTL, so later steps handling the same message reuse it instead of running the
providers again. Because it lives in a :class:`kvstore.KVStore`, several
runtimes pointed at one SQLite file or Redis server share it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final

from kvstore import KVStore, SerializationError
from kvstore.codec import check_key, check_ttl

__all__ = ["DEFAULT_STATE_TTL", "STATE_CACHE_STORE", "StateCache"]

DEFAULT_STATE_TTL: Final = 3600.0
"""Seconds a cached state lives unless ``settings["STATE_CACHE_TTL"]`` says otherwise."""

STATE_CACHE_STORE: Final = "state_cache"
"""The name of the store the runtime asks its service for."""


class StateCache:
    """Message id → state dict, on a :class:`kvstore.KVStore`, with a TTL.

    Args:
        store: where states live; every key of it belongs to this cache.
        ttl: seconds each state lives; ``None`` defers to the store's default
            TTL (no expiry unless the store has one).

    >>> cache = StateCache(MemoryStore(), ttl=600)       # doctest: +SKIP
    >>> await cache.set("msg-1", {"mood": "curious"})   # doctest: +SKIP
    >>> await cache.get("msg-1")                        # doctest: +SKIP
    {'mood': 'curious'}
    """

    def __init__(self, store: KVStore, *, ttl: float | None = DEFAULT_STATE_TTL) -> None:
        self._store = store
        self._ttl = None if ttl is None else check_ttl(ttl)

    @property
    def store(self) -> KVStore:
        """The store holding the states."""
        return self._store

    @property
    def ttl(self) -> float | None:
        """Seconds each state lives (``None``: the store's default)."""
        return self._ttl

    async def get(self, message_id: str) -> dict[str, Any] | None:
        """The cached state of *message_id*, or ``None`` if missing or expired.

        Raises:
            InvalidKeyError: *message_id* is not a valid key.
            SerializationError: what is stored there is not a state dict
                (something else wrote to this store).
        """
        value = await self._store.get(check_key(message_id))
        if value is None:
            return None
        return _as_state(message_id, value)

    async def set(
        self, message_id: str, state: Mapping[str, Any], *, ttl: float | None = None
    ) -> None:
        """Cache *state* for *message_id*, for *ttl* seconds (default: the cache's TTL).

        Raises:
            InvalidKeyError: *message_id* is not a valid key.
            InvalidTTLError: *ttl* is not a finite number of seconds > 0.
            SerializationError: *state* is not a mapping with str keys and
                JSON-compatible values.
        """
        check_key(message_id)
        seconds = self._ttl if ttl is None else check_ttl(ttl)
        if not isinstance(state, Mapping):
            raise SerializationError(
                f"a state must be a mapping (dict with str keys), not {type(state).__name__}"
            )
        bad = [key for key in state if not isinstance(key, str)]
        if bad:
            raise SerializationError(f"state keys must be str, got {bad[0]!r}")
        await self._store.set(message_id, dict(state), ttl=seconds)

    async def delete(self, message_id: str) -> bool:
        """Forget the state of *message_id*; True if one was cached."""
        return await self._store.delete(check_key(message_id))

    async def ttl_of(self, message_id: str) -> float | None:
        """Seconds left before the state of *message_id* expires (None: missing or no expiry)."""
        return await self._store.ttl(check_key(message_id))

    async def entries(self) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """Yield ``(message_id, state)`` for every live cached state, in no set order."""
        rows = self._store.entries()
        try:
            async for message_id, value in rows:
                yield message_id, _as_state(message_id, value)
        finally:
            # The protocol only promises an async iterator; close it when it can
            # be closed, so a backend's cursor is released when we stop early.
            close = getattr(rows, "aclose", None)
            if close is not None:
                await close()

    async def clear(self) -> None:
        """Forget every cached state (only this cache's store is touched)."""
        await self._store.clear()

    def __repr__(self) -> str:
        ttl = "store default" if self._ttl is None else f"{self._ttl:g}s"
        return f"{type(self).__name__}({self._store!r}, ttl={ttl})"


def _as_state(message_id: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SerializationError(
            f"state_cache entry {message_id!r} holds a {type(value).__name__}, not a state dict;"
            " is another program writing to this store?"
        )
    return value
