"""A card number and a security code never leave: not in a log line at DEBUG, a metric, a status,
a detail, a trailer or a span, in the adapter or in the embedded gateway (docs/payments.md).

A whole payment flow runs at DEBUG against the embedded gateway, in-process and over HTTP, with
the metrics endpoint and OpenTelemetry export on: the card goes into the session (and a mistyped
number and a malformed security code are refused), a payment whose answer is lost is found again
and replayed, then the reads, a refund, a void and a refund of too much. Every output is then
searched for the number (the good one and the mistyped one) and the security code. The flow is
checked to have carried the card (the masked number comes back), so the search is not vacuous.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import grpc
import pytest
from grpc_status import rpc_status

from adapter._proto.mpgs.gateway.v1 import payment_service_pb2 as pay
from adapter._proto.mpgs.gateway.v1 import payment_service_pb2_grpc, session_service_pb2_grpc
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.app import build_server
from adapter.config import (
    DEMO_MERCHANT,
    MetricsSettings,
    ServerSettings,
    Settings,
    UpstreamSettings,
)
from adapter.embedded.standalone import StandaloneGateway
from tests.test_otel import Collector, http_collector  # noqa: F401 (the fixture, used by name)
from tests.test_secrets import logged

PAN = "2223000048400011"  # a Mastercard 2-series test number: passes the Luhn check
MISTYPED_PAN = "2223000048400019"  # one digit off: fails it, and is as secret
SECURITY_CODE = "7391"
MASKED = "222300xxxxxx0011"
# The security code as a token: not part of a longer run of letters, digits or a decimal.
SECURITY_CODE_SEEN = re.compile(rf"(?<![0-9A-Za-z.]){SECURITY_CODE}(?![0-9A-Za-z])")


@dataclasses.dataclass
class Seen:
    """Every text a caller, an operator or a collector could see of the flow."""

    texts: list[str] = dataclasses.field(default_factory=list)

    def add(self, *texts: object) -> None:
        self.texts.extend(str(text) for text in texts)

    async def failure(self, call: grpc.aio.UnaryUnaryCall) -> grpc.StatusCode:  # type: ignore[type-arg]
        """Await a call that must fail; keep its message, trailers and rich details."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = caught.value
        self.add(error.details(), error.trailing_metadata(), error.debug_error_string())
        status = await rpc_status.aio.from_call(call)
        if status is not None:
            self.add(status, *status.details)
        return error.code()


@pytest.fixture(params=["in-process", "http"])
async def adapter_channel(
    request: pytest.FixtureRequest,
    http_collector: Collector,  # noqa: F811 (the fixture)
) -> AsyncIterator[tuple[grpc.aio.Channel, int]]:
    """An adapter with metrics and tracing, against the embedded gateway in-process or over
    HTTP; its channel and metrics port."""
    async with AsyncExitStack() as stack:
        upstream = UpstreamSettings()
        if request.param == "http":
            gateway = await stack.enter_async_context(StandaloneGateway(Settings(), "127.0.0.1", 0))
            upstream = UpstreamSettings(url=f"http://127.0.0.1:{gateway.port}")
        settings = Settings(
            server=ServerSettings(listen="127.0.0.1:0", grace_seconds=2.0),
            upstream=upstream,
            metrics=MetricsSettings(listen="127.0.0.1:0"),
        )
        server = await stack.enter_async_context(build_server(settings))
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
        yield channel, server.metrics_port


async def run_flow(channel: grpc.aio.Channel, seen: Seen) -> None:
    sessions = session_service_pb2_grpc.SessionServiceStub(channel)
    payments = payment_service_pb2_grpc.PaymentServiceStub(channel)
    merchant = DEMO_MERCHANT
    created = await sessions.CreateSession(pb.CreateSessionRequest(merchant=merchant), timeout=5)
    session = created.session.id
    card = {
        "sourceOfFunds.provided.card.number": PAN,
        "sourceOfFunds.provided.card.expiry.month": "1",
        "sourceOfFunds.provided.card.expiry.year": "39",
        "sourceOfFunds.provided.card.securityCode": SECURITY_CODE,
    }
    for bad in (
        {**card, "sourceOfFunds.provided.card.number": MISTYPED_PAN},
        {**card, "sourceOfFunds.provided.card.securityCode": SECURITY_CODE + "5"},
    ):
        code = await seen.failure(
            sessions.UpdateSession(
                pb.UpdateSessionRequest(
                    merchant=merchant, session=pb.SessionRevision(id=session), extra_fields=bad
                ),
                timeout=5,
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    updated = await sessions.UpdateSession(
        pb.UpdateSessionRequest(
            merchant=merchant,
            session=pb.SessionRevision(id=session),
            order=pb.Order(amount="20.00", currency="USD", id="order-1"),
            extra_fields=card,
        ),
        timeout=5,
    )
    retrieved = await sessions.RetrieveSession(
        pb.RetrieveSessionRequest(merchant=merchant, session=pb.SessionRef(id=session)),
        timeout=5,
    )
    assert retrieved.extra_fields["sourceOfFunds.provided.card.number"] == MASKED
    seen.add(created, updated, retrieved)

    paying = pay.PayRequest(
        merchant=merchant,
        correlation_id="secrets",
        order=pb.Order(id="order-1", amount="20.00", currency="USD", reference="TEST-ANSWER-LOST"),
        transaction=pay.NewTransaction(id="pay-1"),
        session=pb.SessionRevision(id=session, version=retrieved.session.version),
    )
    for told in ("reconciled", "replayed"):
        call = payments.Pay(paying, timeout=10)
        paid = await call
        trailers = await call.trailing_metadata()
        assert trailers is not None
        assert trailers.get("nvp-adapter-outcome") == told
        assert paid.source_of_funds.provided.card.number == MASKED
        seen.add(paid, trailers)
    seen.add(
        await payments.RetrieveTransaction(
            pay.RetrieveTransactionRequest(
                merchant=merchant,
                order=pay.OrderRef(id="order-1"),
                transaction=pay.TransactionRef(id="pay-1"),
            ),
            timeout=5,
        ),
        await payments.Refund(
            pay.RefundRequest(
                merchant=merchant,
                order=pay.OrderRef(id="order-1"),
                transaction=pay.AmountTransaction(id="refund-1", amount="5.00", currency="USD"),
            ),
            timeout=10,
        ),
        await payments.Void(
            pay.VoidRequest(
                merchant=merchant,
                order=pay.OrderRef(id="order-1"),
                transaction=pay.VoidTransaction(id="void-1", target_transaction_id="refund-1"),
            ),
            timeout=10,
        ),
        await payments.RetrieveOrder(
            pay.RetrieveOrderRequest(merchant=merchant, order=pay.OrderRef(id="order-1")),
            timeout=5,
        ),
    )
    code = await seen.failure(
        payments.Refund(
            pay.RefundRequest(
                merchant=merchant,
                order=pay.OrderRef(id="order-1"),
                transaction=pay.AmountTransaction(id="refund-2", amount="99.00", currency="USD"),
            ),
            timeout=10,
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_no_card_number_or_security_code_in_any_output(
    adapter_channel: tuple[grpc.aio.Channel, int],
    http_collector: Collector,  # noqa: F811 (the fixture)
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    channel, metrics_port = adapter_channel
    seen = Seen()
    await run_flow(channel, seen)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
    ):
        metrics = await response.text()
    assert 'nvp_adapter_reconciliations_total{operation="PAY",outcome="FOUND"} 1.0' in metrics
    seen.add(metrics)
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug, "the flow wrote no DEBUG line: the search would prove nothing"
    seen.add(logged(caplog))
    everything = "\n".join(seen.texts)
    for secret in (PAN, MISTYPED_PAN):
        assert secret not in everything
    assert SECURITY_CODE_SEEN.search(everything) is None


async def test_no_card_data_in_the_spans(
    http_collector: Collector,  # noqa: F811 (the fixture)
) -> None:
    """The spans of the whole flow, exported when the adapter stops, hold neither secret."""
    async with (
        build_server(
            Settings(server=ServerSettings(listen="127.0.0.1:0", grace_seconds=2.0))
        ) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        await run_flow(channel, Seen())
    assert http_collector.spans, "no span was exported: the search would prove nothing"
    exported = b"\n".join(http_collector.bodies).decode("utf-8", "replace")
    for secret in (PAN, MISTYPED_PAN):
        assert secret not in exported
    assert SECURITY_CODE_SEEN.search(exported) is None
