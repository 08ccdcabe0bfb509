"""Retry-After is advice, read strictly and trusted only so far (docs/errors.md, "Retry-After").

The gateway's ``Retry-After`` is 1 to 9 ASCII digits or an HTTP date, or it is no advice; the
adapter waits for it only up to ``upstream.retry_after_max_seconds`` and never past the caller's
deadline, and passes it on in RetryInfo as a valid Duration of at most a day. Whatever headers a
429 or 503 carries, the caller gets one rich status from the table, in time; and should building
that status ever fail, a minimal rich INTERNAL still goes out.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import UpstreamSettings
from adapter.core.errors import ConfigError, UpstreamTurnedAway, UpstreamUnavailable
from adapter.core.status import rich_status
from adapter.upstream.calls import parse_retry_after
from adapter.upstream.transport import Reply
from tests.conftest import (
    MERCHANT,
    Failure,
    ScriptedUpstream,
    StartAdapter,
    fail,
    make_settings,
)

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

Code = grpc.StatusCode
DAY = 86400.0
NOW = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
YEAR_9999 = 253402300799.0  # Fri, 31 Dec 9999 23:59:59 GMT


def retry_delay(failure: Failure) -> float:
    retry = failure.details[error_details_pb2.RetryInfo]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    return float(retry.retry_delay.ToTimedelta().total_seconds())


def busy(upstream: ScriptedUpstream, retry_after: str) -> None:
    upstream.reply(
        "<html>busy</html>", 503, content_type="text/html", **{"Retry-After": retry_after}
    )


# --- reading the header ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("999999999", 999999999.0),
        ("\t7 ", 7.0),
        ("1000000000", None),  # ten digits: more than any advice, and no arithmetic risk taken
        ("1000000000000000", None),
        ("²", None),  # str.isdigit() says yes
        ("٣", None),  # an Arabic-Indic three: a digit, not an ASCII one
        ("+5", None),
        ("5.5", None),
        ("1e3", None),
        ("Wed, 21 Oct 2015 07:28:10", 10.0),  # no zone: HTTP dates are GMT
        ("Wed, 21 Oct 2015 07:28:10 -0000", 10.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", YEAR_9999 - NOW),
        ("Sat, 01 Jan 10000 00:00:00 GMT", None),  # a year datetime cannot hold
        ("Wed, 21 Oct 99999999999999999 07:28:10 GMT", None),  # overflows
        ("Wed, 99 Oct 2015 07:28:10 GMT", None),
    ],
)
def test_retry_after_is_read_strictly(header: str, seconds: float | None) -> None:
    """1 to 9 ASCII digits, or an HTTP date; anything else, overflow included, is no advice."""
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize("advice", [1e15, math.inf, 999999999.0])
def test_retry_info_is_at_most_a_day(advice: float) -> None:
    """Advice past a day is passed on as a day: always a Duration any client can read."""
    status = rich_status(UpstreamTurnedAway(503, retry_after=advice))
    retry = error_details_pb2.RetryInfo()
    assert status.proto.details[-1].Unpack(retry)
    assert retry.retry_delay.ToTimedelta().total_seconds() == DAY


@pytest.mark.parametrize("value", [-1.0, 3600.5])
def test_the_cap_has_a_range(value: float) -> None:
    """upstream.retry_after_max_seconds is 0 to 3600; outside it the settings are refused."""
    with pytest.raises(ConfigError, match="retry_after_max_seconds"):
        UpstreamSettings(retry_after_max_seconds=value)


# --- waiting for it ----------------------------------------------------------------------------


async def test_advice_over_the_cap_is_answered_at_once(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """Retry-After: 3600 on a call with no deadline is not waited for: the caller has its
    answer at once, after one attempt."""
    busy(scripted_upstream, "3600")
    stub = await start_adapter(make_settings(scripted_upstream.url))
    started = time.monotonic()
    async with asyncio.timeout(10):  # bounds the test, not the call: the call has no deadline
        call = stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT))
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    assert time.monotonic() - started < 1.0
    assert len(scripted_upstream.requests) == 1


async def test_advice_over_the_cap_is_passed_on(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """The advice the adapter did not wait for reaches the caller in RetryInfo."""
    busy(scripted_upstream, "3600")
    failure = await fail(await start_adapter(make_settings(scripted_upstream.url)))
    assert (failure.code, failure.info.reason, retry_delay(failure)) == (
        Code.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        3600.0,
    )


async def test_the_cap_is_a_setting(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """With retry_after_max_seconds = 0.5, a Retry-After of 1 is already too long to wait for."""
    busy(scripted_upstream, "1")
    stub = await start_adapter(make_settings(scripted_upstream.url, retry_after_max_seconds=0.5))
    failure = await fail(stub)
    assert failure.info.metadata["attempts"] == "1"


@pytest.mark.parametrize(
    "header",
    ["1000000000000000", "²", "soon", "Sat, 01 Jan 10000 00:00:00 GMT"],
    ids=["overflowing digits", "superscript two", "text", "year 10000"],
)
async def test_unusable_advice_is_no_advice(
    header: str, scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A Retry-After that is not usable advice is as if there were none: the 503 is retried by
    the adapter's own backoff, and answered UNAVAILABLE with the default RetryInfo."""
    busy(scripted_upstream, header)
    failure = await fail(await start_adapter(make_settings(scripted_upstream.url)))
    seen = (failure.code, failure.info.reason, failure.info.metadata["attempts"])
    assert (seen, retry_delay(failure)) == ((Code.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "3"), 1.0)


async def test_a_date_years_away_is_a_day_in_retry_info(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """An HTTP date in the year 9999 is not waited for, and reaches the caller as a day."""
    busy(scripted_upstream, "Fri, 31 Dec 9999 23:59:59 GMT")
    failure = await fail(await start_adapter(make_settings(scripted_upstream.url)))
    assert (failure.info.metadata["attempts"], retry_delay(failure)) == ("1", DAY)


# --- the boundary holds even when building the status fails ------------------------------------


class Unprintable(str):
    """A reason whose text cannot be formatted: building the status's message fails."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        raise RuntimeError("cannot format this reason")


class BrokenErrorTransport:
    """A transport raising an adapter error whose message cannot be built."""

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        raise UpstreamUnavailable(Unprintable("refused"))

    async def aclose(self) -> None:
        return None


async def test_a_status_that_cannot_be_built_is_a_minimal_rich_internal() -> None:
    """When building the rich status itself fails, the caller still gets a rich status:
    INTERNAL, ErrorInfo reason INTERNAL in domain nvp-adapter; never a bare status."""
    settings = make_settings(retry_max_attempts=1)
    async with (
        build_server(settings, transport=BrokenErrorTransport()) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        failure = await fail(session_service_pb2_grpc.SessionServiceStub(channel))
    assert (failure.code, failure.info.reason) == (Code.INTERNAL, "INTERNAL")


async def test_a_status_that_cannot_be_built_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The failure to build a status is one log line, with its traceback."""
    caplog.set_level(logging.INFO, logger="adapter")
    settings = make_settings(retry_max_attempts=1)
    async with (
        build_server(settings, transport=BrokenErrorTransport()) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        await fail(session_service_pb2_grpc.SessionServiceStub(channel))
    lines = [r.getMessage() for r in caplog.records if r.name == "adapter.rpc"]
    assert len(lines) == 1
    assert "cannot format this reason" in lines[0]


# --- fuzzing the headers -----------------------------------------------------------------------

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
CALL_DEADLINE = 3.0
CAP = 0.05
# Small waits, so that a retried example stays short; the cap makes most advice too long.
FUZZ_OPTIONS: dict[str, Any] = {
    "retry_initial_backoff_seconds": 0.01,
    "retry_max_backoff_seconds": 0.02,
    "retry_after_max_seconds": CAP,
    "breaker_failure_threshold": 0,
}
ATTEMPTS = 3  # UpstreamSettings' default retry_max_attempts
# Headers that frame the body or the connection are the fault matrix's business
# (tests/test_faults.py); Retry-After is set on its own.
FRAMING = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "keep-alive",
        "retry-after",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
token = st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}", fullmatch=True)
# What HTTP allows in a field value: tab, space, visible ASCII and (as UTF-8) anything above.
field_value = st.text(
    st.characters(exclude_categories=["Cs", "Cc"]) | st.sampled_from("\t "), max_size=60
).map(lambda value: value.strip(" \t"))
http_dates = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
).map(lambda when: email.utils.format_datetime(when.replace(tzinfo=UTC), usegmt=True))
retry_afters = st.one_of(
    st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=5),
    http_dates,
    field_value,
)
DIGITS = re.compile(r"[0-9]{1,9}")


def advice(header: str) -> float | None:
    """The rule of docs/errors.md, written out: 1 to 9 ASCII digits, or an HTTP date, else
    no advice."""
    value = header.strip(" \t")
    if DIGITS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


@pytest.fixture
async def header_rig(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> tuple[Stub, ScriptedUpstream]:
    return await start_adapter(make_settings(scripted_upstream.url, **FUZZ_OPTIONS)), (
        scripted_upstream
    )


@FUZZ
@given(
    http_status=st.sampled_from([429, 503]),
    retry_after=retry_afters,
    headers=st.dictionaries(
        token.filter(lambda n: n.lower() not in FRAMING), field_value, max_size=6
    ),
)
async def test_any_retry_after_and_headers_end_in_the_table(
    header_rig: tuple[Stub, ScriptedUpstream],
    http_status: int,
    retry_after: str,
    headers: dict[str, str],
) -> None:
    """A 429 or 503 with any Retry-After and any other headers ends, within the deadline, in
    UNAVAILABLE UPSTREAM_UNAVAILABLE with its httpStatus, retried only when the advice is within
    the cap, with RetryInfo holding the advice (at most a day) or the default second."""
    stub, upstream = header_rig
    upstream.requests.clear()

    async def handler(_: web.Request) -> web.StreamResponse:
        response = web.Response(body=b"<html>busy</html>", status=http_status)
        for name, value in headers.items():
            response.headers.add(name, value)
        response.headers["Retry-After"] = retry_after
        return response

    upstream.handler = handler
    expected = advice(retry_after)
    event("no advice" if expected is None else "over the cap" if expected > CAP else "waited")
    started = time.monotonic()
    failure = await fail(stub, deadline=CALL_DEADLINE)
    elapsed = time.monotonic() - started
    attempts = 1 if expected is not None and expected > CAP else ATTEMPTS
    delay = 1.0 if expected is None else min(expected, DAY)
    seen = (failure.code, failure.info.reason, dict(failure.info.metadata))
    wanted = (
        Code.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        {"httpStatus": str(http_status), "attempts": str(attempts)},
    )
    assert seen == wanted
    assert elapsed < CALL_DEADLINE
    # Exact but for a date within a day from now, read a moment apart by the test and the adapter.
    assert retry_delay(failure) == pytest.approx(delay, abs=1.0)
