"""``python -m bench``: run every system and workload in one process, write the results.

    python -m bench [--quick] [--only NAME,...] [--out DIR] [--markdown FILE]

``--only`` takes system names (``kvstore-memory``, ``redis-py``, ...), families
(``memory``, ``redis``, ``sqlite``) and the extra parts ``redis-benchmark``,
``profile``, ``metrics_overhead``, ``sessions_bench``, ``sessions_load``,
``redis_overheads``, ``memory_costs`` and ``http_sessions``; without it everything
runs. A partial run writes whole files too: give it ``--out`` and ``--markdown``
elsewhere, then ``python -m bench.report --merge PART ...`` copies one part's
figures into the full run's files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from kvstore.testing.redis_server import RedisServer

from .ceiling import redis_benchmark
from .profiling import profile_memory_store
from .report import machine_facts, package_versions, write_outputs
from .systems import SYSTEMS, Context, Family, Ops, SkipSystem, SystemSpec
from .targets import evaluate
from .workloads import WORKLOADS, Dataset, Measurement, Scale, best_of, run_round, warm_up

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["main"]

BENCH_DIR: Final = Path(__file__).resolve().parent
FAMILIES: Final[tuple[Family, ...]] = ("memory", "redis", "sqlite")
EXTRAS: Final = (
    "metrics_overhead",
    "sessions_bench",
    "sessions_load",
    "redis_overheads",
    "memory_costs",
    "http_sessions",
)
PARTS: Final = ("redis-benchmark", "profile", *EXTRAS)
REDIS_PARTS: Final = frozenset(
    {"redis-benchmark", "sessions_bench", "sessions_load", "http_sessions"}
)
"""Parts that also measure Redis: selected alone, they still get the private server."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the benchmark, write latest.json and RESULTS.md."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        specs, parts = _select(args.only)
    except ValueError as err:
        parser.error(str(err))
    scale = Scale.for_run(quick=args.quick)
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_facts()
    print(
        f"{command}: {len(specs)} systems, {scale.keys:,} keys; machine: {machine['cpu']},"
        f" {machine['cores']} cores, load {machine['load_average']}"
    )

    with contextlib.ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kvbench-")))
        redis_url: str | None = None
        if any(spec.family == "redis" for spec in specs) or parts & REDIS_PARTS:
            try:
                redis_url = stack.enter_context(RedisServer()).url
            except Exception as err:  # no redis-server only skips the Redis systems
                print(f"skip Redis: could not start redis-server ({err})")
        run = asyncio.run(_run(specs, parts, scale, Context(redis_url, tmpdir), quick=args.quick))

    doc: dict[str, Any] = {
        "command": command,
        "date": date,
        "quick": args.quick,
        "duration_s": time.perf_counter() - started,
        "machine": machine,
        "versions": package_versions(),
        "scale": asdict(scale),
        **run,
    }
    out = Path(args.out)
    write_outputs(doc, out / "latest.json", Path(args.markdown))
    _print_targets(doc["targets"])
    print(f"wrote {out / 'latest.json'} and {args.markdown} in {doc['duration_s']:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark kvstore against peer libraries, in one process run;"
        " write latest.json and RESULTS.md.",
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down counts, 1 s HTTP rows")
    parser.add_argument(
        "--only",
        default="",
        metavar="NAME,...",
        help="systems, families (memory, redis, sqlite) or parts (" + ", ".join(PARTS) + ")",
    )
    parser.add_argument(
        "--out",
        default=str(BENCH_DIR / "results"),
        metavar="DIR",
        help="directory for latest.json (default: bench/results)",
    )
    parser.add_argument(
        "--markdown",
        default=str(BENCH_DIR / "RESULTS.md"),
        metavar="FILE",
        help="the Markdown report to write (default: bench/RESULTS.md)",
    )
    return parser


def _select(only: str) -> tuple[list[SystemSpec], set[str]]:
    """The systems and extra parts that ``--only`` names (everything when empty)."""
    names = {name.strip() for name in only.split(",") if name.strip()}
    if not names:
        return list(SYSTEMS), set(PARTS)
    known = {spec.name for spec in SYSTEMS} | set(FAMILIES) | set(PARTS)
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(
            f"unknown --only name(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    specs = [spec for spec in SYSTEMS if spec.name in names or spec.family in names]
    return specs, names & set(PARTS)


async def _run(
    specs: list[SystemSpec], parts: set[str], scale: Scale, ctx: Context, *, quick: bool
) -> dict[str, Any]:
    data = Dataset.build(scale)
    systems: list[dict[str, Any]] = []
    results: dict[str, dict[str, Measurement]] = {}
    ceiling: dict[str, Any] | None = None
    seconds: dict[str, float] = {}
    admin = _redis_admin(ctx.redis_url)
    for family in FAMILIES:
        chosen = [spec for spec in specs if spec.family == family]
        if chosen:
            started = time.perf_counter()
            rounds = scale.rounds_memory if family == "memory" else scale.rounds_io
            family_docs, family_results = await _run_family(chosen, data, scale, ctx, rounds, admin)
            systems += family_docs
            results |= family_results
            seconds[family] = _took(family, started)
        if family == "redis" and "redis-benchmark" in parts:
            started = time.perf_counter()
            ceiling = await _server_ceiling(ctx, scale, data, admin)
            seconds["redis-benchmark"] = _took("redis-benchmark", started)
    if admin is not None:
        await admin.aclose()

    hot_spots = None
    if "profile" in parts:
        started = time.perf_counter()
        print("profile: kvstore-memory under cProfile ...")
        # Full-size data even for --quick: a profile of a few ms says little.
        hot_spots = await profile_memory_store(Dataset.build(Scale.for_run(quick=False)))
        seconds["profile"] = _took("profile", started)
    extras: dict[str, Any] = {}
    for name in EXTRAS:
        if name in parts:
            started = time.perf_counter()
            figures = await _extra(name, quick=quick, redis_url=ctx.redis_url)
            if figures is not None:
                extras[name] = figures
                seconds[name] = _took(name, started)
    return {
        "seconds": seconds,
        "systems": systems,
        "server_ceiling": ceiling,
        "targets": [
            {
                **asdict(v),
                "measured_text": v.measured_text,
                "result": v.result,
            }
            for v in evaluate(specs, results)
        ],
        "hot_spots": hot_spots,
        "extras": extras,
    }


def _took(part: str, started: float) -> float:
    elapsed = time.perf_counter() - started
    print(f"{part}: {elapsed:.1f} s")
    return round(elapsed, 1)


async def _run_family(
    specs: list[SystemSpec],
    data: Dataset,
    scale: Scale,
    ctx: Context,
    rounds: int,
    admin: Redis | None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Measurement]]]:
    """Open every system of one family, then interleave their rounds.

    Interleaving spreads a burst of load from elsewhere on the machine over
    all systems instead of one; the best round of each is kept.
    """
    docs = {spec.name: _system_doc(spec) for spec in specs}
    opened: dict[str, Ops] = {}
    for spec in specs:
        try:
            if admin is not None and spec.family == "redis":
                await admin.flushall()
            ops = await spec.open(ctx)
            opened[spec.name] = ops
            await warm_up(ops, data)
        except Exception as err:  # a system that cannot run is reported, not fatal
            await _fail(docs[spec.name], opened.pop(spec.name, None), err)
    done: dict[str, list[dict[str, Measurement]]] = {name: [] for name in opened}
    for round_no in range(1, rounds + 1):
        for name, ops in list(opened.items()):
            if admin is not None and docs[name]["family"] == "redis":
                await admin.flushall()
            try:
                done[name].append(await run_round(ops, data, scale))
            except Exception as err:
                await _fail(docs[name], opened.pop(name), err)
                del done[name]
        print(f"  {specs[0].family}: round {round_no}/{rounds} done")
    results: dict[str, dict[str, Measurement]] = {}
    for name, ops in opened.items():
        results[name] = best_of(done[name])
        docs[name]["results"] = {w: asdict(m) for w, m in results[name].items()}
        with contextlib.suppress(Exception):
            await ops.close()
        _print_system(name, results[name])
    return list(docs.values()), results


def _system_doc(spec: SystemSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "family": spec.family,
        "role": spec.role,
        "serializer": spec.serializer,
        "status": "ok",
        "reason": None,
        "results": {},
    }


async def _fail(doc: dict[str, Any], ops: Ops | None, err: Exception) -> None:
    if isinstance(err, SkipSystem | ImportError):
        doc["status"], doc["reason"] = "skipped", str(err)
    else:
        doc["status"], doc["reason"] = "failed", f"{type(err).__name__}: {err}"
    print(f"  {doc['status']} {doc['name']}: {doc['reason']}")
    if ops is not None:
        with contextlib.suppress(Exception):
            await ops.close()


def _redis_admin(url: str | None) -> Redis | None:
    """A client that empties the benchmark's server between systems (None without one)."""
    if url is None:
        return None
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url)


async def _server_ceiling(
    ctx: Context, scale: Scale, data: Dataset, admin: Redis | None
) -> dict[str, Any]:
    if ctx.redis_url is None or admin is None:
        return {"error": "no redis-server for this run"}
    # -d: the mean size of the values the other systems store.
    size = round(sum(len(orjson.dumps(value)) for value in data.values) / len(data.values))
    command = f"redis-benchmark -q -t set,get -n {scale.server_requests} -c 64 -P 1 -d {size}"
    print(f"server ceiling: {command} ...")
    await admin.flushall()
    try:
        figures = await redis_benchmark(ctx.redis_url, scale.server_requests, data_size=size)
    except Exception as err:
        print(f"  redis-benchmark failed: {err}")
        return {"error": str(err)}
    await admin.flushall()
    for name, value in figures.items():
        print(f"  {name}: {value['ops_per_s']:,.0f} ops/s, p50 {value['p50_us']} µs")
    return {"command": command, "results": figures}


async def _extra(name: str, *, quick: bool, redis_url: str | None) -> dict[str, Any] | None:
    """Figures from bench/<name>.py's ``measure()``, if that module exists."""
    module_name = f"{__package__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            return {"error": f"import failed: {err}"}
        print(f"{name}: bench/{name}.py not present, skipped")
        return None
    except Exception as err:
        return {"error": f"import failed: {type(err).__name__}: {err}"}
    options: dict[str, Any] = {"quick": quick}
    # A part that can also measure Redis gets this run's private server.
    if redis_url is not None and "redis_url" in inspect.signature(module.measure).parameters:
        options["redis_url"] = redis_url
    print(f"{name}: running its measure() ...")
    try:
        figures: dict[str, Any] = await module.measure(**options)
    except Exception as err:
        print(f"  {name} failed: {type(err).__name__}: {err}")
        return {"error": f"{type(err).__name__}: {err}"}
    return figures


def _print_system(name: str, results: dict[str, Measurement]) -> None:
    cells = []
    for workload in WORKLOADS:
        measured = results.get(workload.name)
        if measured is not None:
            cells.append(f"{workload.name} {measured.rate:,.0f}")
    mix = results.get("mixed_64")
    if mix is not None and mix.p99_us is not None:
        cells.append(f"mix p50/p99 {mix.p50_us:.0f}/{mix.p99_us:.0f} µs")
    print(f"  {name:<26} " + ", ".join(cells))


def _print_targets(targets: list[dict[str, Any]]) -> None:
    print("\ntargets:")
    for t in targets:
        print(
            f"  {t['result']:<4} {t['target']} [{t['workload']}] vs {t['versus']}:"
            f" {t['measured_text']} (goal {t['goal_label']})"
        )
