"""langgraph-checkpoint-conformance on KVCheckpointSaver, every backend, all 8 capabilities.

Each spec function of the package (its ``ALL_*_TESTS`` lists) is one pytest
test here, so a failure names the capability, the spec and the backend; and
the package's own runner, ``validate()``, must report every capability
detected and passed. The specs run twice per backend: with the default
index page size and with pages of one id, so paging is exercised too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES, DetectedCapabilities
from langgraph.checkpoint.conformance.spec import (
    test_copy_thread,
    test_delete_for_runs,
    test_delete_thread,
    test_get_tuple,
    test_list,
    test_prune,
    test_put,
    test_put_writes,
)

from kvstore.integrations.langgraph import KVCheckpointSaver

Spec = Callable[[BaseCheckpointSaver[Any]], Awaitable[None]]

SPECS: dict[str, Sequence[Spec]] = {
    "put": test_put.ALL_PUT_TESTS,
    "put_writes": test_put_writes.ALL_PUT_WRITES_TESTS,
    "get_tuple": test_get_tuple.ALL_GET_TUPLE_TESTS,
    "list": test_list.ALL_LIST_TESTS,
    "delete_thread": test_delete_thread.ALL_DELETE_THREAD_TESTS,
    "delete_for_runs": test_delete_for_runs.ALL_DELETE_FOR_RUNS_TESTS,
    "copy_thread": test_copy_thread.ALL_COPY_THREAD_TESTS,
    "prune": test_prune.ALL_PRUNE_TESTS,
}
CASES = [
    pytest.param(spec, id=f"{capability}-{spec.__name__.removeprefix('test_')}")
    for capability, specs in SPECS.items()
    for spec in specs
]


@pytest.fixture(params=[128, 1], ids=["index", "paged-index"])
async def saver(store_url: str, request: pytest.FixtureRequest) -> AsyncIterator[KVCheckpointSaver]:
    """A saver per backend, with the default index page size and with pages of one id
    (so every thread of more than two checkpoints already reads pages)."""
    async with KVCheckpointSaver.from_url(store_url, index_page_size=request.param) as saver:
        yield saver


def test_specs_cover_every_capability() -> None:
    assert {capability.value for capability in ALL_CAPABILITIES} == set(SPECS)
    assert sum(len(specs) for specs in SPECS.values()) == 81  # the package's 0.0.2 count


@pytest.mark.parametrize("spec", CASES)
async def test_conformance(saver: KVCheckpointSaver, spec: Spec) -> None:
    await spec(saver)


async def test_validate_reports_all_capabilities(store_url: str) -> None:
    @checkpointer_test(name=f"KVCheckpointSaver[{store_url.split(':')[0]}]")
    async def factory() -> AsyncIterator[KVCheckpointSaver]:
        async with KVCheckpointSaver.from_url(store_url) as saver:
            yield saver

    async with KVCheckpointSaver.from_url(store_url) as saver:
        assert DetectedCapabilities.from_instance(saver).missing == frozenset()
    report = await validate(factory)
    failures = {
        name: result.failures for name, result in report.results.items() if not result.passed
    }
    assert failures == {}
    assert {name for name, result in report.results.items() if result.detected} == set(SPECS)
    assert sum(result.tests_passed for result in report.results.values()) == 81
