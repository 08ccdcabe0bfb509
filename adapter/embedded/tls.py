"""HTTPS for ``nvp-adapter gateway``: a server context from ``[gateway.tls]``, new on each reload.

Each new connection takes the context in force when it arrives (``ConnectionGuard`` starts TLS
per connection), so a reload serves the next handshakes and never touches an open connection.

Why a fresh context rather than reloading the one in use: ``load_cert_chain`` on a context that
serves does reach new handshakes, but ``load_verify_locations`` only ever adds CAs (a CA taken
out of ``client_ca_file`` would stay trusted), and a reload that failed half-way would leave the
new certificate with the old CA. A fresh context is all or nothing.
"""

from __future__ import annotations

import ssl

from adapter.config import TlsFiles
from adapter.core.errors import ConfigError

__all__ = ["GatewayTls", "build_server_context"]


class GatewayTls:
    """The gateway's certificate, key and optional client CA, read from their files.

    ``context()`` is the context in force; ``load()`` reads the files again and puts the new
    context in force, or raises ``ConfigError`` and keeps the old one.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._context = build_server_context(files)

    def __repr__(self) -> str:
        return f"GatewayTls({self.files.cert_file!r}, client_ca={self.asks_for_client_cert})"

    @property
    def asks_for_client_cert(self) -> bool:
        """Whether clients are asked for a certificate (certificate authentication)."""
        return self.files.client_ca_file is not None

    @property
    def paths(self) -> tuple[str, ...]:
        """The files the context is made of, for a watch on their content."""
        files = self.files
        return (files.cert_file, files.key_file) + (
            (files.client_ca_file,) if files.client_ca_file else ()
        )

    def context(self) -> ssl.SSLContext:
        return self._context

    def load(self) -> None:
        """Read the files again; raises ``ConfigError`` (the old context stays) if they fail."""
        self._context = build_server_context(self.files)


def build_server_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS server context; with ``client_ca_file``, client certificates asked for and verified.

    Raises ``ConfigError`` naming the file that did not load.
    """
    # Not ssl.create_default_context(Purpose.CLIENT_AUTH): that trusts the system's CAs for
    # client certificates too, and any CN a public CA signed would then pass as a merchant.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # A password callback that gives none: an encrypted key fails here, in words, instead
        # of OpenSSL asking for a pass phrase on the terminal.
        context.load_cert_chain(files.cert_file, files.key_file, password=_no_password)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(
            f"gateway.tls: cannot load {files.cert_file} and {files.key_file} as a PEM "
            f"certificate and its key: {_reason(exc)}",
            "gateway.tls",
        ) from None
    if files.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=files.client_ca_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"gateway.tls.client_ca_file: cannot load {files.client_ca_file} as PEM CA "
                f"certificates: {_reason(exc)}",
                "gateway.tls.client_ca_file",
            ) from None
        # Optional, not required: clients that authenticate with apiPassword still get in.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _no_password() -> bytes:
    raise ValueError("the key is encrypted; give the gateway an unencrypted key file")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
