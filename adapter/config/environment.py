"""Settings from the environment: ``NVP_ADAPTER_CONFIG`` and ``NVP_ADAPTER_<TABLE>_<KEY>``.

>>> read_environment({"NVP_ADAPTER_SERVER_DRAIN_SECONDS": "5"}).tables
{'server': {'drain_seconds': 5.0}}

Every scalar field of the ``[server]``, ``[upstream]``, ``[metrics]`` and ``[log]`` dataclasses of
``adapter.config`` has one variable, its name made of the table's and the field's (upper case);
nothing else lists them. The text is parsed by the field's type, as TOML would hold it: an integer,
a number, ``true`` or ``false``, a string. The values become ``config.Overrides``: over the file's,
under the flags', checked exactly as the file's are, and an error about one names its variable.

Any other variable that begins with ``NVP_ADAPTER_`` (in any case) is refused, so that a misspelt
name is never quietly ignored; an empty one is refused too, as it is more likely a template's
blank than a wish.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from adapter.config import (
    LogSettings,
    MetricsSettings,
    Overrides,
    ServerSettings,
    UpstreamSettings,
    did_you_mean,
    type_name,
)
from adapter.core.errors import ConfigError

__all__ = ["CONFIG_VARIABLE", "PREFIX", "TABLES", "VARIABLES", "config_file", "read_environment"]

PREFIX = "NVP_ADAPTER_"
CONFIG_VARIABLE = "NVP_ADAPTER_CONFIG"
"""Names the configuration file when ``--config`` is absent."""
TABLES: Mapping[str, type[Any]] = MappingProxyType(
    {
        "server": ServerSettings,
        "upstream": UpstreamSettings,
        "metrics": MetricsSettings,
        "log": LogSettings,
    }
)
"""The tables whose scalar keys the environment may set."""


@dataclass(frozen=True)
class Variable:
    """One ``NVP_ADAPTER_<TABLE>_<KEY>`` variable and the setting it stands for."""

    name: str
    table: str
    key: str
    kind: type[Any]
    """``str``, ``int``, ``float`` or ``bool``: how its text is read."""

    @property
    def setting(self) -> str:
        return f"{self.table}.{self.key}"


_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_PARSERS: Mapping[type[Any], Callable[[str], object]] = MappingProxyType(
    {
        str: lambda text: text,
        int: lambda text: int(text) if _INTEGER.fullmatch(text) else None,
        float: lambda text: float(text) if _NUMBER.fullmatch(text) else None,
        bool: {"true": True, "false": False}.get,
    }
)
"""Each type's reading of a variable's text, as TOML spells the value; None: not one."""


def _scalar(hint: Any) -> type[Any] | None:
    """The hint's type if it is a scalar one (optional or not), else None (a table, a list)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        kinds = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _scalar(kinds[0]) if len(kinds) == 1 else None
    return hint if hint in _PARSERS else None


def _variables() -> dict[str, Variable]:
    found = {}
    for table, cls in TABLES.items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind = _scalar(hints[field.name])
            if kind is not None:
                name = f"{PREFIX}{table}_{field.name}".upper()
                found[name] = Variable(name, table, field.name, kind)
    return found


VARIABLES: Mapping[str, Variable] = MappingProxyType(_variables())
"""Every ``NVP_ADAPTER_<TABLE>_<KEY>`` variable by name, derived from the settings dataclasses."""


def config_file(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The configuration file: ``--config`` when given, else ``NVP_ADAPTER_CONFIG``, else None.

    Raises ``ConfigError`` for an ``NVP_ADAPTER_CONFIG`` that is set but empty.
    """
    if flag is not None:
        return flag
    path = environ.get(CONFIG_VARIABLE)
    if path == "":
        raise ConfigError(
            f"{CONFIG_VARIABLE}: set but empty; unset it to run without a file", CONFIG_VARIABLE
        )
    return path


def read_environment(environ: Mapping[str, str]) -> Overrides:
    """The settings the ``NVP_ADAPTER_<TABLE>_<KEY>`` variables of ``environ`` give.

    Raises ``ConfigError`` naming the first variable (in name order) that is unknown, empty or
    not of its setting's type; its key is the setting (``server.listen``), or the variable for
    an unknown one.
    """
    tables: dict[str, dict[str, object]] = {}
    sources: dict[str, str] = {}
    for name in sorted(environ):
        if name == CONFIG_VARIABLE or not name.upper().startswith(PREFIX):
            continue
        variable = VARIABLES.get(name)
        if variable is None:
            raise ConfigError(_unknown(name), name)
        tables.setdefault(variable.table, {})[variable.key] = _parse(variable, environ[name])
        sources[variable.setting] = name
    return Overrides(tables, sources)


def _parse(variable: Variable, text: str) -> object:
    if not text:
        raise ConfigError(
            f"{variable.name}: set but empty; unset it to leave {variable.setting} to the "
            "file or the default",
            variable.setting,
        )
    value = _PARSERS[variable.kind](text)
    if value is None:
        # The text is not echoed, as the file's wrong-typed values are not: it may be a
        # secret pasted into the wrong variable.
        expected = type_name(variable.kind)
        raise ConfigError(
            f"{variable.name}: {variable.setting}: expected {expected}", variable.setting
        )
    return value


def _unknown(name: str) -> str:
    guess = did_you_mean(name.upper(), [*VARIABLES, CONFIG_VARIABLE])
    *others, last = [f"[{table}]" for table in TABLES]
    tables = f"{', '.join(others)} and {last}"
    return (
        f"{name}: unknown variable{guess}; the adapter reads {CONFIG_VARIABLE} and "
        f"{PREFIX}<TABLE>_<KEY> for the scalar keys of {tables}"
    )
