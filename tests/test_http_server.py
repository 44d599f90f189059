"""Connection-level limits of ``python -m runtime serve`` (runtime/http/server.py), on real sockets.

- ``HTTP_REQUEST_TIMEOUT``: 200 slowloris connections (half-sent headers,
  half-sent bodies, nothing sent, a byte trickled at a time) are all closed,
  with a ``408`` in the JSON error format, while ``/health`` keeps answering.
  A long answer whose request has arrived is not cut.
- ``HTTP_MAX_CONNECTIONS`` under ``ulimit -n 64``: connections past the cap get
  ``503`` and are closed, the log stays small although the burst runs the
  process out of descriptors, and ``/health`` answers once the stalled
  connections are gone.
- Framing errors answer ``400`` in the JSON error format.
- Bad values stop ``serve`` with one line naming the variable, exit status 2.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from test_http_e2e import ROOT, Server, base_env, servers  # noqa: F401 - the fixture, reused

from kvstore.testing.redis_server import free_port
from runtime.http.server import (
    AcceptErrorLogFilter,
    ServerLimits,
    connection_budget,
    http_protocol,
)

DEADLINE = 60.0
SLOW_HEADERS = b"POST /api/messaging/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"
SLOW_BODY = (
    b"POST /api/messaging/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    b'{"agentId": "'
)


def _open(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if first:
        sock.sendall(first)
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket, received: dict[socket.socket, bytearray]) -> bool:
    """Read what *sock* has; True once the server closed it."""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
            received.setdefault(sock, bytearray()).extend(chunk)
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def _wait_closed(
    socks: list[socket.socket], deadline: float, trickle: socket.socket | None = None
) -> tuple[set[socket.socket], dict[socket.socket, bytearray]]:
    """Poll until every socket is closed by the server (or the deadline passes)."""
    closed: set[socket.socket] = set()
    received: dict[socket.socket, bytearray] = {}
    end = time.monotonic() + deadline
    while len(closed) < len(socks) and time.monotonic() < end:
        for sock in socks:
            if sock not in closed and _drain(sock, received):
                closed.add(sock)
        if trickle is not None and trickle not in closed:
            try:
                trickle.send(b"X")
            except (BlockingIOError, OSError):
                pass
        time.sleep(0.2)
    return closed, received


def _status_and_body(raw: bytes | bytearray) -> tuple[int, dict[str, Any]]:
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def test_slowloris_connections_are_closed(
    servers: list[Server],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    server = Server(tmp_path / "server.log", {"HTTP_REQUEST_TIMEOUT": "1.5"})
    servers.append(server)
    assert server.wait_until_serving().status_code == 200
    socks = [_open(server.port, SLOW_HEADERS) for _ in range(90)]
    socks += [_open(server.port, SLOW_BODY) for _ in range(90)]
    socks += [_open(server.port, b"") for _ in range(19)]
    trickle = _open(server.port, b"G")
    socks.append(trickle)
    try:
        # The stalled connections do not stop anyone else.
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 200
        closed, received = _wait_closed(socks, DEADLINE, trickle)
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} still open after {DEADLINE}s"
        for sock in socks:
            status, body = _status_and_body(received[sock])
            assert status == 408
            assert body["error"]["code"] == "REQUEST_TIMEOUT"
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    finally:
        for sock in socks:
            sock.close()
    assert "Traceback" not in server.output()


def test_framing_errors_answer_json(
    servers: list[Server],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    server = Server(tmp_path / "server.log", {})
    servers.append(server)
    assert server.wait_until_serving().status_code == 200
    for request in (
        b"NOT AN HTTP REQUEST\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head = raw.partition(b"\r\n\r\n")[0].lower()
        assert b"content-type: application/json" in head, raw
        status, body = _status_and_body(raw)
        assert status == 400
        assert body["error"]["code"] == "BAD_REQUEST"
        assert body["error"]["message"] == "Invalid HTTP request received."


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_connection_cap_under_a_low_fd_limit(
    servers: list[Server],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    budget = connection_budget(2048, 64)
    server = Server(
        tmp_path / "server.log", {"HTTP_REQUEST_TIMEOUT": "300"}, preexec_fn=_low_fd_limit
    )
    servers.append(server)
    assert server.wait_until_serving().status_code == 200
    socks = [_open(server.port, SLOW_HEADERS) for _ in range(200)]
    try:
        # The server keeps at most `budget` of them and refuses the others.
        end = time.monotonic() + DEADLINE
        closed: set[socket.socket] = set()
        received: dict[socket.socket, bytearray] = {}
        while len(closed) < len(socks) - budget and time.monotonic() < end:
            closed |= {s for s in socks if s not in closed and _drain(s, received)}
            time.sleep(0.2)
        assert len(closed) >= len(socks) - budget
        refused = [received[s] for s in closed if s in received]
        assert refused, "no connection was answered 503"
        for raw in refused:
            status, body = _status_and_body(raw)
            assert status == 503 and body["error"]["code"] == "SERVICE_UNAVAILABLE"
        time.sleep(3)  # a few rounds of the accept loop, which used to log each time
        assert server.process.poll() is None
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + DEADLINE
    health: int | None = None
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{server.url}/health", timeout=10).status_code
        except httpx.TransportError:
            health = None
        if health == 200:
            break
        time.sleep(0.2)
    assert health == 200
    log = server.output()
    assert f"accepting at most {budget} connections" in log
    assert len(log) < 20_000, log[-3000:]
    assert log.count("Traceback") == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HTTP_REQUEST_TIMEOUT", "soon"),
        ("HTTP_REQUEST_TIMEOUT", "0"),
        ("HTTP_MAX_CONNECTIONS", "many"),
        ("HTTP_MAX_CONNECTIONS", "0"),
    ],
)
def test_bad_values_stop_serve(variable: str, value: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "serve", "--port", str(free_port())],
        env={**base_env(), variable: value},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], done.stderr


# -- in-process: a long answer is exempt ---------------------------------------------------


async def _slow_stream(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(8):
        await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
        await asyncio.sleep(0.5)
    await send({"type": "http.response.body", "body": b"done\n"})


@contextmanager
def _threaded_server(app: Any, **options: Any) -> Iterator[int]:
    """*app* under uvicorn in a thread, request timeout 1 s; yields its free port."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http_protocol(ServerLimits(request_timeout=1.0)),
        log_level="warning",
        lifespan="off",
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + DEADLINE
    while not server.started and time.monotonic() < end:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(DEADLINE)


@pytest.fixture
def slow_server() -> Iterator[str]:
    with _threaded_server(_slow_stream) as port:
        yield f"http://127.0.0.1:{port}"


def test_long_answer_outlives_the_request_timeout(slow_server: str) -> None:
    # 4 s of answer against a 1 s request timeout: the request had arrived.
    answer = httpx.get(slow_server, timeout=30)
    assert answer.status_code == 200
    assert answer.text == "tick\n" * 8 + "done\n"


async def _slow_websocket(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await asyncio.sleep(3.0)  # three request timeouts
    await send({"type": "websocket.send", "text": "still here"})
    await send({"type": "websocket.close", "code": 1000})


def test_an_upgraded_connection_is_exempt() -> None:
    pytest.importorskip("wsproto")
    with _threaded_server(_slow_websocket, ws="wsproto") as port:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            raw = b""
            while b"still here" not in raw:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
        assert raw.startswith(b"HTTP/1.1 101"), raw
        assert b"still here" in raw, raw


# -- the accept-error filter ---------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_accept_error_filter_collapses_records() -> None:
    clock = _Clock()
    accept_filter = AcceptErrorLogFilter(interval=60.0, clock=clock)
    error = OSError(24, "Too many open files")

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(
            "asyncio", logging.ERROR, __file__, 1, message, None, (OSError, error, None)
        )

    first = record(AcceptErrorLogFilter.MESSAGE + "\nsocket: <...>")
    assert accept_filter.filter(first)
    assert first.exc_info is None and "Too many open files" in first.getMessage()
    assert not any(accept_filter.filter(record(AcceptErrorLogFilter.MESSAGE)) for _ in range(2047))
    other = record("Task exception was never retrieved")
    assert accept_filter.filter(other) and other.exc_info is not None
    clock.now = 61.0
    later = record(AcceptErrorLogFilter.MESSAGE)
    assert accept_filter.filter(later)
    assert "2047 more" in later.getMessage()


def test_limits_from_env() -> None:
    assert ServerLimits.from_env({}) == ServerLimits(30.0, 2048)
    limits = ServerLimits.from_env({"HTTP_REQUEST_TIMEOUT": "2.5", "HTTP_MAX_CONNECTIONS": "10"})
    assert limits == ServerLimits(2.5, 10)
    assert connection_budget(5000, 0) == 5000
