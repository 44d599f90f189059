"""A launcher for throwaway ``redis-server`` processes, for tests and benchmarks.

It is not meant for production: it starts a private server bound to
127.0.0.1 on a free port, in a temporary directory, with RDB snapshots off
(``--save ""``) and the append-only file only when asked for. Each server is
stopped by whoever started it; :meth:`RedisServer.restart` keeps the port and
directory, so data in an append-only file survives it. Clusters of such
servers: :mod:`kvstore.testing.redis_cluster`.

>>> with RedisServer() as server:                        # doctest: +SKIP
...     store = open_store(server.url)
>>> async with RedisServer(appendonly=True) as server:   # doctest: +SKIP
...     await server.arestart()
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
from typing import Final, Self

import anyio.to_thread

from ..options import check_int, check_seconds

__all__ = [
    "HOST",
    "Launcher",
    "RedisServer",
    "RedisServerError",
    "RedisServerNotFoundError",
    "free_port",
    "require_binaries",
]

HOST: Final = "127.0.0.1"
_LOG_NAME: Final = "redis-server.log"
_OUTPUT_NAME: Final = "redis-server.out"
_APPENDFSYNC: Final = ("always", "everysec", "no")


class RedisServerError(RuntimeError):
    """The server could not be started, or did not answer in time."""


class RedisServerNotFoundError(RedisServerError, FileNotFoundError):
    """The ``redis-server`` binary is not installed (or not on ``PATH``)."""


def require_binaries(*names: str) -> None:
    """Skip the calling pytest test when a Redis binary is missing, or fail it when ``CI`` is set.

    Imports pytest only when called: this module itself does not need it.
    """
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    import pytest

    message = f"{' and '.join(missing)} not installed (apt-get install redis-server)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Launcher(ABC):
    """Start/stop plumbing shared by :class:`RedisServer` and the cluster launcher.

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

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(self, *exc_info: object) -> None:
        await anyio.to_thread.run_sync(self.close)


class RedisServer(Launcher):
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
        self.port: int = (
            free_port() if port is None else check_int("port", port, minimum=1, maximum=65535)
        )
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = tuple(extra_args)
        self._owns_dir = dir is None
        self._dir: Path | None = None if dir is None else Path(dir)
        self.binary = binary
        self.startup_timeout = check_seconds("startup_timeout", startup_timeout)
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
