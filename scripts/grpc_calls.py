"""What the scripts that call the adapter share: the TLS and token flags, the channel and metadata
they make, and a failed call's rich status, decoded by the client distribution
(``nvp_adapter_client.failure``), as lines to print.

>>> parser = argparse.ArgumentParser()
>>> add_connection_arguments(parser)
>>> args = parser.parse_args(["--ca-file", "ca.pem"])
>>> channel = open_channel("127.0.0.1:50051", args)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
from google.protobuf import any_pb2, text_format

from nvp_adapter_client import failure

__all__ = [
    "add_connection_arguments",
    "call_metadata",
    "describe_failure",
    "open_channel",
    "uses_connection_arguments",
]

_CONNECTION_FLAGS = ("token_file", "ca_file", "cert_file", "key_file")


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--token-file``, ``--ca-file``, ``--cert-file`` and ``--key-file`` to ``parser``."""
    parser.add_argument(
        "--token-file",
        type=Path,
        help="send 'authorization: Bearer <token>', the token being this file's text",
    )
    parser.add_argument("--ca-file", type=Path, help="call over TLS, trusting this CA")
    parser.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--key-file", type=Path, help="client certificate's key")


def uses_connection_arguments(args: argparse.Namespace) -> bool:
    """Whether any of the flags ``add_connection_arguments`` adds was given."""
    return any(getattr(args, name) is not None for name in _CONNECTION_FLAGS)


def call_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The metadata every call carries: the bearer token when ``--token-file`` names one.

    Raises ``OSError`` when the file cannot be read.
    """
    if args.token_file is None:
        return ()
    token = args.token_file.read_text().removesuffix("\n")
    return (("authorization", f"Bearer {token}"),)


def open_channel(target: str, args: argparse.Namespace) -> grpc.aio.Channel:
    """A channel to ``target`` (``HOST:PORT`` or ``unix:PATH``): TLS when ``--ca-file`` is given,
    mutual TLS when a client certificate is given too, plaintext otherwise.

    Raises ``OSError`` when a file cannot be read.
    """
    if args.ca_file is None:
        return grpc.aio.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        args.ca_file.read_bytes(),
        args.key_file.read_bytes() if args.key_file else None,
        args.cert_file.read_bytes() if args.cert_file else None,
    )
    return grpc.aio.secure_channel(target, credentials)


def describe_failure(error: grpc.RpcError) -> list[str]:
    """A failed call as lines: its code and message, then one line per rich detail (a detail of a
    type the client does not decode, or whose bytes do not parse, by its type URL)."""
    failed = failure(error)
    lines = [f"{failed.code.name}: {failed.message}"]
    for detail in failed.details:
        if isinstance(detail, any_pb2.Any):
            lines.append(f"  {detail.type_url} (not decoded)")
            continue
        shown = text_format.MessageToString(detail, as_one_line=True, as_utf8=True)
        lines.append(f"  {detail.DESCRIPTOR.full_name}: {shown}")
    return lines
