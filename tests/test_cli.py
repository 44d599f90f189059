"""The operator command line, ``python -m kvstore`` (kvstore/cli.py).

The commands run in-process through ``main([...])``, which starts its own event
loop with ``anyio.run``; so these tests are synchronous and prepare or inspect
stores through :func:`_run` as well.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from kvstore import BackendUnavailableError, MemoryStore, StoreMetrics, open_service
from kvstore.cli import main
from kvstore.copy import copy_store
from kvstore.progress import LineProgress, open_progress
from kvstore.protocol import KVStore
from kvstore.testing import ManualClock
from kvstore.wrapper import StoreWrapper

# The copy may shorten a TTL by up to --ttl-precision (1 s by default), never lengthen it.
TTL_PRECISION = 1.0
ROUNDING = 0.05
"""Seconds a deadline may move by being stored (Redis keeps whole milliseconds)."""


def _run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(fn)


def _fill(
    url: str,
    items: Mapping[str, Any],
    *,
    store: str = "default",
    ttl: float | None = None,
    **options: Any,
) -> None:
    async def fill() -> None:
        async with open_service(url, metrics=False, **options) as service:
            await service.get_store(store).set_many(items, ttl=ttl)

    _run(fill)


def _dump(url: str, store: str = "default") -> dict[str, tuple[Any, float | None]]:
    """{key: (value, remaining ttl)} of every live entry."""

    async def dump() -> dict[str, tuple[Any, float | None]]:
        async with open_service(url, metrics=False) as service:
            kv = service.get_store(store)
            return {key: (value, await kv.ttl(key)) async for key, value in kv.entries()}

    result: dict[str, tuple[Any, float | None]] = _run(dump)
    return result


Deadline = tuple[float, float]
"""When a key expires (wall clock): between these two instants."""


def _deadlines(url: str, store: str = "default") -> dict[str, tuple[Any, Deadline | None]]:
    """{key: (value, deadline or None)} of every live entry.

    A remaining TTL says when the key expires only together with the moment it
    was read: each is bracketed by the clock read just before and after its
    ``ttl()`` call, so the check holds however slowly a loaded machine runs.
    """

    async def read() -> dict[str, tuple[Any, Deadline | None]]:
        found: dict[str, tuple[Any, Deadline | None]] = {}
        async with open_service(url, metrics=False) as service:
            kv = service.get_store(store)
            async for key, value in kv.entries():
                asked = time.time()
                remaining = await kv.ttl(key)
                answered = time.time()
                bounds = None if remaining is None else (asked + remaining, answered + remaining)
                found[key] = (value, bounds)
        return found

    result: dict[str, tuple[Any, Deadline | None]] = _run(read)
    return result


def _copy(argv: list[str]) -> float:
    """Run ``kvstore copy`` (it must succeed); return how long it took."""
    started = time.time()
    assert main(argv) == 0
    return time.time() - started


def _assert_copied_deadline(
    key: str, original: Deadline | None, copied: Deadline | None, copy_seconds: float
) -> None:
    """The copy expires up to the TTL precision before the original does.

    It may expire later only by the time its write took to reach the
    destination (the TTL is computed before the write, applied on arrival):
    at most the copy's own duration.
    """
    if original is None:
        assert copied is None, key
        return
    assert copied is not None, key
    earliest_original, latest_original = original
    earliest_copy, latest_copy = copied
    assert earliest_copy <= latest_original + copy_seconds + ROUNDING, (key, original, copied)
    assert latest_copy >= earliest_original - TTL_PRECISION - ROUNDING, (key, original, copied)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kvstore: error: ")
    return lines[0]


def _past_clock(seconds: float) -> Callable[[], float]:
    """A wall clock running *seconds* behind: TTLs set with it are already over."""
    return lambda: time.time() - seconds


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'src.db'}"


@pytest.fixture
def filled(db: str) -> str:
    """A SQLite store with persistent keys, keys with a TTL, and one expired key."""
    _fill(db, {"user:1": {"name": "Ada", "tags": ["x"]}, "user:2": [1, 2.5], "none": None})
    _fill(db, {"session:a": {"n": 1}}, ttl=100)
    _fill(db, {"gone": "old"}, ttl=10, clock=_past_clock(1000))
    _fill(db, {"other": 1}, store="sessions")
    return db


# -- entries ------------------------------------------------------------------------


def test_entries_prints_key_value_ttl(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["entries", filled]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()}
    assert set(rows) == {"user:1", "user:2", "none", "session:a"}  # not "gone", not "other"
    assert rows["user:1"] == ['{"name":"Ada","tags":["x"]}', "-"]
    assert rows["none"] == ["null", "-"]
    value, ttl = rows["session:a"]
    assert value == '{"n":1}'
    assert 50 < float(ttl) <= 100  # seconds left of ttl=100


def test_entries_json_prefix_limit_and_store(
    filled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["entries", filled, "--json", "--prefix", "user:"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(rows, key=lambda r: r["key"]) == [
        {"key": "user:1", "value": {"name": "Ada", "tags": ["x"]}, "ttl": None},
        {"key": "user:2", "value": [1, 2.5], "ttl": None},
    ]
    assert main(["entries", filled, "--limit", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["entries", filled, "--store", "sessions"]) == 0
    assert capsys.readouterr().out == "other\t1\t-\n"


def test_entries_quotes_keys_with_control_characters(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(db, {"tab\there": 1})
    assert main(["entries", db]) == 0
    assert capsys.readouterr().out == '"tab\\there"\t1\t-\n'


# -- get ----------------------------------------------------------------------------


def test_get_prints_json(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", filled, "user:1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "Ada", "tags": ["x"]}
    # A stored None is a value, not a missing key.
    assert main(["get", filled, "none"]) == 0
    assert capsys.readouterr().out == "null\n"
    assert main(["get", filled, "other", "--store", "sessions"]) == 0
    assert capsys.readouterr().out == "1\n"


@pytest.mark.parametrize("key", ["missing", "gone"])
def test_get_missing_key_exits_1(filled: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", filled, key]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert key in _one_error_line(err) and "not found" in err


# -- stats --------------------------------------------------------------------------


def test_stats_counts_live_keys(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", filled]) == 0
    report = json.loads(capsys.readouterr().out)
    live: dict[str, Any] = {
        "user:1": {"name": "Ada", "tags": ["x"]},
        "user:2": [1, 2.5],
        "none": None,
        "session:a": {"n": 1},
    }
    assert report["keys"] == 4
    assert report["keys_with_ttl"] == 1
    assert report["keys_without_ttl"] == 3
    assert report["key_bytes"] == sum(len(key) for key in live)
    assert report["value_bytes"] == sum(
        len(json.dumps(v, separators=(",", ":"))) for v in live.values()
    )
    metrics = report["metrics"]
    assert set(metrics) == {f.name for f in dataclasses.fields(StoreMetrics)}
    assert metrics["errors"] == 0
    # The command asked ttl() once per live key; the metrics say so.
    assert metrics["ops"]["ttl"]["count"] == 4


def test_stats_with_prefix(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", filled, "--prefix", "session:"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["keys"], report["keys_with_ttl"]) == (1, 1)


# -- copy ---------------------------------------------------------------------------


def _copy_fixture(src: str, count: int) -> dict[str, float | None]:
    """Fill *src* with *count* keys, half persistent, half with assorted TTLs."""
    expected: dict[str, float | None] = {}

    async def fill() -> None:
        async with open_service(src, metrics=False) as service:
            sessions = service.get_store("sessions")
            persistent = {f"p{i:05d}": {"i": i, "text": "x" * (i % 7)} for i in range(count // 2)}
            await sessions.set_many(persistent)
            expected.update(dict.fromkeys(persistent))
            for i in range(count - count // 2):
                ttl = 300.0 + (i % 40) * 7.5  # 40 distinct deadlines
                await sessions.set(f"t{i:05d}", [i], ttl=ttl)
                expected[f"t{i:05d}"] = ttl

    _run(fill)
    return expected


def test_copy_sqlite_to_sqlite_keeps_values_and_ttls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    _copy_fixture(src, 2500)
    _fill(src, {"expired": 1}, store="sessions", ttl=5, clock=_past_clock(100))
    _fill(src, {"cached": {"state": 1}}, store="state_cache", ttl=60)
    _fill(src, {"not-copied": 1}, store="elsewhere")

    argv = ["copy", src, dst, "--store", "sessions", "--store", "state_cache", "--batch", "300"]
    copy_seconds = _copy(argv)
    out, err = capsys.readouterr()
    assert err == ""
    assert "sessions: copied 2500, skipped 0 (already in DST), expired during copy 0" in out
    assert "state_cache: copied 1," in out
    assert "total: copied 2501," in out

    before, after = _deadlines(src, "sessions"), _deadlines(dst, "sessions")
    assert len(after) == 2500
    assert {k: v for k, (v, _) in after.items()} == {k: v for k, (v, _) in before.items()}
    for key, (_, copied) in after.items():
        _assert_copied_deadline(key, before[key][1], copied, copy_seconds)
    assert _dump(dst, "state_cache")["cached"][0] == {"state": 1}
    assert _dump(dst, "elsewhere") == {}


def test_copy_no_overwrite_keeps_existing_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    _fill(src, {f"k{i}": i for i in range(10)})
    _fill(src, {"t": "src"}, ttl=50)
    _fill(dst, {"k1": "dst", "k2": "dst"})
    _fill(dst, {"t": "dst"}, ttl=500)

    assert main(["copy", src, dst, "--no-overwrite", "--batch", "4"]) == 0
    assert "default: copied 8, skipped 3" in capsys.readouterr().out
    after = _dump(dst)
    assert after["k1"] == ("dst", None) and after["k2"] == ("dst", None)
    assert all(after[f"k{i}"] == (i, None) for i in range(10) if i not in (1, 2))
    value, remaining = after["t"]
    assert value == "dst" and remaining is not None and remaining > 400

    # The default overwrites.
    assert main(["copy", src, dst]) == 0
    assert "default: copied 11, skipped 0" in capsys.readouterr().out
    assert _dump(dst)["k1"] == (1, None)


def test_copy_prefix_and_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    _fill(src, {"a:1": 1, "a:2": 2, "b:1": 3})
    assert main(["copy", src, dst, "--prefix", "a:", "--progress"]) == 0
    out, err = capsys.readouterr()
    assert "copied 2," in out
    assert "copying" in err  # tqdm, shown at once with --progress
    assert _dump(dst) == {"a:1": (1, None), "a:2": (2, None)}


@pytest.mark.redis
def test_copy_sqlite_to_redis(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    src = f"sqlite:///{tmp_path / 'a.db'}"
    expected = _copy_fixture(src, 1200)
    copy_seconds = _copy(["copy", src, redis_url, "--store", "sessions", "--batch", "500"])
    assert "sessions: copied 1200, skipped 0" in capsys.readouterr().out
    after = _deadlines(redis_url, "sessions")
    assert set(after) == set(expected)
    before = _deadlines(src, "sessions")
    for key, (value, copied) in after.items():
        assert value == before[key][0]
        assert (before[key][1] is None) == (expected[key] is None), key
        _assert_copied_deadline(key, before[key][1], copied, copy_seconds)

    # And back again, without overwriting: everything is already there.
    assert main(["copy", redis_url, src, "--store", "sessions", "--no-overwrite"]) == 0
    assert "sessions: copied 0, skipped 1200" in capsys.readouterr().out


# -- copy_store (the library function behind `copy`) ----------------------------------


class _Recording(StoreWrapper):
    """Delegates to a store, records the TTL of each write, advances a clock on ttl()."""

    def __init__(self, inner: KVStore, clock: ManualClock, *, tick: float = 0.0) -> None:
        super().__init__(inner)
        self.clock = clock
        self.tick = tick
        self.writes: list[float | None] = []

    async def ttl(self, key: str) -> float | None:
        remaining = await self.inner.ttl(key)
        self.clock.advance_by(self.tick)
        return remaining

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        self.writes.append(ttl)
        await self.inner.set_many(mapping, ttl=ttl)

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        self.writes.append(ttl)
        await self.inner.set(key, value, ttl=ttl, keep_ttl=keep_ttl)


@pytest.mark.parametrize(("precision", "writes"), [(0.0, 20), (1.0, 11), (100.0, 1)])
def test_copy_store_groups_deadlines_by_precision(precision: float, writes: int) -> None:
    clock = ManualClock()
    source, target = MemoryStore(clock=clock), MemoryStore(clock=clock)
    recorder = _Recording(target, clock)

    async def scenario() -> None:
        for i in range(20):  # deadlines 10.0, 10.5, 11.0, ... two per second
            await source.set(f"k{i}", i, ttl=10 + i / 2)
        counts = await copy_store(source, recorder, batch=100, ttl_precision=precision, clock=clock)
        assert (counts.copied, counts.skipped, counts.expired) == (20, 0, 0)
        assert len(recorder.writes) == writes
        for i in range(20):
            original, copied = await source.ttl(f"k{i}"), await target.ttl(f"k{i}")
            assert original is not None and copied is not None
            assert original - precision <= copied <= original

    _run(scenario)


def test_copy_store_counts_keys_expiring_during_the_copy() -> None:
    clock = ManualClock()
    source, target = MemoryStore(clock=clock), MemoryStore(clock=clock)
    # Every ttl() call takes one second on the shared clock.
    slow_source = _Recording(source, clock, tick=1.0)

    async def scenario() -> None:
        await source.set_many({f"short{i}": i for i in range(3)}, ttl=2.5)
        await source.set_many({f"long{i}": i for i in range(3)}, ttl=1000)
        await source.set("persistent", "p")
        counts = await copy_store(slow_source, target, batch=100, clock=clock)
        copied = {k async for k, _ in target.entries()}
        assert counts.copied == len(copied)
        assert counts.copied + counts.expired == 7
        assert {"long0", "long1", "long2", "persistent"} <= copied
        assert counts.expired >= 2  # by the last ttl() call the short keys are gone

    _run(scenario)


def test_copy_store_persistent_key_deleted_meanwhile_is_not_resurrected() -> None:
    clock = ManualClock()
    source, target = MemoryStore(clock=clock), MemoryStore(clock=clock)

    class Deleting(_Recording):
        async def ttl(self, key: str) -> float | None:
            await self.inner.delete(key)  # deleted between entries() and ttl()
            return None

    async def scenario() -> None:
        await source.set_many({"a": 1, "b": 2})
        counts = await copy_store(Deleting(source, clock), target)
        assert (counts.copied, counts.expired) == (0, 2)
        assert [kv async for kv in target.entries()] == []

    _run(scenario)


def test_copy_store_no_overwrite_relies_on_add_for_races() -> None:
    clock = ManualClock()
    source, target = MemoryStore(clock=clock), MemoryStore(clock=clock)

    class Racing(_Recording):
        async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
            # Another writer creates "k1" right after the existence check.
            found = await self.inner.get_many(keys)
            await self.inner.set("k1", "theirs")
            return found

    async def scenario() -> None:
        await source.set_many({"k0": 0, "k1": 1})
        racing = Racing(target, clock)
        counts = await copy_store(source, racing, overwrite=False, clock=clock)
        assert (counts.copied, counts.skipped) == (1, 1)
        assert await target.get_many(["k0", "k1"]) == {"k0": 0, "k1": "theirs"}

    _run(scenario)


class _Failing(_Recording):
    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        raise BackendUnavailableError(f"cannot write {key}")

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        raise BackendUnavailableError("cannot write a batch")


def test_copy_store_raises_the_store_error_not_a_group() -> None:
    clock = ManualClock()
    source = MemoryStore(clock=clock)

    async def scenario() -> None:
        await source.set_many({f"k{i}": i for i in range(10)})
        await source.set_many({f"t{i}": i for i in range(10)}, ttl=50)
        target = _Failing(MemoryStore(clock=clock), clock)
        with pytest.raises(BackendUnavailableError, match="cannot write") as info:
            await copy_store(source, target, ttl_precision=0, clock=clock)
        assert type(info.value) is BackendUnavailableError

    _run(scenario)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("batch", 0, ValueError),
        ("concurrency", 0, ValueError),
        ("ttl_precision", -1.0, ValueError),
        ("batch", 1.5, TypeError),
        ("concurrency", True, TypeError),
        ("ttl_precision", "1", TypeError),
    ],
)
def test_copy_store_rejects_bad_options(option: str, value: Any, error: type[Exception]) -> None:
    async def scenario() -> None:
        with pytest.raises(error, match=option):
            await copy_store(MemoryStore(), MemoryStore(), **{option: value})

    _run(scenario)


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["entries", "ftp://example.com/x"],
        ["get", "nonsense", "key"],
        ["stats", "mysql://127.0.0.1/db"],
        ["copy", "bogus://x", "sqlite:///x.db"],
    ],
)
def test_unsupported_scheme_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = _one_error_line(err)
    assert "sqlite://" in line and "redis://" in line  # names the supported schemes


def test_missing_driver_is_a_runtime_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "kvstore.backends.redis", None)  # import fails
    assert main(["get", "redis://127.0.0.1:6379/0", "key"]) == 1
    assert "pip install 'kvstore-runtime[redis]'" in _one_error_line(capsys.readouterr().err)


def test_bad_store_name_exits_2(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["entries", filled, "--store", "no/slashes"]) == 2
    assert "invalid store name" in _one_error_line(capsys.readouterr().err)


def test_bad_store_name_in_copy_writes_nothing(
    filled: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = f"sqlite:///{tmp_path / 'b.db'}"
    assert main(["copy", filled, dst, "--store", "default", "--store", "bad name"]) == 2
    _one_error_line(capsys.readouterr().err)
    assert _dump(dst) == {}


def test_memory_source_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["copy", "memory://", "sqlite:///never.db"]) == 2
    assert "memory://" in _one_error_line(capsys.readouterr().err)
    assert main(["entries", "memory://"]) == 2
    _one_error_line(capsys.readouterr().err)


def test_same_source_and_destination_is_refused(
    filled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["copy", filled, filled]) == 2
    assert "same" in _one_error_line(capsys.readouterr().err)


def test_missing_sqlite_file_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"
    assert main(["entries", f"sqlite:///{path}"]) == 1
    assert "no SQLite database" in _one_error_line(capsys.readouterr().err)
    assert not path.exists()


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["copy", "sqlite:///a.db"]) == 2
    assert "kvstore: error:" in capsys.readouterr().err
    assert main(["copy", "sqlite:///a.db", "sqlite:///b.db", "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["entries", "memory://", "--limit", "ten"], ("--limit", "whole number", "'ten'")),
        (
            ["copy", "sqlite:///a.db", "sqlite:///b.db", "--concurrency", "0"],
            ("--concurrency", ">= 1"),
        ),
        (
            ["copy", "sqlite:///a.db", "sqlite:///b.db", "--ttl-precision", "-1"],
            ("--ttl-precision", ">= 0"),
        ),
        (
            ["copy", "sqlite:///a.db", "sqlite:///b.db", "--ttl-precision", "nan"],
            ("--ttl-precision", "finite"),
        ),
    ],
)
def test_bad_numbers_name_the_flag_and_what_is_allowed(
    argv: list[str], words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after argparse's usage line
    assert line.startswith("kvstore: error: argument ")
    for word in words:
        assert word in line


@pytest.mark.redis
def test_unreachable_redis_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    started = time.monotonic()
    status = main(["get", f"redis://:s3cret@127.0.0.1:{port}/0", "key"])
    assert status == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(port) in line or "unavailable" in line.lower() or "connect" in line.lower()
    assert "s3cret" not in line
    assert time.monotonic() - started < 60


@pytest.mark.redis
def test_unreachable_redis_destination_is_one_line(
    filled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["copy", filled, f"redis://127.0.0.1:{_free_port()}/0"])
    assert status == 1
    err = capsys.readouterr().err
    assert "unavailable" in _one_error_line(err).lower()
    assert "ExceptionGroup" not in err


def test_unexpected_error_is_one_line_unless_debug(
    filled: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(value: Any) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setattr("kvstore.cli.orjson.dumps", broken)
    assert main(["get", filled, "user:1"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "RuntimeError: boom" in line and "--debug" in line
    assert main(["--debug", "get", filled, "user:1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("kvstore: error:")


# -- progress and plumbing ------------------------------------------------------------


def test_line_progress_waits_for_its_delay() -> None:
    clock = ManualClock(0.0)
    stream = io.StringIO()
    progress = LineProgress(stream, desc="copying", delay=1.0, interval=0.5, clock=clock)
    progress.update(100)
    assert stream.getvalue() == ""  # quick runs stay quiet
    clock.advance_by(2.0)
    progress.update(300)
    assert stream.getvalue() == "\rcopying: 400 keys (200 keys/s)"
    clock.advance_by(0.1)
    progress.update(1)  # within the interval: no redraw
    assert stream.getvalue().count("\r") == 1
    progress.close()
    assert stream.getvalue().endswith("copying: 401 keys (191 keys/s)\n")


def test_open_progress_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    assert not isinstance(open_progress(None, desc="x", stream=stream), LineProgress)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    progress = open_progress(True, desc="copying", stream=stream)
    assert isinstance(progress, LineProgress)
    progress.update(5)
    progress.close()
    assert stream.getvalue().startswith("\rcopying: 5 keys")


def test_python_m_kvstore_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kvstore", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("entries", "get", "stats", "copy"):
        assert command in result.stdout
    assert "sqlite:////abs/path.db" in result.stdout
    for command in ("entries", "get", "stats", "copy"):
        assert main([command, "--help"]) == 0
