"""KVCheckpointSaver beyond the conformance suite: TTLs, paging, concurrency, sync use, graphs."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from kvstore import InvalidTTLError, KVStore, MemoryStore, SQLiteStore
from kvstore.integrations.langgraph import KVCheckpointSaver
from kvstore.testing import ManualClock
from kvstore.wrapper import StoreWrapper

ROOT = Path(__file__).resolve().parent.parent


class CountingStore(StoreWrapper):
    """Counts the keys read, and notes the threads the calls ran on."""

    def __init__(self, inner: KVStore) -> None:
        super().__init__(inner)
        self.keys_read = 0
        self.threads: set[int] = set()

    async def get(self, key: str, default: Any = None) -> Any:
        self.keys_read += 1
        self.threads.add(threading.get_ident())
        return await super().get(key, default)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        self.keys_read += len(keys)
        self.threads.add(threading.get_ident())
        return await super().get_many(keys)


def config(thread_id: str, checkpoint_id: str | None = None, ns: str = "") -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def put_chain(
    saver: KVCheckpointSaver,
    thread_id: str,
    count: int,
    *,
    ns: str = "",
    metadata: dict[str, Any] | None = None,
) -> list[str]:
    """Put *count* checkpoints in a chain on one thread; return their ids, oldest first."""
    ids: list[str] = []
    parent: str | None = None
    for step in range(count):
        checkpoint = generate_checkpoint(channel_values={"step": step}, channel_versions={})
        version = saver.get_next_version(None, None)
        checkpoint["channel_versions"] = {"step": version}
        stored = await saver.aput(
            config(thread_id, parent, ns),
            checkpoint,
            generate_metadata(step=step, **(metadata or {})),
            {"step": version},
        )
        parent = stored["configurable"]["checkpoint_id"]
        ids.append(parent)
    return ids


async def listed(saver: KVCheckpointSaver, cfg: RunnableConfig | None, **options: Any) -> list[str]:
    return [item.checkpoint["id"] async for item in saver.alist(cfg, **options)]


# -- input checks ----------------------------------------------------------------------------


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="needs a KVStore"):
        KVCheckpointSaver({})  # type: ignore[arg-type]
    with pytest.raises(InvalidTTLError):
        KVCheckpointSaver(MemoryStore(), ttl=0)
    with pytest.raises(TypeError, match="namespace"):
        KVCheckpointSaver(MemoryStore(), namespace=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index_page_size"):
        KVCheckpointSaver(MemoryStore(), index_page_size=0)


async def test_unknown_prune_strategy() -> None:
    saver = KVCheckpointSaver(MemoryStore())
    with pytest.raises(ValueError, match="unknown prune strategy"):
        await saver.aprune(["t"], strategy="keep_some")


# -- serialization -------------------------------------------------------------------------------


async def test_values_are_stored_as_typed_base64_json_and_never_pickled() -> None:
    store = MemoryStore()
    saver = KVCheckpointSaver(store)
    assert saver.serde.pickle_fallback is False  # type: ignore[attr-defined]
    await put_chain(saver, "t", 1)
    stored = dict([item async for item in store.entries("langgraph:")])
    blob = next(value for key, value in stored.items() if key.startswith("langgraph:b/"))
    assert blob[0] == "msgpack" and isinstance(blob[1], str)
    types = {value["checkpoint"][0] for key, value in stored.items() if "c/" in key}
    assert types == {"msgpack"}

    checkpoint = generate_checkpoint(channel_values={"bad": threading.Lock()})
    checkpoint["channel_versions"] = {"bad": "1"}
    with pytest.raises(TypeError):  # msgpack refuses it, and nothing falls back to pickle
        await saver.aput(config("t2"), checkpoint, generate_metadata(), {"bad": "1"})


# -- key layout -------------------------------------------------------------------------------


async def test_namespaces_keep_savers_apart() -> None:
    store = MemoryStore()
    first = KVCheckpointSaver(store, namespace="one")
    second = KVCheckpointSaver(store, namespace="")
    await put_chain(first, "thread/with:odd chars", 2)
    await put_chain(second, "thread", 1)
    assert len(await listed(first, None)) == 2
    assert await listed(first, config("thread")) == []
    tuples = [item async for item in first.alist(None)]
    assert {item.config["configurable"]["thread_id"] for item in tuples} == {
        "thread/with:odd chars"
    }
    assert len(await listed(second, config("thread"))) == 1
    assert all(key.startswith("one:") for key, _ in [kv async for kv in store.entries("one:")])


# -- TTL -------------------------------------------------------------------------------------


async def test_ttl_keeps_the_newest_checkpoint_whole_and_lets_history_fade() -> None:
    clock = ManualClock()
    saver = KVCheckpointSaver(MemoryStore(clock=clock), ttl=100)
    thread = config("t")
    # Channel "a" is written once, at the first step; "n" changes at every step.
    versions: dict[str, Any] = {"a": saver.get_next_version(None, None)}
    parent = None
    ids = []
    for step in range(3):
        versions["n"] = saver.get_next_version(versions.get("n"), None)
        checkpoint: Checkpoint = generate_checkpoint(channel_values={"a": "kept", "n": step})
        checkpoint["channel_versions"] = dict(versions)
        new = dict(versions) if step == 0 else {"n": versions["n"]}
        metadata: CheckpointMetadata = generate_metadata(step=step)
        stored = await saver.aput(config("t", parent), checkpoint, metadata, new)
        parent = stored["configurable"]["checkpoint_id"]
        await saver.aput_writes(stored, [("n", step)], f"task-{step}")
        ids.append(parent)
        clock.advance_by(45)  # puts at 0, 45 and 90

    clock.now = 1000 + 130  # the first checkpoint (t=0) is gone, the newest (t=90) not
    newest = await saver.aget_tuple(thread)
    assert newest is not None
    assert newest.checkpoint["id"] == ids[-1]
    assert newest.checkpoint["channel_values"] == {"a": "kept", "n": 2}
    assert newest.pending_writes == [("task-2", "n", 2)]
    assert await listed(saver, thread) == [ids[2], ids[1]]
    assert await saver.aget_tuple(config("t", ids[0])) is None

    clock.now = 1000 + 90 + 101  # past the TTL of the last put: the thread is gone
    assert await saver.aget_tuple(thread) is None
    assert await listed(saver, None) == []


async def test_store_default_ttl_renews_what_the_newest_checkpoint_needs() -> None:
    clock = ManualClock()
    saver = KVCheckpointSaver(MemoryStore(clock=clock, default_ttl=100))
    versions = {"a": saver.get_next_version(None, None), "gone": saver.get_next_version(None, None)}
    first: Checkpoint = generate_checkpoint(channel_values={"a": 1})
    first["channel_versions"] = dict(versions)
    stored = await saver.aput(config("t"), first, generate_metadata(), dict(versions))
    clock.advance_by(80)
    second: Checkpoint = generate_checkpoint(channel_values={"a": 1})
    second["channel_versions"] = dict(versions)  # "gone" has a version but no value
    stored = await saver.aput(stored, second, generate_metadata(step=1), {})
    clock.advance_by(80)
    newest = await saver.aget_tuple(config("t"))
    assert newest is not None and newest.checkpoint["channel_values"] == {"a": 1}


# -- paging and reads ------------------------------------------------------------------------


async def test_list_and_latest_read_only_the_pages_they_reach() -> None:
    store = CountingStore(MemoryStore())
    saver = KVCheckpointSaver(store, index_page_size=16)
    ids = await put_chain(saver, "t", 400)
    assert sum(1 for _ in [kv async for kv in store.entries("langgraph:x/")]) >= 20

    store.keys_read = 0
    assert await listed(saver, config("t"), limit=3) == ids[::-1][:3]
    assert store.keys_read <= 12  # the record, 3 checkpoints + writes + values; no page

    store.keys_read = 0
    before = config("t", ids[200])
    assert await listed(saver, config("t"), before=before, limit=5) == ids[195:200][::-1]
    assert store.keys_read <= 30  # the record, a page or two, 5 checkpoints

    store.keys_read = 0
    assert (await saver.aget_tuple(config("t"))).checkpoint["id"] == ids[-1]  # type: ignore[union-attr]
    assert store.keys_read <= 4

    assert await listed(saver, config("t")) == ids[::-1]
    assert await listed(saver, config("t"), filter={"step": 7}) == [ids[7]]
    assert await listed(saver, config("t", ids[5]), before=config("t", ids[9])) == [ids[5]]


async def test_prune_and_delete_clean_up_pages() -> None:
    store = MemoryStore()
    saver = KVCheckpointSaver(store, index_page_size=2)
    ids = await put_chain(saver, "t", 20)
    await put_chain(saver, "other", 3)
    await saver.aprune(["t"], strategy="keep_latest")
    assert await listed(saver, config("t")) == [ids[-1]]
    assert [key async for key, _ in store.entries("langgraph:x/t/")] == []
    await saver.adelete_thread("other")
    assert [key async for key, _ in store.entries("langgraph:")] == [
        key async for key, _ in store.entries("langgraph:") if "/t/" in key or key.endswith("/t")
    ]


async def test_delete_for_runs_keeps_values_other_runs_need() -> None:
    saver = KVCheckpointSaver(MemoryStore(), index_page_size=1)
    version = saver.get_next_version(None, None)
    first: Checkpoint = generate_checkpoint(channel_values={"a": "from run 1"})
    first["channel_versions"] = {"a": version}
    stored = await saver.aput(config("t"), first, generate_metadata(run_id="run-1"), {"a": version})
    for step in range(1, 4):  # later runs reuse run 1's value of "a"
        later: Checkpoint = generate_checkpoint(channel_values={"a": "from run 1"})
        later["channel_versions"] = {"a": version}
        stored = await saver.aput(stored, later, generate_metadata(run_id="run-2", step=step), {})
    await saver.adelete_for_runs(["run-1"])
    tuples = [item async for item in saver.alist(config("t"))]
    assert [item.metadata["run_id"] for item in tuples] == ["run-2"] * 3
    assert all(item.checkpoint["channel_values"] == {"a": "from run 1"} for item in tuples)
    await saver.adelete_thread("t")
    await saver.adelete_for_runs(["run-2"])  # the thread is gone: nothing to do


async def test_copy_into_a_thread_that_has_checkpoints_merges_in_order() -> None:
    saver = KVCheckpointSaver(MemoryStore(), index_page_size=2)
    source = await put_chain(saver, "src", 5, metadata={"run_id": "r"})
    target = await put_chain(saver, "dst", 5)
    await saver.acopy_thread("src", "dst")
    await saver.acopy_thread("src", "dst")  # again: the same ids are replaced, not doubled
    assert await listed(saver, config("dst")) == sorted(source + target, reverse=True)
    await saver.adelete_for_runs(["r"])
    assert await listed(saver, config("dst")) == target[::-1]
    assert await listed(saver, config("src")) == []
    await saver.acopy_thread("nobody", "dst2")
    assert await listed(saver, config("dst2")) == []


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrent_puts_on_one_thread_lose_nothing(store_url: str) -> None:
    async with KVCheckpointSaver.from_url(store_url, index_page_size=4) as saver:

        async def put(ns: str) -> None:
            await put_chain(saver, "busy", 6, ns=ns)

        async with anyio.create_task_group() as group:
            for task in range(8):
                group.start_soon(put, f"ns{task % 2}")
        for ns in ("ns0", "ns1"):
            assert len(await listed(saver, config("busy", ns=ns))) == 24
        assert len(await listed(saver, None)) == 48


# -- sync use and real graphs ---------------------------------------------------------------------


class Count(TypedDict, total=False):
    """A state for a counting graph."""

    total: int
    seen: list[int]


def add_one(state: Count) -> dict[str, Any]:
    total = state.get("total", 0) + 1
    return {"total": total, "seen": [*state.get("seen", []), total]}


def counting_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(Count)
    builder.add_node("add_one", add_one)
    builder.add_edge(START, "add_one")
    builder.add_edge("add_one", END)
    return builder.compile(checkpointer=saver)


def test_sync_graph_runs_through_one_portal_thread(tmp_path: Path) -> None:
    store = CountingStore(SQLiteStore(tmp_path / "kv.db"))
    with KVCheckpointSaver(store, owns_store=True) as saver:
        graph = counting_graph(saver)
        thread: RunnableConfig = {"configurable": {"thread_id": "sync"}}
        for _ in range(3):
            result = graph.invoke({}, thread)
        assert result == {"total": 3, "seen": [1, 2, 3]}
        history = list(saver.list(thread))
        reference = InMemorySaver()
        for _ in range(3):
            counting_graph(reference).invoke({}, thread)
        expected = [
            (item.metadata["source"], item.metadata["step"]) for item in reference.list(thread)
        ]
        assert [(item.metadata["source"], item.metadata["step"]) for item in history] == expected
        latest = saver.get_tuple(thread)
        assert latest is not None and latest.checkpoint["channel_values"]["total"] == 3
        assert len(list(saver.list(None, limit=2))) == 2

        saver.copy_thread("sync", "copy")
        saver.prune(["copy"], strategy="keep_latest")
        assert len(list(saver.list({"configurable": {"thread_id": "copy"}}))) == 1
        saver.delete_for_runs(["no-such-run"])
        saver.put_writes(latest.config, [("total", 9)], "task")
        assert saver.get_tuple(latest.config).pending_writes == [("task", "total", 9)]  # type: ignore[union-attr]
        saver.delete_thread("sync")
        assert saver.get_tuple(thread) is None
        (portal_thread,) = store.threads
        assert portal_thread != threading.get_ident()
    assert store.inner.closed  # type: ignore[attr-defined]
    assert not any(t.ident == portal_thread for t in threading.enumerate())


async def test_async_graph_resumes_on_another_saver(store_url: str) -> None:
    thread: RunnableConfig = {"configurable": {"thread_id": "async"}}
    async with KVCheckpointSaver.from_url(store_url) as saver:
        await counting_graph(saver).ainvoke({}, thread)
    # memory:// is a new, empty store per open: only the other backends persist.
    async with KVCheckpointSaver.from_url(store_url) as saver:
        result = await counting_graph(saver).ainvoke({}, thread)
    assert result["total"] == (1 if store_url == "memory://" else 2)


def test_example_resumes_in_a_second_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langgraph_resume.py"), str(tmp_path / "t.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    first, second = result.stdout.splitlines()
    assert "paused before ['count'] with 11 words" in first
    assert "resumed; 4 checkpoints" in second and "'the': 4" in second
    assert first.split()[1] != second.split()[1]  # two processes


async def test_benchmark_module_runs() -> None:
    from bench import checkpoints

    rates = await checkpoints.measure(steps=3, rounds=1)
    assert set(rates) == set(checkpoints.SAVERS)
    assert "aget_tuple" in checkpoints.report(rates)
