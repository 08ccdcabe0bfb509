"""A TLS server context from PEM files: the one place certificate, key and client CA are loaded,
for the API listener (which checks them here before grpc takes their bytes) and the embedded
gateway's HTTPS face. A file that does not load is one ``ConfigError`` line naming its key."""

from __future__ import annotations

import ssl

from adapter.core.errors import ConfigError

__all__ = ["server_context"]


def server_context(
    where: str, cert_file: str, key_file: str, client_ca_file: str | None = None
) -> ssl.SSLContext:
    """TLS 1.2 or newer; with ``client_ca_file``, client certificates asked for (not required)
    and verified against it alone.

    ``where`` is the settings key named in errors (``server.tls``, ``gateway.tls``).
    """
    # Not ssl.create_default_context(Purpose.CLIENT_AUTH): that trusts the system's CAs for
    # client certificates too, and any subject a public CA signed would then pass.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # A password callback that gives none: an encrypted key fails here, in words, instead
        # of OpenSSL asking for a pass phrase on the terminal.
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(
            f"{where}: cannot load {cert_file} and {key_file} as a PEM certificate and its key: "
            f"{_reason(exc)}",
            where,
        ) from None
    if client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{where}.client_ca_file: cannot load {client_ca_file} as PEM CA certificates: "
                f"{_reason(exc)}",
                f"{where}.client_ca_file",
            ) from None
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _no_password() -> bytes:
    raise ValueError("the key is encrypted; give an unencrypted key file")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
