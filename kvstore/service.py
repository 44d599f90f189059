"""Choosing a backend from a URL, and the default store service."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Self

from .base import BaseStore
from .codec import MAX_TTL, check_store_name
from .errors import ConfigError, StoreClosedError, UnsupportedBackendError
from .options import check_seconds, parse_float
from .protocol import KVStore
from .redaction import redact_url

if TYPE_CHECKING:
    from .metrics import StoreMetrics

__all__ = ["StoreService", "open_service", "open_store", "service_from_env"]

# URL scheme -> (module, class). Modules are imported on first use, so a
# missing optional driver only matters to the backend that needs it.
BACKENDS: Final[Mapping[str, tuple[str, str]]] = {
    "memory": ("kvstore.backends.memory", "MemoryStore"),
    "sqlite": ("kvstore.backends.sqlite", "SQLiteStore"),
    "redis": ("kvstore.backends.redis", "RedisStore"),
    "rediss": ("kvstore.backends.redis", "RedisStore"),
    "unix": ("kvstore.backends.redis", "RedisStore"),
    "redis+cluster": ("kvstore.backends.redis", "RedisClusterStore"),
    "rediss+cluster": ("kvstore.backends.redis", "RedisClusterStore"),
}

ENV_BACKENDS: Final = ("memory", "sqlite", "redis", "redis-cluster")
DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"
DEFAULT_REDIS_CLUSTER_URL: Final = "redis+cluster://localhost:6379/"
_REDIS_SCHEMES: Final = tuple(s for s, (module, _) in BACKENDS.items() if module.endswith("redis"))
DEFAULT_SQLITE_PATH: Final = "kvstore.db"


def _backend_class(url: str) -> type[BaseStore]:
    if not isinstance(url, str):
        raise UnsupportedBackendError(f"store URL must be a str, not {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    target = BACKENDS.get(scheme.lower()) if sep else None
    if target is None:
        supported = ", ".join(f"{name}://" for name in BACKENDS)
        raise UnsupportedBackendError(
            f"unsupported store URL {redact_url(url)!r}: the scheme must be one of {supported}"
        )
    module_name, class_name = target
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        extra = "redis" if "redis" in module_name else "sqlite"
        raise UnsupportedBackendError(
            f"the {scheme}:// backend needs its driver: pip install 'kvstore-runtime[{extra}]'"
            f" ({err})"
        ) from err
    cls: type[BaseStore] = getattr(module, class_name)
    return cls


def open_store(url: str, **options: Any) -> BaseStore:
    """Build the store a URL names; nothing connects until first use.

    Schemes: ``memory://``, ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
    ``redis://host:port/db``, ``rediss://…`` (TLS), ``unix:///path.sock``, and
    for Redis Cluster (a :class:`~kvstore.RedisClusterStore`)
    ``redis+cluster://host:port[,host:port…]/`` and ``rediss+cluster://…`` (TLS).
    Keyword options go to the backend's constructor (``default_ttl``,
    ``max_value_bytes``, …).

    >>> store = open_store("memory://")
    >>> async with store:                    # doctest: +SKIP
    ...     await store.set("k", 1)
    """
    cls = _backend_class(url)
    return cls.from_url(url, **options)


class StoreService:
    """Named stores over one backend connection (the seed's ``IKVStoreService``).

    Each name is its own namespace: store ``"a"`` never sees keys of ``"ab"``.
    The same name always gives the same store object. With ``metrics=True``
    every store is wrapped in :class:`~kvstore.MetricsStore`.

    Args:
        root: the backend store whose connection the named stores share;
            defaults to a fresh :class:`~kvstore.MemoryStore`. The service owns it.
        metrics: wrap each named store in :class:`~kvstore.MetricsStore`.
        store_options: per-name overrides of the root's options, e.g.
            ``{"state_cache": {"max_entries": 10_000, "default_ttl": 3600}}``.

    >>> service = StoreService()
    >>> sessions = service.get_store("sessions")
    """

    def __init__(
        self,
        root: BaseStore | None = None,
        *,
        metrics: bool = True,
        store_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if root is None:
            from .backends.memory import MemoryStore

            root = MemoryStore()
        self._root = root
        self._metrics = metrics
        self._store_options = {name: dict(opts) for name, opts in (store_options or {}).items()}
        self._stores: dict[str, KVStore] = {}
        self._closed = False

    @property
    def backend(self) -> BaseStore:
        """The root store whose connection every named store shares."""
        return self._root

    def get_store(self, name: str) -> KVStore:
        """Return the store for namespace *name* (``[A-Za-z0-9_.-]{1,64}``)."""
        if self._closed:
            raise StoreClosedError("StoreService is closed")
        store = self._stores.get(name)
        if store is None:
            options = self._store_options.get(name, {})
            store = self._root.namespaced(check_store_name(name), **options)
            if self._metrics:
                from .metrics import MetricsStore

                store = MetricsStore(store, name=name)
            self._stores[name] = store
        return store

    def store_names(self) -> list[str]:
        """Names of the stores handed out so far."""
        return list(self._stores)

    def get_metrics(self) -> dict[str, StoreMetrics]:
        """Metrics of every store handed out so far, by name (metrics=True only)."""
        from .metrics import MetricsStore

        return {
            name: store.get_metrics()
            # A copy: a Prometheus scrape thread may call this while a store is added.
            for name, store in list(self._stores.items())
            if isinstance(store, MetricsStore)
        }

    async def aclose(self) -> None:
        """Close every store and the shared connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for store in self._stores.values():
            await store.aclose()
        await self._root.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._root!r}, metrics={self._metrics})"


def open_service(
    url: str,
    *,
    default_ttl: float | None = None,
    metrics: bool = True,
    store_options: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> StoreService:
    """Build a :class:`StoreService` on the backend a URL names (see :func:`open_store`).

    >>> service = open_service("memory://", default_ttl=3600)
    """
    root = open_store(url, default_ttl=default_ttl, **options)
    return StoreService(root, metrics=metrics, store_options=store_options)


def service_from_env(environ: Mapping[str, str] | None = None, **options: Any) -> StoreService:
    """Build a service from the ``KV_STORE_*`` and ``REDIS_URL`` environment variables.

    Reads ``KV_STORE_BACKEND``, ``REDIS_URL``, ``KV_STORE_PATH`` and ``KV_STORE_TTL``.

    ``KV_STORE_BACKEND`` is ``memory`` (default), ``sqlite``, ``redis`` or
    ``redis-cluster``. With ``redis-cluster``, ``REDIS_URL`` lists nodes to
    start from, ``redis+cluster://h1:7000,h2:7000/``, or names one as
    ``redis://h1:7000`` (default ``redis+cluster://localhost:6379/``). A bad
    value raises :class:`~kvstore.ConfigError` naming the variable.
    """
    env = os.environ if environ is None else environ
    backend = env.get("KV_STORE_BACKEND", "").strip().lower() or "memory"
    if backend == "memory":
        url = "memory://"
    elif backend == "sqlite":
        path = env.get("KV_STORE_PATH", "").strip() or DEFAULT_SQLITE_PATH
        url = f"sqlite:///{path}"
    elif backend == "redis":
        url = env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
        if url.partition("://")[0].lower() not in _REDIS_SCHEMES:
            raise ConfigError(
                f"REDIS_URL={redact_url(url)!r} is not a Redis URL: use redis://, rediss://, unix://,"
                " redis+cluster:// or rediss+cluster://"
            )
    elif backend == "redis-cluster":
        url = env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_CLUSTER_URL
        scheme, sep, rest = url.partition("://")
        if sep and scheme.lower() in ("redis", "rediss"):
            url = f"{scheme.lower()}+cluster://{rest}"  # one node to start from
        elif not sep or scheme.lower() not in ("redis+cluster", "rediss+cluster"):
            raise ConfigError(
                f"REDIS_URL={redact_url(url)!r} is not a Redis Cluster URL: use"
                " redis+cluster://host:port[,host:port…]/, rediss+cluster://…,"
                " or redis://host:port for one node to start from"
            )
    else:
        raise ConfigError(
            f"KV_STORE_BACKEND={backend!r} is not supported: use one of {', '.join(ENV_BACKENDS)}"
        )
    default_ttl = _parse_ttl_env(env.get("KV_STORE_TTL", ""))
    try:
        return open_service(url, default_ttl=default_ttl, **options)
    except UnsupportedBackendError:
        raise
    except ValueError as err:
        variable = "REDIS_URL" if backend.startswith("redis") else "KV_STORE_PATH"
        raise ConfigError(f"{variable}: {err}") from err


def _parse_ttl_env(raw: str) -> float | None:
    """``KV_STORE_TTL``: seconds > 0 (at most MAX_TTL), or empty for no default TTL."""
    if not raw.strip():
        return None
    try:
        return check_seconds("the default TTL", parse_float(raw), maximum=MAX_TTL, error=ValueError)
    except ValueError as err:
        raise ConfigError(
            f"KV_STORE_TTL={raw!r} is invalid: {err} (use e.g. 3600, or leave it empty)"
        ) from None
