"""Machine facts, package versions, and the two outputs: latest.json and RESULTS.md.

The Markdown is rendered from the JSON document alone, so a saved
``latest.json`` can be rendered again: ``python -m bench.report bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from .ceiling import redis_server_version
from .workloads import WORKLOADS

__all__ = ["machine_facts", "merge_part", "package_versions", "render_markdown", "write_outputs"]

PACKAGES: Final = (
    "kvstore-runtime",
    "redis",
    "hiredis",
    "aiosqlite",
    "orjson",
    "anyio",
    "py-key-value-aio",
    "aiocache",
    "cashews",
)
_FAMILY_TITLES: Final = {"memory": "In-process memory", "redis": "Redis", "sqlite": "SQLite"}


def machine_facts() -> dict[str, Any]:
    """CPU model, cores, Python, OS, and the load average when the run started."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "os": f"{_os_name()} (kernel {platform.release()}, {platform.machine()})",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def package_versions() -> dict[str, str | None]:
    """Versions of this project, the drivers, the peers, SQLite and redis-server."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["sqlite (library)"] = sqlite3.sqlite_version
    versions["redis-server"] = redis_server_version()
    versions["git commit"] = _git_commit()
    return versions


def write_outputs(doc: Mapping[str, Any], json_path: Path, markdown_path: Path) -> None:
    """Write both files; each appears whole or not at all (write, then rename)."""
    _write_atomic(json_path, json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    _write_atomic(markdown_path, render_markdown(doc))


def render_markdown(doc: Mapping[str, Any]) -> str:
    """RESULTS.md from a results document."""
    return "\n".join(_markdown(doc)) + "\n"


def _markdown(doc: Mapping[str, Any]) -> Iterator[str]:
    machine, scale = doc["machine"], doc["scale"]
    yield "# Benchmark results"
    yield ""
    parts = ", ".join(f"{name} {sec:.0f} s" for name, sec in doc.get("seconds", {}).items())
    yield (
        f"`{doc['command']}` on {doc['date']}, {doc['duration_s']:.0f} s ({parts})."
        f" Regenerate with `make bench` (full) or `make bench-quick`; method and"
        " configuration of every system: [bench/README.md](README.md)."
    )
    yield ""
    yield (
        f"Sizes: {scale['keys']:,} keys, {scale['mixed_ops']:,} mixed operations over"
        f" {scale['tasks']} tasks, {scale['writes']:,} concurrent writes, bulk calls of"
        f" {scale['bulk_size']} keys; best of {scale['rounds_memory']} rounds (memory) /"
        f" {scale['rounds_io']} (Redis, SQLite)."
        + (" **Quick run**: counts are scaled down." if doc["quick"] else "")
    )
    yield ""
    yield "| machine | |"
    yield "|---|---|"
    yield f"| CPU | {machine['cpu']} |"
    yield f"| cores | {machine['cores']} |"
    yield f"| Python | {machine['python']} |"
    yield f"| OS | {machine['os']} |"
    load = " / ".join(f"{x:g}" for x in machine["load_average"])
    yield f"| load average at start (1/5/15 min) | {load} |"
    yield ""
    yield "| package | version |"
    yield "|---|---|"
    for name, version in doc["versions"].items():
        yield f"| {name} | {version or 'not installed'} |"
    yield ""
    yield from _targets(doc["targets"])
    yield from _throughput(doc["systems"])
    yield from _ceiling(doc.get("server_ceiling"), doc["systems"])
    yield from _hot_spots(doc.get("hot_spots"))
    yield from _extras(doc.get("extras", {}))


def _targets(targets: list[dict[str, Any]]) -> Iterator[str]:
    yield "## Targets"
    yield ""
    passed = sum(t["result"] == "PASS" for t in targets)
    missed = sum(t["result"] == "MISS" for t in targets)
    yield f"{passed} PASS, {missed} MISS, {len(targets) - passed - missed} not measured."
    yield ""
    yield "| target | workload | compared with | measured | goal | result |"
    yield "|---|---|---|---|---|---|"
    for t in targets:
        result = f"**{t['result']}**" if t["result"] == "MISS" else t["result"]
        yield (
            f"| {t['target']} | {t['workload']} | {t['versus']} | {t['measured_text']} |"
            f" {t['goal_label']} | {result} |"
        )
    yield ""


def _throughput(systems: list[dict[str, Any]]) -> Iterator[str]:
    yield "## Throughput"
    yield ""
    yield "Higher is better. Columns:"
    yield ""
    for w in WORKLOADS:
        yield f"- **{w.heading}** ({w.unit}): {w.title}"
    yield (
        "- **p50 / p99**: latency of one operation in the 64-task mix, in µs"
        " (it includes waiting for the other 63 tasks)"
    )
    yield ""
    yield "—: the library has no such operation (see bench/README.md)."
    for family, title in _FAMILY_TITLES.items():
        rows = [s for s in systems if s["family"] == family]
        if not rows:
            continue
        yield ""
        yield f"### {title}"
        yield ""
        heads = " | ".join(w.heading for w in WORKLOADS)
        yield f"| system | role | {heads} | p50 µs | p99 µs |"
        yield "|---|---|" + "---:|" * (len(WORKLOADS) + 2)
        for system in rows:
            results = system["results"]
            if system["status"] != "ok":
                reason = f"{system['status']}: {system['reason']}"
                yield f"| {system['name']} | {system['role']} | {reason} |"
                continue
            cells = [_rate(results.get(w.name)) for w in WORKLOADS]
            mix = results.get("mixed_64") or {}
            cells += [_micros(mix.get("p50_us")), _micros(mix.get("p99_us"))]
            yield f"| {system['name']} | {system['role']} | " + " | ".join(cells) + " |"
    yield ""
    yield "| system | serializer and configuration |"
    yield "|---|---|"
    for system in systems:
        yield f"| {system['name']} | {system['serializer']} |"
    yield ""


def _ceiling(ceiling: Mapping[str, Any] | None, systems: list[dict[str, Any]]) -> Iterator[str]:
    if not ceiling:
        return
    yield "## Redis server ceiling"
    yield ""
    if "error" in ceiling:
        yield f"redis-benchmark did not run: {ceiling['error']}"
        yield ""
        return
    yield (
        f"`{ceiling['command']}` against the same server: what the server and a C client"
        " with 64 connections reach, one command per round trip."
    )
    yield ""
    yield "| command | ops/s | p50 µs |"
    yield "|---|---:|---:|"
    for command in ("SET", "GET"):
        figures = ceiling["results"].get(command)
        if figures:
            yield f"| {command} | {_rate(figures)} | {_micros(figures['p50_us'])} |"
    ours = next((s for s in systems if s["name"] == "kvstore-redis"), None)
    mix = ours and ours["results"].get("mixed_64")
    get = ceiling["results"].get("GET")
    if mix and get:
        share = mix["rate"] / get["ops_per_s"]
        yield ""
        yield f"kvstore-redis 64-task mix reaches {share * 100:.0f} % of the GET ceiling."
    yield ""


def _hot_spots(hot_spots: Mapping[str, Any] | None) -> Iterator[str]:
    if not hot_spots:
        return
    yield "## Hot spots: kvstore.MemoryStore under cProfile"
    yield ""
    yield (
        "Own time per function (cProfile inflates call overhead, so read shares, not"
        " absolute times)."
    )
    for phase, summary in hot_spots.items():
        yield ""
        yield f"**{phase}** ({summary['total_s'] * 1000:.0f} ms profiled)"
        yield ""
        yield "| function | where | calls | own time |"
        yield "|---|---|---:|---:|"
        for fn in summary["functions"]:
            share = fn["own_share"] * 100
            yield f"| `{fn['function']}` | {fn['where']} | {fn['calls']:,} | {share:.0f} % |"
    yield ""


def merge_part(into: Mapping[str, Any], source: Mapping[str, Any], part: str) -> dict[str, Any]:
    """*into* with the figures of extra part *part* taken from the run *source*.

    The figures keep a ``measured_by`` note (the other run's command, date,
    load average at its start and git commit), which the Markdown shows, so a
    section measured apart never passes for a figure of the run around it.
    Nothing else of *into* changes: its command, date, durations and targets
    are still its own run's.
    """
    figures = source.get("extras", {}).get(part)
    if figures is None:
        raise KeyError(f"{part} is not among the extras of that run")
    merged = {
        **figures,
        "measured_by": {
            "command": source["command"],
            "date": source["date"],
            "load_average": source["machine"]["load_average"],
            "git_commit": source.get("versions", {}).get("git commit"),
            "seconds": source.get("seconds", {}).get(part),
        },
    }
    return {**into, "extras": {**into.get("extras", {}), part: merged}}


def _extras(extras: Mapping[str, Any]) -> Iterator[str]:
    for name, figures in extras.items():
        if name in _EXTRA_RENDERERS:
            yield from _EXTRA_RENDERERS[name](figures)
            continue
        yield f"## {name.replace('_', ' ').capitalize()} (bench/{name}.py)"
        yield ""
        # Nested figures become one row per path and one column per leaf name:
        # {"get": {"bare": {"ops_per_s": 1}}} -> row "get.bare", column "ops_per_s".
        rows: dict[str, dict[str, Any]] = {}
        for path, value in _flatten(figures):
            row, _, column = path.rpartition(".")
            rows.setdefault(row or name, {})[column] = value
        columns = list(dict.fromkeys(column for cells in rows.values() for column in cells))
        yield "| | " + " | ".join(columns) + " |"
        yield "|---|" + "---:|" * len(columns)
        for row, cells in rows.items():
            values = " | ".join(_scalar(cells[c]) if c in cells else "" for c in columns)
            yield f"| {row} | {values} |"
        yield ""


def _http_sessions(figures: Mapping[str, Any]) -> Iterator[str]:
    yield "## HTTP sessions (bench/http_sessions.py)"
    yield ""
    by = figures.get("measured_by")
    if by:
        load = " / ".join(f"{x:g}" for x in by["load_average"])
        yield (
            f"Measured apart from the run above: `{by['command']}` on {by['date']}"
            f" (git {by['git_commit']}, load average at its start {load})."
        )
        yield ""
    if "rows" not in figures:
        reason = figures.get("skipped") or figures.get("error") or "no figures"
        yield f"Not measured: {reason}."
        yield ""
        return
    settings, run = figures["settings"], figures["run"]
    yield (
        f"`python -m runtime serve` (`HTTP_RATE_LIMIT=0`) under {settings['wrk']}: each row"
        f" {settings['duration_s']} s after {settings['warmup_s']} s of warm-up,"
        f" {settings['connections']} connections over {settings['threads']} threads,"
        f" {settings['sessions']} sessions; {run['date']}, {run['seconds']:.0f} s, load average"
        f" (1 min) {run['load_average_start'][0]:g} at the start, {run['load_1min_max']:g} at"
        f" most. Method: [bench/README.md](README.md#http-sessions)."
    )
    yield ""
    yield (
        "| backend | replicas | operation | req/s | p50 ms | p99 ms | non-2xx | socket errors"
        " | vs floor |"
    )
    yield "|---|---:|---|---:|---:|---:|---:|---:|---:|"
    for row in figures["rows"]:
        failed = row["non_2xx"] or row["socket_errors"]
        statuses = ", ".join(f"{s}: {n}" for s, n in row["statuses"].items())
        non_2xx = f"**{row['non_2xx']}** ({statuses})" if row["non_2xx"] else "0"
        errors = f"**{row['socket_errors']}**" if row["socket_errors"] else "0"
        versus = "—" if row["vs_floor"] is None else f"{row['vs_floor']:.2f}x"
        operation = f"**{row['operation']}**" if failed else row["operation"]
        yield (
            f"| {row['backend']} | {row['replicas']} | {operation} | {row['rps']:,.0f} |"
            f" {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | {non_2xx} | {errors} | {versus} |"
        )
    yield ""
    for note in figures.get("notes", []):
        yield f"- {note}."
    pages = run.get("history_page_messages")
    if pages:
        held = ", ".join(f"{backend} {n}" for backend, n in pages.items())
        yield (
            f"- messages in a history page when its row started"
            f" (limit {settings['history_limit']}): {held}."
        )
    for backend, reason in run.get("stopped", {}).items():
        yield f"- **{backend} stopped**: {reason}."
    failures = figures.get("rows_with_failures")
    yield (
        f"- **rows with non-2xx answers or socket errors: {', '.join(failures)}**."
        if failures
        else "- no row had a non-2xx answer or a socket error."
    )
    yield ""
    yield "| aim | measured | goal | result |"
    yield "|---|---:|---|---|"
    for aim in figures.get("aims", []):
        result = {True: "met", False: "**missed**", None: "not measured"}[aim["met"]]
        value = aim["measured"]
        if value is None:
            measured = "—"
        else:
            measured = f"{value:.2f}x" if aim["aim"].endswith("x") else f"{value:.0f} ms"
        yield f"| {aim['what']} | {measured} | {aim['aim']} | {result} |"
    yield ""
    yield "| ratio (req/s) | |"
    yield "|---|---:|"
    for name, value in figures.get("ratios", {}).items():
        yield f"| {name} | {value:.2f}x |"
    yield ""


_EXTRA_RENDERERS: Final = {"http_sessions": _http_sessions}


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix or "value", value


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def _rate(measured: Mapping[str, Any] | None) -> str:
    if not measured:
        return "—"
    rate = float(measured.get("rate", measured.get("ops_per_s", 0.0)))
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M"
    if rate >= 1e4:
        return f"{rate / 1e3:.0f} k"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f} k"
    return f"{rate:.0f}"


def _micros(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as release:
            for line in release:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head} (with uncommitted changes)" if dirty else head


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown of a saved run, or merge one part of it into another run's files."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Print the Markdown of a saved latest.json; with --merge PART INTO, copy"
        " that part's figures into the run INTO (a latest.json) and render its Markdown anew.",
    )
    parser.add_argument("source", nargs="?", default="bench/results/latest.json")
    parser.add_argument("--merge", nargs=2, metavar=("PART", "INTO"))
    parser.add_argument(
        "--markdown",
        default=str(Path(__file__).resolve().parent / "RESULTS.md"),
        metavar="FILE",
        help="with --merge: the Markdown to write (default: bench/RESULTS.md)",
    )
    args = parser.parse_args(argv)
    source = json.loads(Path(args.source).read_text(encoding="utf-8"))
    if args.merge is None:
        sys.stdout.write(render_markdown(source))
        return 0
    part, into_path = args.merge
    into = json.loads(Path(into_path).read_text(encoding="utf-8"))
    try:
        merged = merge_part(into, source, part)
    except KeyError as err:
        parser.error(str(err))
    write_outputs(merged, Path(into_path), Path(args.markdown))
    print(f"merged {part} from {args.source} into {into_path} and {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
