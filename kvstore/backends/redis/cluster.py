"""The store on Redis Cluster: bulk calls per slot, compare-and-set updates, SCAN per primary.

Keys carry no hash tag, so they spread over every slot. A multi-key command
must name keys of one slot, so bulk calls send one command per slot, all in one
batch that goes out as a pipeline per node. ``update()`` is a compare-and-set
Lua script on the key's own node: redis-py's async cluster pipelines cannot
WATCH without blocking the event loop. ``entries()``/``clear()`` SCAN every
primary. See docs/redis-cluster.md.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Final

import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from ...errors import ConfigError
from .base import Receipts, RedisStoreBase, millis, px, scan
from .cluster_connection import ClusterConnection
from .connection import PoolOptions
from .urls import CLUSTER_SCHEMES, SCHEMES, redact, url_scheme

__all__ = ["RedisClusterStore"]

# set_many() with a TTL: the keys of one slot in one atomic call (MSET takes
# no TTL). ARGV[1] is the PX, ARGV[i + 1] the value of KEYS[i].
_SET_PX_SCRIPT: Final = """\
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1])
end
return #KEYS
"""


class RedisClusterStore(RedisStoreBase[RedisCluster, ClusterConnection]):
    """A store on Redis Cluster (redis-py's asyncio ``RedisCluster``).

    Takes the arguments of :class:`~kvstore.RedisStore`, with these differences:

    Args:
        url_or_client: a ``redis+cluster://[user:password@]host:port[,host:port…]/``
            or ``rediss+cluster://…`` (TLS) URL, or a
            ``redis.asyncio.cluster.RedisCluster`` client built with
            ``decode_responses=False`` (never closed by the store; build it
            with ``retry=Retry(NoBackoff(), 0)`` to leave retrying to the store).
        retries: as for one server; cluster topology errors (CLUSTERDOWN,
            TRYAGAIN, no node answering) are retried too, and the slot map is
            re-read before each retry.
        max_connections: of each node's pool; also how many commands or
            batches may be in flight at once (each takes a permit, waiting at
            most ``socket_timeout`` for one).
        auto_pipeline: as for one server, with one pipeline per node.

    Every single-key call is atomic as on one server, and so is a bulk call
    among the keys that share a hash slot; a bulk call over several slots is
    applied slot by slot (a failure part-way leaves the slots already written).
    Keys the caller wants to change together go in one slot with a hash tag in
    the key: ``"{user42}:profile"`` and ``"{user42}:cart"``. ``update`` may
    apply *fn* twice if the compare-and-set succeeded but its reply was lost.

    :meth:`from_url` takes the URL forms above, with store options in the query
    string. The nodes listed are where the client starts; it discovers the
    others. A missing port means 6379. A cluster has only database 0.

    >>> store = RedisClusterStore("redis+cluster://10.0.0.1:7000,10.0.0.2:7000/")
    >>> async with store:                                 # doctest: +SKIP
    ...     await store.set("{user42}:cart", [])
    >>> RedisClusterStore.from_url("redis+cluster://127.0.0.1:7000/?namespace=app")
    RedisClusterStore('redis+cluster://127.0.0.1:7000/', namespace='app', prefix='kv')
    """

    backend = "redis-cluster"
    is_cluster = True

    @classmethod
    def _check_url(cls, url: str) -> None:
        scheme = url_scheme(url)
        if scheme not in CLUSTER_SCHEMES:
            hint = " (for one server use RedisStore)" if scheme in SCHEMES else ""
            raise ConfigError(
                f"RedisClusterStore needs a redis+cluster://host:port[,host:port…]/ or"
                f" rediss+cluster://… URL, not {redact(url)!r}{hint}"
            )

    @classmethod
    def _connection_from_url(cls, url: str, options: PoolOptions) -> ClusterConnection:
        return ClusterConnection.from_url(url, options)

    @classmethod
    def _connection_from_client(cls, client: object) -> ClusterConnection:
        if isinstance(client, redis.asyncio.Redis):
            raise ConfigError(
                "RedisClusterStore was given a redis.asyncio.Redis client, which talks to one"
                " server: use RedisStore(client), or pass a RedisCluster client"
            )
        if not isinstance(client, RedisCluster):
            raise TypeError(
                "RedisClusterStore needs a redis+cluster:// or rediss+cluster:// URL, or a"
                f" redis.asyncio.cluster.RedisCluster client, not {type(client).__name__}"
                " (for one server use RedisStore)"
            )
        return ClusterConnection.from_client(client)

    @property
    def client(self) -> RedisCluster:
        """The redis-py ``RedisCluster``, shared with every store namespaced from the root."""
        return self._connection.client

    @property
    def cluster_client(self) -> RedisCluster:
        """The same as :attr:`client` (the name from when one class served both modes)."""
        return self._connection.client

    # -- primitives: one command per slot, batched per node ----------------------------------

    async def _mget(self, rkeys: list[bytes]) -> list[Any]:
        groups = _slot_groups(rkeys)
        replies = await self._batch([("MGET", *group) for group in groups], "MGET")
        found = {
            rkey: stored
            for group, values in zip(groups, replies, strict=True)
            for rkey, stored in zip(group, values, strict=True)
        }
        return [found[rkey] for rkey in rkeys]

    async def _remove(self, command: str, rkeys: list[bytes]) -> int:
        groups = _slot_groups(rkeys)
        return sum(await self._batch([(command, *group) for group in groups], command))

    async def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        """One atomic command per slot: MSET, or SET PX / a Lua loop with a TTL."""
        values = {self._key(key): stored for key, stored in items}
        commands: list[tuple[Any, ...]] = []
        for group in _slot_groups(list(values)):
            if ttl is None:
                pairs = [part for rkey in group for part in (rkey, values[rkey])]
                commands.append(("MSET", *pairs))
            elif len(group) == 1:
                commands.append(("SET", group[0], values[group[0]], *px(ttl)))
            else:
                expiry = millis(ttl)
                commands.append(
                    (
                        "EVAL",
                        _SET_PX_SCRIPT,
                        len(group),
                        *group,
                        expiry,
                        *[values[k] for k in group],
                    )
                )
        await self._batch(commands, "MSET")

    def _update_receipt(self, rkey: bytes) -> tuple[bytes, bytes, Callable[[], None]] | None:
        """A receipt in *rkey*'s slot: named with *rkey*'s hash tag (or *rkey* as the tag).

        One pool per tag while updates of that tag are in flight, so this
        process keeps nothing for keys it is not updating; Redis keeps one
        small receipt per key updated in the last two minutes. None for the
        rare key whose slot no tag can name (braces with an empty tag).
        """
        tag = slot_tag(rkey)
        if tag is None:
            return None
        pools = self._receipt_pools
        pool = pools.get(tag)
        if pool is None:
            pool = pools[tag] = Receipts(b"{" + tag + b"}", self._receipt_owner)
        receipt, token, give = pool.lend()

        def give_back() -> None:
            give()
            if not pool.in_use:
                pools.pop(tag, None)

        return receipt, token, give_back

    @functools.cached_property
    def _receipt_pools(self) -> dict[bytes, Receipts]:
        return {}

    @functools.cached_property
    def _receipt_owner(self) -> bytes:
        # One id per store: a key's pool, dropped while idle and made again,
        # names the same receipts, so Redis holds one per key, not per update.
        return secrets.token_hex(8).encode()

    async def _scan_names(
        self, pattern: bytes, *, unique: bool = True
    ) -> AsyncGenerator[list[bytes], None]:
        """Primary after primary, each with its own cursor (replicas only copy their keys)."""
        connection = self._connection
        for node in await self._retry.run(connection.primaries, "CLUSTER SLOTS"):
            async for names in scan(self._sender_to(node), pattern, unique=unique):
                yield names

    # -- plumbing ------------------------------------------------------------------------------

    def _sender_to(self, node: ClusterNode) -> Callable[[tuple[Any, ...]], Awaitable[Any]]:
        """Sends a command to *node* itself, with retries (SCAN has no key to route by)."""
        connection = self._connection

        def send(args: tuple[Any, ...]) -> Awaitable[Any]:
            return self._retry.run(lambda: connection.execute_on(node, args), str(args[0]))

        return send

    async def _batch(self, commands: list[tuple[Any, ...]], what: str) -> list[Any]:
        """Replies to *commands* (each on one slot), retried together as configured.

        With auto-pipelining they join the commands other tasks are sending.
        """
        if len(commands) == 1:
            return [await self._command(*commands[0])]
        self._connection.use()
        return await self._retry.run(lambda: self._send_together(commands), what)

    async def _send_together(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        connection = self._connection
        replies: list[Any]
        if self._auto_pipeline:
            queue = connection.auto_pipeline
            replies = await asyncio.gather(
                *[queue.execute(args) for args in commands], return_exceptions=True
            )
        else:
            replies = await connection.run_batch(commands)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies


def _slot_groups(rkeys: list[bytes]) -> list[list[bytes]]:
    """*rkeys* grouped by hash slot (order kept within a group)."""
    groups: dict[int, list[bytes]] = {}
    for rkey in rkeys:
        groups.setdefault(key_slot(rkey), []).append(rkey)
    return list(groups.values())


def slot_tag(rkey: bytes) -> bytes | None:
    """A tag that, written as ``{tag}``, hashes to *rkey*'s slot; None if there is none.

    Redis hashes the part between the first ``{`` and the next ``}`` when it is
    not empty, else the whole key.
    """
    start = rkey.find(b"{")
    if start >= 0:
        end = rkey.find(b"}", start + 1)
        if end > start + 1:
            return rkey[start + 1 : end]
    return None if b"}" in rkey else rkey
