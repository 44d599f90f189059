"""``python -m runtime serve``: run the Sessions HTTP API under uvicorn.

The agent keeps its state where the usual variables say (``KV_STORE_BACKEND``,
``REDIS_URL``, ``KV_STORE_PATH``, ``KV_STORE_TTL``; memory when unset), so
several servers started with the same ``--agent-id`` and one Redis (or one
SQLite file) serve the same sessions::

    KV_STORE_BACKEND=redis REDIS_URL=redis://127.0.0.1:6379/0 \\
        python -m runtime serve --host 0.0.0.0 --port 8000 \\
        --agent-id 3f2b8c1d-5e6a-4b7c-8d9e-0f1a2b3c4d5e
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .http.server import ServerLimits

__all__ = ["build_parser", "main"]

LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug")


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be from 0 to 65535, got {port}")
    return port


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _configuration_problem() -> str | None:
    """What is wrong with the store variables, checked before serving (None: nothing).

    The runtime reads them again in its lifespan; checking here first turns a bad
    value into one line and exit status 2 instead of a traceback from uvicorn.
    Building a service opens no connection, so this does no I/O.
    """
    from kvstore import ConfigError, UnsupportedBackendError, service_from_env

    if not os.environ.get("KV_STORE_BACKEND", "").strip():
        return None
    try:
        service = service_from_env(os.environ)
    except (ConfigError, UnsupportedBackendError) as err:
        return str(err)
    except ImportError as err:
        return f"KV_STORE_BACKEND needs a driver that is not installed: {err}"
    asyncio.run(service.aclose())
    return None


def _handler(spec: str) -> object:
    """The reply handler ``module:name`` names (``--handler`` / ``AGENT_HANDLER``)."""
    import importlib

    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"AGENT_HANDLER must be module:name, got {spec!r}")
    try:
        handler = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"AGENT_HANDLER {spec!r} cannot be loaded: {err}") from None
    if not callable(handler):
        raise ValueError(f"AGENT_HANDLER {spec!r} is not callable")
    return handler


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``serve`` and its options."""
    from .http import DEFAULT_MAX_BODY_BYTES

    parser = argparse.ArgumentParser(
        prog="python -m runtime",
        description="Agent runtime commands.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve the ElizaOS-compatible Sessions HTTP API",
        description=(
            "Serve the Sessions HTTP API. State lives where KV_STORE_BACKEND, REDIS_URL,"
            " KV_STORE_PATH and KV_STORE_TTL say (in memory when KV_STORE_BACKEND is unset)."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    serve.add_argument(
        "--agent-id",
        default=os.environ.get("AGENT_ID") or None,
        help="the agent's id, a UUID as ElizaOS requires; replicas sharing sessions need the"
        " same one (default: $AGENT_ID, else uuid5(NAMESPACE_URL, 'kvstore-runtime default"
        " agent'), the same in every replica)",
    )
    serve.add_argument(
        "--handler",
        default=os.environ.get("AGENT_HANDLER") or None,
        help="the agent's reply handler as module:name, an async function or async generator"
        " (default: $AGENT_HANDLER, else the echo handler)",
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    serve.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body accepted (default {DEFAULT_MAX_BODY_BYTES})",
    )
    document = commands.add_parser(
        "openapi",
        help="write the OpenAPI 3.1 document of the HTTP API",
        description="Write the OpenAPI 3.1 document served at /openapi.json (to FILE, or stdout).",
    )
    document.add_argument("file", nargs="?", help="where to write it (default: stdout)")
    return parser


def _write_openapi(file: str | None) -> int:
    from .agent import AgentRuntime
    from .http import create_app
    from .http.openapi import openapi_document, render

    text = render(openapi_document(create_app(AgentRuntime(environ={})).routes))
    if file is None:
        sys.stdout.write(text)
    else:
        with open(file, "w", encoding="utf-8") as output:
            output.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "openapi":
        return _write_openapi(args.file)
    try:
        import uvicorn
    except ImportError:
        print(
            "serving needs uvicorn and starlette: pip install 'kvstore-runtime[server]'",
            file=sys.stderr,
        )
        return 2

    from .agent import AgentRuntime
    from .http import create_app

    # uvicorn configures only its own loggers; the runtime's and kvstore's
    # (backend choice, sweeps, 503s, 500s) need a handler too.
    logging.basicConfig(
        level=args.log_level.upper(), format="%(levelname)-8s %(name)s: %(message)s"
    )
    from .http.auth import AUTH_TOKEN_VARIABLE
    from .http.cors import parse_cors_origin

    problem = _configuration_problem()
    if problem is not None:
        print(f"python -m runtime serve: {problem}", file=sys.stderr)
        return 2

    # Empty means unset, as on ElizaOS: no authentication.
    api_key = os.environ.get(AUTH_TOKEN_VARIABLE) or None
    from .http.hosts import ALLOWED_HOSTS_VARIABLE, parse_allowed_hosts
    from .http.ratelimit import RateLimit
    from .http.server import ServerLimits

    try:
        cors_origins = parse_cors_origin(os.environ.get("CORS_ORIGIN"))
        rate_limit = RateLimit.parse(os.environ.get("HTTP_RATE_LIMIT"))
        server_limits = ServerLimits.from_env(os.environ)
        allowed_hosts = parse_allowed_hosts(os.environ.get(ALLOWED_HOSTS_VARIABLE))
    except ValueError as err:
        print(f"python -m runtime serve: {err}", file=sys.stderr)
        return 2
    from kvstore import ConfigError

    from .http.agents import DEFAULT_AGENT_ID, is_uuid
    from .http.limits import SessionLimits
    from .sessions import SessionsConfig

    agent_id = args.agent_id or DEFAULT_AGENT_ID
    if not is_uuid(agent_id):
        print(
            f"python -m runtime serve: the agent id must be a UUID (ElizaOS clients send UUIDs),"
            f" got {agent_id!r}",
            file=sys.stderr,
        )
        return 2
    try:
        limits = SessionLimits.from_env(os.environ)
    except ConfigError as err:
        print(f"python -m runtime serve: {err}", file=sys.stderr)
        return 2
    sessions_config = SessionsConfig(
        default_timeout_minutes=limits.default_timeout,
        max_duration_minutes=limits.max_duration,
        warning_threshold_minutes=limits.warning_threshold,
        cleanup_interval=limits.cleanup_interval * 60.0,
    )
    try:
        handler = None if args.handler is None else _handler(args.handler)
    except ValueError as err:
        print(f"python -m runtime serve: {err}", file=sys.stderr)
        return 2
    app = create_app(
        AgentRuntime(
            agent_id=agent_id,
            sessions_config=sessions_config,
            handler=handler,  # type: ignore[arg-type]  # checked callable; its shape is the user's
        ),
        session_limits=limits,
        max_body_bytes=args.max_body_bytes,
        api_key=api_key,
        cors_origins=cors_origins,
        rate_limit=rate_limit,
        allowed_hosts=allowed_hosts,
    )
    # SIGTERM / Ctrl-C stop uvicorn gracefully: in-flight requests finish (at
    # most 10 s), then the lifespan stops the sweeper and closes the runtime.
    from .http.access import AccessLogMiddleware

    uvicorn.run(
        # uvicorn's access log prints paths, and session ids with them: ours
        # prints route templates instead.
        AccessLogMiddleware(app),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
        http=_protocol(server_limits),
        access_log=False,
    )
    return 0


def _protocol(limits: ServerLimits) -> type[asyncio.Protocol]:
    """uvicorn's protocol class for *limits*, with descriptors to spare for every connection."""
    from .http.server import AcceptErrorLogFilter, connection_budget, http_protocol, raise_fd_limit

    AcceptErrorLogFilter().install()
    fd_limit = raise_fd_limit()
    budget = connection_budget(limits.max_connections, fd_limit)
    if budget < limits.max_connections:
        logging.getLogger("runtime.http.server").warning(
            "accepting at most %d connections, not HTTP_MAX_CONNECTIONS=%d: the open-file limit"
            " is %d (raise it with ulimit -n)",
            budget,
            limits.max_connections,
            fd_limit,
        )
        limits = dataclasses.replace(limits, max_connections=budget)
    return http_protocol(limits)


if __name__ == "__main__":
    sys.exit(main())
