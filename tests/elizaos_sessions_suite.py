# ruff: noqa: E501
"""ElizaOS's own Sessions unit suite, translated to HTTP requests against a live server.

Source: elizaOS/eliza packages/server/src/__tests__/unit/api/sessions.test.ts (36 `it` blocks, one of them
`it.skip`). Each case below keeps the original test's name and assertions; where the unit test relied on
mocks (a mock agent's settings, a mocked createMessage/getMessagesForChannel), the HTTP translation is
noted in the case's docstring.

Vendored from the reference recordings' scripts (``/work/eliza-ref/sessions_suite.py``), where it ran
34 of 35 on the real ElizaOS 1.7.2 server; ``tests/test_elizaos_sessions_suite.py`` runs each case against
``python -m runtime serve``. One change: ``case_send_message`` asserts the real server's ``author_id``
(the unit test's ``authorId`` came from its mock of ``createMessage``; the real server fails it too).

Usage:
    python3 tests/elizaos_sessions_suite.py BASE_URL AGENT_ID [--api-key KEY] [--with-expiry] [-k NAME]

Prints PASS/FAIL per case and a final "N passed, M failed" line (plus skipped). Exit status 1 on failure.
Standard library only (urllib), so it runs with any Python >= 3.8.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
USER = "456e7890-e89b-12d3-a456-426614174000"  # the unit test's userId


class Failure(AssertionError):
    """An assertion of a translated test failed."""


class Client:
    """Minimal JSON-over-HTTP client."""

    def __init__(self, base: str, api_key: str | None) -> None:
        self.base = base.rstrip("/")
        self.api_key = api_key

    def request(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["X-API-KEY"] = self.api_key
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, raw, hdrs = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            status, raw, hdrs = err.code, err.read(), dict(err.headers)
        text = raw.decode("utf-8", "replace")
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        return status, parsed, hdrs


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def has(obj: Any, key: str, value: Any = ...) -> None:
    check(isinstance(obj, dict) and key in obj, f"expected property {key!r} in {short(obj)}")
    if value is not ...:
        check(obj[key] == value, f"expected {key} == {value!r}, got {obj[key]!r}")


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def finite_number(x: Any, what: str) -> None:
    check(is_number(x) and math.isfinite(x), f"{what} should be a finite number, got {x!r}")


def to_ms(value: Any) -> float:
    """A timestamp as the server sent it (ISO 8601 string or epoch number) -> epoch milliseconds."""
    if is_number(value):
        return float(value) * (1000.0 if value < 1e11 else 1.0)  # seconds or milliseconds
    if isinstance(value, str):
        try:
            return (
                float(value)
                if re.fullmatch(r"-?\d+(\.\d+)?", value)
                else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000
            )
        except ValueError:
            pass
    raise Failure(f"not a timestamp: {value!r}")


def short(x: Any, n: int = 300) -> str:
    s = json.dumps(x) if not isinstance(x, str) else x
    return s if len(s) <= n else s[:n] + "…"


class Suite:
    """The translated cases; each method named case_* is one `it(...)`."""

    def __init__(self, client: Client, agent_id: str, with_expiry: bool) -> None:
        self.c = client
        self.agent = agent_id
        self.with_expiry = with_expiry

    # ---- helpers -------------------------------------------------------------------------------
    def create(self, **extra: Any) -> dict[str, Any]:
        status, body, _ = self.c.request(
            "POST", "/api/messaging/sessions", {"agentId": self.agent, "userId": USER, **extra}
        )
        check(status == 201, f"create session: expected 201, got {status} {short(body)}")
        created: dict[str, Any] = body
        return created

    def send(self, sid: str, body: dict[str, Any]) -> tuple[int, Any]:
        status, resp, _ = self.c.request("POST", f"/api/messaging/sessions/{sid}/messages", body)
        return status, resp

    def seed(self, sid: str, n: int) -> None:
        """Stand-in for the unit test's mocked getMessagesForChannel: n real messages, 1 ms+ apart."""
        for i in range(n):
            status, resp = self.send(sid, {"content": f"Message {i}", "transport": "http"})
            check(status == 201, f"seeding message {i}: {status} {short(resp)}")
            time.sleep(0.005)

    def history(self, sid: str, **query: str) -> tuple[int, Any]:
        status, body, _ = self.c.request(
            "GET", f"/api/messaging/sessions/{sid}/messages", query=query or None
        )
        return status, body

    # ---- POST /sessions - Create Session --------------------------------------------------------
    def case_create_success(self) -> None:
        """should create a new session successfully"""
        body = self.create(metadata={"platform": "test"})
        for k in ("sessionId", "channelId", "expiresAt", "timeoutConfig"):
            has(body, k)
        has(body, "agentId", self.agent)
        has(body, "userId", USER)
        check(
            bool(UUID_RE.match(str(body["sessionId"]))),
            f"sessionId is not a UUID: {body['sessionId']!r}",
        )
        check(
            bool(UUID_RE.match(str(body["channelId"]))),
            f"channelId is not a UUID: {body['channelId']!r}",
        )
        for k in ("timeoutMinutes", "autoRenew", "maxDurationMinutes"):
            has(body["timeoutConfig"], k)

    def case_create_custom_timeout(self) -> None:
        """should create session with custom timeout configuration"""
        tc = self.create(
            timeoutConfig={"timeoutMinutes": 60, "autoRenew": False, "maxDurationMinutes": 120}
        )["timeoutConfig"]
        check(
            tc["timeoutMinutes"] == 60
            and tc["autoRenew"] is False
            and tc["maxDurationMinutes"] == 120,
            f"timeoutConfig {tc}",
        )

    def case_agent_specific_settings(self) -> None:
        """should use agent-specific timeout settings (the unit test passes the config in the request)"""
        tc = self.create(
            timeoutConfig={"timeoutMinutes": 45, "autoRenew": False, "maxDurationMinutes": 1440}
        )["timeoutConfig"]
        check(
            tc["timeoutMinutes"] == 45
            and tc["autoRenew"] is False
            and tc["maxDurationMinutes"] == 1440,
            f"timeoutConfig {tc}",
        )

    def case_invalid_agent_id(self) -> None:
        """should return 400 for invalid agent ID"""
        status, body, _ = self.c.request(
            "POST", "/api/messaging/sessions", {"agentId": "invalid-uuid", "userId": USER}
        )
        check(status == 400, f"expected 400, got {status} {short(body)}")
        has(body, "error")

    def case_agent_not_found(self) -> None:
        """should return 404 when agent not found (HTTP: a valid UUID that is not the served agent)"""
        status, body, _ = self.c.request(
            "POST", "/api/messaging/sessions", {"agentId": str(uuid.uuid4()), "userId": USER}
        )
        check(status == 404, f"expected 404, got {status} {short(body)}")
        has(body, "error")
        has(body["error"], "code", "AGENT_NOT_FOUND")

    # ---- POST /sessions/:id/messages - Send Message --------------------------------------------
    def case_send_message(self) -> None:
        """should send a message to an existing session (mocked createMessage -> the real stored message:
        content is what was sent, authorId the session's userId)"""
        sid = self.create()["sessionId"]
        status, body = self.send(sid, {"content": "Hello, world!", "attachments": []})
        check(status == 201, f"expected 201, got {status} {short(body)}")
        has(body, "success", True)
        has(body, "userMessage")
        um = body["userMessage"]
        has(um, "id")
        has(um, "content", "Hello, world!")
        # The real answer is the message-bus shape: author_id, not the mock's authorId.
        has(um, "author_id", USER)

    def case_propagate_metadata(self) -> None:
        """should propagate session metadata to messages (HTTP: the stored message's metadata in history)"""
        eth = "0x1234567890123456789012345678901234567890"
        sid = self.create(metadata={"ethAddress": eth, "platform": "web3", "userPlan": "premium"})[
            "sessionId"
        ]
        status, body = self.send(
            sid,
            {
                "content": "Please sign this transaction",
                "metadata": {"messageType": "transaction_request", "priority": "high"},
            },
        )
        check(status == 201, f"expected 201, got {status} {short(body)}")
        hs, hist = self.history(sid)
        check(hs == 200, f"history {hs}")
        msgs = [
            m
            for m in hist.get("messages", [])
            if m.get("content") == "Please sign this transaction"
        ]
        check(len(msgs) == 1, f"sent message not found in history {short(hist)}")
        md = msgs[0].get("metadata") or {}
        for k, v in {
            "ethAddress": eth,
            "platform": "web3",
            "userPlan": "premium",
            "messageType": "transaction_request",
            "priority": "high",
            "sessionId": sid,
        }.items():
            check(md.get(k) == v, f"metadata[{k!r}] == {md.get(k)!r}, expected {v!r}")

    def case_send_404(self) -> None:
        """should return 404 for non-existent session"""
        status, body = self.send("non-existent-session", {"content": "Hello, world!"})
        check(status == 404, f"expected 404, got {status} {short(body)}")
        has(body, "error")
        has(body["error"], "code", "SESSION_NOT_FOUND")

    def case_renew_on_activity(self) -> None:
        """should renew session on activity when autoRenew is enabled"""
        created = self.create()
        sid, original = created["sessionId"], to_ms(created["expiresAt"])
        self.send(sid, {"content": "Test message"})
        status, info, _ = self.c.request("GET", f"/api/messaging/sessions/{sid}")
        check(status == 200, f"GET {status}")
        check(
            to_ms(info["expiresAt"]) >= original,
            f"expiresAt went back: {info['expiresAt']} < {created['expiresAt']}",
        )

    # ---- GET /sessions/:id/messages - Get Messages ---------------------------------------------
    def case_pagination(self) -> None:
        """should retrieve messages with pagination (mocked 15 messages -> 15 real ones)"""
        sid = self.create()["sessionId"]
        self.seed(sid, 15)
        status, body = self.history(sid, limit="10")
        check(status == 200, f"expected 200, got {status}")
        has(body, "messages")
        has(body, "hasMore")
        check(len(body["messages"]) == 10, f"expected 10 messages, got {len(body['messages'])}")
        for k in ("id", "content", "authorId", "createdAt"):
            has(body["messages"][0], k)

    def _seeded(self, n: int) -> tuple[str, list[float]]:
        sid = self.create()["sessionId"]
        self.seed(sid, n)
        status, body = self.history(sid, limit="100")
        check(status == 200, f"history {status}")
        times = sorted((to_ms(m["createdAt"]) for m in body["messages"]), reverse=True)
        return sid, times

    def case_before(self) -> None:
        """should support cursor-based pagination with before parameter (cursor: a real message's time)"""
        sid, times = self._seeded(20)
        before = int(
            times[min(5, len(times) - 1)]
        )  # like baseTime - 5000: five newer messages excluded
        status, body = self.history(sid, limit="5", before=str(before))
        check(status == 200, f"expected 200, got {status} {short(body)}")
        check(len(body["messages"]) == 5, f"expected 5 messages, got {len(body['messages'])}")
        for m in body["messages"]:
            check(
                to_ms(m["createdAt"]) < before, f"message at {m['createdAt']} not before {before}"
            )

    def case_after(self) -> None:
        """should support after parameter for newer messages"""
        sid, times = self._seeded(20)
        after = int(times[min(15, len(times) - 1)])
        status, body = self.history(sid, limit="5", after=str(after))
        check(status == 200, f"expected 200, got {status} {short(body)}")
        has(body, "messages")
        has(body, "hasMore")

    def case_range(self) -> None:
        """should support range queries with both before and after"""
        sid, times = self._seeded(20)
        status, body = self.history(
            sid, limit="10", before=str(int(times[5])), after=str(int(times[15]))
        )
        check(status == 200, f"expected 200, got {status} {short(body)}")
        has(body, "messages")

    # ---- GET /sessions/:id - Get Session Info --------------------------------------------------
    def case_info(self) -> None:
        """should retrieve session information"""
        sid = self.create(metadata={"platform": "test"})["sessionId"]
        status, body, _ = self.c.request("GET", f"/api/messaging/sessions/{sid}")
        check(status == 200, f"expected 200, got {status}")
        has(body, "sessionId", sid)
        has(body, "channelId")
        has(body, "agentId", self.agent)
        has(body, "userId", USER)
        has(body, "metadata")
        has(body["metadata"], "platform", "test")
        for k in ("timeRemaining", "isNearExpiration", "renewalCount"):
            has(body, k)
        check(
            bool(UUID_RE.match(str(body["channelId"]))),
            f"channelId is not a UUID: {body['channelId']!r}",
        )

    def case_info_404(self) -> None:
        """should return 404 for non-existent session"""
        status, body, _ = self.c.request("GET", "/api/messaging/sessions/non-existent-session")
        check(status == 404, f"expected 404, got {status}")
        has(body, "error")
        has(body["error"], "code", "SESSION_NOT_FOUND")

    # ---- PATCH /sessions/:id/timeout -----------------------------------------------------------
    def case_patch_update(self) -> None:
        """should update session timeout configuration"""
        sid = self.create()["sessionId"]
        status, body, _ = self.c.request(
            "PATCH",
            f"/api/messaging/sessions/{sid}/timeout",
            {"timeoutMinutes": 90, "autoRenew": False},
        )
        check(status == 200, f"expected 200, got {status} {short(body)}")
        has(body, "sessionId", sid)
        has(body, "expiresAt")
        has(body, "timeoutConfig")
        check(
            body["timeoutConfig"]["timeoutMinutes"] == 90
            and body["timeoutConfig"]["autoRenew"] is False,
            f"timeoutConfig {body['timeoutConfig']}",
        )

    def case_patch_reject(self) -> None:
        """should reject invalid timeout values"""
        sid = self.create()["sessionId"]
        status, body, _ = self.c.request(
            "PATCH", f"/api/messaging/sessions/{sid}/timeout", {"timeoutMinutes": 1}
        )
        check(status == 400, f"expected 400, got {status} {short(body)}")
        has(body, "error")

    # ---- DELETE /sessions/:id -------------------------------------------------------------------
    def case_delete(self) -> None:
        """should delete an existing session"""
        sid = self.create()["sessionId"]
        status, body, _ = self.c.request("DELETE", f"/api/messaging/sessions/{sid}")
        check(status == 200, f"expected 200, got {status} {short(body)}")
        has(body, "message")
        check("deleted successfully" in str(body["message"]), f"message {body['message']!r}")
        gs, _, _ = self.c.request("GET", f"/api/messaging/sessions/{sid}")
        check(gs == 404, f"GET after delete: expected 404, got {gs}")

    def case_delete_404(self) -> None:
        """should return 404 when trying to delete non-existent session"""
        status, body, _ = self.c.request("DELETE", "/api/messaging/sessions/non-existent-session")
        check(status == 404, f"expected 404, got {status}")
        has(body, "error")
        has(body["error"], "code", "SESSION_NOT_FOUND")

    # ---- POST /sessions/:id/heartbeat ----------------------------------------------------------
    def case_heartbeat(self) -> None:
        """should keep session alive with heartbeat"""
        created = self.create()
        sid = created["sessionId"]
        time.sleep(0.1)
        status, body, _ = self.c.request("POST", f"/api/messaging/sessions/{sid}/heartbeat")
        check(status == 200, f"expected 200, got {status} {short(body)}")
        has(body, "sessionId", sid)
        has(body, "expiresAt")
        check(to_ms(body["expiresAt"]) >= to_ms(created["expiresAt"]), "expiresAt went back")

    def case_heartbeat_404(self) -> None:
        """should return 404 for non-existent session heartbeat"""
        status, body, _ = self.c.request(
            "POST", "/api/messaging/sessions/non-existent-session/heartbeat"
        )
        check(status == 404, f"expected 404, got {status}")
        has(body, "error")
        has(body["error"], "code", "SESSION_NOT_FOUND")

    def case_heartbeat_expired(self) -> None:
        """should not renew expired session on heartbeat (it.skip upstream; --with-expiry runs it with the
        server's minimum timeout, e.g. SESSION_MIN_TIMEOUT_MINUTES=1, and waits for it)"""
        created = self.create(timeoutConfig={"timeoutMinutes": 1, "autoRenew": False})
        wait = max(0.0, (to_ms(created["expiresAt"]) - time.time() * 1000) / 1000) + 1.5
        check(wait < 400, f"minimum timeout too long to wait for ({wait:.0f} s)")
        time.sleep(wait)
        status, body, _ = self.c.request(
            "POST", f"/api/messaging/sessions/{created['sessionId']}/heartbeat"
        )
        check(status == 410, f"expected 410, got {status} {short(body)}")
        has(body, "error")
        if isinstance(body["error"], dict):
            has(body["error"], "code", "SESSION_EXPIRED")

    case_heartbeat_expired.skip = True  # type: ignore[attr-defined]

    # ---- GET /sessions/health ------------------------------------------------------------------
    def case_health(self) -> None:
        """should return health status"""
        status, body, _ = self.c.request("GET", "/api/messaging/sessions/health")
        check(status == 200, f"expected 200, got {status}")
        has(body, "status", "healthy")
        for k in ("activeSessions", "uptime", "timestamp"):
            has(body, k)

    # ---- Transport Parameter -------------------------------------------------------------------
    def _send_ok(self, body: dict[str, Any], *, agent_response: bool) -> None:
        sid = self.create()["sessionId"]
        status, resp = self.send(sid, body)
        check(status == 201, f"expected 201, got {status} {short(resp)}")
        has(resp, "success", True)
        has(resp, "userMessage")
        if agent_response:
            has(resp, "agentResponse")

    def case_default_websocket(self) -> None:
        """should default to websocket transport when transport is not specified"""
        self._send_ok({"content": "Hello, world!"}, agent_response=False)

    def case_explicit_websocket(self) -> None:
        """should accept explicit websocket transport"""
        self._send_ok(
            {"content": "Hello with explicit websocket transport", "transport": "websocket"},
            agent_response=False,
        )

    def case_invalid_transport(self) -> None:
        """should reject invalid transport parameter"""
        sid = self.create()["sessionId"]
        status, body = self.send(
            sid, {"content": "Hello with invalid transport", "transport": "invalid_transport"}
        )
        check(status == 400, f"expected 400, got {status} {short(body)}")
        has(body, "error")

    def case_http_transport(self) -> None:
        """should accept http transport"""
        self._send_ok(
            {"content": "Hello in http transport", "transport": "http"}, agent_response=True
        )

    def case_sse_transport(self) -> None:
        """should accept sse transport and set SSE headers"""
        sid = self.create()["sessionId"]
        status, body = self.send(sid, {"content": "Hello in sse transport", "transport": "sse"})
        check(status != 400, f"expected not 400, got {status} {short(body)}")

    def case_legacy_mode(self) -> None:
        """should accept legacy mode parameter for backward compatibility"""
        self._send_ok(
            {"content": "Hello with legacy sync mode", "mode": "sync"}, agent_response=True
        )

    # ---- NaN and Invalid Number Handling -------------------------------------------------------
    def _finite_config(self, tc: dict[str, Any]) -> None:
        finite_number(tc.get("timeoutMinutes"), "timeoutMinutes")
        check(tc["timeoutMinutes"] > 0, "timeoutMinutes > 0")
        finite_number(tc.get("maxDurationMinutes"), "maxDurationMinutes")
        finite_number(tc.get("warningThresholdMinutes"), "warningThresholdMinutes")

    def case_nan_agent_settings(self) -> None:
        """should handle NaN in agent timeout settings gracefully (HTTP: the agent's settings cannot be mocked;
        a plain create must give valid defaults)"""
        body = self.create()
        has(body, "sessionId")
        self._finite_config(body["timeoutConfig"])
        check(to_ms(body["expiresAt"]) > time.time() * 1000, "expiresAt in the past")

    def case_invalid_numeric_strings(self) -> None:
        """should handle invalid numeric strings in session config"""
        body = self.create(
            timeoutConfig={
                "timeoutMinutes": "NaN",
                "maxDurationMinutes": "Infinity",
                "warningThresholdMinutes": "-Infinity",
            }
        )
        has(body, "sessionId")
        self._finite_config(body["timeoutConfig"])

    def case_edge_case_values(self) -> None:
        """should handle edge case numeric values in timeout config"""
        missing = object()
        for value in (
            None,
            missing,
            "",
            "  ",
            "12.34.56",
            "10e308",
            "-10e308",
            "0x10",
            "010",
            "1,000",
        ):
            tc_in = {} if value is missing else {"timeoutMinutes": value}
            tc = self.create(timeoutConfig=tc_in)["timeoutConfig"]
            label = "undefined" if value is missing else repr(value)
            finite_number(tc.get("timeoutMinutes"), f"timeoutMinutes for {label}")
            check(
                0 < tc["timeoutMinutes"] <= 1440,
                f"timeoutMinutes for {label} = {tc['timeoutMinutes']}",
            )

    def case_nan_pagination(self) -> None:
        """should handle NaN in pagination parameters"""
        sid = self.create()["sessionId"]
        status, body = self.history(sid, limit="not-a-number")
        check(status == 200, f"expected 200, got {status} {short(body)}")
        has(body, "messages")
        has(body, "hasMore")
        check(isinstance(body["messages"], list), "messages is a list")

    def case_invalid_timestamps(self) -> None:
        """should handle invalid timestamps in pagination"""
        sid = self.create()["sessionId"]
        for q in ({"before": "invalid-timestamp"}, {"after": "NaN"}):
            status, body = self.history(sid, **q)
            check(status == 400, f"{q}: expected 400, got {status} {short(body)}")
            has(body, "error")
            code = body["error"].get("code") if isinstance(body["error"], dict) else None
            check(
                bool(re.search("INVALID_PAGINATION|VALIDATION_ERROR", str(code))),
                f"{q}: error code {code!r}",
            )

    def case_extreme_clamping(self) -> None:
        """should handle extreme timeout values with proper clamping"""
        tc = self.create(timeoutConfig={"timeoutMinutes": 999999, "maxDurationMinutes": 999999})[
            "timeoutConfig"
        ]
        check(tc["timeoutMinutes"] <= 1440, f"timeoutMinutes {tc['timeoutMinutes']} > 1440")
        check(
            tc["maxDurationMinutes"] <= 2880,
            f"maxDurationMinutes {tc['maxDurationMinutes']} > 2880",
        )
        tc = self.create(timeoutConfig={"timeoutMinutes": -10, "warningThresholdMinutes": -5})[
            "timeoutConfig"
        ]
        check(tc["timeoutMinutes"] >= 5, f"timeoutMinutes {tc['timeoutMinutes']} < 5")
        check(
            tc["warningThresholdMinutes"] >= 1,
            f"warningThresholdMinutes {tc['warningThresholdMinutes']} < 1",
        )

    def case_patch_invalid_values(self) -> None:
        """should handle PATCH timeout with invalid values"""
        sid = self.create()["sessionId"]
        status, body, _ = self.c.request(
            "PATCH",
            f"/api/messaging/sessions/{sid}/timeout",
            {
                "timeoutMinutes": "not-a-number",
                "maxDurationMinutes": "invalid",
                "warningThresholdMinutes": "abc123",
            },
        )
        check(status == 200, f"expected 200, got {status} {short(body)}")
        has(body, "timeoutConfig")
        tc = body["timeoutConfig"]
        for k in ("timeoutMinutes", "maxDurationMinutes", "warningThresholdMinutes"):
            finite_number(tc.get(k), k)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base")
    ap.add_argument("agent_id")
    ap.add_argument("--api-key")
    ap.add_argument(
        "--with-expiry",
        action="store_true",
        help="run the upstream it.skip expiry case (waits for the minimum timeout)",
    )
    ap.add_argument("-k", help="only cases whose name contains this")
    a = ap.parse_args()
    suite = Suite(Client(a.base, a.api_key), a.agent_id, a.with_expiry)
    cases: list[tuple[str, Callable[[], None]]] = [
        (n, getattr(suite, n)) for n in Suite.__dict__ if n.startswith("case_")
    ]
    passed = failed = skipped = 0
    for name, fn in cases:
        if a.k and a.k not in name:
            continue
        title = (fn.__doc__ or name).split("(")[0].strip()
        if getattr(fn, "skip", False) and not a.with_expiry:
            print(f"SKIP  {name:28} {title}  (it.skip upstream; --with-expiry runs it)")
            skipped += 1
            continue
        try:
            fn()
        except Failure as err:
            failed += 1
            print(f"FAIL  {name:28} {title}\n      -> {err}")
        except Exception as err:  # a crash in a case is a failure of that case
            failed += 1
            print(f"FAIL  {name:28} {title}\n      -> {type(err).__name__}: {err}")
        else:
            passed += 1
            print(f"PASS  {name:28} {title}")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
