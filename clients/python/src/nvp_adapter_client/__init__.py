"""The Python client of nvp-adapter: the gRPC stubs of ``mpgs.gateway.v1``, typed, and a failed
call's rich status decoded into what a caller acts on.

::

    import grpc
    from nvp_adapter_client import SessionServiceStub, advice, failure, session_service_pb2

    async with grpc.aio.insecure_channel("127.0.0.1:50051") as channel:
        stub = SessionServiceStub(channel)
        try:
            response = await stub.CreateSession(
                session_service_pb2.CreateSessionRequest(merchant="TESTMERCHANT"), timeout=10
            )
        except grpc.aio.AioRpcError as error:
            failed = failure(error)
            print(failed.reason, advice(failed, moves_money=False).retry)

The stubs live at ``nvp_adapter_client.mpgs.gateway.v1`` (generated from the adapter's
``proto/`` with grpcio-tools and mypy-protobuf, never edited); the message modules and the two
service stubs are re-exported here.
"""

from __future__ import annotations

from nvp_adapter_client.mpgs.gateway.v1 import (
    gateway_error_pb2,
    payment_service_pb2,
    payment_service_pb2_grpc,
    retry_safety_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from nvp_adapter_client.mpgs.gateway.v1.payment_service_pb2_grpc import PaymentServiceStub
from nvp_adapter_client.mpgs.gateway.v1.session_service_pb2_grpc import SessionServiceStub
from nvp_adapter_client.retry import DEFAULT_DELAY, Retry, RetryAdvice, advice
from nvp_adapter_client.status import (
    OUTCOME_TRAILER,
    ErrorInfo,
    Failure,
    FieldViolation,
    failure,
    outcome,
)

__all__ = [
    "DEFAULT_DELAY",
    "OUTCOME_TRAILER",
    "ErrorInfo",
    "Failure",
    "FieldViolation",
    "PaymentServiceStub",
    "Retry",
    "RetryAdvice",
    "SessionServiceStub",
    "advice",
    "failure",
    "gateway_error_pb2",
    "outcome",
    "payment_service_pb2",
    "payment_service_pb2_grpc",
    "retry_safety_pb2",
    "session_service_pb2",
    "session_service_pb2_grpc",
]
