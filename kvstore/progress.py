"""The progress display of ``python -m kvstore copy``: tqdm when installed, else one line.

:func:`open_progress` picks the display; the copy engine (:mod:`kvstore.copy`)
only calls back with counts, so it never writes to a terminal itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TextIO

__all__ = ["LineProgress", "Progress", "open_progress"]


class Progress(Protocol):
    """The part of a tqdm bar the copy uses."""

    def update(self, n: int) -> object:
        """Count *n* more entries done."""
        ...

    def close(self) -> object:
        """Finish the display."""
        ...


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """The fallback without tqdm: one stderr line, rewritten at most every *interval*.

    Nothing is shown until *delay* seconds have passed, so short runs stay quiet.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        desc: str,
        delay: float = 1.0,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._desc = desc
        self._delay = delay
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._last_shown: float | None = None
        self.count = 0

    def update(self, n: int) -> None:
        """Count *n* more entries and redraw the line if it is due."""
        self.count += n
        now = self._clock()
        if now - self._started < self._delay:
            return
        if self._last_shown is None or now - self._last_shown >= self._interval:
            self._draw(now)

    def close(self) -> None:
        """Draw the final count and end the line (only if anything was shown)."""
        if self._last_shown is not None or self._delay <= 0:
            self._draw(self._clock())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = now - self._started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        self._stream.write(f"\r{self._desc}: {self.count:,} keys ({rate:,.0f} keys/s)")
        self._stream.flush()
        self._last_shown = now


def open_progress(enabled: bool | None, *, desc: str, stream: TextIO) -> Progress:
    """A progress display on *stream*: tqdm when installed, else :class:`LineProgress`.

    *enabled* None means automatic: only on a terminal, and only once the work
    has taken a second. True shows it at once; False never.
    """
    if enabled is False or (enabled is None and not _isatty(stream)):
        return _NoProgress()
    delay = 1.0 if enabled is None else 0.0
    try:
        from tqdm import tqdm  # optional: the "cli" extra
    except ImportError:
        return LineProgress(stream, desc=desc, delay=delay)
    bar: Progress = tqdm(desc=desc, unit=" keys", file=stream, delay=delay, dynamic_ncols=True)
    return bar


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
