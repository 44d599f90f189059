"""The OpenAPI 3.1 document: served at ``/openapi.json``, committed as ``docs/openapi.json``,
describing every route; and schemathesis against a live server finds no defect.

The schemathesis run is bounded (a few dozen examples per operation) and runs
against a real ``python -m runtime serve`` process on loopback, with
``HTTP_RATE_LIMIT=0``. Every check schemathesis has for OpenAPI runs: no 5xx,
statuses, content types, headers and bodies as documented.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, unsupported_method
from starlette.routing import Route
from test_http_e2e import ROOT, Server

from runtime import AgentRuntime
from runtime.http import create_app
from runtime.http.openapi import OPERATIONS, documented_path, openapi_document

COMMITTED = ROOT / "docs" / "openapi.json"
TRIED: Counter[str] = Counter()


def _document() -> dict[str, Any]:
    return openapi_document(create_app(AgentRuntime(environ={})).routes)


def test_every_route_is_documented() -> None:
    app = create_app(AgentRuntime(environ={}))
    document = openapi_document(app.routes)
    served = {
        (method, documented_path(route.path))
        for route in app.routes
        if isinstance(route, Route) and route.methods
        for method in route.methods - {"HEAD"}
    }
    described = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if not operation.get("x-undocumented")
    }
    assert served == described
    assert served <= OPERATIONS.keys()
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_committed_document_is_current() -> None:
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == _document(), (
        "docs/openapi.json is stale: run python -m runtime openapi docs/openapi.json"
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The default agent: the document's examples name it, so some creates succeed.
    server = Server(tmp_path_factory.mktemp("openapi") / "server.log", {})
    try:
        assert server.wait_until_serving().status_code == 200
        yield server
    finally:
        server.stop()
    # The figures of the run (shown with -s): requests tried, answers by class.
    print(f"\nschemathesis: {dict(sorted(TRIED.items()))}")
    assert TRIED["5xx"] == 0
    assert "Traceback" not in server.output(), server.output()[-5000:]


def test_served_document_equals_the_committed_one(served: Server) -> None:
    answer = httpx.get(f"{served.url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == json.loads(COMMITTED.read_text(encoding="utf-8"))


# The committed document, which the test above proves is the one served.
# (schemathesis's lazy from_fixture loader reads a pytest internal that pytest 9 removed.)
schema = schemathesis.openapi.from_path(COMMITTED)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_schemathesis(case: Any, served: Server) -> None:
    excluded = []
    if case.operation.path == "/api/messaging/sessions/health":
        # As on ElizaOS, DELETE .../sessions/health is DELETE of the session
        # "health" (404 SESSION_NOT_FOUND), not a method missing from the health route.
        excluded.append(unsupported_method)
    if case.operation.path.endswith("/messages") and case.method == "GET":
        # limit/before/after are read with ElizaOS's parseInt ("12abc" is 12):
        # a value outside the schema is read, not refused.
        excluded.append(negative_data_rejection)
    response = case.call(base_url=served.url, timeout=30)
    TRIED["requests"] += 1
    TRIED[f"{response.status_code // 100}xx"] += 1
    case.validate_response(response, excluded_checks=excluded)
    assert response.status_code < 500
