"""A LangGraph thread that pauses in one process and finishes in another, on SQLite.

The graph is deterministic (no model): ``split`` breaks a text into words,
``count`` counts them. It is compiled with ``interrupt_before=["count"]``, so
the first run stops after ``split`` with its state checkpointed through
:class:`~kvstore.integrations.langgraph.KVCheckpointSaver` in a SQLite file.
A second Python process (started here with :mod:`subprocess`) opens the same
file, finds the paused thread and resumes it to the end.

Run it (needs the ``[langgraph]`` and ``[sqlite]`` extras)::

    python examples/langgraph_resume.py [path/to/threads.db]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, TypedDict

import anyio
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from kvstore.integrations.langgraph import KVCheckpointSaver

TEXT = "the store keeps the thread and the thread keeps the state"
CONFIG: RunnableConfig = {"configurable": {"thread_id": "word-count-1"}}


class State(TypedDict, total=False):
    """The graph's state: the input text, its words, and their counts."""

    text: str
    words: list[str]
    counts: dict[str, int]


def split(state: State) -> dict[str, Any]:
    """Break the text into lower-case words."""
    return {"words": state["text"].lower().split()}


def count(state: State) -> dict[str, Any]:
    """Count each word (sorted by word, so the output is the same every run)."""
    counts: dict[str, int] = {}
    for word in state["words"]:
        counts[word] = counts.get(word, 0) + 1
    return {"counts": dict(sorted(counts.items()))}


def build(saver: KVCheckpointSaver) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The two-node graph, checkpointed by *saver*, pausing before ``count``."""
    builder = StateGraph(State)
    builder.add_node("split", split)
    builder.add_node("count", count)
    builder.add_edge(START, "split")
    builder.add_edge("split", "count")
    builder.add_edge("count", END)
    return builder.compile(checkpointer=saver, interrupt_before=["count"])


async def start(path: str) -> None:
    """First process: run until the interrupt, leaving the thread in the store."""
    async with KVCheckpointSaver.from_url(f"sqlite:///{path}") as saver:
        graph = build(saver)
        await graph.ainvoke({"text": TEXT}, CONFIG)
        state = await graph.aget_state(CONFIG)
        words = len(state.values["words"])
        print(f"process {os.getpid()}: paused before {list(state.next)} with {words} words")


async def resume(path: str) -> None:
    """Second process: load the paused thread and run it to the end."""
    async with KVCheckpointSaver.from_url(f"sqlite:///{path}") as saver:
        graph = build(saver)
        paused = await graph.aget_state(CONFIG)
        if list(paused.next) != ["count"]:
            raise SystemExit(f"expected a thread paused before 'count', found {paused.next}")
        result = await graph.ainvoke(None, CONFIG)
        steps = [item async for item in saver.alist(CONFIG)]
        counts = result["counts"]
        print(f"process {os.getpid()}: resumed; {len(steps)} checkpoints; counts {counts}")


def main(argv: list[str]) -> None:
    """Run the first half here and the second half in a child process."""
    if argv[1:2] == ["--resume"]:
        anyio.run(resume, argv[2])
        return
    with tempfile.TemporaryDirectory() as scratch:
        path = argv[1] if len(argv) > 1 else str(Path(scratch) / "threads.db")
        anyio.run(start, path)
        subprocess.run([sys.executable, __file__, "--resume", path], check=True)


if __name__ == "__main__":
    main(sys.argv)
