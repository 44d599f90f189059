"""The agent runtime: plugins, services, the key-value service, state and replies.

Lifecycle::

    runtime = AgentRuntime(plugins=[...])   # register services and providers
    await runtime.initialize()              # start services, pick the KV service
    state = await runtime.compose_state(message)
    reply = await runtime.generate_reply(message, state)
    await runtime.aclose()                  # stop services, close what we opened

``async with AgentRuntime(...) as runtime:`` does the first and last steps.

Where state lives is decided once, by :meth:`AgentRuntime.initialize`, in this
order (the seed's rule):

1. the first registered service satisfying :class:`kvstore.KVStoreService`;
2. else :func:`kvstore.service_from_env` when ``KV_STORE_BACKEND`` is set;
3. else an in-memory :class:`kvstore.StoreService`, lost on restart, whose
   ``state_cache`` store is bounded (LRU) so a long-running agent cannot grow
   without limit. The ``sessions`` store is never bounded: evicting a live
   session would lose a conversation.
"""

from __future__ import annotations

import enum
import logging
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import anyio

from kvstore import (
    KVStoreService,
    MemoryStore,
    StoreService,
    is_kv_store_service,
    service_from_env,
)

from .errors import ProviderError, RuntimeStateError
from .messages import Message
from .plugins import Handler, Plugin, Provider, Service
from .plugins import service_name as _service_name
from .sessions import SessionManager, SessionsConfig
from .settings import SettingValue, check_settings, count_setting, seconds_setting
from .state import DEFAULT_STATE_TTL, STATE_CACHE_STORE, StateCache

__all__ = ["DEFAULT_STATE_CACHE_MAX_ENTRIES", "AgentRuntime", "echo_handler"]

logger = logging.getLogger(__name__)

DEFAULT_STATE_CACHE_MAX_ENTRIES: Final = 10_000
"""Bound of the in-memory fallback's ``state_cache`` store (``STATE_CACHE_MAX_ENTRIES``)."""


async def echo_handler(runtime: AgentRuntime, message: Message, state: dict[str, Any]) -> str:
    """The default handler: a deterministic echo, so nothing needs a model.

    >>> await echo_handler(runtime, message, {})   # doctest: +SKIP
    'Echo: hello'
    """
    return f"Echo: {message.content}"


class _Phase(enum.Enum):
    NEW = "new"
    READY = "ready"
    CLOSED = "closed"


@dataclass
class _Inflight:
    """Serialises compose_state calls for one message id within this process."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0


class AgentRuntime:
    """An agent: its services, state providers, reply handler and storage.

    Args:
        agent_id: this agent's id; a new UUID4 string by default.
        plugins: :class:`Plugin` objects; their services and providers are
            registered in order.
        providers: more providers, registered after the plugins' ones.
        handler: async ``(runtime, message, state) -> str`` producing replies,
            or an async generator of reply pieces (streamed by the SSE and
            Socket.IO transports); defaults to :func:`echo_handler`.
        settings: ``str -> str | int | float``. Read by the runtime:
            ``STATE_CACHE_TTL`` (seconds a composed state stays cached, default
            3600) and ``STATE_CACHE_MAX_ENTRIES`` (bound of the in-memory
            fallback's state cache, default 10 000).
        sessions_config: a :class:`runtime.SessionsConfig` for ``runtime.sessions``.
        environ: where ``KV_STORE_*`` variables are read at :meth:`initialize`
            (default :data:`os.environ`).

    >>> async with AgentRuntime(providers=[time_provider]) as runtime:  # doctest: +SKIP
    ...     state = await runtime.compose_state(message)
    ...     reply = await runtime.generate_reply(message, state)
    """

    def __init__(
        self,
        *,
        agent_id: str | None = None,
        plugins: Iterable[Plugin] = (),
        providers: Iterable[Provider] = (),
        handler: Handler | None = None,
        settings: Mapping[str, SettingValue] | None = None,
        sessions_config: SessionsConfig | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if agent_id is None:
            agent_id = str(uuid.uuid4())
        elif not isinstance(agent_id, str) or not agent_id:
            raise ValueError(f"agent_id must be a non-empty str, got {agent_id!r}")
        if handler is not None and not callable(handler):
            raise TypeError(
                "handler must be an async callable (runtime, message, state) -> str,"
                f" not {type(handler).__name__}"
            )
        self.agent_id: str = agent_id
        """This agent's id."""
        self.settings: dict[str, SettingValue] = check_settings(settings)
        """Runtime settings (``STATE_CACHE_TTL``, ``STATE_CACHE_MAX_ENTRIES``, your own)."""
        self.sessions_config: SessionsConfig | None = sessions_config
        """Configuration handed to ``runtime.sessions`` at :meth:`initialize`."""
        self.handler: Handler = echo_handler if handler is None else handler
        """The reply handler used by :meth:`generate_reply`."""

        self._environ = environ
        self._phase = _Phase.NEW
        self._plugins: list[Plugin] = []
        self._services: list[object] = []
        self._providers: list[Provider] = []
        self._started: list[Service] = []
        self._kv_service: KVStoreService | None = None
        self._owns_kv_service = False
        self._state_cache: StateCache | None = None
        self._sessions: SessionManager | None = None
        self._init_lock: anyio.Lock | None = None
        self._inflight: dict[str, _Inflight] = {}

        for plugin in plugins:
            self.register_plugin(plugin)
        for provider in providers:
            self.register_provider(provider)

    # -- registration ------------------------------------------------------------

    def register_plugin(self, plugin: Plugin) -> None:
        """Register *plugin*'s services and providers (before :meth:`initialize`)."""
        if not isinstance(plugin, Plugin):
            raise TypeError(f"expected a Plugin, not {type(plugin).__name__}")
        self._check_registering(f"plugin {plugin.name!r}")
        for service in plugin.services:
            self.register_service(service)
        for provider in plugin.providers:
            self.register_provider(provider)
        self._plugins.append(plugin)

    def register_service(self, service: object) -> None:
        """Register *service* (before :meth:`initialize`).

        Any object is accepted. A :class:`Service` is started by
        :meth:`initialize` and stopped by :meth:`aclose`; the first registered
        object satisfying :class:`kvstore.KVStoreService` becomes
        :attr:`kv_service`. The runtime never closes a service it was given.

        Raises:
            RuntimeStateError: the runtime is already initialised or closed;
                the store service was chosen then and cannot change.
        """
        self._check_registering(f"service {_service_name(service)!r}")
        if any(registered is service for registered in self._services):
            raise ValueError(f"service {_service_name(service)!r} is already registered")
        self._services.append(service)

    def register_provider(self, provider: Provider) -> None:
        """Add a provider, run by :meth:`compose_state` after those registered before it.

        Allowed until :meth:`aclose`; states cached before do not include its output.
        """
        if not callable(provider):
            raise TypeError(
                "a provider must be an async callable (runtime, message) -> dict,"
                f" not {type(provider).__name__}"
            )
        if self._phase is _Phase.CLOSED:
            raise RuntimeStateError("cannot register a provider on a closed runtime")
        self._providers.append(provider)

    def _check_registering(self, what: str) -> None:
        if self._phase is not _Phase.NEW:
            raise RuntimeStateError(
                f"cannot register {what}: the runtime is already {self._phase.value};"
                " register services and plugins before initialize()"
            )

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        """Registered plugins, in order."""
        return tuple(self._plugins)

    @property
    def services(self) -> tuple[object, ...]:
        """Registered services, in order."""
        return tuple(self._services)

    @property
    def providers(self) -> tuple[Provider, ...]:
        """Registered providers, in the order their output is merged."""
        return tuple(self._providers)

    def get_service(self, name: str) -> object | None:
        """The first registered service called *name* (its ``name`` or class name), or None."""
        return next((s for s in self._services if _service_name(s) == name), None)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        """True between a successful :meth:`initialize` and :meth:`aclose`."""
        return self._phase is _Phase.READY

    async def initialize(self) -> None:
        """Start the services, choose :attr:`kv_service`, create the state cache and sessions.

        Idempotent (concurrent calls initialise once). If a step fails, what was
        started is stopped again and the runtime can be initialised later.

        Raises:
            RuntimeStateError: the runtime was closed.
            kvstore.ConfigError: a bad setting or ``KV_STORE_*`` variable.
        """
        if self._phase is _Phase.READY:
            return
        if self._init_lock is None:
            self._init_lock = anyio.Lock()
        async with self._init_lock:
            # Another task may have finished (or closed) while we waited.
            if self.initialized:
                return
            if self._phase is _Phase.CLOSED:
                raise RuntimeStateError("a closed runtime cannot be initialised again")
            state_ttl = seconds_setting(self.settings, "STATE_CACHE_TTL", DEFAULT_STATE_TTL)
            max_entries = count_setting(
                self.settings, "STATE_CACHE_MAX_ENTRIES", DEFAULT_STATE_CACHE_MAX_ENTRIES
            )
            try:
                for service in self._services:
                    if isinstance(service, Service):
                        await service.start(self)
                        self._started.append(service)
                self._kv_service = self._choose_kv_service(max_entries)
                self._state_cache = StateCache(
                    self._kv_service.get_store(STATE_CACHE_STORE), ttl=state_ttl
                )
                self._sessions = SessionManager(self, config=self.sessions_config)
            except BaseException:
                await self._teardown(reraise=False)
                self._kv_service = self._state_cache = self._sessions = None
                raise
            self._phase = _Phase.READY

    def _choose_kv_service(self, max_entries: int) -> KVStoreService:
        for service in self._services:
            if is_kv_store_service(service):
                self._owns_kv_service = False
                logger.info(
                    "agent %s: keeping state in registered service %r",
                    self.agent_id,
                    _service_name(service),
                )
                return service
        environ = os.environ if self._environ is None else self._environ
        backend = environ.get("KV_STORE_BACKEND", "").strip()
        bounded = {STATE_CACHE_STORE: {"max_entries": max_entries}}
        if backend:
            # Only the memory backend understands max_entries; SQLite and Redis
            # bound themselves through TTLs.
            options = {"store_options": bounded} if backend.lower() == "memory" else {}
            chosen: KVStoreService = service_from_env(environ, **options)
            # The URL may carry a password: log the backend name only.
            logger.info(
                "agent %s: keeping state in KV_STORE_BACKEND=%s (from the environment)",
                self.agent_id,
                backend,
            )
        else:
            chosen = StoreService(MemoryStore(), store_options=bounded)
            logger.info(
                "agent %s: no KV store service registered and KV_STORE_BACKEND unset;"
                " keeping state in memory (lost on restart, state_cache bounded to %d entries)",
                self.agent_id,
                max_entries,
            )
        self._owns_kv_service = True
        return chosen

    async def aclose(self) -> None:
        """Stop the started services (reverse order) and close a KV service we opened.

        A service the application registered is never closed here: its owner
        closes it. Idempotent. If a ``stop()`` hook fails, the others still run
        and the first error is raised at the end (the rest are logged).
        """
        if self._phase is _Phase.CLOSED:
            return
        self._phase = _Phase.CLOSED
        await self._teardown(reraise=True)

    async def _teardown(self, *, reraise: bool) -> None:
        errors: list[Exception] = []
        # Shielded: a cancelled caller must not leave services running.
        with anyio.CancelScope(shield=True):
            while self._started:
                service = self._started.pop()
                try:
                    await service.stop()
                except Exception as err:
                    logger.exception("agent %s: stopping service %r failed", self.agent_id, service)
                    errors.append(err)
            if self._owns_kv_service and self._kv_service is not None:
                self._owns_kv_service = False
                try:
                    await self._kv_service.aclose()
                except Exception as err:
                    logger.exception("agent %s: closing the KV store service failed", self.agent_id)
                    errors.append(err)
        if reraise and errors:
            raise errors[0]

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- what initialize() creates ---------------------------------------------------------

    @property
    def kv_service(self) -> KVStoreService:
        """The store service holding this agent's state (chosen by :meth:`initialize`)."""
        if self._kv_service is None:
            raise RuntimeStateError("kv_service is chosen by initialize(); call it first")
        return self._kv_service

    @property
    def state_cache(self) -> StateCache:
        """The composed states by message id, on the ``state_cache`` store."""
        if self._state_cache is None:
            raise RuntimeStateError("state_cache is created by initialize(); call it first")
        return self._state_cache

    @property
    def sessions(self) -> SessionManager:
        """The chat sessions of this agent, on the ``sessions`` store."""
        if self._sessions is None:
            raise RuntimeStateError("sessions are created by initialize(); call it first")
        return self._sessions

    # -- state and replies -------------------------------------------------------------------

    async def compose_state(self, message: Message) -> dict[str, Any]:
        """The state for *message*: every provider's dict merged, cached by ``message.id``.

        All providers run concurrently; their dicts are merged in registration
        order, so on a key clash the provider registered **later** wins. The
        result is stored in :attr:`state_cache` with its TTL, and a later call
        for the same message id returns the cached state without running the
        providers. Concurrent calls for one id in this process run the
        providers once; runtimes in other processes may run them again (the
        last write wins, which is harmless when providers are deterministic).

        Raises:
            RuntimeStateError: :meth:`initialize` was not called.
            ProviderError: a provider raised or returned a non-mapping; the
                other providers are cancelled and nothing is cached.
            kvstore.SerializationError: the merged state is not JSON-compatible.
        """
        if not isinstance(message, Message):
            raise TypeError(f"compose_state() takes a Message, not {type(message).__name__}")
        cache = self.state_cache
        # Every call takes the per-id lock (cheap, in-process), so a cache miss
        # costs one store read and concurrent callers wait for the first one.
        inflight = self._inflight.get(message.id)
        if inflight is None:
            inflight = self._inflight[message.id] = _Inflight()
        inflight.users += 1
        try:
            async with inflight.lock:
                cached = await cache.get(message.id)
                if cached is not None:
                    return cached
                state = await self._run_providers(message)
                await cache.set(message.id, state)
                return state
        finally:
            inflight.users -= 1
            if not inflight.users:
                del self._inflight[message.id]

    async def _run_providers(self, message: Message) -> dict[str, Any]:
        providers = list(self._providers)
        results: list[Mapping[str, Any]] = [{} for _ in providers]
        failures: list[tuple[Provider, Exception]] = []

        async def run(index: int, provider: Provider) -> None:
            try:
                result = await provider(self, message)
                if not isinstance(result, Mapping):
                    raise TypeError(f"returned a {type(result).__name__}, not a dict")
                results[index] = result
            except Exception as err:
                failures.append((provider, err))
                # The state is unusable without this provider: stop the others.
                group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            for index, provider in enumerate(providers):
                group.start_soon(run, index, provider, name=f"provider {_callable_name(provider)}")
        if failures:
            provider, err = failures[0]
            others = f" ({len(failures) - 1} more failed)" if len(failures) > 1 else ""
            raise ProviderError(
                f"provider {_callable_name(provider)!r} failed composing the state of message"
                f" {message.id!r}: {err!r}{others}"
            ) from err
        state: dict[str, Any] = {}
        for result in results:
            state.update(result)
        return state

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        """The agent's reply to *message* given its *state*, from :attr:`handler`.

        A handler that streams (an async generator) gives the concatenation of
        its pieces.

        Raises:
            TypeError: the handler gave something other than a str (or str pieces).
        """
        return "".join([piece async for piece in self.stream_reply(message, state)])

    async def stream_reply(self, message: Message, state: dict[str, Any]) -> AsyncIterator[str]:
        """The agent's reply to *message* in pieces, as :attr:`handler` makes them.

        An async generator handler's pieces are yielded as they come (empty ones
        skipped); a handler returning a str gives one piece.

        Raises:
            TypeError: the handler gave something other than a str (or str pieces).

        >>> async for piece in runtime.stream_reply(message, state):  # doctest: +SKIP
        ...     print(piece, end="")
        """
        made = self.handler(self, message, state)
        if isinstance(made, AsyncIterator):
            # aclosing: a consumer that stops early (a client gone) closes the
            # handler's generator now, not whenever it is collected.
            async with _closing(made) as pieces:
                async for piece in pieces:
                    if not isinstance(piece, str):
                        raise TypeError(
                            f"handler {_callable_name(self.handler)!r} yielded a"
                            f" {type(piece).__name__}; reply pieces must be str"
                        )
                    if piece:
                        yield piece
            return
        reply = await made
        if not isinstance(reply, str):
            raise TypeError(
                f"handler {_callable_name(self.handler)!r} returned a"
                f" {type(reply).__name__}; a reply must be a str"
            )
        yield reply

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.agent_id!r} {self._phase.value},"
            f" {len(self._services)} services, {len(self._providers)} providers>"
        )


@asynccontextmanager
async def _closing(pieces: AsyncIterator[str]) -> AsyncIterator[AsyncIterator[str]]:
    """*pieces*, closed on exit when it is an async generator (``contextlib.aclosing``)."""
    if isinstance(pieces, AsyncGenerator):
        async with aclosing(pieces):
            yield pieces
    else:
        yield pieces


def _callable_name(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)
