"""Metrics decorator (work in progress: replaced by the metrics issue)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from .protocol import KVStore

__all__ = ["MetricsStore", "OpMetrics", "StoreMetrics"]


@dataclass(frozen=True, slots=True)
class OpMetrics:
    """Counts and latency of one operation."""

    count: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class StoreMetrics:
    """A snapshot of a store's counters."""

    gets: int = 0
    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    hit_ratio: float = 0.0
    ops: dict[str, OpMetrics] = field(default_factory=dict)


class MetricsStore:
    """Wraps a store and counts what goes through it."""

    def __init__(self, inner: KVStore, *, name: str | None = None) -> None:
        self.inner = inner
        self.name = name

    def get_metrics(self) -> StoreMetrics:
        """Return a snapshot of the counters."""
        return StoreMetrics()

    async def get(self, key: str, default: Any = None) -> Any:
        return await self.inner.get(key, default)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        await self.inner.set(key, value, ttl=ttl)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    async def entries(self, prefix: str = "") -> AsyncIterator[tuple[str, Any]]:
        async for item in self.inner.entries(prefix):
            yield item

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return await self.inner.get_many(keys)

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        await self.inner.set_many(mapping, ttl=ttl)

    async def delete_many(self, keys: Iterable[str]) -> int:
        return await self.inner.delete_many(keys)

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        return await self.inner.add(key, value, ttl=ttl)

    async def update(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        return await self.inner.update(key, fn, default=default, ttl=ttl)

    async def ttl(self, key: str) -> float | None:
        return await self.inner.ttl(key)

    async def expire(self, key: str, ttl: float) -> bool:
        return await self.inner.expire(key, ttl)

    async def clear(self) -> None:
        await self.inner.clear()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
