"""langchain-tests' standard BaseStore suites on KVLangChainStore, every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests import BaseStoreAsyncTests, BaseStoreSyncTests

from kvstore import open_store
from kvstore.integrations.langchain import KVLangChainStore

THREE_VALUES = ({"text": "foo", "n": [1, 2]}, b"\x00bar\xff", "buzz")


class TestKVLangChainStoreSync(BaseStoreSyncTests[Any]):
    """The sync suite: every call crosses the store's blocking portal."""

    @pytest.fixture
    def kv_store(self, store_url: str) -> Iterator[KVLangChainStore]:
        with KVLangChainStore(open_store(store_url), owns_store=True) as store:
            yield store

    @pytest.fixture
    def three_values(self) -> tuple[Any, Any, Any]:
        return THREE_VALUES


class TestKVLangChainStoreAsync(BaseStoreAsyncTests[Any]):
    """The async suite, on the test's own event loop."""

    @pytest.fixture
    async def kv_store(self, store_url: str) -> AsyncIterator[KVLangChainStore]:
        async with KVLangChainStore(open_store(store_url), owns_store=True) as store:
            yield store

    @pytest.fixture
    def three_values(self) -> tuple[Any, Any, Any]:
        return THREE_VALUES
