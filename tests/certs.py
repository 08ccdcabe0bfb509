"""Test certificates: trustme for servers, and client certificates with the names a test needs.

trustme cannot put a URI in a subject alternative name, which a SPIFFE identity needs, so client
certificates are built with cryptography and signed by a trustme CA.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    """A PEM private key and certificate."""

    key: bytes
    cert: bytes

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.key`` and ``stem.crt``; their paths."""
        key, cert = folder / f"{stem}.key", folder / f"{stem}.crt"
        key.write_bytes(self.key)
        cert.write_bytes(self.cert)
        return cert, key


def server_pair(ca: trustme.CA, *hosts: str) -> KeyPair:
    """A server certificate for ``hosts`` (default 127.0.0.1 and localhost) signed by ``ca``."""
    leaf = ca.issue_cert(*(hosts or ("127.0.0.1", "localhost")))
    return KeyPair(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())


CLIENT_IDENTITY = "client.test"
"""The subject alternative name of client certificates whose CN is what a test needs."""


def named_client(ca: trustme.CA, common_name: str) -> trustme.LeafCert:
    """A trustme client leaf whose subject CN is ``common_name``, with a DNS SAN beside it.

    A leaf with no SAN is what cryptography 51 deprecates and trustme then refuses to issue; the
    gateway reads the CN, so the SAN is only there to make the certificate a valid one.
    """
    return ca.issue_cert(CLIENT_IDENTITY, common_name=common_name)


def client_pair(
    ca: trustme.CA,
    *,
    common_name: str | None = None,
    uris: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
) -> KeyPair:
    """A client certificate signed by ``ca`` with this subject CN and these SANs."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return KeyPair(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )
