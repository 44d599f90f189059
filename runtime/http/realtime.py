"""Socket.IO (protocol 4) at ``/socket.io/``: ElizaOS's realtime side, on python-socketio.

What a client sees is ElizaOS 1.7.2's ``SocketIORouter``:

- the handshake needs ``auth.entityId``, a UUID (``connect_error`` "Valid
  entityId required" otherwise) and, when an API key is set
  (``ELIZA_SERVER_AUTH_TOKEN``), ``auth.apiKey`` or an ``X-API-KEY`` header
  equal to it ("Invalid or missing API Key"); then ``authenticated``
  ``{entityId, timestamp}`` and ``connection_established`` ``{message, socketId}``;
- ``ROOM_JOINING`` (event ``"1"``, or ``"message"`` ``{type: 1, payload}``)
  with ``channelId`` (or ``roomId``) joins that room: ``channel_joined`` and
  ``room_joined``; a session's room is its ``channelId``;
- ``SEND_MESSAGE`` (event ``"2"``, or ``"message"`` ``{type: 2, payload}``)
  ``{channelId, messageServerId, senderId, message, ...}`` stores the message in
  the channel's session, broadcasts it (``messageBroadcast``, to the sender with
  ``clientMessageId``), acknowledges it (``messageAck``), and the agent's reply
  follows as for the ``websocket`` transport;
- a reply is ``messageBroadcast`` to the room (after ``messageStreamChunk``
  pieces when the handler streams), or ``messageStreamError`` if it failed;
  a bad request is ``messageError`` ``{error}`` to the socket.

Across replicas (docs/realtime.md): with a Redis (or Redis Cluster) backend
every emit goes through python-socketio's Redis pub/sub manager on the same
server, so a reply made on replica B reaches a socket on replica A; otherwise
rooms are this process's. Fan-out is best effort; the reply is always in
history.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import socketio
from starlette.types import Receive, Scope, Send

from ..errors import SessionError
from ..messages import Message
from ..sessions import Session
from .auth import api_key_matches
from .context import ServedAgent
from .replies import ReplySink, ReplyWorker
from .wire import (
    MESSAGE_SERVER_ID,
    broadcast_json,
    channel_id,
    stream_chunk_json,
    stream_error_json,
    user_broadcast_json,
)

__all__ = [
    "CHANNEL_STORE",
    "ROOM_JOINING",
    "SEND_MESSAGE",
    "SOCKETIO_PATH",
    "RealtimeHub",
    "RoomSink",
]

logger = logging.getLogger(__name__)

SOCKETIO_PATH: Final = "/socket.io"
"""Where Socket.IO is served (the socket.io-client default path)."""

ROOM_JOINING: Final = 1
"""ElizaOS's ``SOCKET_MESSAGE_TYPE.ROOM_JOINING``."""

SEND_MESSAGE: Final = 2
"""ElizaOS's ``SOCKET_MESSAGE_TYPE.SEND_MESSAGE``."""

CHANNEL_STORE: Final = "realtime_channels"
"""The store remembering which session a ``channelId`` belongs to."""

_READY_TIMEOUT: Final = 10.0


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


class RoomSink(ReplySink):
    """A reply's events to its session's Socket.IO room."""

    def __init__(self, hub: RealtimeHub, user: Message, session: Session) -> None:
        self._hub = hub
        self._user = user
        self._session = session

    async def chunk(self, message_id: str, piece: str, index: int) -> None:
        data = stream_chunk_json(self._session, message_id=message_id, chunk=piece, index=index)
        await self._hub.emit("messageStreamChunk", data, self._session)

    async def done(self, reply: Message) -> None:
        await self._hub.emit(
            "messageBroadcast", broadcast_json(reply, self._user, self._session), self._session
        )

    async def failed(self, message_id: str, error: str, partial_text: str) -> None:
        data = stream_error_json(
            self._session, message_id=message_id, error=error, partial_text=partial_text
        )
        await self._hub.emit("messageStreamError", data, self._session)


class RealtimeHub:
    """The Socket.IO server of one served agent, and the reply worker it shares with SSE.

    :attr:`asgi` is mounted at :data:`SOCKETIO_PATH`; the Socket.IO server
    itself is built by :meth:`running` (the app's lifespan), once the runtime
    knows its backend; before that, and without a lifespan, it answers 503.

    Args:
        served: the agent and its sessions.
        worker: makes the replies (also the SSE transport's).
        api_key: when set, the handshake needs it (``auth.apiKey`` or ``X-API-KEY``).
    """

    def __init__(self, served: ServedAgent, worker: ReplyWorker, *, api_key: str | None) -> None:
        self.served = served
        self.worker = worker
        self._api_key = api_key
        self._server: socketio.AsyncServer | None = None
        self._app: socketio.ASGIApp | None = None
        self._channels: dict[str, str] = {}

    @property
    def fan_out(self) -> str:
        """How emits reach other replicas: ``"redis"`` or ``"process"`` (this process only)."""
        manager = None if self._server is None else self._server.manager
        return "redis" if isinstance(manager, _StoreRedisManager) else "process"

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app mounted at ``/socket.io``."""
        if self._app is None:
            await _unavailable(scope, receive, send)
            return
        await self._app(scope, receive, send)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve Socket.IO and make replies while inside; drain on exit."""
        manager = _manager_for(self.served)
        server = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=manager,
            # Starlette's CORS middleware (CORS_ORIGIN) answers for the whole app.
            cors_allowed_origins=[],
            # ElizaOS's SOCKET_IO_CONFIG.
            ping_interval=25,
            ping_timeout=20,
            max_http_buffer_size=1_000_000,
        )
        self._register(server)
        if isinstance(manager, _StoreRedisManager):
            # Subscribe now, not at the first Socket.IO request: this replica's
            # sockets hear every replica's emits as soon as it serves.
            server.manager_initialized = True
            manager.initialize()
            with anyio.move_on_after(_READY_TIMEOUT):
                await manager.subscribed.wait()
            if not manager.subscribed.is_set():
                logger.warning("Socket.IO fan-out: not subscribed to Redis yet; retrying")
        self._server = server
        self._app = socketio.ASGIApp(server, socketio_path=None)
        try:
            async with self.worker.running():
                yield
        finally:
            self._app = None
            with anyio.CancelScope(shield=True):
                await _stop(manager)
            self._server = None

    async def emit(self, event: str, data: dict[str, Any], session: Session) -> None:
        """Emit *event* to *session*'s room on every replica (best effort)."""
        if self._server is None:
            return
        await self._server.emit(event, data, room=channel_id(session))

    def reply_to_room(self, user: Message, session: Session) -> None:
        """Make the reply to *user* in the background; it reaches the session's room.

        Raises:
            APIError: 503 when the reply worker is not running.
        """
        self.worker.start(user, session, RoomSink(self, user, session))

    # -- the Socket.IO events ------------------------------------------------------------------

    def _register(self, server: socketio.AsyncServer) -> None:
        server.on("connect", self._connect)
        server.on(str(ROOM_JOINING), self._join)
        server.on(str(SEND_MESSAGE), self._send_message)
        server.on("message", self._generic)

    async def _connect(self, sid: str, environ: Mapping[str, Any], auth: object) -> None:
        given = auth if isinstance(auth, dict) else {}
        if self._api_key is not None:
            key = given.get("apiKey") or environ.get("HTTP_X_API_KEY")
            if not isinstance(key, str) or not api_key_matches(self._api_key, key):
                raise socketio.exceptions.ConnectionRefusedError("Invalid or missing API Key")
        entity = given.get("entityId")
        if not _is_uuid(entity):
            raise socketio.exceptions.ConnectionRefusedError("Valid entityId required")
        server = self._require_server()
        await server.save_session(sid, {"entityId": entity})
        # Emitted before the CONNECT packet goes out; socket.io-client buffers
        # them and delivers them right after "connect", in this order.
        await server.emit(
            "authenticated", {"entityId": entity, "timestamp": int(time.time() * 1000)}, to=sid
        )
        await server.emit(
            "connection_established",
            {"message": "Connected to Eliza Socket.IO server", "socketId": sid},
            to=sid,
        )

    async def _generic(self, sid: str, data: object) -> None:
        if not (isinstance(data, dict) and "type" in data and "payload" in data):
            logger.debug("socket %s: malformed 'message' event", sid)
            return
        if data["type"] == ROOM_JOINING:
            await self._join(sid, data["payload"])
        elif data["type"] == SEND_MESSAGE:
            await self._send_message(sid, data["payload"])
        else:
            logger.debug("socket %s: unknown message type %r", sid, data["type"])

    async def _join(self, sid: str, payload: object) -> None:
        body = payload if isinstance(payload, dict) else {}
        channel = body.get("channelId") or body.get("roomId")
        if not channel or not isinstance(channel, str):
            await self._error(sid, "channelId is required for joining.")
            return
        server = self._require_server()
        await server.enter_room(sid, channel)
        answer: dict[str, Any] = {
            "message": f"Socket {sid} successfully joined channel {channel}.",
            "channelId": channel,
            "roomId": channel,
        }
        agent = body.get("agentId")
        if agent:
            answer["agentId"] = agent
        await server.emit("channel_joined", answer, to=sid)
        await server.emit("room_joined", answer, to=sid)

    async def _send_message(self, sid: str, payload: object) -> None:
        body = payload if isinstance(payload, dict) else {}
        channel = body.get("channelId") or body.get("roomId")
        server_id = body.get("messageServerId")
        text = body.get("message")
        if (
            not _is_uuid(channel)
            or not (server_id == MESSAGE_SERVER_ID or _is_uuid(server_id))
            or not _is_uuid(body.get("senderId"))
            or not text
        ):
            await self._error(
                sid,
                "For SEND_MESSAGE: channelId, messageServerId (message_server_id),"
                " senderId (author_id), and message are required.",
            )
            return
        assert isinstance(channel, str)
        try:
            session = await self._session_for(channel)
            if session is None:
                await self._error(
                    sid, f"Error processing your message: no session has channel {channel}"
                )
                return
            metadata = body.get("metadata")
            user = await self.served.sessions.open_exchange(
                session.id,
                text if isinstance(text, str) else str(text),
                metadata=metadata if isinstance(metadata, dict) else None,
            )
        except Exception as err:
            reason = (
                str(err)
                if isinstance(err, SessionError | ValueError)
                else "the message was not stored"
            )
            if not isinstance(err, SessionError | ValueError):
                logger.exception("SEND_MESSAGE from socket %s failed", sid)
            await self._error(sid, f"Error processing your message: {reason}")
            return
        server = self._require_server()
        name = body.get("senderName")
        source = body.get("source")
        shown = user_broadcast_json(
            user,
            session,
            sender_name=name if isinstance(name, str) and name else "User",
            source=source if isinstance(source, str) and source else "socketio_client",
        )
        await server.emit("messageBroadcast", shown, room=channel, skip_sid=sid)
        await server.emit(
            "messageBroadcast", {**shown, "clientMessageId": body.get("messageId")}, to=sid
        )
        await server.emit(
            "messageAck",
            {
                "clientMessageId": body.get("messageId"),
                "messageId": user.id,
                "status": "received_by_server_and_processing",
                "channelId": channel,
                "roomId": channel,
            },
            to=sid,
        )
        try:
            self.reply_to_room(user, session)
        except Exception:
            await self.served.sessions.close_exchange(user, error=_STOPPING)
            await self._error(sid, f"Error processing your message: {_STOPPING}")

    async def _error(self, sid: str, message: str) -> None:
        await self._require_server().emit("messageError", {"error": message}, to=sid)

    def _require_server(self) -> socketio.AsyncServer:
        if self._server is None:  # events arrive only while running()
            raise RuntimeError("the Socket.IO server is not running")
        return self._server

    async def _session_for(self, channel: str) -> Session | None:
        """The live session whose ``channelId`` is *channel*, or None.

        A channel id is derived from its session id one way; the mapping is
        remembered in :data:`CHANNEL_STORE` (shared by replicas) once found by
        listing the agent's sessions.
        """
        sessions = self.served.sessions
        known = self._channels.get(channel)
        if known is None:
            store = self.served.runtime.kv_service.get_store(CHANNEL_STORE)
            found = await store.get(channel)
            if isinstance(found, str):
                known = found
            else:
                for session in await sessions.list(agent_id=self.served.runtime.agent_id):
                    if channel_id(session) == channel:
                        known = session.id
                        ttl = max(session.expires_at - sessions.clock(), 1.0)
                        await store.set(channel, known, ttl=ttl)
                        break
            if known is None:
                return None
            self._channels[channel] = known
        try:
            return await sessions.get(known)
        except SessionError:
            self._channels.pop(channel, None)
            return None


_STOPPING: Final = "the server is stopping; send the message again"


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    """503 for Socket.IO requests before the lifespan built the server."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1013})
        return
    body = b"Socket.IO is served once the application's lifespan has started"
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"text/plain"), (b"retry-after", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- fan-out across replicas ------------------------------------------------------------------


class _StoreRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager on the connection settings of the runtime's store.

    A standalone server: its pool's settings (host, TLS, credentials) for a
    connection of our own. A cluster: one node, picked at random on every
    (re)connect, since Redis Cluster delivers a PUBLISH on any node to the
    subscribers of every node.
    """

    def __init__(self, client: Any, *, channel: str) -> None:
        super().__init__(url="redis://", channel=channel)
        self._source = client
        self.subscribed = anyio.Event()
        """Set once the first SUBSCRIBE is acknowledged."""

    def _redis_connect(self) -> None:
        import redis.asyncio

        source = self._source
        if hasattr(source, "get_nodes"):  # a RedisCluster: its nodes know their settings
            node = random.choice(source.get_nodes())
            connection_class, settings = node.connection_class, dict(node.connection_kwargs)
            settings.update(host=node.host, port=node.port)
        else:
            pool = source.connection_pool
            connection_class, settings = pool.connection_class, dict(pool.connection_kwargs)
        settings.pop("event_dispatcher", None)
        self.redis = redis.asyncio.Redis(
            connection_pool=redis.asyncio.ConnectionPool(
                connection_class=connection_class, **settings
            )
        )
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
        self.connected = True

    async def _listen(self) -> AsyncIterator[Any]:
        channel = self.channel.encode("utf-8")
        async for message in self._redis_listen_with_retries():
            if message["channel"] != channel:
                continue
            if message["type"] == "subscribe":
                self.subscribed.set()
            elif message["type"] == "message" and "data" in message:
                yield message["data"]


def _manager_for(served: ServedAgent) -> socketio.AsyncManager:
    """Redis pub/sub when the runtime's backend is Redis or Redis Cluster, else in-process."""
    service = served.runtime.kv_service
    root = getattr(service, "backend", None)
    label = getattr(root, "backend", None)
    if label in ("redis", "redis-cluster"):
        client = getattr(root, "client", None)
        if client is not None:
            channel = f"kvstore-runtime.socketio.{served.runtime.agent_id}"
            return _StoreRedisManager(client, channel=channel)
    return socketio.AsyncManager()


async def _stop(manager: socketio.AsyncManager) -> None:
    """Stop the manager's listener task and close its Redis connection."""
    task = getattr(manager, "thread", None)
    if task is not None:
        task.cancel()
        try:
            await task
        except BaseException:  # its CancelledError, or what it died of
            pass
    redis = getattr(manager, "redis", None)
    if redis is not None:
        try:
            await redis.aclose()
        except Exception:
            logger.debug("closing the Socket.IO Redis connection failed", exc_info=True)
