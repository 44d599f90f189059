"""``HTTP_ALLOWED_HOSTS``: which ``Host`` values are served (DNS rebinding protection).

A page on ``evil.example`` whose name is re-pointed at ``127.0.0.1`` can make
a visitor's browser call a server on loopback; the browser then sends
``Host: evil.example``. With ``HTTP_ALLOWED_HOSTS`` set, a request whose Host
(port ignored, any case) is not listed gets ``400 INVALID_HOST`` in the JSON
error format and goes no further. Entries are host names or addresses,
``*.example.com`` for any subdomain, or ``*`` for any host. ``/health`` is
exempt, so probes that address a replica by its IP need no entry. Unset, every
host is served, as on ElizaOS (which has no such setting).

Why not Starlette's ``TrustedHostMiddleware``: it answers plain text
("Invalid host header"), and redirects ``example.com`` to ``www.example.com``
when only the latter is listed; this module is the same matching with our
error body.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_body, send_json

__all__ = ["ALLOWED_HOSTS_VARIABLE", "AllowedHostsMiddleware", "host_name", "parse_allowed_hosts"]

ALLOWED_HOSTS_VARIABLE: Final = "HTTP_ALLOWED_HOSTS"
_EXEMPT: Final = frozenset({"/health"})


def parse_allowed_hosts(text: str | None) -> tuple[str, ...] | None:
    """The entries of an ``HTTP_ALLOWED_HOSTS`` value; None (every host) when unset or empty.

    Raises:
        ValueError: an entry with a scheme, a path or a port, or a misplaced ``*``.

    >>> parse_allowed_hosts("api.example.com, *.internal")
    ('api.example.com', '*.internal')
    """
    if text is None or not text.strip():
        return None
    hosts = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    for host in hosts:
        bare = host.removeprefix("*.")
        if host != "*" and (
            not bare or "*" in bare or "/" in bare or (":" in bare and not bare.startswith("["))
        ):
            raise ValueError(
                f"{ALLOWED_HOSTS_VARIABLE}: {host!r} is not a host: use names or addresses"
                " without scheme or port (api.example.com, 10.0.0.5, [::1], *.example.com, *)"
            )
    return hosts


def host_name(header: str) -> str:
    """The host of a ``Host`` header value, without its port, lower case.

    >>> host_name("API.example.com:8000"), host_name("[::1]:8000")
    ('api.example.com', '[::1]')
    """
    header = header.strip().lower()
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.partition(":")[0]


def _matches(host: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class AllowedHostsMiddleware:
    """ASGI middleware answering ``400 INVALID_HOST`` to a Host not in *allowed_hosts*.

    A WebSocket handshake with such a Host is closed before it is accepted.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: tuple[str, ...]) -> None:
        if not allowed_hosts:
            raise ValueError("allowed_hosts must list at least one host")
        self.app = app
        self._allowed = tuple(host.lower() for host in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on if its Host is allowed (or the path exempt), else refuse it."""
        if scope["type"] not in ("http", "websocket") or scope["path"] in _EXEMPT:
            await self.app(scope, receive, send)
            return
        header = b""
        for key, value in scope["headers"]:
            if key == b"host":
                header = value
                break
        if _matches(host_name(header.decode("latin-1")), self._allowed):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = error_body("INVALID_HOST", "the Host header names a host not served here")
        await send_json(send, 400, body)
