"""Test support shipped with kvstore: the contract suite, a manual clock, Redis launchers.

* :class:`ManualClock` (:mod:`kvstore.testing.clock`) needs only the standard
  library: ``from kvstore.testing import ManualClock`` works without pytest.
* :class:`KVStoreContract` and :class:`ContractBackend`
  (:mod:`kvstore.testing.contract`) are the contract suite every backend and
  wrapper passes; they need pytest and are imported on first access.
* :mod:`kvstore.testing.redis_server` and :mod:`kvstore.testing.redis_cluster`
  start throwaway ``redis-server`` processes and clusters on loopback.

Run the contract against your own service::

    import pytest
    from kvstore.testing import ContractBackend, KVStoreContract

    class TestMyService(KVStoreContract):
        @pytest.fixture
        def kv_backend(self, tmp_path):
            return ContractBackend(lambda default_ttl=None: MyService(tmp_path, default_ttl))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from .clock import ManualClock

if TYPE_CHECKING:
    from .contract import ContractBackend, KVStoreContract

__all__ = ["ContractBackend", "KVStoreContract", "ManualClock"]

# Importing the contract imports pytest, so it waits until a name is asked for
# (the contract's sample values too: kvstore.testing.JSON_VALUES and the like).
_CONTRACT_NAMES: Final = frozenset(
    ("ContractBackend", "KVStoreContract", "JSON_VALUES", "BAD_KEYS", "BAD_TTLS", "BAD_VALUES")
)


def __getattr__(name: str) -> Any:
    if name in _CONTRACT_NAMES:
        return getattr(importlib.import_module(".contract", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
