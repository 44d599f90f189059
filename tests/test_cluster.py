"""RedisClusterStore on a real local Redis Cluster (three primaries).

The shipped contract runs unchanged; then what only a cluster shows: keys spread
over every node, bulk calls split per slot (counted by the servers themselves),
hash-tagged keys sharing a slot, compare-and-set ``update`` across clients,
sessions with history and sweeping, a primary that dies (or freezes) mid-load,
and a replica taking over, the last two on throwaway clusters.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

import kvstore
from kvstore import (
    BackendUnavailableError,
    ConfigError,
    KVStoreError,
    MetricsStore,
    RedisClusterStore,
    RedisStore,
    open_service,
    open_store,
    service_from_env,
)
from kvstore.testing import ContractBackend, KVStoreContract, ManualClock
from kvstore.testing.redis_cluster import RedisServerCluster
from kvstore.testing.redis_server import RedisServer, RedisServerError
from runtime.agent import AgentRuntime
from runtime.sessions import Session, SessionManager, SessionNotFoundError, SessionsConfig

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

MINUTE = 60.0


class TestClusterContract(KVStoreContract):
    """The shipped contract, unchanged, on Redis Cluster."""

    @pytest.fixture
    def kv_backend(self, cluster_contract_backend: ContractBackend) -> ContractBackend:
        return cluster_contract_backend


# -- helpers ------------------------------------------------------------------------------------


def node_clients(cluster: RedisServerCluster) -> list[redis.asyncio.Redis]:
    """A plain (non-cluster) client on each node, to ask it about itself."""
    return [redis.asyncio.Redis(host=n.host, port=n.port) for n in cluster.nodes]


async def command_calls(cluster: RedisServerCluster, *commands: str) -> dict[str, int]:
    """Calls of *commands* summed over every node since the last CONFIG RESETSTAT."""
    totals = dict.fromkeys(commands, 0)
    for client in node_clients(cluster):
        async with client:
            stats = await client.info("commandstats")
            for command in commands:
                totals[command] += stats.get(f"cmdstat_{command}", {}).get("calls", 0)
    return totals


async def reset_stats(cluster: RedisServerCluster) -> None:
    for client in node_clients(cluster):
        async with client:
            await client.config_resetstat()


def distinct_slot_keys(count: int, prefix: bytes = b"kv:default:") -> list[str]:
    """*count* keys whose stored names fall in *count* different slots."""
    keys: list[str] = []
    slots: set[int] = set()
    for i in itertools.count():
        slot = key_slot(prefix + f"plain{i}".encode())
        if slot not in slots:
            slots.add(slot)
            keys.append(f"plain{i}")
            if len(keys) == count:
                return keys
    raise AssertionError("unreachable")


@pytest.fixture(params=[True, False], ids=["auto_pipeline", "no_auto_pipeline"])
async def store(
    cluster_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[RedisClusterStore]:
    """A store on the session cluster, with and without auto-pipelining."""
    async with RedisClusterStore(cluster_url, auto_pipeline=request.param) as store:
        yield store


# -- URLs, clients and modes --------------------------------------------------------------------


async def test_open_store_and_service_pick_cluster_mode(cluster_url: str) -> None:
    store = open_store(cluster_url + "?namespace=app&retries=1&socket_timeout=1.5")
    try:
        assert isinstance(store, RedisClusterStore) and store.is_cluster
        assert (store.backend, RedisClusterStore.backend) == ("redis-cluster", "redis-cluster")
        assert (store.namespace, store.default_ttl) == ("app", None)
        assert isinstance(store.client, RedisCluster)
        assert store.cluster_client is store.client  # the name from round 1
        assert store.client.get_connection_kwargs()["socket_timeout"] == 1.5
        await store.set("k", {"v": 1})
        assert await store.get("k") == {"v": 1}
    finally:
        await store.aclose()
    standalone = open_store("redis://127.0.0.1:1/0")
    assert isinstance(standalone, RedisStore) and not isinstance(standalone, RedisClusterStore)
    assert not standalone.is_cluster and standalone.backend == "redis"
    await standalone.aclose()
    service = open_service(cluster_url)
    try:
        sessions = service.get_store("sessions")
        assert isinstance(sessions, MetricsStore) and sessions.backend == "redis-cluster"
        await sessions.set("k", 1)
        assert await service.get_store("other").get("k") is None
    finally:
        await service.aclose()


async def test_one_node_is_enough_to_find_the_others(redis_cluster: RedisServerCluster) -> None:
    last = redis_cluster.nodes[-1]
    async with RedisClusterStore(f"redis+cluster://{last.host}:{last.port}") as store:
        await store.set_many({f"k{i}": i for i in range(30)})
        assert len(store.client.get_primaries()) == 3
        assert await store.get_many([f"k{i}" for i in range(30)]) == {f"k{i}": i for i in range(30)}
        await store.clear()


async def test_service_from_env_and_runtime(redis_cluster: RedisServerCluster) -> None:
    one_node = f"redis://{redis_cluster.nodes[1].host}:{redis_cluster.nodes[1].port}"
    for url in (redis_cluster.url, one_node):
        service = service_from_env({"KV_STORE_BACKEND": "redis-cluster", "REDIS_URL": url})
        try:
            backend = service.backend
            assert isinstance(backend, RedisClusterStore) and backend.is_cluster
            await service.get_store("env").set("k", url)
            assert await service.get_store("env").get("k") == url
        finally:
            await service.aclose()
    # The scheme decides: KV_STORE_BACKEND=redis with a cluster URL is a cluster store.
    service = service_from_env({"KV_STORE_BACKEND": "redis", "REDIS_URL": redis_cluster.url})
    assert isinstance(service.backend, RedisClusterStore)
    await service.aclose()
    for bad in ("unix:///tmp/redis.sock", "http://x", "redis+cluster://h:1/2"):
        with pytest.raises(ConfigError, match="REDIS_URL"):
            service_from_env({"KV_STORE_BACKEND": "redis-cluster", "REDIS_URL": bad})
    environ = {"KV_STORE_BACKEND": "redis-cluster", "REDIS_URL": redis_cluster.url}
    async with AgentRuntime(agent_id="agent-env", environ=environ) as agent:
        session = await agent.sessions.create(user_id="u")
        await agent.sessions.send_message(session.id, "over the cluster")
        assert len(await agent.sessions.messages(session.id)) == 2
        await agent.sessions.end(session.id)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster:///", "names no node"),
        ("redis+cluster://127.0.0.1:notaport/", "invalid port"),
        ("redis+cluster://127.0.0.1:7000,/", "names no node"),
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
        ("redis+cluster://127.0.0.1:7000/?db=2", "only database 0"),
        ("redis+cluster://127.0.0.1:7000/?colour=blue", "unknown option 'colour'"),
        ("redis+cluster://127.0.0.1:7000/?retries=-1", "retries must be >= 0"),
        ("redis+cluster://127.0.0.1:7000/?ssl_ca_path=/etc/ssl", "invalid Redis Cluster URL"),
    ],
)
def test_bad_cluster_urls_raise_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url)


async def test_url_forms() -> None:
    secret = RedisClusterStore.from_url(
        "redis+cluster://user:s3cret@127.0.0.1:7000,127.0.0.1:7001/0"
    )
    assert "s3cret" not in repr(secret) and "7001" in repr(secret)
    kwargs = secret.client.get_connection_kwargs()
    assert (kwargs["username"], kwargs["password"]) == ("user", "s3cret")
    assert set(secret.client.nodes_manager.startup_nodes) == {
        "127.0.0.1:7000",
        "127.0.0.1:7001",
    }
    tls = RedisClusterStore.from_url("rediss+cluster://127.0.0.1:7000/?ssl_cert_reqs=none")
    assert tls.client.get_connection_kwargs()["connection_class"] is SSLConnection
    default_port = RedisClusterStore.from_url("redis+cluster://127.0.0.1/")
    assert set(default_port.client.nodes_manager.startup_nodes) == {"127.0.0.1:6379"}
    for store in (secret, tls, default_port):
        await store.aclose()


# -- one class per mode -------------------------------------------------------------------------


async def test_the_cluster_store_is_public_and_chosen_by_scheme() -> None:
    assert "RedisClusterStore" in kvstore.__all__ and kvstore.RedisClusterStore is RedisClusterStore
    assert (RedisClusterStore.backend, RedisStore.backend) == ("redis-cluster", "redis")
    urls = [
        "redis+cluster://127.0.0.1:7000/",
        "rediss+cluster://user:s3cret@127.0.0.1:7000,127.0.0.1:7001/",
        "REDIS+CLUSTER://127.0.0.1:7000/",
    ]
    for url in urls:
        store = open_store(url)
        assert type(store) is RedisClusterStore and "s3cret" not in repr(store)
        await store.aclose()
    environ = {"KV_STORE_BACKEND": "redis-cluster", "REDIS_URL": "redis://127.0.0.1:7000"}
    for service in (open_service(urls[0]), service_from_env(environ)):
        assert type(service.backend) is RedisClusterStore
        sessions = service.get_store("sessions")
        assert isinstance(sessions, MetricsStore) and sessions.backend == "redis-cluster"
        await service.aclose()
    for url in ("redis://127.0.0.1:7000/0", "unix:///tmp/redis.sock"):
        assert type(open_store(url)) is RedisStore
        await open_store(url).aclose()


@pytest.mark.parametrize(
    "url", ["redis+cluster://127.0.0.1:7000/", "rediss+cluster://user:s3cret@127.0.0.1:7000/0"]
)
def test_redis_store_refuses_a_cluster_url(url: str) -> None:
    for build in (RedisStore, RedisStore.from_url):
        with pytest.raises(ConfigError, match="use RedisClusterStore") as info:
            build(url)
        assert "s3cret" not in str(info.value)


async def test_each_class_refuses_the_other_modes_client_and_urls() -> None:
    cluster_client = RedisCluster(host="127.0.0.1", port=7000)
    server_client = redis.asyncio.Redis(host="127.0.0.1", port=6379)
    try:
        with pytest.raises(ConfigError, match=r"use RedisClusterStore\(client\)"):
            RedisStore(cluster_client)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=r"use RedisStore\(client\)"):
            RedisClusterStore(server_client)  # type: ignore[arg-type]
    finally:
        await cluster_client.aclose()
        await server_client.aclose()
    for url in ("redis://user:s3cret@127.0.0.1:7000/0", "rediss://127.0.0.1/", "unix:///r.sock"):
        for build in (RedisClusterStore, RedisClusterStore.from_url):
            with pytest.raises(ConfigError, match="for one server use RedisStore") as info:
                build(url)
            assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match="redis\\+cluster://"):
        RedisClusterStore("http://127.0.0.1:7000/")
    with pytest.raises(TypeError, match="RedisCluster client"):
        RedisClusterStore(7000)  # type: ignore[arg-type]


async def test_a_cluster_client_passed_in_is_used_and_not_closed(
    redis_cluster: RedisServerCluster, cluster_url: str
) -> None:
    node = redis_cluster.nodes[0]
    client = RedisCluster(host=node.host, port=node.port, retry=Retry(NoBackoff(), 0))
    try:
        store = RedisClusterStore(client, namespace="passed")
        assert store.is_cluster and store.client is client
        await store.set_many({f"k{i}": i for i in range(20)})
        await store.aclose()
        assert await client.get("kv:passed:k3") == b"3"  # still open
    finally:
        await client.aclose()
    with pytest.raises(ConfigError, match="decode_responses"):
        RedisClusterStore(RedisCluster(host=node.host, port=node.port, decode_responses=True))


# -- sharding and key layout --------------------------------------------------------------------


async def test_keys_spread_over_every_primary(
    redis_cluster: RedisServerCluster, store: RedisClusterStore
) -> None:
    await store.set_many({f"user:{i}": {"i": i} for i in range(300)})
    sizes = []
    for client in node_clients(redis_cluster):
        async with client:
            sizes.append(await client.dbsize())
            sample = await client.execute_command("RANDOMKEY")  # type: ignore[no-untyped-call]
            assert sample is not None and sample.startswith(b"kv:default:user:")
    assert sum(sizes) == 300
    assert len(sizes) == 3 and min(sizes) > 50, sizes  # ~100 each: no hot node


async def test_bulk_calls_send_one_command_per_slot(
    redis_cluster: RedisServerCluster, store: RedisClusterStore
) -> None:
    tagged = [f"{{user42}}:{part}" for part in ("profile", "cart", "prefs", "seen", "tz")]
    plain = distinct_slot_keys(3)
    slots = {key_slot(f"kv:default:{key}".encode()) for key in tagged}
    assert len(slots) == 1  # the hash tag puts them in one slot
    slots |= {key_slot(f"kv:default:{key}".encode()) for key in plain}
    assert len(slots) == 4
    await reset_stats(redis_cluster)
    await store.set_many(dict.fromkeys(tagged + plain, 1))
    assert (await command_calls(redis_cluster, "mset"))["mset"] == 1 + 3
    await store.set_many(dict.fromkeys(tagged, 2), ttl=30)
    await store.set_many(dict.fromkeys(plain, 2), ttl=30)
    calls = await command_calls(redis_cluster, "eval", "set")
    # One atomic script for the tagged slot (Redis counts its 5 inner SETs too),
    # and a plain SET PX for each key alone in its slot.
    assert calls == {"eval": 1, "set": 5 + 3}
    assert await store.get_many(tagged + plain) == dict.fromkeys(tagged + plain, 2)
    assert (await command_calls(redis_cluster, "mget"))["mget"] == 1 + 3
    for key in tagged + plain:
        remaining = await store.ttl(key)
        assert remaining is not None and 20 < remaining <= 30
    assert await store.delete_many([*tagged, *plain, "missing"]) == 8
    assert (await command_calls(redis_cluster, "del"))["del"] == 1 + 3 + 1


async def test_entries_and_clear_visit_every_node_and_only_this_namespace(
    redis_cluster: RedisServerCluster, cluster_url: str, store: RedisClusterStore
) -> None:
    async with RedisClusterStore(cluster_url, prefix="app") as other:
        mine = store.namespaced("mine")
        theirs = store.namespaced("mine2")
        await mine.set_many({f"k{i}": i for i in range(1200)})
        await theirs.set_many({f"k{i}": i for i in range(50)})
        await other.namespaced("mine").set("k1", "other prefix")
        await reset_stats(redis_cluster)
        assert {k: v async for k, v in mine.entries()} == {f"k{i}": i for i in range(1200)}
        expected = {f"k{i}" for i in range(1200) if f"k{i}".startswith("k11")}
        assert {k async for k, _ in mine.entries("k11")} == expected
        scans = []
        for client in node_clients(redis_cluster):
            async with client:
                stats = await client.info("commandstats")
                scans.append(stats.get("cmdstat_scan", {}).get("calls", 0))
        assert all(calls > 0 for calls in scans), scans
        await mine.clear()
        assert [kv async for kv in mine.entries()] == []
        assert len([kv async for kv in theirs.entries()]) == 50
        assert await other.namespaced("mine").get("k1") == "other prefix"


async def test_update_is_atomic_across_clients(cluster_url: str) -> None:
    stores = [RedisClusterStore(cluster_url, auto_pipeline=ap) for ap in (True, False)]

    def bump(n: int) -> int:
        return n + 1

    async def worker(store: RedisClusterStore) -> None:
        for _ in range(25):
            await store.update("counter", bump, default=0)

    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                for _ in range(6):
                    tg.start_soon(worker, store)
        assert await stores[0].get("counter") == 2 * 6 * 25
        assert await stores[1].update("counter", bump, ttl=60) == 301
        remaining = await stores[0].ttl("counter")
        assert remaining is not None and 50 < remaining <= 60
        assert await stores[0].update("counter", bump) == 302
        assert await stores[0].ttl("counter") is None  # ttl=None: the default (none)
    finally:
        for store in stores:
            await store.aclose()


async def test_server_errors_are_wrapped(cluster_url: str, store: RedisClusterStore) -> None:
    await store.client.execute_command("RPUSH", b"kv:default:list", b"x")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.get("list"),
        lambda: store.update("list", lambda v: v),
    ]
    for call in calls:
        with pytest.raises(KVStoreError, match="WRONGTYPE") as info:
            await call()
        assert not isinstance(info.value, BackendUnavailableError)
    await store.set("ok", 1)
    assert await store.get("ok") == 1


# -- sessions -----------------------------------------------------------------------------------


async def test_sessions_run_unchanged_on_the_cluster(cluster_url: str) -> None:
    clock = ManualClock(1_700_000_000.0)
    service = open_service(cluster_url)
    agent = AgentRuntime(agent_id="agent-c", environ={})
    agent.register_service(service)
    expired: list[Session] = []
    async with agent:
        assert agent.kv_service is service
        config = SessionsConfig(max_page_size=10)
        manager = SessionManager(agent, config=config, clock=clock, on_expired=expired.append)
        doomed = await manager.create(user_id="u1", timeout={"timeout_minutes": 5})
        alive = await manager.create(user_id="u2", timeout={"timeout_minutes": 60})
        for i in range(12):
            reply = await manager.send_message(doomed.id, f"m{i}")
            assert reply.content == f"Echo: m{i}"
            clock.advance_by(1)
        await manager.send_message(alive.id, "hello")
        pages = [await manager.messages(doomed.id, limit=10)]
        while pages[-1]:
            pages.append(
                await manager.messages(doomed.id, limit=10, before=pages[-1][-1].created_at)
            )
        history = [message for page in pages for message in page]
        assert [len(page) for page in pages] == [10, 10, 4, 0]
        assert [m.content for m in history[:2]] == ["Echo: m11", "m11"]
        assert [m.content for m in history[-2:]] == ["Echo: m0", "m0"]
        assert len({m.id for m in history}) == 24
        times = [m.created_at for m in history]
        assert times == sorted(times, reverse=True) and len(set(times)) == 24
        assert {s.id for s in await manager.list(agent_id="agent-c")} == {doomed.id, alive.id}
        assert await manager.sweep() == 0
        clock.advance_by(6 * MINUTE)
        # Two replicas sweep at once: on_expired still fires exactly once.
        replica = SessionManager(agent, config=config, clock=clock, on_expired=expired.append)
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.sweep)
            tg.start_soon(replica.sweep)
        assert [s.id for s in expired] == [doomed.id]
        assert expired[0].message_count == 24
        with pytest.raises(SessionNotFoundError):
            await manager.get(doomed.id)
        keys = {key async for key, _ in service.get_store("sessions").entries()}
        assert not {key for key in keys if doomed.id in key}
        assert f"s:{alive.id}" in keys
        assert len(await manager.messages(alive.id, limit=10)) == 2
    await service.aclose()


# -- a primary fails mid-load -------------------------------------------------------------------


def owner_port(store: RedisClusterStore, key: str) -> int:
    node = store.client.get_node_from_key(f"kv:default:{key}")
    assert isinstance(node, ClusterNode)
    return int(node.port)


@dataclass(frozen=True)
class Outcome:
    """One set-then-get a worker made after the failure, timed on the event loop's clock."""

    key: str
    on_victim: bool
    ok: bool
    started: float
    ended: float


@pytest.mark.slow
@pytest.mark.parametrize(
    ("failure", "auto_pipeline"), [("terminated", False), ("frozen", True)], ids=str
)
async def test_a_failed_primary_makes_only_its_keys_unavailable(
    throwaway_cluster: RedisServerCluster, failure: str, auto_pipeline: bool
) -> None:
    socket_timeout, retries = 0.5, 2
    store = RedisClusterStore(
        throwaway_cluster.url,
        retries=retries,
        retry_backoff=0.05,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        auto_pipeline=auto_pipeline,
    )
    victim: RedisServer = throwaway_cluster.nodes[0]
    # Worst case per call by the store's settings: every attempt times out, each
    # retry first re-reads the slot map (which may wait on the frozen node too),
    # plus the backoffs. A call far beyond it hangs.
    bound = (retries + 1) * socket_timeout + retries * (socket_timeout + 0.2) + 1.0
    keys = [f"k{i}" for i in range(240)]
    outcomes: list[Outcome] = []
    failed = anyio.Event()
    wanted = 8  # outcomes of each kind (victim's keys, others') before the workers stop

    def enough() -> bool:
        mine = sum(o.on_victim for o in outcomes)
        return mine >= wanted and len(outcomes) - mine >= wanted

    async def worker(w: int) -> None:
        for i in itertools.count():
            key = keys[w + (i * 12) % len(keys)]  # each worker its own keys
            after_failure = failed.is_set()
            started = anyio.current_time()
            try:
                with anyio.fail_after(bound + 10):  # never a hang
                    await store.set(key, i)
                    assert await store.get(key) == i
                ok = True
            except BackendUnavailableError as err:
                assert isinstance(err, ConnectionError) and err.__cause__ is not None
                ok = False
            if after_failure:
                outcomes.append(Outcome(key, on_victim[key], ok, started, anyio.current_time()))
                if enough():
                    return

    async with store:
        await store.set_many(dict.fromkeys(keys, 0))
        on_victim = {key: owner_port(store, key) == victim.port for key in keys}
        assert 40 < sum(on_victim.values()) < 200  # a third of the keys, roughly
        pid = victim.pid
        assert pid is not None
        try:
            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for w in range(12):
                        tg.start_soon(worker, w)
                    await anyio.sleep(0.2)
                    if failure == "frozen":
                        os.kill(pid, signal.SIGSTOP)
                    else:
                        await victim.astop()
                    failed.set()
        finally:
            if failure == "frozen":
                os.kill(pid, signal.SIGCONT)
        mine = [o for o in outcomes if o.on_victim]
        others = [o for o in outcomes if not o.on_victim]
        # The victim's keys fail, typed and in bounded time, while every call
        # on the other nodes' keys succeeds.
        assert not any(o.ok for o in mine), mine[:5]
        assert all(o.ok for o in others), [o for o in others if not o.ok][:5]
        # ... without waiting for the victim: while a call on the victim's keys
        # was failing (retrying, backing off, timing out), calls on the other
        # nodes' keys started and finished.
        assert any(m.started < o.started and o.ended < m.ended for m in mine for o in others), (
            mine[:3],
            others[:3],
        )
        # Back on its port with its nodes-PORT.conf, the node serves its slots
        # again (empty: persistence is off).
        if failure == "terminated":
            await victim.astart()
        victim_key = next(key for key in keys if on_victim[key])
        with anyio.fail_after(30):
            while True:
                try:
                    await store.set(victim_key, "back")
                    break
                except BackendUnavailableError:
                    await anyio.sleep(0.2)
        assert await store.get(victim_key) == "back"


@pytest.mark.slow
async def test_a_replica_takes_over_and_the_store_follows(
    failover_cluster: RedisServerCluster,
) -> None:
    store = RedisClusterStore(
        failover_cluster.url, retries=2, retry_backoff=0.05, socket_timeout=0.5
    )
    async with store:
        keys = [f"k{i}" for i in range(120)]
        await store.set_many({key: {"i": i} for i, key in enumerate(keys)})
        victim = failover_cluster.primary_nodes()[0]
        mine = [key for key in keys if owner_port(store, key) == victim.port]
        assert mine
        # Admin clients of their own: WAIT blocks for up to 5 s, far longer than
        # the store's socket_timeout allows.
        async with redis.asyncio.Redis(
            host=victim.host, port=victim.port, socket_timeout=30
        ) as primary:
            # The replica has every key before its primary dies (replication is async).
            assert await primary.wait(1, 5000) == 1
            replication = await primary.info("replication")
        replica = failover_cluster.node(int(replication["slave0"]["port"]))
        async with redis.asyncio.Redis(
            host=replica.host, port=replica.port, socket_timeout=30
        ) as standby:
            # Hold the takeover until the store has seen the primary gone, so
            # that outage is observed every run, however fast the failover.
            await standby.config_set("cluster-replica-no-failover", "yes")
            await victim.akill()
            with anyio.fail_after(30), pytest.raises(BackendUnavailableError):
                await store.set(mine[0], "during the outage")
            await standby.config_set("cluster-replica-no-failover", "no")
        # Within seconds (cluster-node-timeout is 1 s) the replica takes over.
        with anyio.fail_after(30):
            while True:
                try:
                    await store.set(mine[0], "after failover")
                    break
                except BackendUnavailableError:
                    await anyio.sleep(0.1)
        assert owner_port(store, mine[0]) != victim.port  # the slot map was reloaded
        assert owner_port(store, mine[0]) == replica.port
        expected = {key: {"i": int(key[1:])} for key in mine[1:]}
        assert await store.get_many(mine[1:]) == expected
        assert await store.update(mine[0], lambda v: v + "!") == "after failover!"


# -- the launcher -------------------------------------------------------------------------------


async def test_launcher_reports_state_and_restarts_a_node(
    throwaway_cluster: RedisServerCluster,
) -> None:
    assert throwaway_cluster.running and len(throwaway_cluster.nodes) == 3
    assert throwaway_cluster.startup_seconds is not None
    assert throwaway_cluster.startup_seconds < throwaway_cluster.startup_timeout
    assert len(throwaway_cluster.primary_nodes()) == 3
    for node in throwaway_cluster.nodes:
        info = throwaway_cluster.cluster_info(node)
        assert (info["cluster_state"], info["cluster_slots_ok"]) == ("ok", "16384")
        assert (node.dir / f"nodes-{node.port}.conf").exists()
    node = throwaway_cluster.nodes[1]
    assert throwaway_cluster.node(node.port) is node
    with pytest.raises(KeyError):
        throwaway_cluster.node(1)
    await node.astop()
    assert not throwaway_cluster.running
    await throwaway_cluster.astart()  # restarts the stopped node, same ports and config
    assert throwaway_cluster.running
    assert throwaway_cluster.cluster_info(node)["cluster_known_nodes"] == "3"


def test_launcher_needs_three_primaries() -> None:
    with pytest.raises(ValueError, match="at least 3 primaries"):
        RedisServerCluster(primaries=2)
    with pytest.raises(ValueError, match="replicas"):
        RedisServerCluster(replicas=-1)
    with pytest.raises(RedisServerError, match="start"):
        _ = RedisServerCluster().url
