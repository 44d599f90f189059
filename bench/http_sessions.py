"""The Sessions HTTP API under wrk: ``python -m runtime serve`` on memory, SQLite and Redis.

    python -m bench.http_sessions [--duration 5] [--warmup 1] [--connections 64]
                                  [--threads 2] [--quick] [--json FILE]
    python -m bench.http_sessions --spread-rounds 3 --duration 8 --warmup 2

Operations, each a wrk run with a Lua script of its own:

- ``create``: ``POST /api/messaging/sessions`` with ``agentId``/``userId`` JSON;
- ``send spread``: ``POST .../{id}/messages`` (``transport: "http"``, so the answer
  carries the agent's reply) spread over 256 sessions;
- ``send hot``: the same on one session;
- ``history``: ``GET .../{id}/messages?limit=50`` spread over the 256 sessions,
  after the sends, so they have history;
- ``get``: ``GET .../{id}`` spread over the 256 sessions.

Backends: memory, SQLite (``KV_STORE_BACKEND=sqlite``, a file in a temporary
directory) and Redis (a private ``redis-server`` on a free loopback port, or the
one ``python -m bench`` hands over). Each backend runs with one replica, and
SQLite and Redis also with two: two ``serve`` processes on the same store, each
driven by its own wrk at once with half the connections and half the threads,
all on the same session ids (created on the first replica). A memory store
cannot be shared between processes, so memory has no two-replica rows. Every
``serve`` has ``HTTP_RATE_LIMIT=0``.

The floor is a trivial Starlette app (same routes, parses the JSON body, no
store) under the same ``uvicorn.run`` settings as ``serve``, driven by the same
send (POST) and get (GET) scripts; every row is also given against the floor of
its method.

Printed and returned: requests/s, p50/p99, non-2xx answers (wrk's "Non-2xx or
3xx responses", with the status codes seen) and socket errors of every row, and
the ratios of this one run. Two-replica rows sum the two wrk processes'
requests/s and report the *worse* (higher) p50 and p99 of the two. wrk comes
from Debian's packages (``apt-get install wrk``; ``make bench`` installs it when
it can). Figures only: nothing is asserted.

``--spread-rounds N`` runs only the headline pair, send spread on memory and on
Redis, alternating N times against one ``serve`` per backend, and prints each
round's ratio and their median: one run of the matrix moves by more than the
aim's margin on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

import runtime
from kvstore.testing.redis_server import RedisServer, free_port

__all__ = [
    "API",
    "BACKENDS",
    "OPERATIONS",
    "Operation",
    "Row",
    "Settings",
    "WrkResult",
    "combine",
    "create_sessions",
    "figures",
    "floor",
    "lua_script",
    "lua_string",
    "main",
    "measure",
    "parse_wrk",
    "run_matrix",
    "run_wrk",
    "serve",
]

AGENT: Final = "b850bc30-45f8-4041-a00a-83df46d8555d"
USER: Final = "11111111-2222-4333-8444-555555555555"
API: Final = "/api/messaging/sessions"
SESSIONS: Final = 256
HISTORY_LIMIT: Final = 50
DURATION: Final = 5
QUICK_DURATION: Final = 1
WARMUP: Final = 1
BACKENDS: Final = ("memory", "sqlite", "redis")
"""Backends in the order they run; all but memory also run with two replicas."""
ROOT: Final = Path(runtime.__file__).resolve().parent.parent
"""The checkout whose ``runtime`` the servers run (the one this process imports)."""
WRK_MISSING: Final = "wrk not found (apt-get install -y wrk)"


@dataclass(frozen=True, slots=True)
class Operation:
    """One request shape that a wrk run repeats.

    Attributes:
        name: the row's operation (``create``, ``send spread``, ...).
        method: the HTTP method.
        suffix: the path after ``/api/messaging/sessions/{id}`` (``None``: the
            path is ``/api/messaging/sessions`` itself, no session id).
        body: the JSON request body, or ``None``.
        hot: every request on the first session instead of spread over all.
    """

    name: str
    method: str
    suffix: str | None
    body: Mapping[str, Any] | None = None
    hot: bool = False


OPERATIONS: Final = (
    Operation("create", "POST", None, {"agentId": AGENT, "userId": USER}),
    Operation("send spread", "POST", "/messages", {"content": "hello there", "transport": "http"}),
    Operation(
        "send hot", "POST", "/messages", {"content": "hello there", "transport": "http"}, hot=True
    ),
    Operation("history", "GET", f"/messages?limit={HISTORY_LIMIT}"),
    Operation("get", "GET", ""),
)
"""The measured operations, in the order they run (history after the sends)."""
FLOOR_OPERATIONS: Final = ("send spread", "get")
"""The floor's rows: one POST with a JSON body, one GET."""

_LUA: Final = """\
-- wrk script written by bench/http_sessions.py: {name}
local ids = {{{ids}}}
local method = {method}
local prefix = {prefix}
local suffix = {suffix}
local body = {body}
local headers = {{["Content-Type"] = "application/json"}}
local first_slot = {first_slot}
local stride = {stride}
local threads = {{}}
local counter = 0

-- Main state: number the threads so each starts at its own place in ids.
function setup(thread)
  thread:set("slot", first_slot + #threads)
  table.insert(threads, thread)
end

-- Thread state (slot was set by setup).
function init(args)
  counter = slot * stride
  statuses = {{}}
end

function request()
  local path = prefix
  if #ids > 0 then
    path = prefix .. "/" .. ids[(counter % #ids) + 1] .. suffix
    counter = counter + 1
  end
  return wrk.format(method, path, headers, body)
end

function response(status, response_headers, response_body)
  statuses[status] = (statuses[status] or 0) + 1
end

-- Main state again: one line of status counts over all threads.
function done(summary, latency, requests)
  local counts = {{}}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {{}}
  for status, n in pairs(counts) do
    table.insert(parts, status .. "=" .. n)
  end
  table.sort(parts)
  io.write("statuses: " .. table.concat(parts, " ") .. "\\n")
end
"""

_FLOOR: Final = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def post(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"success": True, "echo": body}, status_code=201)

async def get(request: Request) -> JSONResponse:
    return JSONResponse({"sessionId": request.path_params.get("sid"), "messages": []})

app = Starlette(routes=[
    Route("/api/messaging/sessions", post, methods=["POST"]),
    Route("/api/messaging/sessions/{sid}", get, methods=["GET"]),
    Route("/api/messaging/sessions/{sid}/messages", post, methods=["POST"]),
    Route("/api/messaging/sessions/{sid}/messages", get, methods=["GET"]),
])
# serve's protocol derives from uvicorn's h11 one: the floor names h11 too, rather
# than "auto", which would pick httptools wherever that happens to be installed.
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            lifespan="on", timeout_graceful_shutdown=10, access_log=False, http="h11")
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run (or two at once, :func:`combine`): rate, latency (ms), failures.

    Attributes:
        rps: requests per second ("Requests/sec").
        p50_ms: median latency.
        p99_ms: 99th percentile latency.
        non_2xx: answers with a status of 400 or more (wrk's "Non-2xx or 3xx").
        errors: socket errors: connect + read + write + timeout.
        requests: requests completed.
        statuses: answers per HTTP status, when the script reported them.
    """

    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    requests: int = 0
    statuses: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: which server, how many replicas, which operation."""

    backend: str
    replicas: int
    operation: str
    result: WrkResult
    warmup: WrkResult | None = None
    """The uncounted warm-up before it: only its failures are reported."""

    @property
    def name(self) -> str:
        """``backend xN operation``, e.g. ``redis x2 send spread``."""
        return f"{self.backend} x{self.replicas} {self.operation}"


def _ms(value: str, unit: str) -> float:
    return (
        float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]
    )


def parse_wrk(output: str) -> WrkResult:
    """The figures of ``wrk --latency`` *output* (and the script's ``statuses:`` line)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{output}")
    latency = {
        p: _ms(v, u)
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M)
    }
    requests = re.search(r"^\s*(\d+) requests in ", output, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    statuses: dict[int, int] = {}
    line = re.search(r"^statuses:(.*)$", output, re.M)
    if line is not None:
        for status, count in re.findall(r"(\d+)=(\d+)", line.group(1)):
            statuses[int(status)] = int(count)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=latency.get("50", math.nan),
        p99_ms=latency.get("99", math.nan),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(map(int, errors.groups())) if errors else 0,
        requests=int(requests.group(1)) if requests else 0,
        statuses=statuses,
    )


def combine(results: Sequence[WrkResult]) -> WrkResult:
    """Runs that went on at the same time, as one: rates, counts and statuses add up;
    p50 and p99 are the worse (higher) of the runs', not a merged percentile."""
    if not results:
        raise ValueError("nothing to combine")
    statuses: dict[int, int] = {}
    for result in results:
        for status, count in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return WrkResult(
        rps=sum(r.rps for r in results),
        p50_ms=max(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        errors=sum(r.errors for r in results),
        requests=sum(r.requests for r in results),
        statuses=dict(sorted(statuses.items())),
    )


def lua_string(text: str) -> str:
    """*text* as a double-quoted Lua string literal."""
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def lua_script(
    operation: Operation, ids: Sequence[str], *, first_slot: int = 0, slots: int = 1
) -> str:
    """The wrk Lua script that repeats *operation* over *ids* (hot: the first only).

    wrk runs the script in one Lua state per thread; thread number ``t`` of this
    wrk process starts at ``ids[(first_slot + t) * stride]``, ``stride =
    len(ids) // slots``, so that *slots* threads (over every wrk process of a
    run) start evenly spread. The script's ``done`` prints ``statuses: 201=N
    ...``, which :func:`parse_wrk` reads.
    """
    if operation.suffix is None:
        targets: Sequence[str] = ()
    elif operation.hot:
        targets = ids[:1]
    else:
        targets = ids
    if operation.suffix is not None and not targets:
        raise ValueError(f"{operation.name} needs session ids")
    body = "nil" if operation.body is None else lua_string(json.dumps(operation.body))
    return _LUA.format(
        name=operation.name,
        ids=", ".join(lua_string(i) for i in targets),
        method=lua_string(operation.method),
        prefix=lua_string(API),
        suffix=lua_string(operation.suffix or ""),
        body=body,
        first_slot=first_slot,
        stride=max(1, len(targets) // max(1, slots)),
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
            try:
                _wait(url, process, path)
            except RuntimeError as err:
                log.seek(0)
                tail = log.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"{err}; its output ends with:\n{tail}") from None
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
    """The trivial Starlette app under ``serve``'s uvicorn settings; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _process([sys.executable, "-c", _FLOOR, str(port)], {}, url, f"{API}/x"):
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


def _history_length(url: str, session_id: str) -> int:
    """How many messages one history page of *session_id* holds (at most the limit)."""
    answer = httpx.get(f"{url}{API}/{session_id}/messages?limit={HISTORY_LIMIT}", timeout=30)
    answer.raise_for_status()
    return len(answer.json()["messages"])


@dataclass(frozen=True, slots=True)
class Settings:
    """How each wrk run goes: seconds measured, seconds of warm-up, connections, threads."""

    duration: int
    warmup: int
    connections: int
    threads: int


def run_wrk(
    urls: Sequence[str],
    operation: Operation,
    ids: Sequence[str],
    settings: Settings,
    workdir: Path,
) -> tuple[WrkResult, WrkResult | None]:
    """wrk repeating *operation* against every URL of *urls* at once: (measured, warm-up).

    One wrk process per URL, each with its share of the connections and threads
    and its own script (all on the same *ids*): a warm-up of ``settings.warmup``
    seconds (not counted; ``None`` without one), then the measured run of
    ``settings.duration``. Each of the two is the :func:`combine` of its processes.
    """
    replicas = len(urls)
    connections = max(1, settings.connections // replicas)
    threads = max(1, settings.threads // replicas)
    commands = []
    for index, url in enumerate(urls):
        script = workdir / f"{operation.name.replace(' ', '-')}-{index}.lua"
        script.write_text(
            lua_script(operation, ids, first_slot=index * threads, slots=threads * replicas),
            encoding="utf-8",
        )
        commands.append(
            ["wrk", f"-t{threads}", f"-c{connections}", "--latency", "-s", str(script), url]
        )
    warmup = None
    # Imports, connection pools and first calls happen in the warm-up.
    if settings.warmup > 0:
        outputs = _run_all([[*c[:-1], f"-d{settings.warmup}s", *_TIMEOUT, c[-1]] for c in commands])
        warmup = combine([parse_wrk(output) for output in outputs])
    outputs = _run_all([[*c[:-1], f"-d{settings.duration}s", *_TIMEOUT, c[-1]] for c in commands])
    return combine([parse_wrk(output) for output in outputs]), warmup


_TIMEOUT: Final = ("--timeout", "30s")
"""wrk's own default is 2 s: slower answers would count as socket timeouts."""


def _run_all(commands: Sequence[list[str]]) -> list[str]:
    """Run *commands* at the same time; their standard outputs."""
    processes = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outputs = []
    for command, process in zip(commands, processes, strict=True):
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {err}{out}")
        outputs.append(out)
    return outputs


def _cell_ms(value: float) -> str:
    return f"{value:>7.1f}" if value < 1000 else f"{value:>7.0f}"


def _line(row: Row, against: float | None) -> str:
    r = row.result
    failed = ""
    if r.non_2xx or r.errors:
        seen = " ".join(f"{s}={n}" for s, n in r.statuses.items() if s >= 400)
        failed = f"   <-- FAILURES{f' ({seen})' if seen else ''}"
    if row.warmup is not None and (row.warmup.non_2xx or row.warmup.errors):
        failed += (
            f"   <-- WARM-UP FAILURES ({row.warmup.non_2xx} non-2xx,"
            f" {row.warmup.errors} socket errors)"
        )
    versus = f"{against:>5.2f}x" if against is not None else "     -"
    return (
        f"{row.name:<24} {r.rps:>7.0f} req/s  p50 {_cell_ms(r.p50_ms)} ms"
        f"  p99 {_cell_ms(r.p99_ms)} ms  non-2xx {r.non_2xx:>4}  socket errors {r.errors:>3}"
        f"  vs floor {versus}{failed}"
    )


def _floor_of(operation: str) -> str:
    """The floor row a *operation* row is set against: the floor of its HTTP method."""
    method = next(op.method for op in OPERATIONS if op.name == operation)
    return "send spread" if method == "POST" else "get"


def figures(
    rows: Sequence[Row], *, settings: Mapping[str, Any], run: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON-ready figures of *rows*: every row, the ratios of this run, the aims.

    Ratios are only given where both rows were measured: a backend that could
    not run leaves its ratios out rather than failing the others.
    """
    by_name = {(r.backend, r.replicas, r.operation): r.result for r in rows}

    def rate(backend: str, replicas: int, operation: str) -> float | None:
        found = by_name.get((backend, replicas, operation))
        return None if found is None else found.rps

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else round(a / b, 3)

    table: list[dict[str, Any]] = []
    for row in rows:
        floor_rps = rate("floor", 1, _floor_of(row.operation))
        r = row.result
        table.append(
            {
                "backend": row.backend,
                "replicas": row.replicas,
                "operation": row.operation,
                "rps": round(r.rps, 1),
                "p50_ms": round(r.p50_ms, 2),
                "p99_ms": round(r.p99_ms, 2),
                "non_2xx": r.non_2xx,
                "socket_errors": r.errors,
                "requests": r.requests,
                "statuses": {str(s): n for s, n in r.statuses.items()},
                "vs_floor": None if row.backend == "floor" else ratio(r.rps, floor_rps),
                "warmup_failures": _failures(row.warmup),
            }
        )
    ratios: dict[str, float | None] = {
        "send spread, redis / memory": ratio(
            rate("redis", 1, "send spread"), rate("memory", 1, "send spread")
        ),
        "send spread, sqlite / memory": ratio(
            rate("sqlite", 1, "send spread"), rate("memory", 1, "send spread")
        ),
    }
    for backend in BACKENDS:
        ratios[f"{backend}: send hot / send spread"] = ratio(
            rate(backend, 1, "send hot"), rate(backend, 1, "send spread")
        )
    for backend in BACKENDS[1:]:
        for op in OPERATIONS:
            ratios[f"{backend}: two replicas / one, {op.name}"] = ratio(
                rate(backend, 2, op.name), rate(backend, 1, op.name)
            )
    redis_hot = by_name.get(("redis", 1, "send hot"))
    aims = [
        {
            "what": "send spread, Redis / memory",
            "measured": ratios["send spread, redis / memory"],
            "aim": ">= 0.5x",
            "met": _at_least(ratios["send spread, redis / memory"], 0.5),
        },
        {
            "what": "Redis send hot / send spread",
            "measured": ratios["redis: send hot / send spread"],
            "aim": ">= 0.5x",
            "met": _at_least(ratios["redis: send hot / send spread"], 0.5),
        },
        {
            "what": "Redis send hot p99 (ms)",
            "measured": None if redis_hot is None else round(redis_hot.p99_ms, 1),
            "aim": "< 250 ms",
            "met": None if redis_hot is None else redis_hot.p99_ms < 250,
        },
    ]
    failed = [row.name for row in rows if _failures(row.result)]
    failed += [f"{row.name} (warm-up)" for row in rows if _failures(row.warmup)]
    return {
        "settings": dict(settings),
        "run": dict(run),
        "rows": table,
        "ratios": {name: value for name, value in ratios.items() if value is not None},
        "aims": aims,
        "rows_with_failures": failed,
        "notes": [
            "memory has no two-replica rows: a memory store cannot be shared between processes",
            "two replicas: two wrk processes at once (half the connections and threads each),"
            " requests/s summed, p50 and p99 the worse of the two",
            "vs floor: against the floor row of the same HTTP method"
            " (POST: floor send spread, GET: floor get)",
            "the warm-up before each row is not counted; any failure in it is listed"
            " with the failed rows",
        ],
    }


def _failures(result: WrkResult | None) -> int:
    """Non-2xx answers plus socket errors of *result* (0 for no run)."""
    return 0 if result is None else result.non_2xx + result.errors


def _at_least(value: float | None, aim: float) -> bool | None:
    return None if value is None else value >= aim


def _backend_env(backend: str, tmp: Path, redis_url: str | None) -> dict[str, str]:
    if backend == "memory":
        return {"KV_STORE_BACKEND": "memory"}
    if backend == "sqlite":
        return {"KV_STORE_BACKEND": "sqlite", "KV_STORE_PATH": str(tmp / "sessions.db")}
    if redis_url is None:
        raise RuntimeError("no redis-server for this run")
    return {"KV_STORE_BACKEND": "redis", "REDIS_URL": redis_url}


def _floor_ids() -> list[str]:
    return [str(uuid.UUID(int=n + 1, version=4)) for n in range(SESSIONS)]


def run_matrix(settings: Settings, redis_url: str | None = None) -> dict[str, Any]:
    """Every row of the matrix, printed as it comes; :func:`figures` of them.

    *redis_url*: a server to use (its data is left there); without it, a
    private ``redis-server`` is started for the run. A backend that cannot run
    (no ``redis-server``, a server that does not start, a wrk that fails) is
    printed and recorded under ``run.stopped`` with the reason; the rows it
    measured before are kept and the other backends still run.
    """
    started = time.perf_counter()
    load_start = os.getloadavg()
    peak = [load_start[0]]
    rows: list[Row] = []
    stopped: dict[str, str] = {}
    history_lengths: dict[str, int] = {}
    floors: dict[str, float] = {}

    def add(row: Row) -> None:
        rows.append(row)
        peak.append(os.getloadavg()[0])
        if row.backend == "floor":
            floors[row.operation] = row.result.rps
        base = floors.get(_floor_of(row.operation))
        against = None if row.backend == "floor" or not base else row.result.rps / base
        print(_line(row, against), flush=True)

    with tempfile.TemporaryDirectory(prefix="http-sessions-") as name, ExitStack() as stack:
        tmp = Path(name)
        with floor() as url:
            for op in OPERATIONS:
                if op.name in FLOOR_OPERATIONS:
                    result, warmup = run_wrk([url], op, _floor_ids(), settings, tmp)
                    add(Row("floor", 1, op.name, result, warmup))
        for backend in BACKENDS:
            try:
                if backend == "redis" and redis_url is None:
                    redis_url = stack.enter_context(RedisServer()).url
                env = _backend_env(backend, tmp, redis_url)
                with ExitStack() as servers:
                    urls = [servers.enter_context(serve(env))]
                    if backend != "memory":
                        urls.append(servers.enter_context(serve(env)))
                    ids = create_sessions(urls[0], SESSIONS)
                    for op in OPERATIONS:
                        if op.name == "history":
                            history_lengths[backend] = _history_length(urls[-1], ids[1])
                        for replicas in range(1, len(urls) + 1):
                            result, warmup = run_wrk(urls[:replicas], op, ids, settings, tmp)
                            add(Row(backend, replicas, op.name, result, warmup))
            except Exception as err:  # one backend that cannot run leaves the others
                stopped[backend] = f"{type(err).__name__}: {err}"
                print(f"{backend}: stopped: {stopped[backend]}", flush=True)
    if "memory" not in stopped:
        print("memory x2: not run (a memory store cannot be shared between processes)")
    load_end = os.getloadavg()
    run = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.perf_counter() - started, 1),
        "cores": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "load_1min_max": round(max([*peak, load_end[0]]), 2),
        "history_page_messages": history_lengths,
        "stopped": stopped,
    }
    doc = figures(
        rows,
        settings={
            "duration_s": settings.duration,
            "warmup_s": settings.warmup,
            "connections": settings.connections,
            "threads": settings.threads,
            "sessions": SESSIONS,
            "history_limit": HISTORY_LIMIT,
            "wrk": _wrk_version(),
        },
        run=run,
    )
    _print_summary(doc)
    return doc


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def _print_summary(doc: Mapping[str, Any]) -> None:
    print()
    for name, value in doc["ratios"].items():
        print(f"{name:<44} {value:.2f}x")
    print()
    for aim in doc["aims"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[aim["met"]]
        print(f"aim: {aim['what']} {aim['measured']} (aim {aim['aim']}): {verdict}")
    run = doc["run"]
    if run["history_page_messages"]:
        print(f"history page held {run['history_page_messages']} messages when its run started")
    if doc["rows_with_failures"]:
        print(f"rows with non-2xx answers or socket errors: {doc['rows_with_failures']}")
    print(
        f"{run['seconds']:.0f} s; load average (1 min) {run['load_average_start'][0]} at start,"
        f" {run['load_1min_max']} at most, {run['load_average_end'][0]} at the end"
    )


def spread_rounds(rounds: int, settings: Settings) -> dict[str, Any]:
    """Send spread on memory and on Redis, alternating, *rounds* times: the headline ratio.

    One ``serve`` per backend stays up for every round, so each round's two
    rows run back to back under the same conditions; the ratio of each round
    and their median are printed and returned.
    """
    send = next(op for op in OPERATIONS if op.name == "send spread")
    rates: dict[str, list[float]] = {"memory": [], "redis": []}
    with tempfile.TemporaryDirectory(prefix="http-sessions-") as name, RedisServer() as redis:
        tmp = Path(name)
        with ExitStack() as servers:
            urls = {b: servers.enter_context(serve(_backend_env(b, tmp, redis.url))) for b in rates}
            ids = {backend: create_sessions(url, SESSIONS) for backend, url in urls.items()}
            for index in range(rounds):
                for backend, url in urls.items():
                    result, _ = run_wrk([url], send, ids[backend], settings, tmp)
                    rates[backend].append(result.rps)
                    print(_line(Row(backend, 1, f"send spread #{index + 1}", result, None), None))
    ratios = [r / m for r, m in zip(rates["redis"], rates["memory"], strict=True)]
    median = statistics.median(ratios)
    print("send spread, redis / memory, per round:", ", ".join(f"{x:.2f}x" for x in ratios))
    print(f"median of {rounds}: {median:.2f}x (aim >= 0.5x)")
    return {"rates": rates, "ratios": ratios, "median": median}


def _settings(
    *,
    quick: bool,
    duration: int | None = None,
    warmup: int | None = None,
    connections: int = 64,
    threads: int = 2,
) -> Settings:
    return Settings(
        duration=duration if duration is not None else (QUICK_DURATION if quick else DURATION),
        warmup=warmup if warmup is not None else WARMUP,
        connections=connections,
        threads=threads,
    )


async def measure(quick: bool = False, redis_url: str | None = None) -> dict[str, Any]:
    """The matrix for ``python -m bench`` (in a worker thread); ``skipped`` without wrk.

    *quick* runs each wrk for 1 s instead of 5; *redis_url* is the bench run's
    private server (without it, one is started here).
    """
    if shutil.which("wrk") is None:
        print(f"http_sessions: skipped: {WRK_MISSING}")
        return {"skipped": WRK_MISSING}
    return await asyncio.to_thread(run_matrix, _settings(quick=quick), redis_url)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the figures and ratios, and return them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--duration",
        type=int,
        help=f"seconds per wrk run (default {DURATION}, --quick {QUICK_DURATION})",
    )
    parser.add_argument(
        "--warmup", type=int, help=f"seconds of warm-up before each (default {WARMUP})"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION} s runs")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--spread-rounds",
        type=int,
        metavar="N",
        help="only send spread on memory and Redis, alternating N times; the median ratio",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_MISSING)
    settings = _settings(
        quick=args.quick,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
    )
    doc = (
        run_matrix(settings)
        if args.spread_rounds is None
        else spread_rounds(args.spread_rounds, settings)
    )
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc


if __name__ == "__main__":
    main()
