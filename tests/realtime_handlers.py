"""Reply handlers for the realtime tests, loaded by ``python -m runtime serve --handler``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio

from runtime import Message


async def gated(runtime: Any, message: Message, state: dict[str, Any]) -> str:
    """Echo, once the file named by ``REALTIME_GATE`` exists (the test opens the gate)."""
    gate = anyio.Path(os.environ["REALTIME_GATE"])
    # Another process opens it: there is no event to wait on, so poll.
    while not await gate.exists():  # noqa: ASYNC110
        await anyio.sleep(0.02)
    return f"Echo: {message.content}"


async def pieces(runtime: Any, message: Message, state: dict[str, Any]) -> AsyncIterator[str]:
    """Echo in three pieces."""
    for piece in ("Echo", ": ", message.content):
        yield piece


async def broken(runtime: Any, message: Message, state: dict[str, Any]) -> str:
    """A model that is down."""
    raise RuntimeError("model unavailable at 10.0.0.7")
