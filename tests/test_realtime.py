"""Socket.IO against ``python -m runtime serve``, with the real npm ``socket.io-client`` 4.

Each socket is a Node process (``tests/js/socket-probe.mjs``) printing every
event it receives; the tests wait on events with generous deadlines, never on
time. Servers are real processes on free loopback ports: one process for the
protocol, two on one Redis for the fan-out across replicas. Handlers come from
``tests/realtime_handlers.py`` through ``--handler``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_http_e2e import API, ROOT, Server

from runtime.http.replies import REPLY_FAILED
from runtime.http.wire import MESSAGE_SERVER_ID

JS = ROOT / "tests" / "js"
AGENT = "3f2b8c1d-5e6a-4b7c-8d9e-0f1a2b3c4d5e"
USER = "11111111-2222-4333-8444-555555555555"
DEADLINE = 60.0

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="the Socket.IO tests need node and npm (socket.io-client)",
)


@pytest.fixture(scope="module", autouse=True)
def socket_client_installed() -> None:
    if not (JS / "node_modules" / "socket.io-client").exists():
        subprocess.run(["npm", "ci", "--prefix", str(JS)], check=True, timeout=600)


class NodeSocket:
    """One socket.io-client socket in a Node process; its events as they arrive."""

    def __init__(
        self,
        url: str,
        *,
        auth: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        transports: str = "",
    ) -> None:
        command = ["node", str(JS / "socket-probe.mjs"), "--url", url]
        command += ["--auth", json.dumps(auth or {}), "--headers", json.dumps(headers or {})]
        if transports:
            command += ["--transports", transports]
        self.process = subprocess.Popen(
            command,
            cwd=JS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.received: list[dict[str, Any]] = []
        self._taken: set[int] = set()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.received.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self.received.append({"event": "<exited>", "data": None})
            self._changed.notify_all()

    def wait_for(
        self, event: str, where: Callable[[Any], bool] = lambda data: True
    ) -> dict[str, Any]:
        """The first event named *event* whose data satisfies *where*, not returned before."""

        def found() -> int | None:
            for index, seen in enumerate(self.received):
                if index not in self._taken and seen["event"] == event and where(seen["data"]):
                    return index
            return None

        with self._changed:
            self._changed.wait_for(
                lambda: (
                    found() is not None
                    or any(seen["event"] == "<exited>" for seen in self.received)
                ),
                timeout=DEADLINE,
            )
            index = found()
            if index is None:
                pytest.fail(f"no {event!r} event; the socket received {self.received}")
            self._taken.add(index)
            data: dict[str, Any] = self.received[index]["data"]
            return data

    def names(self) -> list[str]:
        """Names of the events received so far."""
        with self._changed:
            return [seen["event"] for seen in self.received]

    def emit(self, event: str, data: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"emit": event, "data": data}) + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # it exited already
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=15)
        self.process.stdout.close()


@pytest.fixture
def sockets() -> Iterator[Callable[..., NodeSocket]]:
    opened: list[NodeSocket] = []

    def open_socket(url: str, **options: Any) -> NodeSocket:
        socket = NodeSocket(url, **options)
        opened.append(socket)
        return socket

    yield open_socket
    for socket in opened:
        socket.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(env: dict[str, str] | None = None, *, handler: str | None = None) -> Server:
        extra = {"AGENT_ID": AGENT, "REALTIME_GATE": str(tmp_path / "gate"), **(env or {})}
        if handler is not None:
            extra["AGENT_HANDLER"] = f"tests.realtime_handlers:{handler}"
        server = Server(tmp_path / f"server{len(started)}.log", extra)
        started.append(server)
        assert server.wait_until_serving().status_code == 200, server.output()
        return server

    yield start
    for server in started:
        server.stop()


def create_session(server: Server) -> dict[str, Any]:
    created = httpx.post(f"{server.url}{API}", json={"agentId": AGENT, "userId": USER}, timeout=30)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def history(server: Server, sid: str) -> list[dict[str, Any]]:
    page = httpx.get(f"{server.url}{API}/{sid}/messages", timeout=30)
    assert page.status_code == 200, page.text
    messages: list[dict[str, Any]] = page.json()["messages"]
    return messages[::-1]  # oldest first


def connected(socket: NodeSocket, entity: str = USER) -> None:
    socket.wait_for("connect")
    assert socket.wait_for("authenticated")["entityId"] == entity
    welcome = socket.wait_for("connection_established")
    assert welcome["message"] == "Connected to Eliza Socket.IO server"
    assert isinstance(welcome["socketId"], str) and welcome["socketId"]


def join(socket: NodeSocket, channel: str, *, generic: bool) -> None:
    payload = {"channelId": channel, "agentId": AGENT, "entityId": USER}
    if generic:
        socket.emit("message", {"type": 1, "payload": payload})
    else:
        socket.emit("1", payload)
    joined = socket.wait_for("channel_joined")
    assert joined["channelId"] == joined["roomId"] == channel
    assert joined["agentId"] == AGENT
    assert socket.wait_for("room_joined") == joined


# -- the handshake ------------------------------------------------------------------------------


def test_the_handshake_needs_an_entity_id(
    serve: Callable[..., Server], sockets: Callable[..., NodeSocket]
) -> None:
    server = serve()
    for auth in ({}, {"entityId": "not-a-uuid"}, {"entityId": 42}):
        refused = sockets(server.url, auth=auth)
        assert refused.wait_for("connect_error") == {"message": "Valid entityId required"}
    # Both transports: long polling first (the client default), and websocket only.
    for transports in ("", "websocket"):
        connected(sockets(server.url, auth={"entityId": USER}, transports=transports))


def test_the_handshake_checks_the_api_key(
    serve: Callable[..., Server], sockets: Callable[..., NodeSocket]
) -> None:
    server = serve({"ELIZA_SERVER_AUTH_TOKEN": "s3cret"})
    for auth in ({"entityId": USER}, {"entityId": USER, "apiKey": "wrong"}):
        refused = sockets(server.url, auth=auth)
        assert refused.wait_for("connect_error") == {"message": "Invalid or missing API Key"}
    connected(sockets(server.url, auth={"entityId": USER, "apiKey": "s3cret"}))
    connected(sockets(server.url, auth={"entityId": USER}, headers={"X-API-KEY": "s3cret"}))
    # The key is checked before the entity, as ElizaOS does.
    refused = sockets(server.url, auth={"entityId": "x"})
    assert refused.wait_for("connect_error") == {"message": "Invalid or missing API Key"}


# -- replies to the room ------------------------------------------------------------------------


def test_a_websocket_send_answers_at_once_and_the_reply_reaches_the_room(
    serve: Callable[..., Server], sockets: Callable[..., NodeSocket]
) -> None:
    server = serve(handler="pieces")
    created = create_session(server)
    sid, channel = created["sessionId"], created["channelId"]
    socket = sockets(server.url, auth={"entityId": USER})
    connected(socket)
    join(socket, channel, generic=True)
    sent = httpx.post(f"{server.url}{API}/{sid}/messages", json={"content": "hi"}, timeout=30)
    assert sent.status_code == 201
    answer = sent.json()
    assert list(answer) == ["success", "userMessage", "sessionStatus"]
    chunks = [socket.wait_for("messageStreamChunk") for _ in range(3)]
    assert [c["chunk"] for c in chunks] == ["Echo", ": ", "hi"]
    assert [c["index"] for c in chunks] == [0, 1, 2]
    assert {c["channelId"] for c in chunks} == {channel}
    reply = socket.wait_for("messageBroadcast")
    stored = history(server, sid)
    assert [m["content"] for m in stored] == ["hi", "Echo: hi"]
    assert reply["id"] == stored[1]["id"] == chunks[0]["messageId"]
    assert reply["text"] == "Echo: hi"
    assert reply["senderId"] == AGENT and reply["source"] == "agent_response"
    assert reply["roomId"] == reply["channelId"] == channel
    assert reply["serverId"] == MESSAGE_SERVER_ID
    assert reply["inReplyTo"] == answer["userMessage"]["id"]
    assert isinstance(reply["createdAt"], int)


def test_a_failed_reply_reaches_the_room_as_an_error(
    serve: Callable[..., Server], sockets: Callable[..., NodeSocket]
) -> None:
    server = serve(handler="broken")
    created = create_session(server)
    socket = sockets(server.url, auth={"entityId": USER})
    connected(socket)
    join(socket, created["channelId"], generic=False)
    sent = httpx.post(
        f"{server.url}{API}/{created['sessionId']}/messages",
        json={"content": "hi", "transport": "websocket"},
        timeout=30,
    )
    assert sent.status_code == 201
    error = socket.wait_for("messageStreamError")
    assert error["error"] == REPLY_FAILED and error["partialText"] == ""
    assert error["channelId"] == created["channelId"] and error["agentId"] == AGENT
    stored = history(server, created["sessionId"])
    assert [(m["content"], m["isAgent"]) for m in stored] == [("hi", False), (REPLY_FAILED, True)]
    assert stored[1]["id"] == error["messageId"]
    assert "messageBroadcast" not in socket.names()


def test_send_message_over_the_socket(
    serve: Callable[..., Server], sockets: Callable[..., NodeSocket]
) -> None:
    server = serve()
    created = create_session(server)
    sid, channel = created["sessionId"], created["channelId"]
    sender = sockets(server.url, auth={"entityId": USER})
    other = sockets(server.url, auth={"entityId": AGENT})
    for socket, generic in ((sender, False), (other, True)):
        connected(socket, USER if socket is sender else AGENT)
        join(socket, channel, generic=generic)
    payload = {
        "channelId": channel,
        "messageServerId": MESSAGE_SERVER_ID,
        "senderId": USER,
        "senderName": "Ada",
        "message": "hello over the socket",
        "messageId": "client-1",
    }
    sender.emit("message", {"type": 2, "payload": payload})
    own = sender.wait_for("messageBroadcast", lambda d: d.get("clientMessageId") == "client-1")
    ack = sender.wait_for("messageAck")
    assert ack == {
        "clientMessageId": "client-1",
        "messageId": own["id"],
        "status": "received_by_server_and_processing",
        "channelId": channel,
        "roomId": channel,
    }
    seen = other.wait_for("messageBroadcast", lambda d: d["id"] == own["id"])
    assert seen["text"] == "hello over the socket" and seen["senderName"] == "Ada"
    assert "clientMessageId" not in seen
    for socket in (sender, other):
        reply = socket.wait_for("messageBroadcast", lambda d: d["senderId"] == AGENT)
        assert reply["text"] == "Echo: hello over the socket"
    assert [m["content"] for m in history(server, sid)] == [
        "hello over the socket",
        "Echo: hello over the socket",
    ]
    # The event of its own name works too.
    sender.emit("2", {**payload, "message": "second", "messageId": "client-2"})
    sender.wait_for("messageAck", lambda d: d["clientMessageId"] == "client-2")
    sender.wait_for("messageBroadcast", lambda d: d["text"] == "Echo: second")


def test_bad_socket_requests_get_message_error(
    serve: Callable[..., Server], sockets: Callable[..., NodeSocket]
) -> None:
    server = serve()
    socket = sockets(server.url, auth={"entityId": USER})
    connected(socket)
    socket.emit("1", {"agentId": AGENT})
    assert socket.wait_for("messageError") == {"error": "channelId is required for joining."}
    socket.emit("2", {"channelId": "nope", "message": "hi"})
    required = socket.wait_for("messageError")["error"]
    assert required.startswith("For SEND_MESSAGE: channelId, messageServerId")
    unknown = "7b0c6f5e-1d2a-4f3b-9c8d-7e6f5a4b3c2d"
    payload = {"channelId": unknown, "messageServerId": MESSAGE_SERVER_ID, "senderId": USER}
    socket.emit("2", {**payload, "message": "hi"})
    assert socket.wait_for("messageError")["error"].startswith("Error processing your message")
    # Malformed generic messages are ignored, as ElizaOS does; the socket stays usable.
    socket.emit("message", {"type": 9, "payload": {}})
    socket.emit("message", "garbage")
    socket.emit("1", {"channelId": unknown})
    socket.wait_for("channel_joined")


# -- across replicas ----------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
def test_a_reply_made_on_replica_b_reaches_a_socket_on_replica_a(
    serve: Callable[..., Server],
    sockets: Callable[..., NodeSocket],
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # A cluster: each replica subscribes on a node of its own choosing (at
    # random); Redis Cluster delivers a PUBLISH on any node to every node.
    url = request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url")
    env = {"KV_STORE_BACKEND": backend, "REDIS_URL": url}
    a = serve(env, handler="gated")
    b = serve(env, handler="gated")
    created = create_session(a)
    sid = created["sessionId"]
    socket = sockets(a.url, auth={"entityId": USER})
    connected(socket)
    join(socket, created["channelId"], generic=True)
    sent = httpx.post(f"{b.url}{API}/{sid}/messages", json={"content": "via b"}, timeout=30)
    # The POST has answered, and the reply cannot exist yet: the gate is closed.
    assert sent.status_code == 201
    assert [m["content"] for m in history(b, sid)] == ["via b"]
    assert "messageBroadcast" not in socket.names()
    (tmp_path / "gate").touch()
    reply = socket.wait_for("messageBroadcast")
    assert reply["text"] == "Echo: via b"
    assert [m["id"] for m in history(a, sid)][1] == reply["id"]


def test_shutdown_drains_replies_in_flight(serve: Callable[..., Server], tmp_path: Path) -> None:
    env = {"KV_STORE_BACKEND": "sqlite", "KV_STORE_PATH": str(tmp_path / "sessions.db")}
    server = serve(env, handler="gated")
    sid = create_session(server)["sessionId"]
    sent = httpx.post(f"{server.url}{API}/{sid}/messages", json={"content": "late"}, timeout=30)
    assert sent.status_code == 201
    server.process.terminate()  # SIGTERM: graceful; the reply is still being made
    (tmp_path / "gate").touch()
    server.process.wait(timeout=DEADLINE)
    assert server.stopped_gracefully(), server.output()
    again = serve(env)
    assert [m["content"] for m in history(again, sid)] == ["late", "Echo: late"]
