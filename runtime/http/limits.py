"""ElizaOS's session limits: the ``SESSION_*`` settings HTTP input is clamped to.

The real server reads them once at start with ``safeParseInt(value, fallback,
min, max)``: empty → the default, out of range → clamped with a warning. Two
deliberate differences: a value that is not a number stops ``serve`` (ElizaOS
warns and uses the default), and ``SESSION_MIN_TIMEOUT_MINUTES`` may be
fractional, so expiry can be tested on a real server process in seconds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from kvstore import ConfigError

__all__ = ["ENV_BOUNDS", "SessionLimits"]

logger = logging.getLogger(__name__)

ENV_BOUNDS: Final[dict[str, tuple[float, float, float]]] = {
    "SESSION_DEFAULT_TIMEOUT_MINUTES": (30, 1, 10080),
    "SESSION_MIN_TIMEOUT_MINUTES": (5, 0, 60),
    "SESSION_MAX_TIMEOUT_MINUTES": (1440, 60, 10080),
    "SESSION_MAX_DURATION_MINUTES": (720, 60, 20160),
    "SESSION_WARNING_THRESHOLD_MINUTES": (5, 1, 60),
    "SESSION_CLEANUP_INTERVAL_MINUTES": (5, 1, 60),
}
"""``{variable: (default, lowest, highest)}`` as ElizaOS 1.7.2 reads them."""


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The bounds and defaults HTTP timeout input is clamped to (minutes).

    Attributes:
        default_timeout: ``timeoutMinutes`` when none (or NaN) is sent.
        min_timeout: the lowest ``timeoutMinutes`` (fractional allowed here).
        max_timeout: the highest ``timeoutMinutes``; ``maxDurationMinutes``
            may reach twice it.
        max_duration: ``maxDurationMinutes`` when none is sent.
        warning_threshold: ``warningThresholdMinutes`` when none is sent.
        cleanup_interval: minutes between sweeps.
    """

    default_timeout: float = 30
    min_timeout: float = 5
    max_timeout: float = 1440
    max_duration: float = 720
    warning_threshold: float = 5
    cleanup_interval: float = 5

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SessionLimits:
        """The limits from ``SESSION_*`` variables in *environ*.

        Raises:
            ConfigError: a variable is set to something that is not a number.
        """
        values: list[float] = []
        for name, (default, lowest, highest) in ENV_BOUNDS.items():
            raw = environ.get(name, "").strip()
            if not raw:
                values.append(default)
                continue
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number of minutes, got {raw!r}") from None
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number of minutes, got {raw!r}")
            if name != "SESSION_MIN_TIMEOUT_MINUTES":
                value = float(math.trunc(value))
            clamped = min(max(value, lowest), highest)
            if name == "SESSION_MIN_TIMEOUT_MINUTES" and clamped <= 0:
                clamped = 1
            if clamped != value:
                logger.warning("%s=%s is out of range; using %g", name, raw, clamped)
            values.append(clamped)
        return cls(*values)

    def timeout(self, value: float) -> float:
        """*value* clamped to ``min_timeout..max_timeout``."""
        return min(max(value, self.min_timeout), self.max_timeout)
