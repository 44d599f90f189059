"""Prometheus export of store metrics (the optional ``kvstore-runtime[prometheus]`` extra).

:func:`register_prometheus` adds a collector to a ``prometheus_client``
registry; every scrape reads :meth:`StoreService.get_metrics
<kvstore.StoreService.get_metrics>` afresh, so nothing is copied or updated
between scrapes. :func:`exposition` renders a registry in the text format for
a ``/metrics`` endpoint::

    from kvstore.prometheus import CONTENT_TYPE, exposition, register_prometheus
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    register_prometheus(service, registry)
    body = exposition(registry)  # serve with Content-Type: CONTENT_TYPE

Samples (``kvstore`` is the default namespace; labels ``store`` and ``backend``
on all of them, plus ``op`` on the per-operation ones):

=====================================  =======  ===========================================
name                                   type     value
=====================================  =======  ===========================================
``kvstore_operations_total``           counter  calls per operation (``op``)
``kvstore_errors_total``               counter  failed calls per operation (``op``)
``kvstore_gets_total``                 counter  lookups (``get`` + keys of ``get_many``)
``kvstore_hits_total``                 counter  lookups that found a live key
``kvstore_misses_total``               counter  lookups that did not
``kvstore_sets_total``                 counter  writes (``set`` + items of ``set_many``)
``kvstore_deletes_total``              counter  ``delete`` calls + keys of ``delete_many``
``kvstore_entries_yielded_total``      counter  items yielded by ``entries()``
``kvstore_hit_ratio``                  gauge    hits / gets, 0 before any get
``kvstore_latency_p50_seconds``        gauge    median latency per operation (``op``)
``kvstore_latency_p99_seconds``        gauge    99th percentile latency per operation
``kvstore_latency_max_seconds``        gauge    highest latency per operation
=====================================  =======  ===========================================

Latency gauges appear for an operation once one of its calls was timed; they
cover the latest timed calls (see :class:`~kvstore.MetricsStore`).
``MetricsStore.reset_metrics()`` takes the counters back to zero, which
Prometheus' ``rate()`` treats as a counter reset.

This module imports ``prometheus_client``; ``import kvstore`` never imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Final, Protocol

from .metrics import StoreMetrics

try:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
except ImportError as err:
    raise ImportError(
        "kvstore.prometheus needs prometheus-client: pip install 'kvstore-runtime[prometheus]'"
    ) from err

__all__ = [
    "CONTENT_TYPE",
    "MetricsSource",
    "StoreMetricsCollector",
    "exposition",
    "register_prometheus",
]

CONTENT_TYPE: Final[str] = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :func:`exposition`'s output."""

_NAMESPACE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_STORE_LABELS: Final = ("store", "backend")
_OP_LABELS: Final = ("store", "backend", "op")

# (suffix, help, StoreMetrics attribute) of the per-store counters.
_STORE_COUNTERS: Final = (
    ("gets", "Lookups: get calls plus the distinct keys of get_many calls.", "gets"),
    ("hits", "Lookups that found a live key.", "hits"),
    ("misses", "Lookups that found no live key.", "misses"),
    ("sets", "Writes: set calls plus the items of set_many calls.", "sets"),
    ("deletes", "delete calls plus the distinct keys of delete_many calls.", "deletes"),
    ("entries_yielded", "Items yielded by entries() iterations.", "entries_yielded"),
)
# (suffix, help, OpMetrics attribute) of the per-operation latency gauges.
_LATENCY_GAUGES: Final = (
    ("latency_p50_seconds", "Median latency of the latest timed calls.", "p50_ms"),
    ("latency_p99_seconds", "99th percentile latency of the latest timed calls.", "p99_ms"),
    ("latency_max_seconds", "Highest latency timed since the last reset.", "max_ms"),
)


class MetricsSource(Protocol):
    """Something whose metrics can be exported.

    A :class:`~kvstore.StoreService` (one ``StoreMetrics`` per store name) or
    a single :class:`~kvstore.MetricsStore` (labelled with its ``name``).
    """

    def get_metrics(self) -> Mapping[str, StoreMetrics] | StoreMetrics:
        """Return the current metrics."""
        ...


class StoreMetricsCollector:
    """A ``prometheus_client`` custom collector reading a :class:`MetricsSource` per scrape.

    Args:
        source: a :class:`~kvstore.StoreService` or a :class:`~kvstore.MetricsStore`.
        namespace: prefix of every metric name.
    """

    def __init__(self, source: MetricsSource, *, namespace: str = "kvstore") -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace must be a Prometheus metric name prefix"
                f" ([a-zA-Z_:][a-zA-Z0-9_:]*), got {namespace!r}"
            )
        self._source = source
        self._namespace = namespace

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples: lets a registry reject duplicates."""
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        """Read the source's metrics now and yield them as metric families."""
        metrics = self._source.get_metrics()
        if isinstance(metrics, StoreMetrics):
            metrics = {metrics.name or "": metrics}
        return self._families(metrics)

    def _families(self, stores: Mapping[str, StoreMetrics]) -> Iterator[Metric]:
        prefix = self._namespace
        operations = CounterMetricFamily(
            f"{prefix}_operations", "Calls per operation, failed ones included.", labels=_OP_LABELS
        )
        errors = CounterMetricFamily(
            f"{prefix}_errors",
            "Calls per operation that raised (re-raised to the caller unchanged).",
            labels=_OP_LABELS,
        )
        counters = [
            (CounterMetricFamily(f"{prefix}_{suffix}", text, labels=_STORE_LABELS), attribute)
            for suffix, text, attribute in _STORE_COUNTERS
        ]
        hit_ratio = GaugeMetricFamily(
            f"{prefix}_hit_ratio", "hits / gets (0 before any get).", labels=_STORE_LABELS
        )
        latencies = [
            (GaugeMetricFamily(f"{prefix}_{suffix}", text, labels=_OP_LABELS), attribute)
            for suffix, text, attribute in _LATENCY_GAUGES
        ]
        for name, store in stores.items():
            labels = [name, store.backend]
            for counter, attribute in counters:
                counter.add_metric(labels, getattr(store, attribute))
            hit_ratio.add_metric(labels, store.hit_ratio)
            for op_name, op in store.ops.items():
                op_labels = [*labels, op_name]
                operations.add_metric(op_labels, op.count)
                errors.add_metric(op_labels, op.errors)
                if op.samples:
                    for gauge, attribute in latencies:
                        gauge.add_metric(op_labels, getattr(op, attribute) / 1000.0)
        yield operations
        yield errors
        for counter, _ in counters:
            yield counter
        yield hit_ratio
        for gauge, _ in latencies:
            yield gauge


def register_prometheus(
    source: MetricsSource,
    registry: CollectorRegistry | None = None,
    *,
    namespace: str = "kvstore",
) -> StoreMetricsCollector:
    """Register a collector exporting *source*'s metrics; return it (to unregister).

    *registry* defaults to ``prometheus_client.REGISTRY``, the global one that
    ``prometheus_client.start_http_server`` serves. Registering a second
    collector with the same *namespace* in one registry raises ``ValueError``
    (its series would clash).

    >>> from prometheus_client import CollectorRegistry
    >>> from kvstore import StoreService
    >>> registry = CollectorRegistry()
    >>> collector = register_prometheus(StoreService(), registry)
    """
    collector = StoreMetricsCollector(source, namespace=namespace)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def exposition(registry: CollectorRegistry | None = None) -> bytes:
    """Render *registry* (default: the global one) in the Prometheus text format.

    Serve the result with ``Content-Type:`` :data:`CONTENT_TYPE`.
    """
    return generate_latest(REGISTRY if registry is None else registry)
