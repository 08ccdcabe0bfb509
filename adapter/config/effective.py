"""The effective settings as TOML: every table, every default filled in, no secret.

>>> print(effective_toml(load_settings(None)))  # doctest: +ELLIPSIS
[server]
listen = "127.0.0.1:50051"
...
[merchants.TESTMERCHANT]
password = "***"
...

What ``nvp-adapter config check`` prints. Each table's keys are its dataclass's fields, so a new
setting shows here with no word written for it. An optional setting left unset is absent, as TOML
has no null. A secret (a password, a token's digest) is ``"***"``, and so is the user info of any
URL (a proxy's credentials).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import tomli_w

from adapter.config import Settings, redact_url
from adapter.core.redaction import Secret

__all__ = ["MASK", "effective_document", "effective_toml"]

MASK = "***"
"""What every secret shows as."""


def effective_toml(settings: Settings) -> str:
    """The settings as a TOML document, one table per section of the configuration file."""
    return tomli_w.dumps(effective_document(settings))


def effective_document(settings: Settings) -> dict[str, Any]:
    """The settings as the tables of a configuration file would hold them, secrets masked.

    ``[merchants.ID]`` and ``[callers.NAME]`` are keyed by the merchant id and caller name.
    """
    document: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, Mapping):
            document[field.name] = {name: _entry(entry) for name, entry in value.items()}
        else:
            document[field.name] = _table(value)
    return document


def _entry(entry: object) -> dict[str, Any]:
    """A ``[merchants.ID]`` or ``[callers.NAME]`` table: the entry's first field is its own name
    (``merchant``, ``name``), which the table's key already says."""
    first = dataclasses.fields(entry)[0].name  # type: ignore[arg-type]
    table = _table(entry)
    del table[first]
    return table


def _table(settings: object) -> dict[str, Any]:
    """A settings dataclass as a table; a key whose value is None is left out."""
    table = {}
    for field in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, field.name)
        if value is not None:
            table[field.name] = _value(value)
    return table


def _value(value: object) -> object:
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        # Every string, not only the proxy's: a URL's user info never shows, whatever its key.
        return redact_url(value)
    if isinstance(value, frozenset):
        return sorted(value)
    if dataclasses.is_dataclass(value):
        return _table(value)
    return value
