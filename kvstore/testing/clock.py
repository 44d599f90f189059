"""A clock for tests that only moves when told to.

This module needs nothing but the standard library (no pytest), so code outside
a test suite (examples, benchmarks, a REPL) can drive a store's clock with it.
"""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """A clock that only moves when told to; pass it as a store's ``clock``.

    >>> clock = ManualClock()
    >>> clock.advance_by(5)
    >>> clock()
    1005.0
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance_by(self, seconds: float) -> None:
        """Move the clock forward by *seconds*."""
        self.now += seconds

    async def advance(self, seconds: float) -> None:
        """Async form of :meth:`advance_by`, usable as ``ContractBackend.advance``."""
        self.advance_by(seconds)
