"""The exception hierarchy of :mod:`kvstore`.

Every error raised on purpose by a store derives from :class:`KVStoreError` and
also from the builtin exception a caller would naturally catch, so both
``except KVStoreError`` and ``except ValueError`` work.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "InvalidKeyError",
    "InvalidTTLError",
    "KVStoreError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "SerializationError",
    "StoreClosedError",
    "UnsupportedBackendError",
    "UpdateConflictError",
    "ValueTooLargeError",
]


class KVStoreError(Exception):
    """Base class of every error raised by :mod:`kvstore`."""


class InvalidKeyError(KVStoreError, ValueError):
    """A key, prefix or store name is not acceptable (wrong type, empty, too long, NUL)."""


class InvalidTTLError(KVStoreError, ValueError):
    """A TTL is not a finite number of seconds greater than zero."""


class SerializationError(KVStoreError, TypeError):
    """A value cannot be encoded (or stored bytes cannot be decoded) by the store's codec."""


class ValueTooLargeError(KVStoreError, ValueError):
    """An encoded value is larger than the store's ``max_value_bytes``."""


class BackendUnavailableError(KVStoreError, ConnectionError):
    """The backend could not be reached after the configured retries.

    The driver's own exception is chained as ``__cause__``.
    """


class UnsupportedBackendError(KVStoreError, ValueError):
    """A store URL uses a scheme no backend handles."""


class ConfigError(KVStoreError, ValueError):
    """A configuration value (usually an environment variable) is malformed."""


class StoreClosedError(KVStoreError, RuntimeError):
    """An operation was attempted on a store (or service) after ``aclose()``."""


class UpdateConflictError(KVStoreError):
    """``update()`` gave up: other clients kept changing the key between its read and write.

    Raised by backends that update optimistically (Redis, one server or a cluster:
    compare-and-set) once their conflict retries run out. Nothing was stored by
    the failed call; retrying later is safe.
    """


class LockTimeoutError(KVStoreError, TimeoutError):
    """A lock could not be acquired within its ``timeout`` (or at once, with ``blocking=False``)."""


class LockNotOwnedError(KVStoreError, RuntimeError):
    """A lock was released after its TTL ran out, so it no longer belonged to its holder.

    Another holder may have taken it meanwhile; whatever the lock protected was
    not exclusive for the whole block. The other holder's lock is left alone.
    """
