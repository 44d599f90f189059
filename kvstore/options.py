"""Option validation, written once for every layer.

Options reach the library in two forms, and each form has one error type:

* **Python arguments** (constructor keywords, settings dicts): a wrong type
  raises ``TypeError`` and a value out of range ``ValueError``, as builtins do.
  A layer with its own error class passes ``error=`` and gets that class for both
  (the sessions layer raises its ``InvalidSessionInputError``, say).
* **Text** (URL query strings, environment variables, command-line flags): the
  parsers below raise ``ValueError`` with a message saying what is allowed, and
  :func:`parse_query` turns that into a :class:`~kvstore.ConfigError` naming the
  option and where it came from.

A backend declares its URL options as a table of text parsers:

>>> table = {"page_size": int_option(minimum=1), "timeout": seconds_option()}
>>> parse_query("page_size=100&timeout=2.5", table, source="sqlite:///x.db")
{'page_size': 100, 'timeout': 2.5}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from .errors import ConfigError

__all__ = [
    "TextOption",
    "bool_option",
    "check_bool",
    "check_int",
    "check_number",
    "check_seconds",
    "int_option",
    "number_option",
    "parse_bool",
    "parse_float",
    "parse_int",
    "parse_query",
    "seconds_option",
]

TextOption = Callable[[str, str], Any]
"""Parses one option from text: called with ``(name, text)``, raises ``ValueError``."""

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _fail(error: type[Exception] | None, default: type[Exception], message: str) -> Exception:
    return (default if error is None else error)(message)


# -- Python arguments -------------------------------------------------------------


def check_int(
    name: str,
    value: object,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: type[Exception] | None = None,
) -> int:
    """Return *value* if it is an ``int`` (not a ``bool``) within the bounds (inclusive).

    >>> check_int("max_entries", 10, minimum=1)
    10
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(error, TypeError, f"{name} must be an int, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise _fail(error, ValueError, f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise _fail(error, ValueError, f"{name} must be <= {maximum}, got {value}")
    return value


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    unit: str = "",
    error: type[Exception] | None = None,
) -> float:
    """Return *value* as a float if it is a finite ``int``/``float`` (not a ``bool``).

    *minimum* and *maximum* are inclusive bounds, *above* an exclusive lower one.
    *unit* (``"seconds"``, ``"minutes"``) only words the messages.
    """
    what = f"a number of {unit}" if unit else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(error, TypeError, f"{name} must be {what}, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise _fail(error, ValueError, f"{name} must be {what} (finite), got {value!r}")
    if above is not None and number <= above:
        raise _fail(error, ValueError, f"{name} must be {what} > {above:g}, got {value!r}")
    if minimum is not None and number < minimum:
        raise _fail(error, ValueError, f"{name} must be {what} >= {minimum:g}, got {value!r}")
    if maximum is not None and number > maximum:
        raise _fail(error, ValueError, f"{name} must be {what} <= {maximum:g}, got {value!r}")
    return number


def check_seconds(
    name: str,
    value: object,
    *,
    allow_zero: bool = False,
    maximum: float | None = None,
    error: type[Exception] | None = None,
) -> float:
    """Return *value* as float seconds: finite and > 0 (>= 0 with *allow_zero*)."""
    if allow_zero:
        return check_number(name, value, minimum=0.0, maximum=maximum, unit="seconds", error=error)
    return check_number(name, value, above=0.0, maximum=maximum, unit="seconds", error=error)


def check_bool(name: str, value: object, *, error: type[Exception] | None = None) -> bool:
    """Return *value* if it is a ``bool`` (``0``/``1`` are refused: they hide mistakes)."""
    if not isinstance(value, bool):
        raise _fail(error, TypeError, f"{name} must be True or False, not {type(value).__name__}")
    return value


# -- text ---------------------------------------------------------------------------


def parse_int(text: str) -> int:
    """Parse a whole number written in decimal (surrounding spaces allowed)."""
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def parse_float(text: str) -> float:
    """Parse a finite decimal number (``nan`` and ``inf`` are refused)."""
    try:
        number = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {text!r}")
    return number


def parse_bool(text: str) -> bool:
    """Parse ``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def int_option(*, minimum: int | None = None, maximum: int | None = None) -> TextOption:
    """A text parser for a whole number within the bounds (inclusive)."""

    def parse(name: str, text: str) -> int:
        return check_int(name, parse_int(text), minimum=minimum, maximum=maximum, error=ValueError)

    return parse


def number_option(
    *, minimum: float | None = None, above: float | None = None, maximum: float | None = None
) -> TextOption:
    """A text parser for a finite number within the bounds."""

    def parse(name: str, text: str) -> float:
        return check_number(
            name, parse_float(text), minimum=minimum, above=above, maximum=maximum, error=ValueError
        )

    return parse


def seconds_option(*, allow_zero: bool = False) -> TextOption:
    """A text parser for seconds: finite and > 0 (>= 0 with *allow_zero*)."""

    def parse(name: str, text: str) -> float:
        return check_seconds(name, parse_float(text), allow_zero=allow_zero, error=ValueError)

    return parse


def bool_option() -> TextOption:
    """A text parser for a boolean (see :func:`parse_bool`)."""

    def parse(name: str, text: str) -> bool:
        return parse_bool(text)

    return parse


def parse_query(
    query: str,
    table: Mapping[str, TextOption],
    *,
    source: str,
    rest: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Parse the URL query string *query* with the option parsers in *table*.

    Returns ``{name: value}`` for the options given. An option given twice, or a
    value its parser refuses, raises :class:`~kvstore.ConfigError` naming the
    option and *source* (a URL with its password already redacted). An option
    missing from *table* is appended to *rest* when a list is passed (a backend
    hands those to its driver), and raises :class:`~kvstore.ConfigError` listing
    the known options otherwise.
    """
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as err:
        raise ConfigError(f"malformed query string in {source!r}: {err}") from None
    options: dict[str, Any] = {}
    seen: set[str] = set()
    for name, text in pairs:
        if name in seen:
            raise ConfigError(f"option {name!r} is given twice in {source!r}")
        seen.add(name)
        parse = table.get(name)
        if parse is None:
            if rest is not None:
                rest.append((name, text))
                continue
            known = ", ".join(sorted(table)) or "none"
            raise ConfigError(f"unknown option {name!r} in {source!r}: the options are {known}")
        try:
            options[name] = parse(name, text)
        except ValueError as err:
            raise ConfigError(f"option {name}={text!r} in {source!r} is invalid: {err}") from None
    return options
