"""The pure parts of bench/http_sessions.py: wrk output, combining replicas, Lua, figures.

Nothing here runs wrk or a server. The wrk outputs are verbatim from wrk 4.1.0
(Debian's package): runs of the benchmark's own scripts against ``serve``, and
runs against a small loopback server that drops some connections, answers some
requests late and some with 500, to get socket errors and every latency unit.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any, Final

import pytest

from bench import http_sessions, report, run
from bench.http_sessions import (
    AGENT,
    OPERATIONS,
    USER,
    Row,
    WrkResult,
    combine,
    figures,
    lua_script,
    lua_string,
    parse_wrk,
)

SEND: Final = """\
Running 1s test @ http://127.0.0.1:40127
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.29ms    3.48ms  27.64ms   80.66%
    Req/Sec   557.55    176.33     0.94k    75.00%
  Latency Distribution
     50%    6.53ms
     75%    8.95ms
     90%   12.02ms
     99%   18.84ms
  1111 requests in 1.00s, 1.66MB read
Requests/sec:   1108.33
Transfer/sec:      1.65MB
statuses: 201=1111
"""
"""The send script on ``serve`` (memory): every answer a 201."""

GET_404: Final = """\
Running 1s test @ http://127.0.0.1:40127
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.35ms    1.43ms  16.02ms   87.58%
    Req/Sec     1.80k   393.55     2.43k    60.00%
  Latency Distribution
     50%    2.08ms
     75%    2.39ms
     90%    3.98ms
     99%    7.96ms
  3593 requests in 1.00s, 3.44MB read
  Non-2xx or 3xx responses: 1198
Requests/sec:   3578.65
Transfer/sec:      3.43MB
statuses: 200=2395 404=1198
"""
"""The get script on ``serve`` with one unknown session id among three."""

SOCKET_ERRORS: Final = """\
Running 2s test @ http://127.0.0.1:18777/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   207.22us  224.93us   1.13ms   89.67%
    Req/Sec   647.50    823.78     1.23k   100.00%
  Latency Distribution
     50%  166.00us
     75%  278.00us
     90%  442.00us
     99%    1.00ms
  221 requests in 2.01s, 8.99KB read
  Socket errors: connect 0, read 20, write 0, timeout 8
  Non-2xx or 3xx responses: 19
Requests/sec:    109.87
Transfer/sec:      4.47KB
"""
"""No script: dropped connections, late answers (``--timeout 1s``) and 500s."""

SECONDS: Final = """\
Running 3s test @ http://127.0.0.1:18778/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   707.77ms  772.62ms   1.51s    52.94%
    Req/Sec     9.67      8.96    20.00     66.67%
  Latency Distribution
     50%    4.58ms
     75%    1.50s \n\
     90%    1.51s \n\
     99%    1.51s \n\
  17 requests in 3.03s, 718.00B read
  Non-2xx or 3xx responses: 2
Requests/sec:      5.61
Transfer/sec:     236.85B
"""
"""Most answers 1.5 s late: wrk prints seconds, with a trailing space."""

_OPS: Final = {op.name: op for op in OPERATIONS}


def test_parse_wrk_reads_rate_latency_and_statuses() -> None:
    result = parse_wrk(SEND)
    assert result == WrkResult(
        rps=1108.33,
        p50_ms=6.53,
        p99_ms=18.84,
        non_2xx=0,
        errors=0,
        requests=1111,
        statuses={201: 1111},
    )


def test_parse_wrk_counts_non_2xx_answers() -> None:
    result = parse_wrk(GET_404)
    assert result.non_2xx == 1198
    assert result.statuses == {200: 2395, 404: 1198}
    assert result.requests == 3593
    assert result.errors == 0


def test_parse_wrk_adds_up_socket_errors_and_reads_microseconds() -> None:
    result = parse_wrk(SOCKET_ERRORS)
    assert result.errors == 20 + 8
    assert result.non_2xx == 19
    assert result.p50_ms == pytest.approx(0.166)
    assert result.p99_ms == pytest.approx(1.0)
    assert result.rps == pytest.approx(109.87)
    assert result.statuses == {}  # no script, no statuses line


def test_parse_wrk_reads_seconds() -> None:
    result = parse_wrk(SECONDS)
    assert result.p50_ms == pytest.approx(4.58)
    assert result.p99_ms == pytest.approx(1510.0)
    assert result.non_2xx == 2


def test_parse_wrk_without_latency_distribution_gives_nan() -> None:
    result = parse_wrk("  10 requests in 1.00s, 1.00KB read\nRequests/sec:     10.00\n")
    assert math.isnan(result.p50_ms) and math.isnan(result.p99_ms)
    assert result.requests == 10


def test_parse_wrk_without_a_rate_fails() -> None:
    with pytest.raises(RuntimeError, match="Requests/sec"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_combine_sums_rates_and_keeps_the_worse_latency() -> None:
    a = WrkResult(100.0, 10.0, 90.0, 1, 0, 1000, {201: 999, 500: 1})
    b = WrkResult(50.0, 20.0, 60.0, 0, 3, 500, {201: 500})
    both = combine([a, b])
    assert both == WrkResult(150.0, 20.0, 90.0, 1, 3, 1500, {201: 1499, 500: 1})
    assert combine([a]) == a


def test_combine_of_nothing_fails() -> None:
    with pytest.raises(ValueError):
        combine([])


# -- Lua -------------------------------------------------------------------------------------

_LUA_STRING: Final = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES: Final = {"\\": "\\", '"': '"', "n": "\n", "r": "\r"}


def _unlua(literal: str) -> str:
    """The text of a Lua string literal body with the escapes lua_string writes."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES[m.group(1)], literal)


def _assignment(script: str, name: str) -> str:
    match = re.search(rf"^local {name} = (.*)$", script, re.M)
    assert match is not None, name
    return match.group(1)


def _code(script: str) -> str:
    """*script* without string literals and comments."""
    return re.sub(r"--[^\n]*", "", _LUA_STRING.sub('""', script))


def _assert_well_formed(script: str) -> None:
    code = _code(script)
    opened = sum(len(re.findall(rf"\b{word}\b", code)) for word in ("function", "if", "for"))
    assert opened == len(re.findall(r"\bend\b", code))
    for left, right in ("()", "{}", "[]"):
        assert code.count(left) == code.count(right)
    # wrk's hooks, each defined once.
    for hook in ("setup", "init", "request", "response", "done"):
        assert len(re.findall(rf"^function {hook}\(", script, re.M)) == 1, hook


def test_lua_string_round_trips_quotes_backslashes_and_newlines() -> None:
    text = 'a "quoted" \\ back\nslash\r'
    literal = lua_string(text)
    assert _LUA_STRING.fullmatch(literal)
    assert _unlua(literal[1:-1]) == text


def test_create_script_posts_a_valid_json_body_without_ids() -> None:
    script = lua_script(_OPS["create"], ["not used"])
    _assert_well_formed(script)
    assert _assignment(script, "ids") == "{}"
    assert _assignment(script, "method") == '"POST"'
    assert _unlua(_assignment(script, "prefix")[1:-1]) == "/api/messaging/sessions"
    body = json.loads(_unlua(_assignment(script, "body")[1:-1]))
    assert body == {"agentId": AGENT, "userId": USER}
    assert '["Content-Type"] = "application/json"' in script


def test_send_script_spreads_over_every_id() -> None:
    ids = [f"id-{n}" for n in range(256)]
    script = lua_script(_OPS["send spread"], ids, slots=2)
    _assert_well_formed(script)
    listed = [_unlua(m) for m in _LUA_STRING.findall(_assignment(script, "ids"))]
    assert listed == ids
    assert _unlua(_assignment(script, "suffix")[1:-1]) == "/messages"
    body = json.loads(_unlua(_assignment(script, "body")[1:-1]))
    assert body == {"content": "hello there", "transport": "http"}
    assert _assignment(script, "stride") == "128"
    assert _assignment(script, "first_slot") == "0"


def test_hot_script_sends_to_the_first_id_only() -> None:
    script = lua_script(_OPS["send hot"], ["first", "second"], slots=4)
    assert _assignment(script, "ids") == '{"first"}'
    assert _assignment(script, "stride") == "1"


def test_get_scripts_have_no_body_and_the_history_limit() -> None:
    history = lua_script(_OPS["history"], ["a"])
    get = lua_script(_OPS["get"], ["a"])
    for script in (history, get):
        _assert_well_formed(script)
        assert _assignment(script, "method") == '"GET"'
        assert _assignment(script, "body") == "nil"
    assert _assignment(history, "suffix") == '"/messages?limit=50"'
    assert _assignment(get, "suffix") == '""'


def test_second_replica_script_starts_at_its_own_slots() -> None:
    ids = [str(n) for n in range(256)]
    second = lua_script(_OPS["get"], ids, first_slot=1, slots=2)
    assert _assignment(second, "first_slot") == "1"
    assert _assignment(second, "stride") == "128"


def test_a_session_operation_without_ids_fails() -> None:
    with pytest.raises(ValueError, match="needs session ids"):
        lua_script(_OPS["history"], [])


# -- figures and the report ------------------------------------------------------------------


def _result(rps: float, *, non_2xx: int = 0, errors: int = 0, p99: float = 100.0) -> WrkResult:
    statuses = {201: 100 - non_2xx} | ({503: non_2xx} if non_2xx else {})
    return WrkResult(rps, p99 / 2, p99, non_2xx, errors, 100, statuses)


def _rows() -> list[Row]:
    rows = [Row("floor", 1, "send spread", _result(2000)), Row("floor", 1, "get", _result(4000))]
    for op in OPERATIONS:
        rows.append(Row("memory", 1, op.name, _result(1000)))
    rows.append(Row("redis", 1, "send spread", _result(400)))
    rows.append(Row("redis", 1, "send hot", _result(600, p99=300)))
    rows.append(Row("redis", 1, "get", _result(800)))
    rows.append(Row("redis", 2, "send spread", _result(500, non_2xx=3, errors=1)))
    return rows


def _figures() -> dict[str, Any]:
    return figures(
        _rows(),
        settings={
            "duration_s": 5,
            "warmup_s": 1,
            "connections": 64,
            "threads": 2,
            "sessions": 256,
            "history_limit": 50,
            "wrk": "wrk debian/4.1.0-3+b2",
        },
        run={
            "date": "2026-12-01 16:00 UTC",
            "seconds": 180.0,
            "load_average_start": [1.0, 0.5, 0.2],
            "load_1min_max": 3.5,
            "history_page_messages": {"memory": 50},
            "stopped": {"sqlite": "RuntimeError: the server exited with status 2"},
        },
    )


def test_figures_give_ratios_of_measured_rows_only() -> None:
    doc = _figures()
    ratios = doc["ratios"]
    assert ratios["send spread, redis / memory"] == 0.4
    assert ratios["redis: send hot / send spread"] == 1.5
    assert ratios["memory: send hot / send spread"] == 1.0
    assert ratios["redis: two replicas / one, send spread"] == 1.25
    # No SQLite rows and no two-replica get on Redis: no such ratio, no failure.
    assert not any(name.startswith("sqlite") for name in ratios)
    assert "redis: two replicas / one, get" not in ratios


def test_figures_set_each_row_against_the_floor_of_its_method() -> None:
    rows = {(r["backend"], r["replicas"], r["operation"]): r for r in _figures()["rows"]}
    assert rows["memory", 1, "create"]["vs_floor"] == 0.5  # POST floor 2000
    assert rows["memory", 1, "history"]["vs_floor"] == 0.25  # GET floor 4000
    assert rows["redis", 1, "get"]["vs_floor"] == 0.2
    assert rows["floor", 1, "get"]["vs_floor"] is None


def test_figures_judge_the_aims_and_list_failed_rows() -> None:
    doc = _figures()
    aims = {aim["what"]: aim for aim in doc["aims"]}
    assert aims["send spread, Redis / memory"]["met"] is False
    assert aims["Redis send hot / send spread"]["met"] is True
    assert aims["Redis send hot p99 (ms)"]["measured"] == 300.0
    assert aims["Redis send hot p99 (ms)"]["met"] is False
    assert doc["rows_with_failures"] == ["redis x2 send spread"]
    row = next(r for r in doc["rows"] if r["replicas"] == 2)
    assert row["statuses"] == {"201": 97, "503": 3}
    json.dumps(doc, allow_nan=False)  # plain JSON


def test_failures_in_a_warm_up_are_listed_too() -> None:
    warm = Row("redis", 1, "create", _result(100), warmup=_result(50, errors=2))
    doc = figures([*_rows(), warm], settings={}, run={})
    assert doc["rows_with_failures"] == ["redis x2 send spread", "redis x1 create (warm-up)"]
    row = doc["rows"][-1]
    assert (row["non_2xx"], row["socket_errors"], row["warmup_failures"]) == (0, 0, 2)
    line = http_sessions._line(warm, 0.5)
    assert "WARM-UP FAILURES (0 non-2xx, 2 socket errors)" in line


def test_a_failed_row_is_flagged_in_the_printed_line() -> None:
    failed = Row("sqlite", 2, "send hot", _result(10, non_2xx=4))
    assert "<-- FAILURES (503=4)" in http_sessions._line(failed, None)
    assert "FAILURES" not in http_sessions._line(Row("memory", 1, "get", _result(10)), 0.1)


def test_report_shows_failures_stopped_backends_and_the_aims() -> None:
    text = "\n".join(report._http_sessions(_figures()))
    assert "## HTTP sessions (bench/http_sessions.py)" in text
    row = "| redis | 2 | **send spread** | 500 | 50.0 | 100 | **3** (201: 97, 503: 3) | **1** |"
    assert row in text
    assert "**rows with non-2xx answers or socket errors: redis x2 send spread**" in text
    assert "**sqlite stopped**: RuntimeError: the server exited with status 2" in text
    assert "| send spread, Redis / memory | 0.40x | >= 0.5x | **missed** |" in text
    assert "| Redis send hot p99 (ms) | 300 ms | < 250 ms | **missed** |" in text
    assert "| redis: send hot / send spread | 1.50x |" in text
    assert "memory has no two-replica rows" in text


def test_report_of_a_skipped_part_says_why() -> None:
    text = "\n".join(report._http_sessions({"skipped": http_sessions.WRK_MISSING}))
    assert f"Not measured: {http_sessions.WRK_MISSING}." in text


def test_merge_part_keeps_the_other_run_apart() -> None:
    into = {"command": "python -m bench", "extras": {"sessions_load": {"sqlite": {}}}}
    source = {
        "command": "python -m bench --only http_sessions",
        "date": "2026-12-01 16:00 UTC",
        "machine": {"load_average": [1.0, 0.5, 0.2]},
        "versions": {"git commit": "abc1234"},
        "seconds": {"http_sessions": 180.0},
        "extras": {"http_sessions": _figures()},
    }
    merged = report.merge_part(into, source, "http_sessions")
    assert merged["command"] == "python -m bench"
    assert list(merged["extras"]) == ["sessions_load", "http_sessions"]
    by = merged["extras"]["http_sessions"]["measured_by"]
    assert by["command"] == "python -m bench --only http_sessions"
    assert by["git_commit"] == "abc1234"
    text = "\n".join(report._http_sessions(merged["extras"]["http_sessions"]))
    assert "Measured apart from the run above: `python -m bench --only http_sessions`" in text
    with pytest.raises(KeyError):
        report.merge_part(into, source, "memory_costs")


# -- python -m bench -------------------------------------------------------------------------


def test_bench_runs_it_as_an_extra_part_with_redis() -> None:
    assert "http_sessions" in run.EXTRAS
    assert "http_sessions" in run.REDIS_PARTS
    specs, parts = run._select("http_sessions")
    assert specs == [] and parts == {"http_sessions"}


def test_measure_without_wrk_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert asyncio.run(http_sessions.measure(quick=True)) == {"skipped": http_sessions.WRK_MISSING}
