"""Make one CreateSession call and print the answer, or the rich error status.

Usage: .venv/bin/python scripts/first_call.py [--target 127.0.0.1:50051] [--merchant TESTMERCHANT]
       [--token-file FILE] [--ca-file CA.pem [--cert-file C.pem --key-file K.pem]]

``--target`` also takes ``unix:PATH``. ``--token-file`` sends ``authorization: Bearer <token>``
(the file's text less its trailing newline); ``--ca-file`` calls over TLS, and a client certificate
makes it mutual TLS. Exits 0 when the call succeeded, 1 when it failed (after printing why).
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from grpc_calls import add_connection_arguments, call_metadata, describe_failure, open_channel

from nvp_adapter_client import SessionServiceStub, session_service_pb2


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--merchant", default="TESTMERCHANT")
    parser.add_argument("--correlation-id", default="first-call")
    add_connection_arguments(parser)
    args = parser.parse_args()
    async with open_channel(args.target, args) as channel:
        stub = SessionServiceStub(channel)
        call = stub.CreateSession(
            session_service_pb2.CreateSessionRequest(
                merchant=args.merchant, correlation_id=args.correlation_id
            ),
            metadata=call_metadata(args),
            timeout=10,
        )
        try:
            print(await call)
        except grpc.aio.AioRpcError as error:
            print("\n".join(describe_failure(error)))
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
