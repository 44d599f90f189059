"""The cost of ``HTTP_RATE_LIMIT`` on a Redis backend: requests/s with the limiter on and off.

Two ``python -m runtime serve`` processes share one private Redis server: one
with ``HTTP_RATE_LIMIT=0`` (off), one with a limit no run reaches (every
request counted in Redis, none refused). ``wrk`` drives each in turn on two
routes, rounds alternating which goes first, so a burst of load elsewhere on
the machine hits both alike:

- ``GET /api/server/ping``: no store access, so the limiter's round trips are
  all the store work there is (the worst case);
- ``GET /api/messaging/sessions/{id}``: one session read, a typical call.

The figure is ``on / off`` requests/s per route (1.0: free; 0.9: 10 % cost).
Every client of a ``wrk`` run shares one address, so all requests count on
one key: the most contended case for the limiter's counter.

    python bench/http_limiter.py [--quick] [--connections 32] [--seconds 5] [--rounds 5]

Needs ``wrk`` (``apt-get install wrk``) and ``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import httpx

from kvstore.testing.redis_server import RedisServer, free_port

__all__ = ["main", "measure"]

ROOT: Final = Path(__file__).resolve().parent.parent
AGENT: Final = "3f2b8c1d-5e6a-4b7c-8d9e-0f1a2b3c4d5e"
USER: Final = "11111111-2222-4333-8444-555555555555"
NEVER_REACHED: Final = "1000000000/900"
_RATE: Final = re.compile(r"Requests/sec:\s+([0-9.]+)")


class _Serve:
    """One ``serve`` process on a free port, logging to a file."""

    def __init__(self, redis_url: str, rate_limit: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "KV_STORE_BACKEND": "redis",
            "REDIS_URL": redis_url,
            "AGENT_ID": AGENT,
            "HTTP_RATE_LIMIT": rate_limit,
        }
        env.pop("ELIZA_SERVER_AUTH_TOKEN", None)
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "runtime", "serve"),
                *("--port", str(self.port), "--log-level", "warning"),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve did not start: {log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _wrk(url: str, connections: int, seconds: int) -> float:
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    )
    found = _RATE.search(done.stdout)
    if found is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{done.stdout}")
    return float(found.group(1))


def measure(*, rounds: int, connections: int, seconds: int) -> dict[str, Any]:
    """Requests/s per route with the limiter off and on; ``ratio`` = on / off."""
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        off = _Serve(redis.url, "0", Path(tmp) / "off.log")
        on = _Serve(redis.url, NEVER_REACHED, Path(tmp) / "on.log")
        try:
            created = httpx.post(
                f"{off.url}/api/messaging/sessions",
                json={"agentId": AGENT, "userId": USER},
                timeout=10,
            )
            created.raise_for_status()
            session = created.json()["sessionId"]
            routes = {
                "ping": "/api/server/ping",
                "session": f"/api/messaging/sessions/{session}",
            }
            rates: dict[str, dict[str, list[float]]] = {
                name: {"off": [], "on": []} for name in routes
            }
            for index in range(rounds):
                order = [("off", off), ("on", on)]
                if index % 2:
                    order.reverse()
                for name, path in routes.items():
                    for label, server in order:
                        rates[name][label].append(_wrk(server.url + path, connections, seconds))
            counted = httpx.get(f"{on.url}{routes['ping']}", timeout=10)
            remaining = counted.headers.get("ratelimit-remaining")
        finally:
            off.stop()
            on.stop()
    result: dict[str, Any] = {"connections": connections, "seconds": seconds, "rounds": rounds}
    for name, by_label in rates.items():
        off_rate = statistics.median(by_label["off"])
        on_rate = statistics.median(by_label["on"])
        result[name] = {
            "off_rps": round(off_rate, 1),
            "on_rps": round(on_rate, 1),
            "ratio": round(on_rate / off_rate, 3),
            "runs": by_label,
        }
    result["limiter_counted"] = remaining is not None
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rounds, seconds = (1, 3) if args.quick else (args.rounds, args.seconds)
    result = measure(rounds=rounds, connections=args.connections, seconds=seconds)
    print(f"wrk -c{result['connections']}, {rounds} round(s) of {seconds}s per route and setting")
    for name in ("ping", "session"):
        figures = result[name]
        print(
            f"{name:8} off {figures['off_rps']:8.1f} req/s   on {figures['on_rps']:8.1f} req/s"
            f"   on/off {figures['ratio']:.3f}"
        )
    if not result["limiter_counted"]:
        print("warning: the limited server sent no RateLimit headers: nothing was counted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
