"""kvstore.options: one validator per kind of option, one error type per layer."""

from __future__ import annotations

import math

import pytest

from kvstore import ConfigError
from kvstore.options import (
    bool_option,
    check_bool,
    check_int,
    check_number,
    check_seconds,
    int_option,
    number_option,
    parse_bool,
    parse_float,
    parse_int,
    parse_query,
    seconds_option,
)


class LayerError(ValueError):
    pass


@pytest.mark.parametrize("value", [True, False, 1.0, "3", None])
def test_check_int_refuses_non_ints_with_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="n must be an int"):
        check_int("n", value)


def test_check_int_bounds_are_inclusive() -> None:
    assert check_int("n", 1, minimum=1, maximum=3) == 1
    assert check_int("n", 3, minimum=1, maximum=3) == 3
    with pytest.raises(ValueError, match=">= 1, got 0"):
        check_int("n", 0, minimum=1)
    with pytest.raises(ValueError, match="<= 3, got 4"):
        check_int("n", 4, maximum=3)


def test_a_layer_error_replaces_both_builtins() -> None:
    with pytest.raises(LayerError):
        check_int("n", "x", error=LayerError)
    with pytest.raises(LayerError):
        check_int("n", 0, minimum=1, error=LayerError)
    with pytest.raises(LayerError):
        check_seconds("t", math.nan, error=LayerError)
    with pytest.raises(LayerError):
        check_bool("b", 1, error=LayerError)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
def test_check_number_refuses_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        check_number("x", value)


def test_check_number_bounds() -> None:
    assert check_number("x", 2) == 2.0
    assert isinstance(check_number("x", 2), float)
    with pytest.raises(ValueError, match="> 0"):
        check_number("x", 0, above=0.0)
    with pytest.raises(ValueError, match=">= 1"):
        check_number("x", 0.5, minimum=1.0)
    with pytest.raises(ValueError, match="<= 2"):
        check_number("x", 3, maximum=2.0)
    with pytest.raises(TypeError, match="a number of minutes"):
        check_number("x", True, unit="minutes")


def test_check_seconds_zero_only_when_allowed() -> None:
    with pytest.raises(ValueError, match="> 0"):
        check_seconds("t", 0)
    assert check_seconds("t", 0, allow_zero=True) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        check_seconds("t", -1, allow_zero=True)


def test_check_bool() -> None:
    assert check_bool("b", True) is True
    with pytest.raises(TypeError, match="True or False"):
        check_bool("b", 0)


def test_text_parsers() -> None:
    assert parse_int(" 42 ") == 42
    assert parse_float("2.5") == 2.5
    assert parse_bool("Yes") is True
    assert parse_bool("off") is False
    for parse, text in ((parse_int, "4.2"), (parse_float, "nan"), (parse_bool, "maybe")):
        with pytest.raises(ValueError):
            parse(text)


def test_parse_query_parses_known_options() -> None:
    table = {
        "n": int_option(minimum=1),
        "x": number_option(above=0.0),
        "t": seconds_option(allow_zero=True),
        "b": bool_option(),
    }
    assert parse_query("n=3&x=0.5&t=0&b=true", table, source="s://") == {
        "n": 3,
        "x": 0.5,
        "t": 0.0,
        "b": True,
    }
    assert parse_query("", table, source="s://") == {}


def test_parse_query_errors_name_the_option_and_source() -> None:
    table = {"n": int_option(minimum=1)}
    with pytest.raises(ConfigError, match=r"option n='0' in 's://h' is invalid: n must be >= 1"):
        parse_query("n=0", table, source="s://h")
    with pytest.raises(ConfigError, match="given twice"):
        parse_query("n=1&n=2", table, source="s://h")
    with pytest.raises(ConfigError, match=r"unknown option 'm' .* the options are n"):
        parse_query("m=1", table, source="s://h")
    with pytest.raises(ConfigError, match="malformed query string"):
        parse_query("n", table, source="s://h")


def test_parse_query_passes_unknown_options_on_when_asked() -> None:
    rest: list[tuple[str, str]] = []
    parsed = parse_query("n=2&ssl_cert_reqs=none", {"n": int_option()}, source="s://", rest=rest)
    assert parsed == {"n": 2}
    assert rest == [("ssl_cert_reqs", "none")]
