"""The effective settings as TOML: every table, every default filled in, no secret.

>>> print(effective_toml(load_settings(None)))  # doctest: +ELLIPSIS
[server]
listen = "127.0.0.1:50051"
...
[merchants.TESTMERCHANT]
password = "***"
...

What ``nvp-adapter config check`` prints: the settings dataclasses unstructured by cattrs, so a new
setting shows here with no word written for it. An optional setting left unset is absent, as TOML
has no null. A secret (a password, a token's digest) is ``"***"``, and so is the user info of any
URL (a proxy's credentials).
"""

from __future__ import annotations

from typing import Any

import cattrs
import tomli_w

from adapter.config import Settings, redact_url
from adapter.core.redaction import Secret

__all__ = ["MASK", "effective_document", "effective_toml"]

MASK = "***"
"""What every secret shows as."""
_converter = cattrs.Converter()
_converter.register_unstructure_hook(Secret, lambda _: MASK)
# Every string, not only the proxy's: a URL's user info never shows, whatever its key.
_converter.register_unstructure_hook(str, redact_url)
_converter.register_unstructure_hook_func(lambda hint: hint == frozenset[str], sorted)


def effective_toml(settings: Settings) -> str:
    """The settings as a TOML document, one table per section of the configuration file."""
    return tomli_w.dumps(effective_document(settings))


def effective_document(settings: Settings) -> dict[str, Any]:
    """The settings as the tables of a configuration file would hold them, secrets masked.

    ``[merchants.ID]`` and ``[callers.NAME]`` are keyed by the merchant id and caller name, which
    their tables do not repeat (``merchant``, ``name``).
    """
    document = _without_none(_converter.unstructure(settings))
    for entries, own_name in (("merchants", "merchant"), ("callers", "name")):
        for entry in document[entries].values():
            del entry[own_name]
    return document


def _without_none(table: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in table.items()
        if value is not None
    }
