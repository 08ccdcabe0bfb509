"""The status table's edges that the end-to-end rows cannot reach reliably."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from google.rpc import code_pb2, error_details_pb2

from adapter.core.errors import (
    GatewayRejected,
    UpstreamDeadlineBeforeSend,
    UpstreamReadTimeout,
    UpstreamTurnedAway,
)
from adapter.core.status import rich_status
from adapter.upstream.calls import UpstreamClient
from adapter.upstream.transport import Reply
from tests.conftest import MERCHANT, make_settings


def info_of(exc: BaseException) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert rich_status(exc).proto.details[0].Unpack(info)
    return info


async def test_no_time_left_is_a_timeout_before_sending() -> None:
    """A caller deadline already spent fails at once, and says the request was never sent."""
    settings = make_settings("http://127.0.0.1:9")
    client = UpstreamClient(_Unreachable(), settings.upstream, settings.merchants)
    with pytest.raises(UpstreamDeadlineBeforeSend) as caught:
        await client.call({"apiOperation": "CREATE_SESSION", "merchant": MERCHANT}, 0.0)
    status = rich_status(caught.value)
    assert status.proto.code == code_pb2.DEADLINE_EXCEEDED
    assert "outcome" not in info_of(caught.value).metadata


def test_a_sent_timeout_has_an_unknown_outcome() -> None:
    """A timeout after sending marks the outcome UNKNOWN."""
    assert info_of(UpstreamReadTimeout("gw", seconds=1.0)).metadata["outcome"] == "UNKNOWN"


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        ("A" * 63, "A" * 63),
        ("A" * 64, "UNKNOWN_CAUSE"),
        ("AB", "UNKNOWN_CAUSE"),
        ("ABC", "ABC"),
        ("A", "UNKNOWN_CAUSE"),
        ("A_", "UNKNOWN_CAUSE"),
        ("9AB", "UNKNOWN_CAUSE"),
        ("NEW_CAUSE_2", "NEW_CAUSE_2"),
    ],
)
def test_unknown_cause_reason_format(cause: str, reason: str) -> None:
    """An unknown cause is the reason only if it fits [A-Z][A-Z0-9_]+[A-Z0-9] and 63 chars."""
    exc = GatewayRejected(500, {"error.cause": cause, "result": "ERROR"})
    assert rich_status(exc).proto.code == code_pb2.UNKNOWN
    assert info_of(exc).reason == reason


@pytest.mark.parametrize(("advice", "seconds"), [(None, 1.0), (0.25, 0.25), (120.0, 120.0)])
def test_retry_info_follows_retry_after(advice: float | None, seconds: float) -> None:
    """RetryInfo carries the gateway's Retry-After advice, else the default delay."""
    status = rich_status(UpstreamTurnedAway(503, retry_after=advice))
    retry = error_details_pb2.RetryInfo()
    assert status.proto.details[-1].Unpack(retry)
    assert retry.retry_delay.ToTimedelta().total_seconds() == seconds


class _Unreachable:
    """A transport that must not be used."""

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        raise AssertionError("no call may be made")

    async def aclose(self) -> None:
        return None
