"""The operations routes: ``/health``, ElizaOS's sessions health, and ``/metrics``.

``/health`` reads one key of its own ``health`` store within a timeout, so a
probe never skews the sessions store's metrics and a hung backend answers 503
instead of hanging the probe.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from kvstore import KVStoreError, StoreMetrics

from ..errors import APIError, RuntimeStateError
from ..sessions import Session
from .context import API_PREFIX, RouteTable, ServedAgent
from .errors import invalid
from .wire import JSONResponse, now_iso

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_HEALTH_TIMEOUT", "HEALTH_STORE", "OpsRoutes", "Probe", "backend_name"]

logger = logging.getLogger(__name__)

try:
    _VERSION = importlib.metadata.version("kvstore-runtime")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
    _VERSION = "unknown"

DEFAULT_HEALTH_TIMEOUT: Final = 2.0
"""Seconds ``/health`` waits for the store by default."""

HEALTH_STORE: Final = "health"
"""The store ``/health`` reads from, so probes never skew the sessions store's metrics."""


def backend_name(service: object) -> str:
    """A short name for the backend behind a KV store service (``redis``, ``sqlite``, ...).

    >>> from kvstore import StoreService
    >>> backend_name(StoreService())
    'memory'
    """
    root = getattr(service, "backend", None)
    if isinstance(root, str):
        return root
    target = service if root is None else root
    label = getattr(target, "backend", None)
    if isinstance(label, str):
        return label
    name = type(target).__name__
    return name.removesuffix("Store").lower() if name.endswith("Store") else name


@dataclasses.dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of one health probe of the store."""

    reachable: bool
    latency_ms: float
    error: str | None = None


class OpsRoutes:
    """Health and metrics of one served agent.

    Args:
        served: the agent and its session manager.
        health_timeout: seconds a probe waits for the store.
    """

    def __init__(self, served: ServedAgent, *, health_timeout: float) -> None:
        self.served = served
        self.health_timeout = health_timeout
        self.started = time.monotonic()
        self._registry: CollectorRegistry | None = None

    def routes(self) -> RouteTable:
        """``{path: {method: endpoint}}``; see the table in :mod:`runtime.http`."""
        return {
            "/health": {"GET": self.health},
            "/api/server/health": {"GET": self.server_health},
            "/metrics": {"GET": self.metrics},
            f"{API_PREFIX}/health": {"GET": self.sessions_health},
        }

    async def probe(self) -> Probe:
        """Read one key of the ``health`` store, within ``health_timeout`` seconds."""
        start = time.perf_counter()
        try:
            with anyio.fail_after(self.health_timeout):
                await self.served.runtime.kv_service.get_store(HEALTH_STORE).get("probe")
        except TimeoutError:
            error = f"no answer within {self.health_timeout:g}s"
        except (KVStoreError, RuntimeStateError, ConnectionError, OSError) as err:
            logger.warning("health probe failed: %s: %s", type(err).__name__, err)
            error = type(err).__name__
        else:
            return Probe(True, (time.perf_counter() - start) * 1000.0)
        return Probe(False, (time.perf_counter() - start) * 1000.0, error)

    def backend_label(self) -> str:
        """The backend's short name, or "unknown" before the runtime is initialised."""
        try:
            return backend_name(self.served.runtime.kv_service)
        except RuntimeStateError:
            return "unknown"

    async def health(self, request: Request) -> Response:
        """GET /health: 200 when the store answers, else 503."""
        probe = await self.probe()
        # ElizaOS's shape; the store's state joins its "dependencies".
        return JSONResponse(
            {
                "status": "OK" if probe.reachable else "UNAVAILABLE",
                "version": _VERSION,
                "timestamp": now_iso(),
                "dependencies": {
                    "agents": "healthy",
                    "store": "healthy" if probe.reachable else f"unavailable: {probe.error}",
                },
                "agentCount": 1,
            },
            status_code=200 if probe.reachable else 503,
        )

    async def server_health(self, request: Request) -> Response:
        """ElizaOS's ``GET /api/server/health`` (the api-client's ``server.checkHealth``)."""
        answer = await self.health(request)
        body = orjson.loads(answer.body)
        del body["agentCount"]
        return JSONResponse(body, status_code=answer.status_code)

    async def sessions_health(self, request: Request) -> Response:
        """ElizaOS's ``GET /api/messaging/sessions/health`` (its api-client's checkHealth)."""
        probe = await self.probe()
        agent_id = self.served.runtime.agent_id
        active: list[Session] = []
        if probe.reachable:
            active = await self.served.sessions.list(agent_id=agent_id)
        return JSONResponse(
            {
                "status": "healthy" if probe.reachable else "unhealthy",
                "activeSessions": len(active),
                "expiringSoon": sum(1 for s in active if s.is_near_expiration),
                "timestamp": now_iso(),
                "uptime": time.monotonic() - self.started,
            },
            status_code=200 if probe.reachable else 503,
        )

    async def metrics(self, request: Request) -> Response:
        """GET /metrics: store metrics as JSON, or in the Prometheus text format."""
        wanted = request.query_params.get("format", "").strip().lower()
        if wanted not in ("json", "prometheus") and "format" in request.query_params:
            raise invalid(f"'format' must be 'json' or 'prometheus', got {wanted!r}")
        accept = request.headers.get("accept", "")
        scraper = "text/plain" in accept or "openmetrics" in accept
        if wanted == "prometheus" or (not wanted and scraper):
            exposition = self._prometheus()
            if exposition is not None:
                body, content_type = exposition
                return Response(body, headers={"Content-Type": content_type})
            if wanted == "prometheus":
                raise APIError(
                    406,
                    "NOT_ACCEPTABLE",
                    "Prometheus output needs prometheus-client:"
                    " pip install 'kvstore-runtime[prometheus]'",
                )
        runtime = self.served.runtime
        stores: dict[str, Any] = {}
        source = getattr(runtime.kv_service, "get_metrics", None)
        found = source() if callable(source) else None
        if isinstance(found, StoreMetrics):
            found = {found.name or "default": found}
        if isinstance(found, Mapping):
            stores = {
                str(name): _metrics_json(metrics)
                for name, metrics in found.items()
                if isinstance(metrics, StoreMetrics)
            }
        return JSONResponse(
            {
                "agentId": runtime.agent_id,
                "backend": self.backend_label(),
                "available": callable(source),
                "stores": stores,
            }
        )

    def _prometheus(self) -> tuple[bytes, str] | None:
        """The Prometheus text exposition, or None without prometheus-client."""
        try:
            from kvstore import prometheus
        except ImportError:
            return None
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
            service = self.served.runtime.kv_service
            if callable(getattr(service, "get_metrics", None)):
                prometheus.register_prometheus(cast("prometheus.MetricsSource", service), registry)
            self._registry = registry
        return prometheus.exposition(self._registry), prometheus.CONTENT_TYPE


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _metrics_json(metrics: StoreMetrics) -> dict[str, Any]:
    data = dataclasses.asdict(metrics)
    ops = data.pop("ops")
    result = {_camel(key): value for key, value in data.items()}
    # Operation names stay as the Prometheus `op` label spells them.
    result["ops"] = {
        op: {_camel(key): value for key, value in fields.items()} for op, fields in ops.items()
    }
    return result
