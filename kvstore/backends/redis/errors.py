"""Which redis-py errors mean what: worth a retry, a refusal, or a failed command.

:func:`classify` sorts a driver error into a :class:`Fault`, and
:func:`store_error` words the :mod:`kvstore` error a caller sees for it; the
retry policy (:mod:`.retry`) decides when to stop retrying. Adding a kind of
error (a Redis refusing writes, say) means a line in :func:`classify`.
"""

from __future__ import annotations

import enum
from typing import Final

import redis.exceptions
from redis.asyncio.cluster import ClusterNode

from ...errors import BackendUnavailableError, KVStoreError

__all__ = [
    "DRIVER_ERRORS",
    "UNREACHABLE",
    "Fault",
    "as_driver_error",
    "classify",
    "lost_while_watching",
    "store_error",
]

DRIVER_ERRORS: Final = (
    redis.exceptions.RedisError,
    # RedisClusterException does not derive from RedisError.
    redis.exceptions.RedisClusterException,
    OSError,
)
"""Everything redis-py raises for a command; the store wraps each in a :class:`KVStoreError`."""

UNREACHABLE: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
"""The errors that say a node could not be reached or did not answer."""

# Errors that mean "the server could not be reached or did not answer": worth
# retrying. redis-py wraps most socket errors in its ConnectionError, but not
# all, and the builtin TimeoutError is an OSError.
_TRANSIENT: Final = (
    *UNREACHABLE,
    # Cluster only: CLUSTERDOWN/MASTERDOWN, TRYAGAIN during resharding, a redirect
    # loop, and RedisClusterException, which redis-py raises when no node answers
    # or a slot has no owner. The store sends no cross-slot command, so no other
    # RedisClusterException can reach it (the two that could are excluded below).
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
)
# A server that is up but will not take writes: over its maxmemory under
# noeviction (OOM), or a replica (READONLY). Retrying at once cannot help.
_REFUSING_WRITES: Final = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)
# Cluster transaction errors (redis-py >= 6 only): bugs, not outages.
_BUGS: Final[tuple[type[Exception], ...]] = tuple(
    getattr(redis.exceptions, name)
    for name in ("CrossSlotTransactionError", "InvalidPipelineStack")
    if hasattr(redis.exceptions, name)
)


class Fault(enum.Enum):
    """What a driver error says about the backend."""

    TRANSIENT = enum.auto()
    """Not reached, no answer in time, or a cluster in flux: retry, then unavailable."""
    REFUSED = enum.auto()
    """Reachable but refusing us (credentials, OOM, a read-only replica): unavailable at once."""
    FAILED = enum.auto()
    """The command itself failed (``WRONGTYPE``, a bug): a :class:`KVStoreError` at once."""


def classify(err: BaseException) -> Fault:
    """The :class:`Fault` a driver error stands for."""
    if isinstance(err, (redis.exceptions.AuthenticationError, *_REFUSING_WRITES)):
        return Fault.REFUSED
    if isinstance(err, _TRANSIENT) and not isinstance(err, _BUGS):
        return Fault.TRANSIENT
    if lost_while_watching(err):
        return Fault.TRANSIENT
    return Fault.FAILED


def lost_while_watching(err: BaseException) -> bool:
    """True for the ``WatchError`` redis-py raises when a WATCHing connection broke.

    redis-py reports a write conflict ("Watched variable changed.") and a
    connection lost while a key was watched ("A ConnectionError occurred while
    watching one or more keys") with the same class; the second is raised
    while handling the connection error, which is its ``__context__``.
    """
    if not isinstance(err, redis.exceptions.WatchError):
        return False
    return isinstance(err.__context__, UNREACHABLE) or "occurred while watching" in str(err)


def store_error(
    err: BaseException, fault: Fault, *, location: str, what: str, attempts: int
) -> KVStoreError:
    """The error a caller sees once *err* is final (the caller chains it: ``from err``).

    *location* is the backend's redacted URL, *what* the command or
    transaction, *attempts* how many times it was sent.
    """
    if fault is Fault.REFUSED:
        if isinstance(err, _REFUSING_WRITES):
            return BackendUnavailableError(f"Redis at {location} refused the write ({what}): {err}")
        return BackendUnavailableError(f"Redis at {location} refused the credentials: {err}")
    if fault is Fault.FAILED:
        return KVStoreError(f"Redis {what} failed: {err}")
    return BackendUnavailableError(
        f"Redis at {location} is unavailable: {what} failed {attempts} time(s),"
        f" last with {type(err).__name__}{_failed_node(err)}: {err}"
    )


def as_driver_error(err: Exception) -> Exception:
    """*err*, or the ``ConnectionError`` an ``AttributeError``/``TypeError`` stands for.

    After a node error redis-py closes that node's idle connections and may
    close one another task has just taken: the write then fails inside the
    transport with one of those two (the leak redis-py issue #4287 describes
    for connections the peer closed). Around calls into a cluster client they
    mean a broken connection, which is worth a retry.
    """
    if not isinstance(err, AttributeError | TypeError):
        return err
    broken = redis.exceptions.ConnectionError(
        f"the connection broke during the command ({type(err).__name__}: {err})"
    )
    broken.__cause__ = err
    return broken


def _failed_node(err: BaseException) -> str:
    """ " from node HOST:PORT" when redis-py tells which cluster node failed."""
    node = getattr(err, "connection", None)
    return f" from node {node.name}" if isinstance(node, ClusterNode) else ""
