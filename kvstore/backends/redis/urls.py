"""Redis URLs: schemes, the store's query options, cluster node lists, password redaction.

A URL's query string mixes two kinds of options. The store's own (declared in
:data:`STORE_OPTIONS`) are parsed here and removed; redis-py's (listed in
:data:`DRIVER_OPTIONS`) stay in the URL that redis-py is given. Anything else
is a :class:`~kvstore.ConfigError`, and so is a malformed value. Every message
shows the URL through :func:`redact`, never with its password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, urlencode, urlsplit, urlunsplit

from ...codec import check_store_name
from ...errors import ConfigError
from ...options import TextOption, bool_option, int_option, parse_query, seconds_option
from ...redaction import redact_url, scrub
from .keys import check_key_prefix

__all__ = [
    "CLUSTER_SCHEMES",
    "DRIVER_OPTIONS",
    "SCHEMES",
    "STORE_OPTIONS",
    "ClusterURL",
    "parse_cluster_url",
    "redact",
    "split_store_options",
    "url_scheme",
]

SCHEMES: Final = ("redis", "rediss", "unix")
"""URL schemes of one Redis server (``rediss`` with TLS, ``unix`` for a socket)."""
CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
"""URL schemes that select Redis Cluster (``rediss+cluster`` with TLS)."""

STORE_OPTIONS: Final[Mapping[str, TextOption]] = {
    "namespace": lambda name, text: check_store_name(text),
    "prefix": lambda name, text: check_key_prefix(text),
    "default_ttl": seconds_option(),
    "max_value_bytes": int_option(minimum=1),
    "retries": int_option(minimum=0),
    "retry_backoff": seconds_option(allow_zero=True),
    "socket_timeout": seconds_option(),
    "socket_connect_timeout": seconds_option(),
    "max_connections": int_option(minimum=1),
    "auto_pipeline": bool_option(),
}
"""Query options that configure the store itself: parsed, then removed from the URL."""

DRIVER_OPTIONS: Final = frozenset(
    {
        "db",
        "password",
        "username",
        "client_name",
        "health_check_interval",
        "socket_keepalive",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
    }
)
"""Query options passed on to redis-py unchanged."""


def url_scheme(url: object) -> str:
    """The lower-cased scheme of *url* (``""`` when it is not a str or has none)."""
    if not isinstance(url, str):
        return ""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


def split_store_options(url: str) -> tuple[str, dict[str, Any]]:
    """Check a Redis or Redis Cluster URL; return it without the store's options, and them.

    Raises :class:`~kvstore.ConfigError` for another scheme, a bad port,
    database or node list, an unknown or repeated query option, or a
    malformed value.

    >>> split_store_options("redis://localhost:6379/0?namespace=app&db=2")
    ('redis://localhost:6379/0?db=2', {'namespace': 'app'})
    """
    if not isinstance(url, str):
        raise ConfigError(f"a Redis URL must be a str, not {type(url).__name__}")
    shown = redact(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    cluster = scheme in CLUSTER_SCHEMES
    if scheme not in SCHEMES and not cluster:
        raise ConfigError(
            f"{shown!r} is not a Redis URL: use redis://, rediss://, unix://,"
            " redis+cluster:// or rediss+cluster://"
        )
    if cluster:
        _cluster_nodes(parts, shown)
        if parts.path.strip("/") not in ("", "0"):
            raise ConfigError(
                f"Redis Cluster has only database 0, but {shown!r} names {parts.path!r}:"
                " end the URL with / (or /0)"
            )
    else:
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError as err:
            raise ConfigError(
                f"invalid port in Redis URL {shown!r}: {scrub(str(err), url)}"
            ) from None
    if scheme in ("redis", "rediss"):
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ConfigError(
                f"invalid database {database!r} in Redis URL {shown!r}: use /0, /1, …"
            )
    elif scheme == "unix" and not parts.path:
        raise ConfigError(f"{shown!r} names no socket: use unix:///path/to/redis.sock")
    passed_on: list[tuple[str, str]] = []
    store_options = parse_query(parts.query, STORE_OPTIONS, source=shown, rest=passed_on)
    for name, text in passed_on:
        if name not in DRIVER_OPTIONS:
            allowed = ", ".join(sorted([*STORE_OPTIONS, *DRIVER_OPTIONS]))
            raise ConfigError(f"unknown option {name!r} in {shown!r}; allowed: {allowed}")
        if cluster and name == "db" and text.strip() != "0":
            raise ConfigError(f"Redis Cluster has only database 0, not db={text!r} ({shown!r})")
    return _unsplit(parts._replace(query=urlencode(passed_on))), store_options


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """A ``redis+cluster://`` URL in the form redis-py's ``RedisCluster`` takes it."""

    first: str
    """A one-node ``redis://`` or ``rediss://`` URL of the first startup node, with the
    credentials and query options: redis-py parses those from it."""
    others: list[tuple[str, int]]
    """The other startup nodes, ``(host, port)``."""


def parse_cluster_url(url: str) -> ClusterURL:
    """Split a ``redis+cluster://`` or ``rediss+cluster://`` URL into its startup nodes.

    >>> parse_cluster_url("redis+cluster://u:pw@a:7000,b:7001/?client_name=x")
    ClusterURL(first='redis://u:pw@a:7000?client_name=x', others=[('b', 7001)])
    """
    parts = urlsplit(url)
    userinfo, nodes = _cluster_nodes(parts, redact(url))
    (host, port), others = nodes[0], nodes[1:]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if userinfo:
        netloc = f"{userinfo}@{netloc}"
    scheme = "rediss" if parts.scheme.lower() == "rediss+cluster" else "redis"
    return ClusterURL(urlunsplit((scheme, netloc, "", parts.query, "")), others)


def _cluster_nodes(parts: SplitResult, shown: str) -> tuple[str, list[tuple[str, int]]]:
    """The user info and the ``(host, port)`` startup nodes of a cluster URL."""
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        node = urlsplit(f"//{item.strip()}")
        try:
            port = node.port or 6379
        except ValueError as err:
            raw = urlunsplit(parts)
            raise ConfigError(
                f"invalid port in {scrub(item.strip(), raw)!r} of {shown!r}: {scrub(str(err), raw)}"
            ) from None
        if not node.hostname:
            raise ConfigError(
                f"{shown!r} names no node: use redis+cluster://host:port[,host:port…]/"
            )
        nodes.append((node.hostname, port))
    return userinfo, nodes


def _unsplit(parts: SplitResult) -> str:
    # urlunsplit() drops the "//" of "unix:///path" (an empty host).
    if parts.scheme.lower() == "unix":
        return f"unix://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return urlunsplit(parts)


def redact(url: str) -> str:
    """*url* without its password, for messages and ``repr`` (see :mod:`kvstore.redaction`).

    >>> redact("redis://user:s3cret@localhost:6379/0")
    'redis://user:***@localhost:6379/0'
    """
    return redact_url(url)
