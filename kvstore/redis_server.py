"""A launcher for throwaway ``redis-server`` processes, for tests and benchmarks.

It is not meant for production: it starts a private server bound to
127.0.0.1 on a free port, in a temporary directory, with RDB snapshots off
(``--save ""``) and the append-only file only when asked for. Each server is
stopped by whoever started it; :meth:`RedisServer.restart` keeps the port and
directory, so data in an append-only file survives it.

:class:`RedisServerCluster` starts several such servers in cluster mode and
joins them with ``redis-cli --cluster create``; its :attr:`~RedisServerCluster.url`
is a ``redis+cluster://`` URL for :func:`kvstore.open_store`.

>>> with RedisServer() as server:                        # doctest: +SKIP
...     store = open_store(server.url)
>>> async with RedisServer(appendonly=True) as server:   # doctest: +SKIP
...     await server.arestart()
>>> with RedisServerCluster(primaries=3) as cluster:     # doctest: +SKIP
...     store = open_store(cluster.url)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import anyio.to_thread

__all__ = [
    "RedisServer",
    "RedisServerCluster",
    "RedisServerError",
    "RedisServerNotFoundError",
]

HOST: Final = "127.0.0.1"
_LOG_NAME: Final = "redis-server.log"
_OUTPUT_NAME: Final = "redis-server.out"
_APPENDFSYNC: Final = ("always", "everysec", "no")


class RedisServerError(RuntimeError):
    """The server could not be started, or did not answer in time."""


class RedisServerNotFoundError(RedisServerError, FileNotFoundError):
    """The ``redis-server`` binary is not installed (or not on ``PATH``)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class _Launcher(ABC):
    """Start/stop plumbing shared by :class:`RedisServer` and :class:`RedisServerCluster`.

    Subclasses implement the blocking :meth:`start`, :meth:`stop` and
    :meth:`close`; this adds the async forms (the blocking work runs in a worker
    thread) and the ``with`` / ``async with`` forms (start, then close).
    """

    @abstractmethod
    def start(self) -> Self:
        """Start and wait until ready."""

    @abstractmethod
    def stop(self) -> None:
        """Stop, keeping the data directory."""

    @abstractmethod
    def close(self) -> None:
        """Stop and remove a temporary directory made by :meth:`start`."""

    async def astart(self) -> Self:
        """:meth:`start` without blocking the event loop."""
        return await anyio.to_thread.run_sync(self.start)

    async def astop(self) -> None:
        """:meth:`stop` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.close)


class RedisServer(_Launcher):
    """One private ``redis-server`` process, for tests and benchmarks.

    Args:
        port: TCP port on 127.0.0.1; ``None`` picks a free one.
        appendonly: keep an append-only file so that data survives a restart.
        appendfsync: ``"always"``, ``"everysec"`` or ``"no"`` (with appendonly).
        extra_args: more ``redis-server`` arguments, e.g. ``("--maxmemory", "10mb")``.
        dir: working directory (AOF, log); ``None`` makes a temporary one that
            :meth:`close` removes.
        binary: the executable to run.
        startup_timeout: seconds to wait for the server to answer ``PING``.

    :meth:`start` and :meth:`stop` may be called repeatedly; the port and the
    directory stay the same. ``with`` / ``async with`` start the server and on
    exit :meth:`close` it (stop, then remove a temporary directory).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra_args: Sequence[str] = (),
        dir: str | os.PathLike[str] | None = None,
        binary: str = "redis-server",
        startup_timeout: float = 10.0,
    ) -> None:
        if appendfsync not in _APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {_APPENDFSYNC}, got {appendfsync!r}")
        self._fixed_port = port is not None
        self.port: int = free_port() if port is None else port
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = tuple(extra_args)
        self._owns_dir = dir is None
        self._dir: Path | None = None if dir is None else Path(dir)
        self.binary = binary
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    # -- information ----------------------------------------------------------------

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``: the server never listens beyond loopback."""
        return HOST

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def dir(self) -> Path:
        """The server's working directory (created on first use)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="kvstore-redis-"))
        else:
            self._dir.mkdir(parents=True, exist_ok=True)
        return self._dir

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """The server's log so far (useful in failure messages)."""
        try:
            return (self.dir / _LOG_NAME).read_text(errors="replace")
        except OSError:
            return ""

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Spawn the server and wait until it answers ``PING``.

        Raises:
            RedisServerNotFoundError: the binary is missing.
            RedisServerError: it exited or did not answer within ``startup_timeout``.
        """
        if self.running:
            return self
        executable = shutil.which(self.binary)
        if executable is None:
            raise RedisServerNotFoundError(
                f"{self.binary!r} was not found on PATH: install Redis (e.g. apt-get install"
                " redis-server) to run the Redis tests and benchmarks"
            )
        # A free port can be taken between choosing and binding it; when we
        # chose it, choosing again is harmless.
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                self._spawn(executable)
                # Clients now hold the URL: later starts must keep the port.
                self._fixed_port = True
                return self
            except RedisServerError:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down (SIGTERM, like ``SHUTDOWN``) and wait for it.

        The AOF, when enabled, is flushed; RDB snapshots are off. A server that
        does not exit within *timeout* seconds is killed.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash: no shutdown work at all)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._process = None

    def restart(self) -> Self:
        """Stop (if running) and start again on the same port and directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove the temporary directory it made."""
        self.stop()
        if self._owns_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- async forms (the blocking work runs in a worker thread) ------------------------

    async def akill(self) -> None:
        """:meth:`kill` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.kill)

    async def arestart(self) -> Self:
        """:meth:`restart` without blocking the event loop."""
        return await anyio.to_thread.run_sync(self.restart)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServer(port={self.port}, {state}, dir={str(self._dir)!r})"

    # -- internals ------------------------------------------------------------------------

    def _command(self, executable: str) -> list[str]:
        return [
            executable,
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", _LOG_NAME,
            *self.extra_args,
        ]  # fmt: skip

    def _spawn(self, executable: str) -> None:
        # Output before the log file opens (bad arguments) goes to a file too:
        # a pipe nobody reads could fill up and block the server.
        output = self.dir / _OUTPUT_NAME
        with output.open("wb") as out:
            self._process = subprocess.Popen(
                self._command(executable),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                early = output.read_text(errors="replace").strip()
                raise RedisServerError(
                    f"redis-server exited at start on port {self.port}: {early}\n{self._log_tail()}"
                )
            if self._ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RedisServerError(
            f"redis-server on port {self.port} did not answer PING within"
            f" {self.startup_timeout} s\n{self._log_tail()}"
        )

    def _ping(self) -> bool:
        """True once the server answers PING (not LOADING, not refused).

        With ``--requirepass`` a ready server answers NOAUTH instead of PONG.
        """
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _log_tail(self, lines: int = 20) -> str:
        tail = self.log().splitlines()[-lines:]
        return "\n".join(tail)

    def __del__(self) -> None:
        # Last resort for a forgotten server: never leave a process behind.
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(5)


class RedisServerCluster(_Launcher):
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
        if isinstance(primaries, bool) or not isinstance(primaries, int) or primaries < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 primaries, got {primaries!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"replicas must be an int >= 0, got {replicas!r}")
        if not node_timeout > 0:
            raise ValueError(f"node_timeout must be > 0 seconds, got {node_timeout!r}")
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout = node_timeout
        self.require_full_coverage = require_full_coverage
        self.extra_args = tuple(extra_args)
        self._owns_dir = dir is None
        self._dir: Path | None = None if dir is None else Path(dir)
        self.binary = binary
        self.cli = cli
        self.startup_timeout = startup_timeout
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
