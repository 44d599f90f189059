"""What a plugin brings to an agent runtime: services and state providers.

A :class:`Plugin` groups the services and providers of one feature. Services
are registered with the runtime **before** :meth:`AgentRuntime.initialize`
(the runtime picks its key-value service among them then); providers add
entries to the state the runtime composes for each message.

>>> async def clock(runtime, message):
...     return {"received_at": message.created_at}
>>> plugin = Plugin("clock", providers=[clock])
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from kvstore import KVStoreService

from .errors import ProviderError, RuntimeStateError
from .messages import Message
from .state import StateCache

__all__ = [
    "Handler",
    "Plugin",
    "PluginRuntime",
    "Provider",
    "ProviderError",
    "RuntimeStateError",
    "Service",
    "service_name",
]


class PluginRuntime(Protocol):
    """What services, providers and handlers can count on from the runtime running them.

    :class:`~runtime.AgentRuntime` satisfies it. Plugin code may annotate its
    ``runtime`` parameter with this protocol (it then works with any runtime
    offering these members) or with ``AgentRuntime``.
    """

    @property
    def agent_id(self) -> str:
        """The agent's id."""
        ...

    @property
    def settings(self) -> dict[str, str | int | float]:
        """The runtime's settings."""
        ...

    @property
    def kv_service(self) -> KVStoreService:
        """The store service holding the agent's state."""
        ...

    @property
    def state_cache(self) -> StateCache:
        """The composed states by message id."""
        ...

    def get_service(self, name: str) -> object | None:
        """The first registered service called *name*, or None."""
        ...


# The runtime parameter is Any, not PluginRuntime: a Callable's parameters are
# contravariant, so a provider annotated `(runtime: AgentRuntime, ...)` would
# not be accepted as a `Callable[[PluginRuntime, ...], ...]`.
Provider: TypeAlias = Callable[[Any, Message], Awaitable[Mapping[str, Any]]]
"""An async callable ``(runtime, message) -> dict`` contributing to a message's state.

*runtime* is the :class:`PluginRuntime` (an ``AgentRuntime``) composing the state.
"""

Handler: TypeAlias = Callable[[Any, Message, dict[str, Any]], Awaitable[str] | AsyncIterator[str]]
"""The agent's reply to a message: ``(runtime, message, state)`` giving it.

Either an async function returning the reply as a ``str``, or an async
generator yielding it in pieces (the reply is their concatenation; the SSE and
Socket.IO transports send each piece as it comes, as a ``chunk``).
*runtime* is the :class:`PluginRuntime` (an ``AgentRuntime``) replying.
"""


class Service:
    """Base class for the long-lived services a plugin registers.

    Subclasses set ``name`` (a class attribute defaulting to the class name,
    or an instance attribute) and may override :meth:`start` and :meth:`stop`; the runtime awaits
    ``start`` during :meth:`~AgentRuntime.initialize`, in registration order,
    and ``stop`` during :meth:`~AgentRuntime.aclose`, in reverse order.

    Deriving from this class is optional: any object can be registered, and one
    satisfying :class:`kvstore.KVStoreService` becomes the runtime's store service.
    Only instances of this class get their hooks called.

    >>> class Greeter(Service):
    ...     name = "greeter"
    ...     async def start(self, runtime):
    ...         self.agent_id = runtime.agent_id
    """

    name: str = "Service"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    # Any for the reason given at Provider: subclasses annotate the runtime as
    # AgentRuntime or PluginRuntime, and an override may not narrow its parameter.
    async def start(self, runtime: Any) -> None:
        """Called once by ``runtime.initialize()`` with that runtime (a :class:`PluginRuntime`).

        The default does nothing.
        """

    async def stop(self) -> None:
        """Called once by ``runtime.aclose()`` if :meth:`start` succeeded; does nothing."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def service_name(service: object) -> str:
    """The name a service is known by: its ``name`` attribute, else its class name."""
    name = getattr(service, "name", None)
    return name if isinstance(name, str) and name else type(service).__name__


@dataclass
class Plugin:
    """A named bundle of services and providers, given to ``AgentRuntime(plugins=...)``.

    Attributes:
        name: the plugin's name (for logs and error messages).
        services: objects registered as services, in order; the first one that
            satisfies :class:`kvstore.KVStoreService` holds the runtime's state.
        providers: async callables ``(runtime, message) -> dict`` run for every
            message whose state is composed.
        description: free text.
    """

    name: str
    services: list[object] = field(default_factory=list)
    providers: list[Provider] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a plugin needs a non-empty str name, got {self.name!r}")
        # Copy, so a caller's list mutated later does not change the plugin.
        self.services = list(self.services)
        self.providers = list(self.providers)
        for provider in self.providers:
            if not callable(provider):
                raise TypeError(
                    f"plugin {self.name!r}: a provider must be an async callable"
                    f" (runtime, message) -> dict, not {type(provider).__name__}"
                )
