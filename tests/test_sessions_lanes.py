"""runtime.sessions.lanes: concurrent jobs on one key run in batches, one batch at a time."""

from __future__ import annotations

import anyio
import pytest

from runtime.sessions.lanes import Lanes

pytestmark = pytest.mark.anyio


class Recorder:
    """A batch processor that records its batches and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gate = anyio.Event()
        self.held = True
        self.fail_on: int | None = None

    async def process(self, key: str, jobs: list[int]) -> None:
        self.batches.append((key, jobs))
        if self.held:
            await self.gate.wait()
        if self.fail_on in jobs:
            raise RuntimeError(f"batch {jobs} failed")


async def test_jobs_queued_behind_a_batch_run_together_in_the_next() -> None:
    recorder = Recorder()
    lanes: Lanes[str, int] = Lanes(recorder.process, max_batch=3)
    async with anyio.create_task_group() as group:
        group.start_soon(lanes.run, "a", 0)
        await anyio.wait_all_tasks_blocked()  # job 0's batch is running, held
        for job in range(1, 6):
            group.start_soon(lanes.run, "a", job)
        group.start_soon(lanes.run, "b", 9)  # another key: its own lane, not held back
        await anyio.wait_all_tasks_blocked()
        assert recorder.batches == [("a", [0]), ("b", [9])]
        recorder.held = False
        recorder.gate.set()
    assert recorder.batches == [("a", [0]), ("b", [9]), ("a", [1, 2, 3]), ("a", [4, 5])]
    assert not lanes._lanes  # every lane is dropped once its last user left


async def test_a_batch_error_reaches_every_job_of_that_batch_only() -> None:
    recorder = Recorder()
    recorder.fail_on = 2
    lanes: Lanes[str, int] = Lanes(recorder.process, max_batch=2)
    outcomes: dict[int, str] = {}

    async def run(job: int) -> None:
        try:
            await lanes.run("a", job)
        except RuntimeError as err:
            outcomes[job] = str(err)
        else:
            outcomes[job] = "ok"

    async with anyio.create_task_group() as group:
        group.start_soon(run, 0)
        await anyio.wait_all_tasks_blocked()
        for job in (1, 2, 3):
            group.start_soon(run, job)
        await anyio.wait_all_tasks_blocked()
        recorder.held = False
        recorder.gate.set()
    assert outcomes == {0: "ok", 1: "batch [1, 2] failed", 2: "batch [1, 2] failed", 3: "ok"}


async def test_a_job_cancelled_before_a_batch_took_it_is_dropped() -> None:
    recorder = Recorder()
    lanes: Lanes[str, int] = Lanes(recorder.process, max_batch=8)
    async with anyio.create_task_group() as group:
        group.start_soon(lanes.run, "a", 0)
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0.01):
            await lanes.run("a", 1)  # waits for the lock, then gives up
        group.start_soon(lanes.run, "a", 2)
        await anyio.wait_all_tasks_blocked()
        recorder.held = False
        recorder.gate.set()
    assert recorder.batches == [("a", [0]), ("a", [2])]


async def test_the_batch_runs_to_its_end_when_its_leader_is_cancelled() -> None:
    recorder = Recorder()
    lanes: Lanes[str, int] = Lanes(recorder.process, max_batch=8)
    finished: list[int] = []

    async def leader(scope_ready: anyio.Event, scopes: list[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            scope_ready.set()
            await lanes.run("a", 0)
            finished.append(0)

    async def follower() -> None:
        await lanes.run("a", 1)
        finished.append(1)

    ready, scopes = anyio.Event(), list[anyio.CancelScope]()
    async with anyio.create_task_group() as group:
        group.start_soon(leader, ready, scopes)
        await ready.wait()
        await anyio.wait_all_tasks_blocked()  # batch [0] is running, held
        group.start_soon(follower)
        await anyio.wait_all_tasks_blocked()
        scopes[0].cancel()  # the leader's batch is shielded: it goes on
        await anyio.wait_all_tasks_blocked()
        assert recorder.batches == [("a", [0])]
        recorder.held = False
        recorder.gate.set()
    # The leader's batch ran to its end; then the follower's ran.
    assert recorder.batches == [("a", [0]), ("a", [1])]
    assert sorted(finished) == [0, 1]


def test_max_batch_must_be_positive() -> None:
    async def process(key: str, jobs: list[int]) -> None: ...

    with pytest.raises(ValueError, match="at least 1"):
        Lanes(process, max_batch=0)
