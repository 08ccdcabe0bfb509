"""Which proxy, if any, carries requests to the gateway: ``upstream.proxy``, else the environment.

The proxy is ``upstream.proxy`` when set; otherwise the standard ``https_proxy`` / ``http_proxy``
and ``no_proxy`` environment variables (either case) for the gateway's URL, read once when the
transport is built (``~/.netrc`` is never read). Credentials in the proxy URL are secrets: they
travel only as the ``Proxy-Authorization`` header, which no repr or log line shows.

>>> proxy_route(UpstreamSettings(url="https://gw.example", proxy="http://p.internal:3128")).shown
'http://p.internal:3128'
"""

from __future__ import annotations

import base64
import os
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote, urlsplit

from adapter.config import UpstreamSettings, proxy_url, redact_url

__all__ = ["ProxyRoute", "proxy_route"]


@dataclass(frozen=True)
class ProxyRoute:
    """How requests reach the gateway: through the proxy at ``url``, or directly (``url`` None).

    ``url`` never holds user info: the credentials it had travel as ``headers``
    (``Proxy-Authorization``), which no repr shows.
    """

    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    source: str = ""
    """Where the proxy came from: ``upstream.proxy`` or the environment variable's name."""
    shown: str = ""
    """The proxy URL as configured, user info redacted: fit for a log line."""


def proxy_route(settings: UpstreamSettings) -> ProxyRoute:
    """The proxy for the gateway's URL: ``upstream.proxy``, else the environment's, else none.

    With no proxy, ``source`` names the ``no_proxy`` variable when that is why.
    Raises ``ConfigError`` (with the URL's user info redacted) for a proxy URL it cannot use.
    """
    if settings.proxy is not None:
        return _route(settings.proxy, "upstream.proxy")
    gateway = urlsplit(settings.url)
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(gateway.scheme)
    if not url:
        return ProxyRoute()
    if _bypass(gateway.netloc, proxies):
        return ProxyRoute(source=_variable("no"))
    return _route(url if "://" in url else f"http://{url}", _variable(gateway.scheme))


# In the stdlib since 3.0 but not in typeshed; ``proxy_bypass`` is typed, but on macOS and Windows
# it asks the system's settings rather than ``no_proxy``.
_bypass: Callable[[str, Mapping[str, str]], bool]
_bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
"""Whether ``no_proxy`` names the host."""


def _variable(scheme: str) -> str:
    """The name of the variable ``getproxies_environment`` read: the lower-case one wins."""
    name = f"{scheme}_proxy"
    return name if os.environ.get(name) else name.upper()


def _route(url: str, source: str) -> ProxyRoute:
    parts = proxy_url(url, source)  # the setting's rule, for the variables too
    shown = redact_url(url)
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    if parts.username is None:
        return ProxyRoute(bare, source=source, shown=shown)
    user, password = unquote(parts.username), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    headers = MappingProxyType({"Proxy-Authorization": f"Basic {token}"})
    return ProxyRoute(bare, headers, source, shown)
