"""Redis backends: :class:`RedisStore` (one server) and :class:`RedisClusterStore`.

Server-side TTLs (``PX``), SCAN iteration with glob-escaped patterns,
auto-pipelining of concurrent commands, retries with backoff ending in
:class:`~kvstore.BackendUnavailableError`, passwords redacted from every
message. The modules, from the bottom up:

============================  =====================================================
``keys``                      key layout ``prefix:namespace:key``, glob escaping
``urls``                      schemes, query options, cluster node lists, redaction
``errors``                    which driver errors are transient, refusals or failures
``retry``                     the retry policy (the only one: redis-py's is off)
``pipeline``                  the auto-pipeline
``connection``                client ownership, lazy connect, one server
``cluster_connection``        slot map, per-node pipelines, bounded concurrency
``base``                      what both stores share
``store``                     :class:`RedisStore`
``cluster``                   :class:`RedisClusterStore`
============================  =====================================================

This package imports redis-py; :mod:`kvstore` imports it only when a Redis
store is asked for.
"""

from __future__ import annotations

from .base import MAX_UPDATE_CONFLICTS, SCAN_COUNT
from .cluster import RedisClusterStore
from .store import RedisStore
from .urls import CLUSTER_SCHEMES, SCHEMES

__all__ = [
    "CLUSTER_SCHEMES",
    "MAX_UPDATE_CONFLICTS",
    "SCAN_COUNT",
    "SCHEMES",
    "RedisClusterStore",
    "RedisStore",
]
