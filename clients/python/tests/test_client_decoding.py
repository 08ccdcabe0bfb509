"""``failure`` and ``outcome`` on what a hostile or broken peer sends: never an exception, and
whatever can be read is read.

Statuses come over a real grpc.aio server on loopback port 0 that answers with trailers a test
chooses, and, for hypothesis's many examples, as ``grpc.aio.AioRpcError`` built directly (the very
object a failed call raises).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from nvp_adapter_client import gateway_error_pb2
from nvp_adapter_client.status import (
    DETAILS_TRAILER,
    MAX_RETRY_DELAY,
    OUTCOME_TRAILER,
    ErrorInfo,
    Failure,
    failure,
    outcome,
)

KNOWN_TYPES = [
    "google.rpc.ErrorInfo",
    "google.rpc.BadRequest",
    "google.rpc.RetryInfo",
    "mpgs.gateway.v1.GatewayError",
]


def packed(message: error_details_pb2.ErrorInfo | error_details_pb2.RetryInfo) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def status_bytes(code: int, *details: any_pb2.Any) -> bytes:
    serialized: bytes = status_pb2.Status(
        code=code, message="m", details=details
    ).SerializeToString()
    return serialized


def error_with(trailers: tuple[tuple[str, str | bytes], ...]) -> grpc.aio.AioRpcError:
    """What a failed UNAVAILABLE call raises, with these trailers."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), "m"
    )


@pytest.fixture
async def answering() -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a server whose one method fails UNAVAILABLE "m" with the trailing metadata
    the request's bytes name: the request is the ``grpc-status-details-bin`` value itself."""

    async def fail(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(
            grpc.StatusCode.UNAVAILABLE, "m", trailing_metadata=((DETAILS_TRAILER, request),)
        )
        raise AssertionError("abort returns no answer")

    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(fail)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Hostile", {"Fail": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def over_the_wire(channel: grpc.aio.Channel, details: bytes) -> Failure:
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/test.Hostile/Fail"
    )
    call = method(details, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return failure(caught.value)


UNAVAILABLE = code_pb2.UNAVAILABLE
INFO = packed(error_details_pb2.ErrorInfo(reason="R", domain="nvp-adapter", metadata={"k": "v"}))

OVER_THE_WIRE = {
    "not a status": (b"\xff\xff\xff", Failure(grpc.StatusCode.UNAVAILABLE, "m")),
    "a truncated status": (
        status_bytes(UNAVAILABLE, INFO)[:-3],
        Failure(grpc.StatusCode.UNAVAILABLE, "m"),
    ),
    "another code's status": (
        status_bytes(code_pb2.INTERNAL, INFO),
        Failure(grpc.StatusCode.UNAVAILABLE, "m"),
    ),
    "a garbled detail among good ones": (
        status_bytes(
            UNAVAILABLE,
            any_pb2.Any(type_url="type.googleapis.com/google.rpc.RetryInfo", value=b"\x0a\xff"),
            INFO,
        ),
        Failure(
            grpc.StatusCode.UNAVAILABLE,
            "m",
            error_info=ErrorInfo("R", "nvp-adapter", {"k": "v"}),
            details=(
                any_pb2.Any(type_url="type.googleapis.com/google.rpc.RetryInfo", value=b"\x0a\xff"),
                error_details_pb2.ErrorInfo(reason="R", domain="nvp-adapter", metadata={"k": "v"}),
            ),
        ),
    ),
}


@pytest.mark.parametrize(("sent", "expected"), OVER_THE_WIRE.values(), ids=OVER_THE_WIRE)
async def test_a_broken_trailer_over_the_wire(
    answering: grpc.aio.Channel, sent: bytes, expected: Failure
) -> None:
    """A trailer that does not parse, or describes another code, gives grpc's code and message
    alone; a detail that does not parse stays undecoded while the others are read."""
    assert await over_the_wire(answering, sent) == expected


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        (-5, 0, timedelta(0)),
        (2**62, 0, MAX_RETRY_DELAY),
        (-(2**62), -999_999_999, timedelta(0)),
        (1, 500_000_000, timedelta(seconds=1.5)),
    ],
)
def test_a_retry_delay_is_clipped_into_a_day(seconds: int, nanos: int, expected: timedelta) -> None:
    """A negative delay is no wait; one past a day (or past what a timedelta holds) is a day."""
    delay = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )
    decoded = failure(error_with(((DETAILS_TRAILER, status_bytes(UNAVAILABLE, packed(delay))),)))
    assert decoded.retry_delay == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_in_the_trailer_never_raise(data: bytes) -> None:
    """Arbitrary bytes as ``grpc-status-details-bin``: a Failure, grpc's own code and message."""
    decoded = failure(error_with(((DETAILS_TRAILER, data),)))
    assert (decoded.code, decoded.message) == (grpc.StatusCode.UNAVAILABLE, "m")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(KNOWN_TYPES), st.text(max_size=30)),
            st.binary(max_size=128),
        ),
        max_size=6,
    )
)
def test_any_bytes_in_a_detail_never_raise(details: list[tuple[str, bytes]]) -> None:
    """A well-formed status whose details hold arbitrary bytes under known and unknown type
    names: one detail each, every typed field of its type or empty."""
    anys = [any_pb2.Any(type_url=f"type.googleapis.com/{n}", value=v) for n, v in details]
    decoded = failure(error_with(((DETAILS_TRAILER, status_bytes(UNAVAILABLE, *anys)),)))
    assert len(decoded.details) == len(details)
    assert decoded.error_info is None or isinstance(decoded.error_info, ErrorInfo)
    assert decoded.gateway_error is None or isinstance(
        decoded.gateway_error, gateway_error_pb2.GatewayError
    )
    assert decoded.retry_delay is None or timedelta(0) <= decoded.retry_delay <= MAX_RETRY_DELAY


def test_the_details_trailer_as_text_is_ignored() -> None:
    """A ``-bin`` trailer is bytes; anything else in its place is not read."""
    text = status_bytes(UNAVAILABLE, INFO).decode("latin-1")
    assert failure(error_with(((DETAILS_TRAILER, text),))) == Failure(
        grpc.StatusCode.UNAVAILABLE, "m"
    )


@pytest.mark.parametrize(
    ("trailers", "expected"),
    [
        (None, None),
        ((), None),
        (((OUTCOME_TRAILER, "replayed"),), "replayed"),
        ((("other", "x"), (OUTCOME_TRAILER, b"reconciled")), "reconciled"),
        (((OUTCOME_TRAILER, b"\xff"),), "\ufffd"),
    ],
)
def test_outcome_reads_the_answer_s_trailer(
    trailers: tuple[tuple[str, str | bytes], ...] | None, expected: str | None
) -> None:
    """``outcome`` is the trailer's text, or ``None`` without one; bytes are decoded leniently."""
    assert outcome(trailers) == expected


def test_a_status_of_another_domain_has_no_reason() -> None:
    """An ErrorInfo some other service (a proxy) attached is kept, but is not the adapter's:
    ``reason`` and ``outcome`` read only domain ``nvp-adapter``."""
    info = error_details_pb2.ErrorInfo(
        reason="UPSTREAM_UNAVAILABLE", domain="proxy.example", metadata={"outcome": "NOT_FOUND"}
    )
    decoded = failure(error_with(((DETAILS_TRAILER, status_bytes(UNAVAILABLE, packed(info))),)))
    assert decoded.error_info == ErrorInfo(
        "UPSTREAM_UNAVAILABLE", "proxy.example", {"outcome": "NOT_FOUND"}
    )
    assert (decoded.reason, decoded.outcome) == (None, None)
