"""No call succeeds upstream and then fails on its way back (docs/errors.md).

A request is refused before any upstream call when its answer might not fit back through gRPC
(correlation_id over 100 characters, extra_fields past their bounds); an answer that is over the
server's message limit all the same is a rich INTERNAL with one log line; and a status never
grows past what a grpc client accepts in trailers, whatever text the gateway puts in its error.
All through a real grpc.aio client, against a scripted gateway on loopback.
"""

from __future__ import annotations

import dataclasses
import logging

import grpc
import pytest
from google.rpc import error_details_pb2

from adapter._proto.mpgs.gateway.v1 import gateway_error_pb2 as gw
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.config import Settings
from adapter.core import nvp
from tests.conftest import (
    MERCHANT,
    Failure,
    ScriptedUpstream,
    StartAdapter,
    fail,
    make_settings,
)

Code = grpc.StatusCode
MIB = 1024 * 1024
SUCCESS = {
    "merchant": MERCHANT,
    "result": "SUCCESS",
    "session.id": "SESSION0002AAAAAAAAAAAAAAAAAAAA",
    "session.updateStatus": "NO_UPDATE",
    "session.version": "0123456789",
}
# The longest correlation id that fits grpc's default 4 MiB request limit beside the merchant:
# the gateway would create a session whose answer (echoing it) could not be sent back.
LONGEST_FITTING = 4 * MIB - 23


def violation(failure: Failure) -> tuple[Code, str, str]:
    """The code, reason and the one FieldViolation's field of a refused request."""
    bad_request = failure.details[error_details_pb2.BadRequest]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    [field_violation] = bad_request.field_violations
    return failure.code, failure.info.reason, field_violation.field


def gateway_error(failure: Failure) -> gw.GatewayError:
    error = failure.details[gw.GatewayError]
    assert isinstance(error, gw.GatewayError)
    return error


def with_message_limit(settings: Settings, limit: int) -> Settings:
    return dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, max_message_bytes=limit)
    )


# --- requests refused before any upstream call -------------------------------------------------


@pytest.mark.parametrize("length", [101, LONGEST_FITTING], ids=["101", "4 MiB"])
async def test_a_long_correlation_id_is_refused_before_any_call(
    length: int, scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A correlation_id over 100 characters is INVALID_ARGUMENT naming correlation_id."""
    scripted_upstream.reply(nvp.encode(SUCCESS), 201)
    stub = await start_adapter(make_settings(scripted_upstream.url))
    request = pb.CreateSessionRequest(merchant=MERCHANT, correlation_id="c" * length)
    failure = await fail(stub, request)
    assert violation(failure) == (Code.INVALID_ARGUMENT, "INVALID_REQUEST", "correlation_id")


async def test_a_refused_correlation_id_reaches_no_gateway(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """The refusal is made before the gateway is called: it sees no request."""
    scripted_upstream.reply(nvp.encode(SUCCESS), 201)
    stub = await start_adapter(make_settings(scripted_upstream.url))
    await fail(stub, pb.CreateSessionRequest(merchant=MERCHANT, correlation_id="c" * 101))
    assert scripted_upstream.requests == []


async def test_a_correlation_id_of_100_characters_is_sent(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """100 characters, the gateway's own limit, are sent as they are."""
    scripted_upstream.reply(nvp.encode(SUCCESS), 201)
    stub = await start_adapter(make_settings(scripted_upstream.url))
    await stub.CreateSession(
        pb.CreateSessionRequest(merchant=MERCHANT, correlation_id="é" * 100), timeout=5
    )
    assert scripted_upstream.requests[0]["correlationId"] == "é" * 100


async def test_an_extra_value_over_1024_characters_is_refused(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """An extra_fields value over 1024 characters is INVALID_ARGUMENT naming its key."""
    stub = await start_adapter(make_settings(scripted_upstream.url))
    request = pb.CreateSessionRequest(
        merchant=MERCHANT, extra_fields={"order.note": "n" * 1025, "order.id": "1"}
    )
    failure = await fail(stub, request)
    assert violation(failure) == (
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "extra_fields[order.note]",
    )


async def test_more_than_100_extra_fields_are_refused(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """More than 100 extra_fields entries are INVALID_ARGUMENT naming extra_fields."""
    stub = await start_adapter(make_settings(scripted_upstream.url))
    extra = {f"order.item[{n}].sku": "s" for n in range(101)}
    failure = await fail(stub, pb.CreateSessionRequest(merchant=MERCHANT, extra_fields=extra))
    assert violation(failure) == (Code.INVALID_ARGUMENT, "INVALID_REQUEST", "extra_fields")


async def test_extra_fields_at_their_bounds_are_sent(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """100 entries of 1024 characters each are within bounds and sent as they are."""
    scripted_upstream.reply(nvp.encode(SUCCESS), 201)
    stub = await start_adapter(make_settings(scripted_upstream.url))
    extra = {f"order.item[{n}].sku": "s" * 1024 for n in range(100)}
    await stub.CreateSession(
        pb.CreateSessionRequest(merchant=MERCHANT, extra_fields=extra), timeout=5
    )
    sent = scripted_upstream.requests[0]
    assert {key: sent[key] for key in extra} == extra


# --- an answer too large to send back ----------------------------------------------------------


async def test_an_answer_over_the_message_limit_is_a_rich_internal(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A successful answer that would be over max_message_bytes as a gRPC message (allowed in by
    a larger max_response_bytes) is INTERNAL UPSTREAM_PROTOCOL_ERROR, not grpc's bare
    RESOURCE_EXHAUSTED."""
    scripted_upstream.reply(nvp.encode({**SUCCESS, "big": "b" * 100_000}), 201)
    settings = make_settings(scripted_upstream.url, max_response_bytes=MIB)
    stub = await start_adapter(with_message_limit(settings, 64 * 1024))
    failure = await fail(stub)
    assert (failure.code, failure.info.reason, failure.info.metadata["attempts"]) == (
        Code.INTERNAL,
        "UPSTREAM_PROTOCOL_ERROR",
        "1",
    )


async def test_an_answer_over_the_message_limit_is_logged_once(
    scripted_upstream: ScriptedUpstream,
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The refused answer is one log line from the adapter, its access line, naming the limit."""
    caplog.set_level(logging.INFO)
    scripted_upstream.reply(nvp.encode({**SUCCESS, "big": "b" * 100_000}), 201)
    settings = make_settings(scripted_upstream.url, max_response_bytes=MIB)
    stub = await start_adapter(with_message_limit(settings, 64 * 1024))
    await fail(stub)
    lines = [r for r in caplog.records if r.name not in {"adapter.server", "adapter.upstream"}]
    assert [(r.name, r.levelname, r.getMessage()) for r in lines] == [
        ("adapter.access", "WARNING", "rpc")
    ]
    assert "65536-byte limit" in lines[0].__dict__["status_message"]


# --- the gateway's text in a status is bounded -------------------------------------------------


def oversized_error(text: str, times: int = MIB) -> bytes:
    """An INVALID_REQUEST on the caller's correlationId, its free-text fields huge."""
    return nvp.encode(
        {
            "error.cause": "INVALID_REQUEST",
            "error.explanation": text * times,
            "error.field": "correlationId",
            "error.supportCode": text * 1000,
            "result": "ERROR",
        }
    )


async def test_a_huge_explanation_is_clipped_to_1000_characters(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A 1 MiB error.explanation reaches the caller as its first 999 characters and an ellipsis,
    and the support code as its first 99 and an ellipsis: the gateway's documented lengths."""
    scripted_upstream.reply(oversized_error("x"), 400)
    stub = await start_adapter(make_settings(scripted_upstream.url, max_response_bytes=4 * MIB))
    error = gateway_error(await fail(stub))
    assert (error.explanation, error.support_code) == ("x" * 999 + "…", "x" * 99 + "…")


async def test_a_huge_explanation_keeps_its_row_of_the_table(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A 1 MiB explanation does not change what the caller is told: INVALID_ARGUMENT naming the
    field the gateway named."""
    scripted_upstream.reply(oversized_error("x"), 400)
    stub = await start_adapter(make_settings(scripted_upstream.url, max_response_bytes=4 * MIB))
    failure = await fail(stub)
    assert violation(failure) == (Code.INVALID_ARGUMENT, "INVALID_REQUEST", "correlation_id")


async def test_a_status_far_from_ascii_still_fits(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """Error text of 4-byte characters, which grpc would send at up to 12 bytes each, is clipped
    further until the status fits a client's default trailer limit: the caller gets the rich
    status, not a bare RESOURCE_EXHAUSTED."""
    scripted_upstream.reply(oversized_error("😀", 10_000), 400)
    stub = await start_adapter(make_settings(scripted_upstream.url))
    failure = await fail(stub)
    assert violation(failure) == (Code.INVALID_ARGUMENT, "INVALID_REQUEST", "correlation_id")


async def test_a_huge_invalid_key_is_a_rich_invalid_argument(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A caller's extra_fields key of a million characters, refused as not an NVP name, is
    answered with the rich INVALID_ARGUMENT (its echo in the status clipped), not a bare
    RESOURCE_EXHAUSTED."""
    stub = await start_adapter(make_settings(scripted_upstream.url))
    request = pb.CreateSessionRequest(merchant=MERCHANT, extra_fields={"k" * 1_000_000: "v"})
    failure = await fail(stub, request)
    assert (failure.code, failure.info.reason) == (Code.INVALID_ARGUMENT, "INVALID_REQUEST")
