"""Locks on a store: a lease on one key, exclusive across tasks and processes.

``store.lock(name, ttl=...)`` returns a :class:`StoreLock`. Acquiring it
stores a random token under the key *name* only if that key is absent (the
backend's atomic ``add``, on Redis ``SET NX PX``), with *ttl* as the key's TTL:
a holder that dies without releasing leaves a lock that expires by itself.
Releasing deletes the key only if it still holds this holder's token, in one
atomic step (on Redis a compare-and-delete script), so a holder whose lock
expired can never remove another holder's lock.

The lock is as exclusive as the store is shared: across processes on one SQLite
file or one Redis server or cluster, within one process for a
:class:`~kvstore.MemoryStore`.

>>> async with store.lock("reindex", ttl=30, timeout=5):  # doctest: +SKIP
...     await reindex()
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Self

import anyio

from .codec import check_ttl
from .errors import LockNotOwnedError, LockTimeoutError
from .options import check_bool, check_seconds

__all__ = ["StoreLock"]

FIRST_PAUSE: Final = 0.002
"""Seconds a blocked acquirer waits before its second try; doubled up to :data:`MAX_PAUSE`."""
MAX_PAUSE: Final = 0.05
"""The longest pause between two tries, so a freed lock is noticed within about this long."""
_CLEANUP_TIMEOUT: Final = 5.0


class StoreLock:
    """A lock on the key *name* of a store; use ``async with`` or :meth:`acquire`/:meth:`release`.

    Built by ``store.lock(name, ttl=..., timeout=None, blocking=True)``; a
    custom store can build one from its own two atomic steps.

    Args:
        name: the lock's name, also the key that holds it while it is held.
        ttl: seconds after which a lock that was not released expires.
        timeout: seconds to keep trying to acquire (None: no limit); then
            :class:`~kvstore.LockTimeoutError`.
        blocking: False tries once and raises :class:`~kvstore.LockTimeoutError`
            at once if the lock is held (a *timeout* is then refused).
        acquire: ``acquire(token)`` stores *token* under the lock's key with
            the TTL unless the key is live, atomically; True if it did.
        release: ``release(token)`` deletes the key if it holds *token*,
            atomically; True if it did.

    A blocked acquirer polls, with pauses growing from :data:`FIRST_PAUSE` to
    :data:`MAX_PAUSE` (randomised, so waiters do not move in step); there is
    no queue, so waiters are not served in arrival order. One ``StoreLock``
    is held by one holder at a time; make one per holder.
    """

    def __init__(
        self,
        name: str,
        *,
        ttl: float,
        timeout: float | None = None,
        blocking: bool = True,
        acquire: Callable[[str], Awaitable[bool]],
        release: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._name = name
        self._ttl = check_ttl(ttl)
        self._blocking = check_bool("blocking", blocking)
        if timeout is not None:
            if not blocking:
                raise ValueError("a non-blocking lock takes no timeout: it tries once")
            timeout = check_seconds("timeout", timeout, allow_zero=True)
        self._timeout = timeout
        self._acquire = acquire
        self._release = release
        self._token: str | None = None

    @property
    def name(self) -> str:
        """The lock's name (the key it is held under)."""
        return self._name

    @property
    def ttl(self) -> float:
        """Seconds after which an unreleased lock expires."""
        return self._ttl

    @property
    def held(self) -> bool:
        """True from a successful :meth:`acquire` to :meth:`release` (the TTL is not checked)."""
        return self._token is not None

    async def acquire(self) -> None:
        """Take the lock, waiting as the lock's ``timeout`` and ``blocking`` allow.

        Raises:
            LockTimeoutError: the lock stayed held by another holder.
            RuntimeError: this object holds the lock already.
        """
        if self._token is not None:
            raise RuntimeError(f"lock {self._name!r} is already held by this StoreLock")
        token = secrets.token_hex(16)
        deadline = None if self._timeout is None else anyio.current_time() + self._timeout
        pause = FIRST_PAUSE
        while not await self._try(token):
            now = anyio.current_time()
            if not self._blocking or (deadline is not None and now >= deadline):
                waited = "" if not self._blocking else f" within {self._timeout:g} s"
                raise LockTimeoutError(f"lock {self._name!r} is held by another holder{waited}")
            delay = random.uniform(pause / 2, pause)
            await anyio.sleep(delay if deadline is None else min(delay, deadline - now))
            pause = min(pause * 2, MAX_PAUSE)
        self._token = token

    async def _try(self, token: str) -> bool:
        try:
            return await self._acquire(token)
        except BaseException:
            # Cancelled (or failed) with the request possibly applied: give back
            # what may be ours rather than leave it held until its TTL.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT):
                try:
                    await self._release(token)
                except Exception:
                    pass  # the error that brought us here is the one to report
            raise

    async def release(self) -> None:
        """Give the lock back.

        Raises:
            LockNotOwnedError: the lock expired before this call (another holder
                may have it now; it is left alone).
            RuntimeError: this object does not hold the lock.
        """
        token = self._token
        if token is None:
            raise RuntimeError(f"lock {self._name!r} is not held by this StoreLock")
        self._token = None
        if not await self._release(token):
            raise LockNotOwnedError(
                f"lock {self._name!r} expired (ttl={self._ttl:g} s) before it was released;"
                " another holder may have taken it"
            )

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.release()
        except LockNotOwnedError as err:
            if exc is None:
                raise
            # The block's own error is the one to see; say the lock was lost too.
            exc.add_note(str(err))

    def __repr__(self) -> str:
        state = "held" if self.held else "not held"
        return f"<{type(self).__name__} {self._name!r} ttl={self._ttl:g} {state}>"
