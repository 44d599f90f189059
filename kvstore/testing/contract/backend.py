"""What the contract needs of a backend, and helpers its tests share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from ...protocol import KVStore, KVStoreService


async def sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


@dataclass
class ContractBackend:
    """What the contract needs to know about a backend.

    Attributes:
        open_service: ``open_service(default_ttl=None) -> KVStoreService``; the
            contract closes each service it opens.
        advance: makes *seconds* pass for the stores (default: sleep).
        ttl_unit: the TTL, in seconds, TTL tests use; raise it for backends
            whose clock cannot be moved so that sleeping stays reliable.
        max_value_bytes: the service's limit, used by the oversize test.
        url: a URL :func:`kvstore.open_service` opens the same backend with,
            for the lock tests that run other processes (None skips them).
            Those processes use the wall clock: a store clock the tests move
            must start near ``time.time()``, and *ttl_unit* must exceed the
            few seconds a process takes to start.
    """

    open_service: Callable[..., KVStoreService]
    advance: Callable[[float], Awaitable[None]] = sleep
    ttl_unit: float = 0.25
    max_value_bytes: int = 16 * 1024 * 1024
    url: str | None = None


async def snapshot(store: KVStore) -> dict[str, Any]:
    return {key: value async for key, value in store.entries()}


def bump(value: int) -> int:
    return value + 1
