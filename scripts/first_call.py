"""Make one CreateSession call and print the answer, or the rich error status.

Usage: .venv/bin/python scripts/first_call.py [--target 127.0.0.1:50051] [--merchant TESTMERCHANT]
       [--token-file FILE] [--ca-file CA.pem [--cert-file C.pem --key-file K.pem]]

``--target`` also takes ``unix:PATH``. ``--token-file`` sends ``authorization: Bearer <token>``
(the file's text less its trailing newline); ``--ca-file`` calls over TLS, and a client certificate
makes it mutual TLS.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from adapter._proto.mpgs.gateway.v1 import (
    gateway_error_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)

DETAILS = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    gateway_error_pb2.GatewayError,
)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--merchant", default="TESTMERCHANT")
    parser.add_argument("--correlation-id", default="first-call")
    parser.add_argument("--token-file", type=Path, help="a file holding the caller's token")
    parser.add_argument("--ca-file", type=Path, help="call over TLS, trusting this CA")
    parser.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--key-file", type=Path, help="client certificate's key")
    args = parser.parse_args()
    metadata: tuple[tuple[str, str], ...] = ()
    if args.token_file is not None:
        token = args.token_file.read_text().removesuffix("\n")
        metadata = (("authorization", f"Bearer {token}"),)
    async with _channel(args) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        call = stub.CreateSession(
            session_service_pb2.CreateSessionRequest(
                merchant=args.merchant, correlation_id=args.correlation_id
            ),
            metadata=metadata,
            timeout=10,
        )
        try:
            print(await call)
        except grpc.aio.AioRpcError as error:
            print(error.code().name, error.details())
            status = await rpc_status.aio.from_call(call)
            for packed in status.details if status else []:
                for kind in DETAILS:
                    if packed.Is(kind.DESCRIPTOR):
                        detail = kind()
                        packed.Unpack(detail)
                        print(f"  {kind.DESCRIPTOR.full_name}: {detail}".rstrip())


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    if args.ca_file is None:
        return grpc.aio.insecure_channel(args.target)
    credentials = grpc.ssl_channel_credentials(
        args.ca_file.read_bytes(),
        args.key_file.read_bytes() if args.key_file else None,
        args.cert_file.read_bytes() if args.cert_file else None,
    )
    return grpc.aio.secure_channel(args.target, credentials)


if __name__ == "__main__":
    asyncio.run(main())
