"""Sample values and inputs: what every backend stores exactly, and what it must refuse."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import uuid
from typing import Any

JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -17,
    2**63 - 1,
    3.25,
    "",
    'héllo ✓ \n\t"quoted"',
    [],
    {},
    [1, "two", None, [3.5]],
    {"nested": {"list": [1, 2, {"deep": True}]}, "n": None},
]

BAD_KEYS: list[Any] = [None, 1, b"bytes", "", "x" * 1025, "nul\x00key", ("t",)]
BAD_TTLS: list[Any] = [0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "10", [1]]


class Colour(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Name(enum.StrEnum):
    ALICE = "alice"


class Key(enum.StrEnum):
    USER = "user:1"


@dataclasses.dataclass
class Point:
    x: int


class Dict(dict[str, Any]):
    pass


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def value_id(value: Any) -> str:
    """A short test id; repr of a deeply nested value would itself recurse too deep."""
    if type(value) is list and value and type(value[0]) is list:
        return "deeply-nested-list"
    if type(value) is object:
        # Its repr holds an address: pytest-xdist workers would disagree.
        return "object()"
    return repr(value)


BAD_VALUES: list[Any] = [
    nested(100_000),  # deeper than any encoder (or Python's recursion) goes
    {1, 2},
    frozenset({1}),
    b"bytes",
    bytearray(b"x"),
    object(),
    math.nan,
    [math.inf],
    {1: "int key"},
    2**64,
    -(2**63) - 1,
    datetime.datetime(2026, 1, 1, 12, 0),
    datetime.date(2026, 1, 1),
    datetime.time(12, 0),
    uuid.UUID(int=1),
    decimal.Decimal("1.5"),
    Colour.RED,
    Level.LOW,
    Name.ALICE,
    Point(1),
    Dict(a=1),
    {"nested": [{"deep": uuid.UUID(int=2)}]},
    [datetime.datetime(2026, 1, 1)],
    {"level": Level.LOW},
]
