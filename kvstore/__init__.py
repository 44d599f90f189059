"""kvstore: an asyncio-native key-value store protocol with memory, SQLite and Redis backends.

>>> from kvstore import open_service
>>> service = open_service("memory://")
>>> store = service.get_store("state_cache")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backends.memory import MemoryStore
from .errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidKeyError,
    InvalidTTLError,
    KVStoreError,
    LockNotOwnedError,
    LockTimeoutError,
    SerializationError,
    StoreClosedError,
    UnsupportedBackendError,
    UpdateConflictError,
    ValueTooLargeError,
)
from .lock import StoreLock
from .metrics import MetricsStore, OpMetrics, StoreMetrics
from .protocol import KVStore, KVStoreService, is_kv_store_service
from .service import StoreService, open_service, open_store, service_from_env

if TYPE_CHECKING:
    from .backends.redis import RedisClusterStore, RedisStore
    from .backends.sqlite import SQLiteStore

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "InvalidKeyError",
    "InvalidTTLError",
    "KVStore",
    "KVStoreError",
    "KVStoreService",
    "LockNotOwnedError",
    "LockTimeoutError",
    "MemoryStore",
    "MetricsStore",
    "OpMetrics",
    "RedisClusterStore",
    "RedisStore",
    "SQLiteStore",
    "SerializationError",
    "StoreClosedError",
    "StoreLock",
    "StoreMetrics",
    "StoreService",
    "UnsupportedBackendError",
    "UpdateConflictError",
    "ValueTooLargeError",
    "is_kv_store_service",
    "open_service",
    "open_store",
    "service_from_env",
]

__version__ = "0.1.0"

# The driver-backed stores are imported on first access, so `import kvstore`
# works with only the core dependencies installed.
_LAZY = {
    "SQLiteStore": "kvstore.backends.sqlite",
    "RedisStore": "kvstore.backends.redis",
    "RedisClusterStore": "kvstore.backends.redis",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'kvstore' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
