"""Realtime figures: broadcast latency across replicas, and idle sockets held by one process.

    python -m bench.realtime [--messages 300] [--sockets 1000]

1. Two ``python -m runtime serve`` replicas (A, B) on one private Redis; a real
   socket.io-client socket (Node, ``tests/js/socket-probe.mjs``) on A in a
   session's room. Each message is POSTed (transport ``websocket``) on B, then
   on A for the same-replica baseline; the latency is from just before the POST
   to the socket receiving the reply's ``messageBroadcast`` (both clocks are this
   machine's). The POST's own answer time is printed too: it answers before the
   reply is made.
2. One replica (memory backend) and ``--sockets`` idle sockets (websocket
   transport) from one Node process: the server's RSS before and after.

Needs ``redis-server``, ``node`` and ``npm ci --prefix tests/js``. Prints
figures; asserts nothing (not part of the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from kvstore.testing.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "js" / "socket-probe.mjs"
AGENT = "3f2b8c1d-5e6a-4b7c-8d9e-0f1a2b3c4d5e"
USER = "11111111-2222-4333-8444-555555555555"
API = "/api/messaging/sessions"
DEADLINE = 120.0


@contextmanager
def replica(env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """A ``python -m runtime serve`` process: its URL and pid, stopped on exit."""
    port = free_port()
    environ = {
        **os.environ,
        "AGENT_ID": AGENT,
        "HTTP_RATE_LIMIT": "0",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                httpx.get(f"{url}/health", timeout=5)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"replica did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Probe:
    """socket-probe.mjs: its events in a queue."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            ["node", str(PROBE), *args],
            cwd=PROBE.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def wait(self, event: str, key: str | None = None, value: object = None) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while True:
            seen = self.events.get(timeout=max(deadline - time.monotonic(), 0.001))
            if seen["event"] == "connect_failed":
                raise RuntimeError(f"a socket could not connect: {seen['data']}")
            data = seen["data"]
            if seen["event"] == event and (key is None or data.get(key) == value):
                return seen

    def emit(self, event: str, data: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"emit": event, "data": data}) + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


def rss_kib(pid: int) -> int:
    """Resident set size of *pid*, KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS (not Linux?)")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latencies(post_on: str, socket: Probe, sid: str, count: int) -> tuple[list[float], list[float]]:
    """(POST→socket ms, POST answer ms) for *count* messages POSTed on *post_on*."""
    to_socket: list[float] = []
    answered: list[float] = []
    with httpx.Client(base_url=post_on, timeout=30) as http:
        for i in range(count):
            started = time.time() * 1000.0
            sent = http.post(f"{API}/{sid}/messages", json={"content": f"m{i}"})
            answered.append(time.time() * 1000.0 - started)
            user_id = sent.json()["userMessage"]["id"]
            reply = socket.wait("messageBroadcast", "inReplyTo", user_id)
            to_socket.append(float(reply["at"]) - started)
    return to_socket, answered


def broadcast_figures(count: int, logs: Path) -> None:
    with ExitStack() as stack:
        redis_url = stack.enter_context(RedisServer()).url
        env = {"KV_STORE_BACKEND": "redis", "REDIS_URL": redis_url}
        a, _ = stack.enter_context(replica(env, logs / "a.log"))
        b, _ = stack.enter_context(replica(env, logs / "b.log"))
        created = httpx.post(f"{a}{API}", json={"agentId": AGENT, "userId": USER}).json()
        socket = Probe("--url", a, "--auth", json.dumps({"entityId": USER}))
        stack.callback(socket.close)
        socket.wait("connection_established")
        socket.emit("1", {"channelId": created["channelId"]})
        socket.wait("channel_joined")
        latencies(b, socket, created["sessionId"], min(20, count))  # warm up
        print(f"broadcast latency, {count} messages each (ms):")
        print(f"  {'path':34} {'p50':>8} {'p99':>8} {'mean':>8}")
        for label, url in (
            ("POST on B -> socket on A (Redis)", b),
            ("POST on A -> socket on A", a),
        ):
            to_socket, answered = latencies(url, socket, created["sessionId"], count)
            print(
                f"  {label:34} {quantile(to_socket, 0.5):8.2f} {quantile(to_socket, 0.99):8.2f}"
                f" {statistics.fmean(to_socket):8.2f}"
            )
            print(
                f"  {'  (the POST answer itself)':34} {quantile(answered, 0.5):8.2f}"
                f" {quantile(answered, 0.99):8.2f} {statistics.fmean(answered):8.2f}"
            )


def idle_socket_figures(count: int, logs: Path) -> None:
    with replica({}, logs / "idle.log") as (url, pid):
        time.sleep(1.0)  # let the server settle after startup before the first reading
        before = rss_kib(pid)
        sockets = Probe(
            "--url",
            url,
            "--auth",
            json.dumps({"entityId": USER}),
            "--transports",
            "websocket",
            "--sockets",
            str(count),
        )
        try:
            started = time.monotonic()
            sockets.wait("all_connected")
            took = time.monotonic() - started
            time.sleep(1.0)
            after = rss_kib(pid)
        finally:
            sockets.close()
    grown = after - before
    print(f"{count} idle sockets on one process (connected in {took:.1f} s):")
    print(f"  server RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB")
    print(f"  {grown / 1024:.1f} MiB more, {grown / count:.1f} KiB per socket")


def main(argv: Sequence[str] | None = None) -> None:
    """Run both parts and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=300, help="messages per path")
    parser.add_argument("--sockets", type=int, default=1000, help="idle sockets to hold")
    args = parser.parse_args(argv)
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-realtime-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    broadcast_figures(args.messages, logs)
    idle_socket_figures(args.sockets, logs)


if __name__ == "__main__":
    main()
