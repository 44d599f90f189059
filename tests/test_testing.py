"""kvstore.testing: the manual clock works without pytest, the contract is imported on demand.

The pytest-free checks run in a fresh interpreter whose import system refuses
pytest (a ``sys.meta_path`` finder), as on a machine where it is not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import kvstore.testing
import kvstore.testing.contract

# Prepended to each child's code: any import of pytest fails as if it were missing.
_BLOCK_PYTEST = """
import importlib.abc
import sys


class _NoPytest(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("pytest", "_pytest"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoPytest())
"""


def _run_without_pytest(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_PYTEST + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_manual_clock_works_without_pytest() -> None:
    result = _run_without_pytest(
        """
        import anyio

        from kvstore import MemoryStore
        from kvstore.testing import ManualClock

        clock = ManualClock()
        store = MemoryStore(clock=clock)


        async def main() -> None:
            await store.set("k", 1, ttl=5)
            clock.advance_by(4.5)
            assert await store.get("k") == 1
            clock.advance_by(1)
            assert await store.get("k") is None


        anyio.run(main)
        assert not any(name.partition(".")[0] in ("pytest", "_pytest") for name in sys.modules)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_contract_suite_is_what_needs_pytest() -> None:
    # Shows the blocker works: asking for the contract imports pytest, and fails.
    result = _run_without_pytest(
        """
        import kvstore.testing

        try:
            kvstore.testing.KVStoreContract
        except ModuleNotFoundError as err:
            print("missing", err.name)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "missing pytest"


def test_contract_names_come_from_the_contract_module() -> None:
    for name in ("KVStoreContract", "ContractBackend", "JSON_VALUES", "BAD_KEYS"):
        assert getattr(kvstore.testing, name) is getattr(kvstore.testing.contract, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        kvstore.testing.no_such_name  # noqa: B018 - the attribute access is the test
