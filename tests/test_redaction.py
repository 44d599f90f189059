"""Passwords in store URLs never reach a message, whatever form the URL takes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kvstore import ConfigError, KVStoreError, open_store, service_from_env
from kvstore.redaction import redact_url

SECRET = "pw-S3CR3T"

FORMS = [
    f"redis://:{SECRET}@127.0.0.1:6379/0",
    f"redis://user:{SECRET}@127.0.0.1:6379/0",
    f"rediss://user:{SECRET}@h:6380/0?ssl_cert_reqs=none",
    f"http://:{SECRET}@127.0.0.1:6379/",
    f"redis+clusterx://:{SECRET}@127.0.0.1:7000/",
    f"redis://:{SECRET}?x@127.0.0.1:6379/0",
    f"redis://:{SECRET}#x@127.0.0.1:6379/0",
    f"redis://:{SECRET}/x@127.0.0.1:6379/0",
    f"redis://:a@{SECRET}@127.0.0.1:6379/0",
    f"redis://127.0.0.1:6379/0?password={SECRET}",
    f":{SECRET}@127.0.0.1:6379",
]


@pytest.mark.parametrize("url", FORMS)
def test_redact_hides_the_password(url: str) -> None:
    shown = redact_url(url)
    assert SECRET not in shown
    assert "***" in shown


def test_redact_keeps_what_is_not_secret() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://u:p@h:1/2?db=3") == "redis://u:***@h:1/2?db=3"
    assert redact_url("sqlite:///state.db") == "sqlite:///state.db"


@pytest.mark.parametrize("url", FORMS)
def test_errors_never_show_the_password(url: str) -> None:
    for attempt in (
        lambda: open_store(url),
        lambda: service_from_env({"KV_STORE_BACKEND": "redis", "REDIS_URL": url}),
        lambda: service_from_env({"KV_STORE_BACKEND": "redis-cluster", "REDIS_URL": url}),
    ):
        try:
            store = attempt()
        except (KVStoreError, ValueError) as err:
            assert SECRET not in str(err)
            assert SECRET not in repr(err)
        else:
            # Accepted (a valid URL): its repr must not show the secret either.
            assert SECRET not in repr(store)


def test_the_serve_command_prints_no_password() -> None:
    url = f"http://:{SECRET}?x@127.0.0.1:1/"
    done = subprocess.run(
        [sys.executable, "-m", "kvstore", "get", url, "k"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert SECRET not in done.stdout + done.stderr


def test_config_error_is_typed() -> None:
    with pytest.raises(ConfigError):
        service_from_env({"KV_STORE_BACKEND": "redis", "REDIS_URL": FORMS[3]})
