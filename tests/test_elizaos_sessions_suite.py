"""ElizaOS's own Sessions unit suite, over HTTP, against one live ``python -m runtime serve``.

The cases are ElizaOS's (``tests/elizaos_sessions_suite.py``, translated from
``packages/server/src/__tests__/unit/api/sessions.test.ts``); the real ElizaOS
1.7.2 server passes 34 of its 35 (it fails only the mock-shaped ``authorId``
assertion, which the vendored copy asserts as the real ``author_id``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from elizaos_sessions_suite import Client, Suite
from test_http_e2e import Server

AGENT = "b850bc30-45f8-4041-a00a-83df46d8555d"
CASES = [name for name in Suite.__dict__ if name.startswith("case_")]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    log = tmp_path_factory.mktemp("eliza-suite") / "server.log"
    server = Server(log, {"AGENT_ID": AGENT, "HTTP_RATE_LIMIT": "0"})
    try:
        assert server.wait_until_serving().status_code == 200, server.output()
        yield Suite(Client(server.url, None), AGENT, with_expiry=False)
    finally:
        server.stop()


@pytest.mark.parametrize("case", CASES)
def test_elizaos_case(suite: Suite, case: str) -> None:
    method = getattr(suite, case)
    if getattr(method, "skip", False):
        pytest.skip("it.skip upstream (waits for a real minimum timeout)")
    method()


def test_every_upstream_case_is_here() -> None:
    assert len(CASES) == 36 and Path(__file__).with_name("elizaos_sessions_suite.py").exists()
