"""Make one CreateSession call and print the answer, or the rich error status.

Usage: .venv/bin/python scripts/first_call.py [--target 127.0.0.1:50051] [--merchant TESTMERCHANT]
"""

from __future__ import annotations

import argparse
import asyncio

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
    args = parser.parse_args()
    async with grpc.aio.insecure_channel(args.target) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        call = stub.CreateSession(
            session_service_pb2.CreateSessionRequest(
                merchant=args.merchant, correlation_id=args.correlation_id
            ),
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


if __name__ == "__main__":
    asyncio.run(main())
