"""The retry policy of every Redis command and transaction, in one place.

A command that fails with a :attr:`~.errors.Fault.TRANSIENT` error is sent
again after ``retry_backoff`` seconds, doubled for each next retry (at most
:data:`MAX_BACKOFF`), up to ``retries`` times; the connection is told before
each retry (a cluster re-reads its slot map). Then the caller gets
:class:`~kvstore.BackendUnavailableError`, with the last driver error as its
``__cause__``. Other errors are final at once (see :mod:`.errors`).

redis-py's own retrying is switched off on every client the store builds, so
this is the only policy in force.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from ...options import check_int, check_seconds
from .errors import DRIVER_ERRORS, Fault, classify, store_error

__all__ = ["MAX_BACKOFF", "RetryPolicy", "RetryTarget"]

_T = TypeVar("_T")

MAX_BACKOFF: Final = 2.0
"""The longest pause between two attempts, in seconds."""


class RetryTarget(Protocol):
    """What the policy needs of a connection."""

    @property
    def location(self) -> str:
        """The backend's URL, password redacted, for messages."""
        ...

    async def refresh(self) -> None:
        """Called before each retry."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and how long apart, a failed command is sent again.

    >>> policy = RetryPolicy(retries=3, backoff=0.05, target=connection)  # doctest: +SKIP
    >>> await policy.run(lambda: client.ping(), "PING")  # doctest: +SKIP
    """

    retries: int
    """Retries after the first attempt (0: none)."""
    backoff: float
    """Seconds before the first retry, doubled for each next one."""
    target: RetryTarget

    def __post_init__(self) -> None:
        check_int("retries", self.retries, minimum=0)
        check_seconds("retry_backoff", self.backoff, allow_zero=True)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number *attempt* + 1."""
        return min(self.backoff * 2.0**attempt, MAX_BACKOFF)

    async def run(self, operation: Callable[[], Awaitable[_T]], what: str) -> _T:
        """Await ``operation()``, retrying it as configured; *what* names it in messages."""
        try:
            return await operation()
        except DRIVER_ERRORS as err:
            return await self.resume(operation, err, what)

    async def resume(
        self, operation: Callable[[], Awaitable[_T]], err: BaseException, what: str
    ) -> _T:
        """Carry on after the first attempt of *operation* failed with *err*.

        Callers on a hot path make the first attempt themselves, so that a
        command that succeeds costs no closure and no extra frame.
        """
        attempt = 0
        while True:
            fault = classify(err)
            if fault is not Fault.TRANSIENT or attempt >= self.retries:
                location = self.target.location
                raise store_error(
                    err, fault, location=location, what=what, attempts=attempt + 1
                ) from err
            await self.target.refresh()
            await asyncio.sleep(self.delay(attempt))
            attempt += 1
            try:
                return await operation()
            except DRIVER_ERRORS as failure:
                err = failure
