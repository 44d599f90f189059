"""Send-message over HTTP with wrk: ``python -m runtime serve`` on memory and Redis, and a floor.

    python -m bench.http_sessions [--duration 10] [--connections 64] [--threads 2]

Starts one ``python -m runtime serve`` process per backend (``HTTP_RATE_LIMIT=0``;
Redis is a private ``redis-server`` on a free loopback port, started here), and,
as the floor, a trivial Starlette endpoint under the same ``uvicorn.run`` settings
as ``serve``. It creates 256 sessions, then runs ``wrk`` with a Lua script that
POSTs send-message (``transport: "http"``) spread over the 256 sessions, and then
all on one hot session. It prints requests/s, p50/p99 and non-2xx counts, and the
ratios of one run: spread Redis / spread memory, hot / spread per backend, and each
against the floor. ``wrk`` comes from Debian's packages (``apt-get install wrk``).
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

import runtime
from kvstore.testing.redis_server import RedisServer, free_port

__all__ = ["WrkResult", "main"]

AGENT: Final = "b850bc30-45f8-4041-a00a-83df46d8555d"
USER: Final = "11111111-2222-4333-8444-555555555555"
API: Final = "/api/messaging/sessions"
SESSIONS: Final = 256
ROOT: Final = Path(runtime.__file__).resolve().parent.parent
"""The checkout whose ``runtime`` the servers run (the one this process imports)."""

_SCRIPT: Final = """
local ids = {%(ids)s}
local counter = 0
local body = '{"content": "hello there", "transport": "http"}'
local headers = {["Content-Type"] = "application/json"}
request = function()
  counter = counter + 1
  local id = ids[(counter %% #ids) + 1]
  return wrk.format("POST", "%(api)s/" .. id .. "/messages", headers, body)
end
"""

_FLOOR: Final = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def send(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"success": True, "echo": body["content"]}, status_code=201)

app = Starlette(routes=[Route("/api/messaging/sessions/{sid}/messages", send, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            lifespan="on", timeout_graceful_shutdown=10)
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: requests per second, latency percentiles (ms) and failed answers."""

    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(output: str) -> WrkResult:
    """The figures of ``wrk --latency`` *output*."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{output}")
    latency = {
        p: _ms(v, u)
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=latency.get("50", float("nan")),
        p99_ms=latency.get("99", float("nan")),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(map(int, errors.groups())) if errors else 0,
    )


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KV_STORE_", "REDIS_", "SESSION_"))
    }
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**env, "HTTP_RATE_LIMIT": "0", "PYTHONPATH": path, **extra}


def _wait(url: str, process: subprocess.Popen[bytes], path: str = "/health") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            httpx.get(url + path, timeout=5)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within 60 s")


@contextmanager
def _process(args: list[str], env: Mapping[str, str], url: str, path: str) -> Iterator[None]:
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(args, env=_env(env), stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(url, process, path)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def serve(env: Mapping[str, str]) -> Iterator[str]:
    """``python -m runtime serve`` on a free port with *env*; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "runtime", "serve", "--port", str(port), "--agent-id", AGENT]
    with _process([*args, "--log-level", "warning"], env, url, "/health"):
        yield url


@contextmanager
def floor() -> Iterator[str]:
    """The trivial Starlette endpoint under ``serve``'s uvicorn settings; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _process([sys.executable, "-c", _FLOOR, str(port)], {}, url, "/"):
        yield url


def create_sessions(url: str, count: int) -> list[str]:
    """*count* new sessions on the server at *url*; their ids."""
    with httpx.Client(base_url=url, timeout=30) as http:
        ids = []
        for _ in range(count):
            answer = http.post(API, json={"agentId": AGENT, "userId": USER})
            answer.raise_for_status()
            ids.append(answer.json()["sessionId"])
        return ids


def run_wrk(url: str, ids: list[str], args: argparse.Namespace, workdir: Path) -> WrkResult:
    """wrk POSTing send-message to *ids* in turn (one Lua script per run)."""
    script = workdir / "send.lua"
    script.write_text(_SCRIPT % {"ids": ",".join(f'"{i}"' for i in ids), "api": API})
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", "--latency", "-s", str(script)]
    # A short warm-up first: imports, connection pools, the JIT-less first calls.
    subprocess.run([*command, "-d2s", url], check=True, capture_output=True, text=True)
    done = subprocess.run(
        [*command, f"-d{args.duration}s", "--timeout", "30s", url],
        check=True,
        capture_output=True,
        text=True,
    )
    return parse_wrk(done.stdout)


def _line(name: str, result: WrkResult) -> str:
    return (
        f"{name:<22} {result.rps:>9.0f} req/s   p50 {result.p50_ms:>7.1f} ms"
        f"   p99 {result.p99_ms:>7.1f} ms   non-2xx {result.non_2xx}"
        f"   socket errors {result.errors}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the figures and ratios, and return them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    results: dict[str, WrkResult] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with floor() as url:
            results["floor"] = run_wrk(url, [AGENT] * SESSIONS, args, workdir)
            print(_line("floor (Starlette)", results["floor"]), flush=True)
        with RedisServer() as redis:
            for backend, env in (
                ("memory", {"KV_STORE_BACKEND": "memory"}),
                ("redis", {"KV_STORE_BACKEND": "redis", "REDIS_URL": redis.url}),
            ):
                with serve(env) as url:
                    ids = create_sessions(url, SESSIONS)
                    for shape, targets in (("spread", ids), ("hot", ids[:1])):
                        name = f"{backend} {shape}"
                        results[name] = run_wrk(url, targets, args, workdir)
                        print(_line(name, results[name]), flush=True)
    ratios = {
        "spread redis / spread memory": results["redis spread"].rps / results["memory spread"].rps,
        "hot / spread, redis": results["redis hot"].rps / results["redis spread"].rps,
        "hot / spread, memory": results["memory hot"].rps / results["memory spread"].rps,
    }
    for name in ("memory spread", "memory hot", "redis spread", "redis hot"):
        ratios[f"{name} / floor"] = results[name].rps / results["floor"].rps
    print()
    for name, value in ratios.items():
        print(f"{name:<32} {value:.2f}x")
    figures = {
        "settings": vars(args) | {"json": None, "sessions": SESSIONS},
        "runs": {
            name: vars(r) if hasattr(r, "__dict__") else r.__repr__() for name, r in results.items()
        },
        "ratios": ratios,
    }
    figures["runs"] = {
        name: {f: getattr(r, f) for f in WrkResult.__slots__} for name, r in results.items()
    }
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
