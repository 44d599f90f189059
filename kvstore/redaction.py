"""Store URLs without their secrets, for every message, log line and ``repr``.

A URL reaches messages exactly when something is wrong with it, so redaction
must not rely on the URL parsing correctly: a password holding an unencoded
``?``, ``#``, ``/`` or ``@`` makes :func:`urllib.parse.urlsplit` put part of
it in the query, fragment or path. :func:`redact_url` therefore treats
everything between ``://`` and the *last* ``@`` as credentials, whatever the
scheme (``http://``, a misspelt ``redis+clusterx://``), and also hides a
``password=`` query option. When in doubt it hides more, never less.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["redact_url", "scrub"]

_SEPARATORS: Final = re.compile(r"[?#/@&;=]")
_QUERY_PASSWORD: Final = re.compile(r"(?i)([?&;]password=)[^&#;]*")


def redact_url(url: str) -> str:
    """*url* with any password replaced by ``***``.

    >>> redact_url("redis://user:s3cret@localhost:6379/0")
    'redis://user:***@localhost:6379/0'
    >>> redact_url("redis://:p?a#ss@host:6379/0")
    'redis://:***@host:6379/0'
    """
    if not isinstance(url, str):
        return "<not a URL>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        userinfo, host = rest[:at], rest[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        # "user:password@" keeps the user; anything else before "@" may be a secret.
        shown = f"{user}:***" if colon and "/" not in user else "***"
        rest = f"{shown}@{host}"
    rest = _QUERY_PASSWORD.sub(r"\1***", rest)
    return f"{scheme}{sep}{rest}"


def _secrets(url: str) -> list[str]:
    """The password of *url* and the pieces a parser may have cut it into, longest first."""
    rest = url.partition("://")[2] or url
    found: list[str] = []
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        password = userinfo.partition(":")[2] if ":" in userinfo else userinfo
        found.append(password)
        found.extend(piece for piece in _SEPARATORS.split(password) if len(piece) >= 3)
    for match in re.finditer(r"(?i)[?&;]password=([^&#;]*)", rest):
        found.append(match.group(1))
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """*text* (a driver's error message, say) with every trace of *url*'s password hidden.

    >>> scrub("port 'pass' is not a number in 'redis://:pass?word@h'", "redis://:pass?word@h")
    "port '***' is not a number in 'redis://:***@h'"
    """
    text = text.replace(url, redact_url(url))
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text
