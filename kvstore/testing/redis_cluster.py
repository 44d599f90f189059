"""A launcher for throwaway Redis Clusters, for tests and benchmarks.

:class:`RedisServerCluster` starts several :class:`~kvstore.testing.redis_server.RedisServer`
nodes in cluster mode on loopback and joins them with ``redis-cli --cluster create``;
its :attr:`~RedisServerCluster.url` is a ``redis+cluster://`` URL for
:func:`kvstore.open_store`.

>>> with RedisServerCluster(primaries=3) as cluster:     # doctest: +SKIP
...     store = open_store(cluster.url)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from ..options import check_int, check_seconds
from .redis_server import (
    HOST,
    Launcher,
    RedisServer,
    RedisServerError,
    RedisServerNotFoundError,
    free_port,
)

__all__ = ["RedisServerCluster"]


class RedisServerCluster(Launcher):
    """A private Redis Cluster: several :class:`RedisServer` nodes joined by ``redis-cli``.

    Each node is a :class:`RedisServer` started with ``--cluster-enabled yes``,
    its own ``nodes-PORT.conf`` and working directory (under :attr:`dir`), and
    an explicit cluster-bus port (``--cluster-port``), so that no node needs
    ``PORT + 10000`` to be free. ``redis-cli --cluster create`` then assigns
    the 16384 slots (and replicas), and :meth:`start` returns once every node
    reports ``cluster_state:ok`` and every replica is in sync with its primary
    (only then can it take over).

    Args:
        primaries: number of primary nodes (at least 3, as ``redis-cli`` requires).
        replicas: replicas per primary (``--cluster-replicas``).
        node_timeout: ``cluster-node-timeout`` in seconds. It also paces the
            gossip that ``redis-cli`` waits for: a few seconds keeps start-up
            short without declaring a busy node failed.
        require_full_coverage: ``cluster-require-full-coverage``; with False
            the nodes keep serving their own slots while another primary is down.
        extra_args: more ``redis-server`` arguments for every node.
        dir: parent of the nodes' directories; ``None`` makes a temporary one
            that :meth:`close` removes.
        binary: the ``redis-server`` executable.
        cli: the ``redis-cli`` executable.
        startup_timeout: seconds for the whole start-up (nodes, join, ``ok``).

    A stopped node keeps its port, directory and ``nodes-PORT.conf``, so
    ``cluster.nodes[i].restart()`` brings it back into the cluster with the
    same id and slots (its data is gone: persistence is off).

    >>> with RedisServerCluster() as cluster:                 # doctest: +SKIP
    ...     service = open_service(cluster.url)
    """

    def __init__(
        self,
        primaries: int = 3,
        *,
        replicas: int = 0,
        node_timeout: float = 2.0,
        require_full_coverage: bool = True,
        extra_args: Sequence[str] = (),
        dir: str | os.PathLike[str] | None = None,
        binary: str = "redis-server",
        cli: str = "redis-cli",
        startup_timeout: float = 60.0,
    ) -> None:
        if check_int("primaries", primaries) < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 primaries, got {primaries}")
        self.primaries = primaries
        self.replicas = check_int("replicas", replicas, minimum=0)
        self.node_timeout = check_seconds("node_timeout", node_timeout)
        self.require_full_coverage = require_full_coverage
        self.extra_args = tuple(extra_args)
        self._owns_dir = dir is None
        self._dir: Path | None = None if dir is None else Path(dir)
        self.binary = binary
        self.cli = cli
        self.startup_timeout = check_seconds("startup_timeout", startup_timeout)
        self.nodes: list[RedisServer] = []
        """The nodes, in the order given to ``redis-cli --cluster create``."""
        self.startup_seconds: float | None = None
        """How long the last :meth:`start` took (nodes, join and ``ok``)."""

    # -- information ----------------------------------------------------------------

    @property
    def dir(self) -> Path:
        """The directory holding one sub-directory per node (created on first use)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="kvstore-redis-cluster-"))
        else:
            self._dir.mkdir(parents=True, exist_ok=True)
        return self._dir

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…/``: every node is a startup node."""
        if not self.nodes:
            raise RedisServerError("the cluster has no nodes yet: start() it first")
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes) + "/"

    @property
    def running(self) -> bool:
        """True while every node process is alive."""
        return bool(self.nodes) and all(node.running for node in self.nodes)

    def node(self, port: int) -> RedisServer:
        """The node listening on *port*."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node of this cluster listens on port {port}")

    def primary_nodes(self) -> list[RedisServer]:
        """The running nodes that are primaries right now (asked with ``INFO replication``)."""
        return [
            node
            for node in self.nodes
            if node.running and "role:master" in _query(node.port, b"INFO replication")
        ]

    def cluster_info(self, node: RedisServer) -> dict[str, str]:
        """``CLUSTER INFO`` of *node* as a dict (``cluster_state``, ``cluster_known_nodes``…)."""
        return _parse_info(_query(node.port, b"CLUSTER INFO"))

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Start the nodes, join them and wait until every node reports ``cluster_state:ok``.

        Raises:
            RedisServerNotFoundError: ``redis-server`` or ``redis-cli`` is missing.
            RedisServerError: a node did not start, the join failed, or the
                cluster was not ``ok`` within ``startup_timeout``.
        """
        if self.running:
            return self
        cli = shutil.which(self.cli)
        if cli is None:
            raise RedisServerNotFoundError(
                f"{self.cli!r} was not found on PATH: install Redis (e.g. apt-get install"
                " redis-server, which ships redis-cli) to run the Redis Cluster tests"
            )
        started = time.monotonic()
        deadline = started + self.startup_timeout
        try:
            if self.nodes:  # started before: same ports, directories and cluster config
                for node in self.nodes:
                    node.start()
            else:
                self.nodes = self._start_nodes(self.primaries * (1 + self.replicas))
                self._create(cli, deadline)
            self._wait_until_ok(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop every node (SIGTERM); ports, directories and cluster config stay."""
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        """Stop every node and remove the temporary directory."""
        self.stop()
        for node in self.nodes:
            node.close()
        if self._owns_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self.nodes = []

    def __repr__(self) -> str:
        ports = [node.port for node in self.nodes]
        state = "running" if self.running else "stopped"
        return f"RedisServerCluster(ports={ports}, {state}, dir={str(self._dir)!r})"

    # -- internals ------------------------------------------------------------------------

    def _start_nodes(self, count: int) -> list[RedisServer]:
        nodes: list[RedisServer] = []
        taken: set[int] = set()
        try:
            for _ in range(count):
                nodes.append(self._start_node(taken))
        except BaseException:
            for node in nodes:
                node.stop()
            raise
        return nodes

    def _start_node(self, taken: set[int]) -> RedisServer:
        # Two ports per node: clients and the cluster bus. Either may be taken
        # by someone else between choosing and binding: choose again then.
        for attempt in range(3):
            port, bus = _fresh_port(taken), _fresh_port(taken)
            timeout_ms = max(1, round(self.node_timeout * 1000))
            coverage = "yes" if self.require_full_coverage else "no"
            cluster_args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-port", str(bus),
                "--cluster-node-timeout", str(timeout_ms),
                "--cluster-require-full-coverage", coverage,
                # A replica can take over only once synced: start syncing at once.
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
            node = RedisServer(
                port,
                extra_args=(*cluster_args, *self.extra_args),
                dir=self.dir / f"node-{port}",
                binary=self.binary,
            )
            try:
                return node.start()
            except RedisServerNotFoundError:
                raise
            except RedisServerError:
                node.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _create(self, cli: str, deadline: float) -> None:
        command = [
            cli,
            "--cluster", "create",
            *(f"{HOST}:{node.port}" for node in self.nodes),
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=max(deadline - time.monotonic(), 1.0),
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise RedisServerError(
                f"redis-cli --cluster create did not finish within {self.startup_timeout} s"
            ) from err
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise RedisServerError(
                f"redis-cli --cluster create failed (exit {result.returncode}):\n{output[-2000:]}"
            )

    def _wait_until_ok(self, deadline: float) -> None:
        pending = list(self.nodes)
        while pending:
            try:
                pending = [node for node in pending if not self._ready(node)]
            except OSError:
                pass  # a node still starting: ask again
            if not pending:
                return
            if time.monotonic() > deadline:
                ports = [node.port for node in pending]
                raise RedisServerError(
                    f"the cluster was not ok within {self.startup_timeout} s"
                    f" (nodes on ports {ports} are not)"
                )
            time.sleep(0.05)

    def _ready(self, node: RedisServer) -> bool:
        info = self.cluster_info(node)
        if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(
            len(self.nodes)
        ):
            return False
        replication = _parse_info(_query(node.port, b"INFO replication"))
        return replication.get("role") != "slave" or replication.get("master_link_status") == "up"


def _fresh_port(taken: set[int]) -> int:
    while True:
        port = free_port()
        # The kernel may hand out a port it gave us a moment ago.
        if port not in taken:
            taken.add(port)
            return port


def _query(port: int, command: bytes, timeout: float = 2.0) -> str:
    """Send one inline command to the server on *port* and return its bulk-string reply."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(command + b"\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"the server on port {port} closed the connection")
            data += chunk
        header, _, body = data.partition(b"\r\n")
        if not header.startswith(b"$"):
            raise ConnectionError(f"{command.decode()} on port {port} answered {header!r}")
        size = int(header[1:])
        while len(body) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"the server on port {port} closed the connection")
            body += chunk
        return body[:size].decode(errors="replace")


def _parse_info(text: str) -> dict[str, str]:
    pairs = (line.partition(":") for line in text.splitlines() if ":" in line)
    return {name: value.strip() for name, _, value in pairs}
