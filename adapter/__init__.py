"""nvp-adapter: a gRPC front for the Mastercard Payment Gateway Services NVP API."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

__all__ = ["version"]


def version() -> str:
    """The installed package's version (``--version``, ``nvp_adapter_build_info``)."""
    try:
        return _distribution_version("nvp-adapter")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
