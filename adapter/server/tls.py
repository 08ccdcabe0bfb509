"""TLS on the gRPC listener, with certificates that can be replaced while the server runs.

grpc asks ``_fetch`` for a new certificate configuration on every new client connection (from
one of its own threads); it gets one only after ``load()`` read new files, ``None`` (keep the
current one) otherwise, so connections made before a rotation keep theirs and none is dropped.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from adapter.config import TlsFiles
from adapter.core.errors import ConfigError
from adapter.net.tls import server_context

__all__ = ["ServerTls"]


class ServerTls:
    """The listener's certificate, key and (for mutual TLS) client CA, read from their files.

    Raises ``ConfigError`` when the files cannot be read or do not make a usable server identity.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._current = self._read()
        self._pending: grpc.ServerCertificateConfiguration | None = None

    def __repr__(self) -> str:
        return f"ServerTls(cert_file={self.files.cert_file!r}, mutual={self.mutual})"

    @property
    def mutual(self) -> bool:
        """Whether every client must present a certificate signed by ``client_ca_file``."""
        return self.files.client_ca_file is not None

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up every later ``load()`` for new connections."""
        return grpc.dynamic_ssl_server_credentials(
            self._current,
            # grpc takes None as "unchanged"; its stubs do not say so.
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    def load(self) -> None:
        """Read the files again; the new certificate serves the next connections."""
        self._current = self._pending = self._read()

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        pending, self._pending = self._pending, None
        return pending

    def _read(self) -> grpc.ServerCertificateConfiguration:
        files = self.files
        cert, key = _read(files.cert_file, "cert_file"), _read(files.key_file, "key_file")
        client_ca = _read(files.client_ca_file, "client_ca_file") if files.client_ca_file else None
        # grpc reports a bad certificate only when a client connects; ssl says it now, in words.
        server_context("server.tls", files.cert_file, files.key_file, files.client_ca_file)
        return grpc.ssl_server_certificate_configuration([(key, cert)], client_ca)


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        message = f"server.tls.{key}: cannot read {path}: {exc.strerror or exc}"
        raise ConfigError(message, f"server.tls.{key}") from None
