"""The operator command line: ``python -m kvstore entries|get|stats|copy``.

Each command opens ``open_service(URL, metrics=False)``, works on one or more
named stores, and closes the service before it returns. Errors are reported as
one line on stderr (``kvstore: error: ...``) with exit status 2 for a command
line that can't be carried out as written (bad URL scheme, bad store name) and 1
for a runtime failure (missing key, unreachable backend)::

    python -m kvstore entries sqlite:///kvstore.db --store sessions --limit 10
    python -m kvstore get redis://127.0.0.1:6379/0 user:1 --store state_cache
    python -m kvstore copy sqlite:///kvstore.db redis://127.0.0.1:6379/0 \\
        --store sessions --store state_cache

:func:`main` takes the argument list and returns the exit status, so it can be
called in-process (tests, other tools); ``python -m kvstore`` wraps it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any, Final, NoReturn
from urllib.parse import unquote, urlsplit

import anyio
import orjson

from .codec import JSONCodec
from .copy import DEFAULT_BATCH, DEFAULT_CONCURRENCY, DEFAULT_TTL_PRECISION, CopyCounts, copy_store
from .errors import (
    ConfigError,
    InvalidKeyError,
    InvalidTTLError,
    KVStoreError,
    UnsupportedBackendError,
)
from .metrics import MetricsStore
from .options import TextOption, int_option, seconds_option
from .progress import open_progress
from .redaction import redact_url
from .service import StoreService, open_service

# copy_store and CopyCounts live in kvstore.copy; they stay importable from here,
# where the migration guide first documented them.
__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "CopyCounts", "copy_store", "main"]

EXIT_OK: Final = 0
EXIT_RUNTIME: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

DEFAULT_STORE: Final = "default"

_ABSENT: Final = object()

_URL_HELP: Final = """\
store URLs:
  sqlite:///relative.db      SQLite file, path relative to the current directory
  sqlite:////abs/path.db     SQLite file, absolute path
  redis://HOST:PORT/DB       Redis (also rediss:// for TLS and unix:///path.sock)
  memory:// lives only inside the process that filled it, so another process
  (this command) always sees it empty: it is refused as a source.

exit status: 0 success, 1 runtime error (missing key, unreachable backend),
2 usage error (bad arguments, unsupported URL scheme, invalid store name)."""


class UsageError(Exception):
    """The command line can't be carried out as written (exit status 2)."""


class CommandFailed(Exception):
    """The command ran but failed in a way worth one line, e.g. a missing key (exit 1)."""


# Errors that mean "the command line asks for something impossible", as
# opposed to a failure while carrying it out.
_USAGE_ERRORS: Final = (
    UsageError,
    UnsupportedBackendError,
    ConfigError,
    InvalidKeyError,
    InvalidTTLError,
)


# -- argument parsing ------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors share the ``kvstore: error:`` prefix."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"kvstore: error: {message}\n")


def _argument_type(parse: TextOption, metavar: str) -> Callable[[str], Any]:
    """An argparse ``type=`` made of a :mod:`kvstore.options` text parser.

    argparse reports an ``ArgumentTypeError`` as ``argument --flag: MESSAGE``,
    so the message names the flag and the parser's says what is allowed.
    """

    def convert(text: str) -> Any:
        try:
            return parse(metavar, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


_positive_int: Final = _argument_type(int_option(minimum=1), "N")
_seconds: Final = _argument_type(seconds_option(allow_zero=True), "SECONDS")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m kvstore`` and its four commands."""
    from . import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="python -m kvstore",
        description="Inspect kvstore stores and copy them between backends.",
        epilog=_URL_HELP,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"kvstore {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error before its one-line message",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=_URL_HELP,
            formatter_class=formatter,
        )
        return sub

    store_help = f"name of the store (namespace) to read; default {DEFAULT_STORE!r}"

    entries = command(
        "entries",
        "list the live entries of a store",
        "Print each live entry of a store as KEY<TAB>VALUE<TAB>TTL, where VALUE is\n"
        "compact JSON and TTL the remaining seconds ('-' when the key never expires).\n"
        "Keys holding tabs or control characters are printed as JSON strings.\n"
        "Order is unspecified. With --json, print one JSON object per line instead:\n"
        '{"key": ..., "value": ..., "ttl": seconds or null}.',
    )
    entries.add_argument("url", metavar="URL", help="store URL (see below)")
    entries.add_argument("--store", default=DEFAULT_STORE, metavar="NAME", help=store_help)
    entries.add_argument("--prefix", default="", metavar="P", help="only keys starting with P")
    entries.add_argument("--limit", type=_positive_int, metavar="N", help="stop after N entries")
    entries.add_argument("--json", action="store_true", help="print JSON Lines")
    entries.set_defaults(handler=_cmd_entries)

    get = command(
        "get",
        "print the value of one key",
        "Print the value of KEY as JSON. Exit status 1 if the key is missing or expired.",
    )
    get.add_argument("url", metavar="URL", help="store URL (see below)")
    get.add_argument("key", metavar="KEY", help="the key to read")
    get.add_argument("--store", default=DEFAULT_STORE, metavar="NAME", help=store_help)
    get.set_defaults(handler=_cmd_get)

    stats = command(
        "stats",
        "count the live keys of a store",
        "Walk every live entry of a store and print, as JSON: the number of keys, how\n"
        "many have a TTL, the total size of keys (UTF-8) and values (compact JSON) in\n"
        "bytes, and the store metrics of the operations this command made.",
    )
    stats.add_argument("url", metavar="URL", help="store URL (see below)")
    stats.add_argument("--store", default=DEFAULT_STORE, metavar="NAME", help=store_help)
    stats.add_argument("--prefix", default="", metavar="P", help="only keys starting with P")
    stats.set_defaults(handler=_cmd_stats)

    copy = command(
        "copy",
        "copy live entries, with their remaining TTL, to another backend",
        "Stream every live entry of the named stores from SRC_URL to DST_URL, keeping\n"
        "each key's remaining TTL: the migration path from SQLite to Redis, or back.\n"
        "Entries are read and written in batches, so memory use does not grow with\n"
        "the size of the store. Keys with similar expiry deadlines are written\n"
        "together in one set_many with the earliest deadline of the group (see\n"
        "--ttl-precision), so a copy never outlives its original. Keys that expire\n"
        "while the copy runs are counted and not written.\n\n"
        "SRC_URL can't be memory://: an in-memory store exists only inside the process\n"
        "that filled it; copy from inside that process (docs/migration.md). Nor can\n"
        "DST_URL, whose copy would vanish when this command exits.\n"
        "Deletions made in SRC after a key was copied are not propagated: stop the\n"
        "writers first, or switch them over and copy again with --no-overwrite.",
    )
    copy.add_argument("src", metavar="SRC_URL", help="store URL to read from")
    copy.add_argument("dst", metavar="DST_URL", help="store URL to write to")
    copy.add_argument(
        "--store",
        dest="stores",
        action="append",
        metavar="NAME",
        help=f"a store to copy; repeat for several (default {DEFAULT_STORE!r})",
    )
    copy.add_argument("--prefix", default="", metavar="P", help="only keys starting with P")
    copy.add_argument(
        "--batch",
        type=_positive_int,
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"entries read and written per batch (default {DEFAULT_BATCH})",
    )
    copy.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replace keys that already exist in DST (default); with --no-overwrite"
        " existing keys are kept and counted as skipped (written with add())",
    )
    copy.add_argument(
        "--ttl-precision",
        type=_seconds,
        default=DEFAULT_TTL_PRECISION,
        metavar="SECONDS",
        help="keys whose deadlines fall in the same window of this many seconds share"
        " one write and the earliest deadline among them, so a copied TTL can be up to"
        f" this much shorter than the original (default {DEFAULT_TTL_PRECISION:g};"
        " 0 writes each key with a TTL on its own, exactly)",
    )
    copy.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"writes in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    copy.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress line on stderr (default: when stderr is a terminal"
        " and the copy takes more than a second)",
    )
    copy.set_defaults(handler=_cmd_copy)
    return parser


# -- entry point ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line *argv* (default ``sys.argv[1:]``) and return the exit status.

    >>> main(["get", "sqlite:///kvstore.db", "user:1"])  # doctest: +SKIP
    {"name":"Ada"}
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as stop:  # --help, --version and argparse's own usage errors
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    urls = [getattr(args, name) for name in ("url", "src", "dst") if hasattr(args, name)]
    try:
        status: int = anyio.run(args.handler, args)
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``); point stdout at /dev/null so that the
        # interpreter's final flush doesn't report it again.
        _silence_stdout()
        return EXIT_RUNTIME
    except Exception as err:
        return _report(err, debug=args.debug, urls=urls)
    return status


def _report(err: Exception, *, debug: bool, urls: Sequence[str]) -> int:
    """Print *err* as one line on stderr and return the exit status it deserves."""
    leaf = _first_leaf(err)
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    # A missing driver is a fault of the installation, not of the command line.
    missing_driver = isinstance(leaf, UnsupportedBackendError) and isinstance(
        leaf.__cause__, ImportError
    )
    if isinstance(leaf, _USAGE_ERRORS) and not missing_driver:
        status = EXIT_USAGE
        message = str(leaf)
    elif isinstance(leaf, CommandFailed | KVStoreError):
        status = EXIT_RUNTIME
        message = _with_cause(leaf)
    elif isinstance(leaf, OSError):
        status = EXIT_RUNTIME
        message = f"{type(leaf).__name__}: {leaf}"
    else:
        status = EXIT_RUNTIME
        message = f"unexpected {type(leaf).__name__}: {leaf}"
        if not debug:
            message += " (run again with --debug for the traceback)"
    _print_error(_redact(message, urls))
    return status


def _first_leaf(err: BaseException) -> BaseException:
    # A backend that uses a task group may raise a group: report its first error.
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    return err


def _with_cause(err: BaseException) -> str:
    message = str(err) or type(err).__name__
    cause = err.__cause__
    if cause is not None and str(cause) and str(cause) not in message:
        message += f" ({type(cause).__name__}: {cause})"
    return message


def _redact(message: str, urls: Sequence[str]) -> str:
    """Collapse *message* to one line and hide any password found in *urls*."""
    for url in urls:
        message = message.replace(url, redact_url(url))
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            message = message.replace(password, "***").replace(unquote(password), "***")
    return " ".join(message.split())


def _print_error(message: str) -> None:
    sys.stderr.write(f"kvstore: error: {message}\n")
    sys.stderr.flush()


def _silence_stdout() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


# -- shared plumbing ----------------------------------------------------------------


@asynccontextmanager
async def _source_service(url: str) -> AsyncIterator[StoreService]:
    """Open the service of a URL that must already hold data, and close it afterwards."""
    service = open_service(url, metrics=False)
    async with service:
        _check_source(url, service)
        yield service


def _check_source(url: str, service: StoreService) -> None:
    """Refuse sources that would only ever look empty from here."""
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        raise UsageError(
            "memory:// can't be read from another process: an in-memory store lives"
            " only inside the process that filled it (copy from inside that process"
            " with entries(); see docs/migration.md)"
        )
    if scheme == "sqlite":
        from .backends.sqlite import MEMORY, SQLiteStore

        backend = service.backend
        # Opening a missing file would create an empty database and hide a typo.
        if (
            isinstance(backend, SQLiteStore)
            and backend.path != MEMORY
            and not os.path.exists(backend.path)
        ):
            raise CommandFailed(f"no SQLite database at {backend.path!r} (from {url!r})")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _printable_key(key: str) -> str:
    if key.isprintable() and "\t" not in key:
        return key
    return _json(key)


def _format_ttl(remaining: float | None) -> str:
    return "-" if remaining is None else f"{remaining:.3f}"


# -- commands -------------------------------------------------------------------------


async def _cmd_entries(args: argparse.Namespace) -> int:
    out = sys.stdout
    async with _source_service(args.url) as service:
        store = service.get_store(args.store)
        shown = 0
        # Leaving early (--limit) must release the cursor/scan now, not at GC time.
        async with aclosing(store.entries(args.prefix)) as rows:
            async for key, value in rows:
                if args.limit is not None and shown >= args.limit:
                    break
                remaining = await store.ttl(key)
                if args.json:
                    line = _json({"key": key, "value": value, "ttl": remaining})
                else:
                    line = f"{_printable_key(key)}\t{_json(value)}\t{_format_ttl(remaining)}"
                out.write(line + "\n")
                shown += 1
    out.flush()
    return EXIT_OK


async def _cmd_get(args: argparse.Namespace) -> int:
    async with _source_service(args.url) as service:
        store = service.get_store(args.store)
        value = await store.get(args.key, _ABSENT)
    if value is _ABSENT:
        raise CommandFailed(f"key {args.key!r} not found in store {args.store!r}")
    sys.stdout.write(_json(value) + "\n")
    sys.stdout.flush()
    return EXIT_OK


async def _cmd_stats(args: argparse.Namespace) -> int:
    codec = JSONCodec()
    keys = with_ttl = key_bytes = value_bytes = 0
    started = time.perf_counter()
    async with _source_service(args.url) as service:
        # A private wrapper: its metrics are those of this command's own calls.
        store = MetricsStore(service.get_store(args.store), name=args.store)
        async with aclosing(store.entries(args.prefix)) as rows:
            async for key, value in rows:
                keys += 1
                key_bytes += len(key.encode())
                value_bytes += len(codec.encode(value))
                if await store.ttl(key) is not None:
                    with_ttl += 1
        metrics = store.get_metrics()
    report = {
        "store": args.store,
        "prefix": args.prefix,
        "keys": keys,
        "keys_with_ttl": with_ttl,
        "keys_without_ttl": keys - with_ttl,
        "key_bytes": key_bytes,
        "value_bytes": value_bytes,
        "seconds": round(time.perf_counter() - started, 3),
        "metrics": dataclasses.asdict(metrics),
    }
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()
    return EXIT_OK


async def _cmd_copy(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(args.stores or [DEFAULT_STORE]))
    if args.src == args.dst:
        raise UsageError("SRC_URL and DST_URL are the same: nothing to copy")
    if args.dst.partition("://")[0].lower() == "memory":
        raise UsageError(
            "DST_URL memory:// would be lost when this command exits: copy to"
            " sqlite:// or redis:// instead"
        )
    started = time.perf_counter()
    totals = CopyCounts()
    async with _source_service(args.src) as src, open_service(args.dst, metrics=False) as dst:
        # Resolve every name first, so a bad one fails before anything is written.
        pairs = [(name, src.get_store(name), dst.get_store(name)) for name in names]
        progress = open_progress(args.progress, desc="copying", stream=sys.stderr)
        try:
            for name, source, target in pairs:
                counts = await copy_store(
                    source,
                    target,
                    prefix=args.prefix,
                    batch=args.batch,
                    overwrite=args.overwrite,
                    ttl_precision=args.ttl_precision,
                    concurrency=args.concurrency,
                    on_batch=lambda done: progress.update(done.total),
                )
                totals += counts
                _print_counts(name, counts)
        finally:
            progress.close()
    elapsed = time.perf_counter() - started
    if len(pairs) > 1:
        _print_counts("total", totals)
    rate = totals.total / elapsed if elapsed > 0 else 0.0
    sys.stdout.write(f"done in {elapsed:.2f} s ({rate:,.0f} keys/s)\n")
    sys.stdout.flush()
    return EXIT_OK


def _print_counts(label: str, counts: CopyCounts) -> None:
    sys.stdout.write(
        f"{label}: copied {counts.copied}, skipped {counts.skipped} (already in DST),"
        f" expired during copy {counts.expired}\n"
    )
