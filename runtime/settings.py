"""The runtime's settings: a ``str -> str | int | float`` dict, and the entries it reads.

Settings come from code (numbers) or from configuration files and the
environment (text), so each entry the runtime reads accepts both: text is
parsed, numbers are checked, and a refused value is a :class:`kvstore.ConfigError`
naming the setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias, TypeVar

from kvstore import ConfigError
from kvstore.options import TextOption, check_int, check_seconds, int_option, seconds_option

__all__ = ["SettingValue", "check_settings", "count_setting", "seconds_setting"]

SettingValue: TypeAlias = str | int | float
"""What a setting may hold."""

_T = TypeVar("_T")


def check_settings(settings: Mapping[str, SettingValue] | None) -> dict[str, SettingValue]:
    """A copy of *settings* (``{}`` for None).

    Raises:
        TypeError: a name that is not a str, or a value not a str, int or float.
    """
    checked = dict(settings or {})
    for key, value in checked.items():
        if not isinstance(key, str):
            raise TypeError(f"setting names must be str, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise TypeError(
                f"setting {key!r} must be a str, int or float, not {type(value).__name__}"
            )
    return checked


def _setting(
    settings: Mapping[str, SettingValue],
    name: str,
    default: _T,
    parse: TextOption,
    check: Callable[[str, object], _T],
) -> _T:
    """Setting *name*: *default* when absent or blank, else parsed (text) or checked (number).

    Raises:
        ConfigError: naming the setting, when the value is refused.
    """
    raw = settings.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    try:
        value: _T = parse(name, raw) if isinstance(raw, str) else check(name, raw)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"setting {name}={raw!r} is invalid: {err}") from None
    return value


def seconds_setting(settings: Mapping[str, SettingValue], name: str, default: float) -> float:
    """Setting *name* as seconds (finite, > 0); *default* when absent or blank."""
    return _setting(settings, name, default, seconds_option(), check_seconds)


def count_setting(settings: Mapping[str, SettingValue], name: str, default: int) -> int:
    """Setting *name* as a whole number >= 1; *default* when absent or blank."""

    def check(name: str, value: object) -> int:
        # A whole float (1000.0, say from a config parser) counts as that int.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return check_int(name, value, minimum=1)

    return _setting(settings, name, default, int_option(minimum=1), check)
