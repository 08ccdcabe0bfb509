"""Host and port as text, the one way: an IPv6 literal in brackets, as URLs and ``HOST:PORT``
listen addresses write it."""

from __future__ import annotations

__all__ = ["bracketed", "format_address"]


def bracketed(host: str) -> str:
    """``host`` as a URL's authority holds it: an IPv6 literal in brackets, anything else as is."""
    return f"[{host}]" if ":" in host else host


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 hosts in brackets."""
    return f"{bracketed(host)}:{port}"
