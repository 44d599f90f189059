"""The connection of a Redis Cluster store: slot map, per-node pipelines, bounded concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ...errors import ConfigError
from ...redaction import scrub
from .connection import Connection, PoolOptions
from .errors import DRIVER_ERRORS, UNREACHABLE, as_driver_error
from .pipeline import Deliver
from .urls import parse_cluster_url, redact

__all__ = ["ClusterConnection"]

REFRESH_INTERVAL: Final = 0.25
"""Seconds between two reloads of the cluster's slot map after errors."""
# Recent redis-py (8.x) can ask the node that just failed last when it reloads the slot map.
_DEFERS_FAILED_NODE: Final = (
    "last_failed_node_name" in inspect.signature(RedisCluster.initialize).parameters
)


class ClusterConnection(Connection[RedisCluster]):
    """A Redis Cluster, through redis-py's ``RedisCluster`` (one pool per node).

    redis-py fails at once when a node's pool is exhausted (it does not wait
    like ``BlockingConnectionPool``), so every command or batch first takes
    one of ``max_connections`` permits, waiting at most ``wait_timeout``
    seconds. A permit holder uses at most one connection per node.

    Inside :meth:`permit` an ``AttributeError`` or ``TypeError`` from redis-py
    means a connection closed under a command and becomes
    ``redis.exceptions.ConnectionError``, which the store retries (see
    :func:`~.errors.as_driver_error`).
    """

    def __init__(
        self,
        client: RedisCluster,
        *,
        owns_client: bool,
        location: str,
        max_connections: int,
        wait_timeout: float,
    ) -> None:
        super().__init__(client, owns_client=owns_client, location=location)
        self.max_connections = max_connections
        self.wait_timeout = wait_timeout
        self._permits = asyncio.Semaphore(max_connections)
        self._refreshed_at = -math.inf
        self._failed_node: str | None = None

    @classmethod
    def from_url(cls, url: str, options: PoolOptions) -> ClusterConnection:
        """A ``RedisCluster`` of our own, starting from the nodes the URL lists."""
        shown = redact(url)
        nodes = parse_cluster_url(url)
        try:
            client = RedisCluster.from_url(
                nodes.first,
                startup_nodes=[ClusterNode(host, port) for host, port in nodes.others],
                max_connections=options.max_connections,
                socket_timeout=options.socket_timeout,
                socket_connect_timeout=options.socket_connect_timeout,
                # The store retries with its own policy (re-reading the slot map
                # between attempts); redis-py must not retry underneath it.
                retry=Retry(NoBackoff(), 0),
                # Keys of a slot whose owner is unknown fail alone, as unavailable.
                require_full_coverage=False,
                decode_responses=False,
            )
        except (ValueError, TypeError, redis.exceptions.RedisClusterException) as err:
            raise ConfigError(
                f"invalid Redis Cluster URL {shown!r}: {scrub(str(err), url)}"
            ) from None
        return cls(
            client,
            owns_client=True,
            location=shown,
            max_connections=options.max_connections,
            wait_timeout=options.socket_timeout,
        )

    @classmethod
    def from_client(cls, client: RedisCluster) -> ClusterConnection:
        """Wrap a caller's ``RedisCluster``, which the caller keeps owning."""
        kwargs = client.get_connection_kwargs()
        if kwargs.get("decode_responses"):
            raise ConfigError(
                "RedisClusterStore needs a client built with decode_responses=False:"
                " values are bytes"
            )
        names = ",".join(client.nodes_manager.startup_nodes) or "?"
        timeout = kwargs.get("socket_timeout")
        return cls(
            client,
            owns_client=False,
            location=f"redis+cluster://{names}/",
            max_connections=int(kwargs.get("max_connections") or 100),
            wait_timeout=float(timeout) if timeout else 5.0,
        )

    @asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """Hold one of the ``max_connections`` permits around calls into redis-py.

        See the class docstring, also for the errors this translates.
        """
        try:
            if self._permits.locked():
                async with asyncio.timeout(self.wait_timeout):
                    await self._permits.acquire()
            else:
                await self._permits.acquire()  # returns at once
        except TimeoutError:
            # What BlockingConnectionPool raises in the same situation.
            raise redis.exceptions.ConnectionError(
                f"no free connection within {self.wait_timeout} s"
                f" (max_connections={self.max_connections} per node)"
            ) from None
        try:
            yield
        except (AttributeError, TypeError) as err:
            raise as_driver_error(err) from err
        finally:
            self._permits.release()

    async def execute(self, args: tuple[Any, ...]) -> Any:
        """Send one command on its own to the node owning its key."""
        client = self.use()
        async with self.permit():
            await self._load_slots(client)
            try:
                return await client.execute_command(*args)
            except Exception as err:
                self._note_failure(err, getattr(err, "connection", None))
                raise

    async def execute_on(self, node: ClusterNode, args: tuple[Any, ...]) -> Any:
        """Send one command to *node* (SCAN: it has no key); SCAN gives ``(cursor, names)``."""
        client = self.use()
        async with self.permit():
            await self._load_slots(client)
            try:
                reply = await client.execute_command(*args, target_nodes=node)
            except Exception as err:
                self._note_failure(err, node)
                raise
        if args[0] == "SCAN":
            # redis-py merges SCAN replies of several nodes: {node name: cursor}.
            cursors, names = reply
            return cursors[node.name], names
        return reply

    async def send_batch(self, commands: list[tuple[Any, ...]], deliver: Deliver) -> None:
        """Send *commands* as one pipeline per node, to the nodes concurrently.

        Each node's replies are delivered as soon as it answered, so a slow or
        dead node delays and fails only its own commands.
        """
        client = self.use()
        async with self.permit():
            await self._load_slots(client)
            by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
            for index, args in enumerate(commands):
                try:
                    node = client.get_node_from_key(args[3] if args[0] == "EVAL" else args[1])
                except redis.exceptions.RedisClusterException as err:  # slot not covered
                    deliver([index], [err])
                    continue
                if node is not None:
                    by_node.setdefault(node.name, (node, []))[1].append(index)
            sends = [
                self._send_to_node(client, node, [commands[i] for i in group], group, deliver)
                for node, group in by_node.values()
            ]
            if len(sends) == 1:
                await sends[0]
            else:
                await asyncio.gather(*sends)

    async def run_batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Replies to *commands* sent together (see :meth:`send_batch`), in order."""
        replies: list[Any] = [None] * len(commands)

        def deliver(indexes: list[int], values: list[Any]) -> None:
            for index, value in zip(indexes, values, strict=True):
                replies[index] = value

        await self.send_batch(commands, deliver)
        return replies

    async def _send_to_node(
        self,
        client: RedisCluster,
        node: ClusterNode,
        commands: list[tuple[Any, ...]],
        indexes: list[int],
        deliver: Deliver,
    ) -> None:
        replies: list[Any]
        try:
            if len(commands) == 1:
                # execute_command also follows MOVED/ASK and marks the slot map stale.
                replies = [await client.execute_command(*commands[0])]
            else:
                pipe = client.pipeline(transaction=False)
                for args in commands:
                    pipe.execute_command(*args)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as err:
            failure = as_driver_error(err)
            self._note_failure(failure, node)
            replies = [failure] * len(commands)
        deliver(indexes, replies)

    async def primaries(self) -> list[ClusterNode]:
        """The primary nodes (loading the slot map first if needed)."""
        client = self.use()
        async with self.permit():
            await self._load_slots(client)
        return client.get_primaries()

    async def connect(self) -> None:
        """Load the slot map from the first startup node that answers."""
        client = self.use()
        async with self.permit():
            await self._load_slots(client)

    async def refresh(self) -> None:
        """Re-read the slot map, at most every ``REFRESH_INTERVAL`` seconds.

        redis-py does so itself after a failed single command, but not after
        a failed pipeline; without it the slots of a failed-over primary would
        keep pointing at the dead node.
        """
        now = time.monotonic()
        if self.closed or now - self._refreshed_at < REFRESH_INTERVAL:
            return
        self._refreshed_at = now
        manager = self.use().nodes_manager
        with contextlib.suppress(*DRIVER_ERRORS):
            # A failure here is the next attempt's to report.
            async with self.permit():
                if _DEFERS_FAILED_NODE and self._failed_node is not None:
                    await manager.initialize(last_failed_node_name=self._failed_node)
                else:
                    await manager.initialize()

    async def _close_client(self) -> None:
        client = self._client
        await client.aclose()
        # RedisCluster.aclose() does nothing while redis-py has marked its slot
        # map stale (after any node error): close every node's connections anyway.
        with contextlib.suppress(*DRIVER_ERRORS):
            await client.nodes_manager.aclose()
            await client.nodes_manager.aclose("startup_nodes")

    async def _load_slots(self, client: RedisCluster) -> None:
        """Load the slot map if redis-py has none or marked it stale (else a no-op).

        The node that failed last is asked last: a frozen node would otherwise
        hold every command up for a socket timeout whenever it is asked first.
        """
        if _DEFERS_FAILED_NODE and self._failed_node is not None:
            await client.initialize(last_failed_node_name=self._failed_node)
        else:
            await client.initialize()

    def _note_failure(self, err: BaseException, node: object) -> None:
        """Remember *node* as the one to ask last, if *err* says it is unreachable."""
        if isinstance(node, ClusterNode) and isinstance(err, UNREACHABLE):
            self._failed_node = node.name
