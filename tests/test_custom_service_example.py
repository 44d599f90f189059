"""examples/custom_service.py: it runs, and its service passes the shipped KVStore contract."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kvstore import InvalidKeyError, KVStoreService, StoreClosedError, is_kv_store_service
from kvstore.testing import ContractBackend, KVStoreContract, ManualClock
from runtime import AgentRuntime, Message, Plugin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custom_service.py"
SMALL_LIMIT = 64 * 1024  # keeps the oversize contract test cheap


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_service_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


def test_example_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KV_STORE_BACKEND", None)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    state = {
        "user": {"session": "demo-session", "words": 4},
        "weather": {"city": "Lisbon", "celsius": 21, "sky": "sunny"},
    }
    assert lines["is a KVStoreService"] == "True"
    assert lines["kv service"] == "FileKVStoreService"
    assert json.loads(lines["state"]) == state
    assert lines["cached state equal"] == "True"
    assert lines["reply"] == "Echo: Will it rain today?"
    stored = json.loads(lines["file content"])
    assert stored["entries"]["msg-1"]["value"] == state
    expires_at = stored["entries"]["msg-1"]["expires_at"]
    assert 0 < expires_at - time.time() <= 600  # STATE_CACHE_TTL reached the file
    # One miss then one write, then one hit (the second compose_state).
    assert lines["metrics"] == "gets=2 hits=1 misses=1 sets=1"
    assert lines["entries"] == "['msg-1']"
    assert json.loads(lines["after restart"]) == state
    assert done.stderr == ""


# -- the contract -------------------------------------------------------------------------------


class TestFileServiceContract(KVStoreContract):
    @pytest.fixture
    def kv_backend(self, tmp_path: Path) -> ContractBackend:
        clock = ManualClock(start=time.time())

        def open_service(default_ttl: float | None = None) -> KVStoreService:
            service: KVStoreService = example.FileKVStoreService(
                tmp_path / "stores",
                default_ttl=default_ttl,
                clock=clock,
                max_value_bytes=SMALL_LIMIT,
            )
            return service

        return ContractBackend(
            open_service, advance=clock.advance, ttl_unit=10.0, max_value_bytes=SMALL_LIMIT
        )


# -- what the contract does not cover: files and restarts ----------------------------------------


@pytest.mark.anyio
async def test_state_survives_a_restart_and_files_are_atomic(tmp_path: Path) -> None:
    directory = tmp_path / "kv"
    service = example.FileKVStoreService(directory)
    assert is_kv_store_service(service)
    message = Message(id="m1", session_id="s", role="user", content="hi", created_at=1.0)

    async def provider(runtime: AgentRuntime, message: Message) -> dict[str, Any]:
        return {"seen": message.content}

    async with AgentRuntime(plugins=[Plugin("files", services=[service], providers=[provider])]):
        pass
    async with AgentRuntime(
        plugins=[Plugin("files", services=[service], providers=[provider])]
    ) as runtime:
        await runtime.compose_state(message)
    await service.aclose()
    with pytest.raises(StoreClosedError):
        service.get_store("state_cache")
    # Only final files are left: every temp file was renamed over its target.
    assert sorted(p.name for p in directory.iterdir()) == ["state_cache.json"]

    reopened = example.FileKVStoreService(directory)
    assert await reopened.get_store("state_cache").get("m1") == {"seen": "hi"}
    await reopened.aclose()


@pytest.mark.anyio
async def test_ttl_survives_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(start=time.time())
    service = example.FileKVStoreService(tmp_path, clock=clock)
    await service.get_store("s").set("k", 1, ttl=100)
    await service.aclose()
    clock.advance_by(60)
    reopened = example.FileKVStoreService(tmp_path, clock=clock)
    remaining = await reopened.get_store("s").ttl("k")
    assert remaining == pytest.approx(40)
    clock.advance_by(41)
    assert await reopened.get_store("s").get("k") is None
    await reopened.aclose()


@pytest.mark.anyio
async def test_corrupt_file_is_a_serialization_error(tmp_path: Path) -> None:
    from kvstore import SerializationError

    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    service = example.FileKVStoreService(tmp_path)
    with pytest.raises(SerializationError, match=r"broken\.json"):
        await service.get_store("broken").get("k")
    with pytest.raises(InvalidKeyError):
        service.get_store("../escape")
    await service.aclose()
