"""Settings: the TOML file, ``NVP_ADAPTER_*`` variables and flags, validated into frozen
dataclasses (``settings``); the environment mapping (``environment``), the effective settings
as TOML (``effective``) and secret files read again when they change (``rotation``).

The package re-exports ``settings``' public names: ``from adapter.config import Settings``.
"""

from adapter.config import settings as _settings
from adapter.config.settings import *  # noqa: F403 (the one list is settings.__all__)

__all__ = _settings.__all__
