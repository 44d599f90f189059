"""The Redis server ceiling: ``redis-benchmark`` against the benchmark's own server.

The server itself is a ``kvstore.testing.redis_server.RedisServer``: a private
``redis-server`` on a free loopback port with persistence off, stopped at the
end of the run.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from typing import Any

__all__ = ["redis_benchmark", "redis_server_version"]

# `redis-benchmark -q` prints e.g. "SET: 98231.83 requests per second, p50=0.319 msec".
_BENCH_LINE = re.compile(
    r"(?P<test>[A-Z]+): (?P<rps>[\d.]+) requests per second(?:, p50=(?P<p50>[\d.]+) msec)?"
)


def redis_server_version() -> str | None:
    """``redis-server --version`` (the ``v=`` field), or None if it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"v=(\S+)", out.stdout)
    return match.group(1) if match else out.stdout.strip() or None


async def redis_benchmark(
    url: str, requests: int, *, clients: int = 64, data_size: int = 3
) -> dict[str, Any]:
    """Run ``redis-benchmark -q -t set,get -P 1`` against *url*: the server's ceiling.

    *data_size* is the SET payload in bytes (match the benchmark's encoded value).

    Returns ``{"SET": {"ops_per_s", "p50_us"}, "GET": {...}}`` parsed from its output.
    """
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark is not on PATH")
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    proc = await asyncio.create_subprocess_exec(
        binary,
        *("-h", host, "-p", port, "-q", "-t", "set,get"),
        *("-n", str(requests), "-c", str(clients), "-P", "1", "-d", str(data_size)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    results: dict[str, Any] = {}
    # Progress lines end in "\r"; the last match per test is the final figure.
    for match in _BENCH_LINE.finditer(text):
        p50 = match.group("p50")
        results[match.group("test")] = {
            "ops_per_s": float(match.group("rps")),
            "p50_us": float(p50) * 1000 if p50 else None,
        }
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"redis-benchmark failed (status {proc.returncode}): {text[-300:]!r}")
    return results
