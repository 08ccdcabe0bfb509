"""Run the gateway's Hosted Session flow as a merchant backend does, pay, and check what it gets.

Usage: .venv/bin/python scripts/checkout_flow.py [--target HOST:PORT] [--merchant TESTMERCHANT]
       [--amount 10.50] [--currency USD] [--order-id ID] [--expiry 01/39]
       [--authorize] [--lose-answer] [--no-pay]
       [--token-file FILE] [--ca-file CA.pem [--cert-file C.pem --key-file K.pem]]

1. CreateSession: a new, empty session.
2. UpdateSession: the order (amount, currency, order id) stored in it, with the version just seen.
3. The card goes into the session. In production the payer's browser does this through the
   gateway's session.js, never the backend; here an UpdateSession with the MPGS test card stands
   in for it (``--expiry`` picks the test card's outcome: 01/39 approved, 05/39 declined, ...).
4. RetrieveSession: what the session holds, checked as a backend checks it before it pays.
5. Pay with the session and a transaction id chosen before the call (``--authorize``: Authorize,
   then Capture the whole amount), and print what the backend records.

``--lose-answer`` gives the order the reference ``TEST-ANSWER-LOST``: the embedded gateway makes
the payment and then closes the connection without an answer, and the adapter finds the payment
again (the trailer ``nvp-adapter-outcome: reconciled``); the script then retries with the same
ids, as a caller may, and gets the same payment (``replayed``), and the order shows one payment.
``--no-pay`` stops after step 4.

Exit 0 when every check holds; 1 when a call fails (its status and rich details are printed) or a
check does not hold; 2 for a usage error or a file that cannot be read.

With no ``--target`` it starts an adapter in this process, against the embedded gateway on a free
loopback port, and stops it at the end. ``--target`` (``HOST:PORT`` or ``unix:PATH``) calls a
running adapter instead; the TLS and token flags are those of ``scripts/first_call.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc_calls import (
    add_connection_arguments,
    call_metadata,
    describe_failure,
    open_channel,
    uses_connection_arguments,
)

from adapter.app import build_server
from adapter.config import DEMO_MERCHANT, LogSettings, ServerSettings, Settings
from adapter.core.money import same_amount
from adapter.observability.logs import configure_logging
from nvp_adapter_client import OUTCOME_TRAILER, PaymentServiceStub, SessionServiceStub
from nvp_adapter_client import outcome as told_by
from nvp_adapter_client import payment_service_pb2 as pay
from nvp_adapter_client import session_service_pb2 as pb

if TYPE_CHECKING:  # the stub types grpc.aio channels give; they exist for type checkers only
    from nvp_adapter_client.mpgs.gateway.v1.payment_service_pb2_grpc import (
        PaymentServiceAsyncStub as PaymentStub,
    )
    from nvp_adapter_client.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

_Response = TypeVar("_Response")

DEADLINE_SECONDS = 10.0
PAY_DEADLINE_SECONDS = 30.0
"""A payment's deadline: room for its attempt and for finding a lost answer again."""
TEST_CARD = "5123450000000008"
"""The MPGS test Mastercard: its expiry date chooses the outcome."""
TEST_SECURITY_CODE = "100"
ANSWER_LOST = "TEST-ANSWER-LOST"


class CallFailed(Exception):
    """A call of the flow ended with a non-OK status; ``lines`` describe it."""

    def __init__(self, rpc: str, lines: list[str]) -> None:
        super().__init__(rpc)
        self.rpc = rpc
        self.lines = lines


@dataclass(frozen=True)
class Check:
    """One thing the backend checks, and whether it held."""

    holds: bool
    what: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; TLS and token flags only make sense with ``--target``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target",
        help="HOST:PORT or unix:PATH of a running adapter (default: start one in this process "
        "against the embedded gateway)",
    )
    parser.add_argument("--merchant", default=DEMO_MERCHANT)
    parser.add_argument("--amount", default="10.50", help="a decimal string, never a float")
    parser.add_argument("--currency", default="USD")
    parser.add_argument("--order-id", default=None, help="default: order-<8 random hex digits>")
    parser.add_argument(
        "--expiry",
        default="01/39",
        help="the test card's expiry MM/YY, which chooses the outcome (01/39 approved, 05/39 "
        "declined, 04/27 expired card; docs/embedded-gateway.md)",
    )
    parser.add_argument(
        "--authorize", action="store_true", help="authorize, then capture, instead of pay"
    )
    parser.add_argument(
        "--lose-answer",
        action="store_true",
        help=f"order reference {ANSWER_LOST}: the gateway pays, then loses the answer",
    )
    parser.add_argument("--no-pay", action="store_true", help="stop before paying")
    add_connection_arguments(parser)
    args = parser.parse_args(argv)
    if args.target is None and uses_connection_arguments(args):
        parser.error("--token-file, --ca-file, --cert-file and --key-file need --target")
    month, _, year = args.expiry.partition("/")
    if not (month.isascii() and month.isdigit() and year.isascii() and year.isdigit()):
        parser.error("--expiry must be MM/YY")
    args.expiry_month, args.expiry_year = month, year
    if args.order_id is None:
        args.order_id = f"order-{secrets.token_hex(4)}"
    return args


async def main(argv: list[str] | None = None) -> int:
    """Run the flow against ``--target`` or an adapter of its own; the process's exit code."""
    args = parse_args(argv)
    async with contextlib.AsyncExitStack() as stack:
        if args.target is None:
            # Its access lines would repeat what this script prints; an adapter fault still shows.
            configure_logging(LogSettings(level="ERROR"))
            settings = Settings(server=ServerSettings(listen="127.0.0.1:0"))
            server = await stack.enter_async_context(build_server(settings))
            target = server.address
            print(f"adapter: {target} (started in this process, embedded gateway)")
        else:
            target = args.target
            print(f"adapter: {target}")
        try:
            metadata = call_metadata(args)
            channel = await stack.enter_async_context(open_channel(target, args))
        except OSError as exc:  # a token, CA or certificate file that cannot be read
            print(f"checkout_flow: {exc}", file=sys.stderr)
            return 2
        stub: Stub = SessionServiceStub(channel)
        payments: PaymentStub = PaymentServiceStub(channel)
        try:
            checks, session = await checkout(stub, args, metadata)
            if not _report("What the backend checks before it pays:", checks):
                return 1
            print(f"Keep for the pay step: session {session.id}, version {session.version}")
            if not args.no_pay and not _report(
                "What the backend records:", await pay_flow(payments, args, session, metadata)
            ):
                return 1
        except CallFailed as failure:
            print(f"{failure.rpc} failed: {failure.lines[0]}", file=sys.stderr)
            print("\n".join(failure.lines[1:]), file=sys.stderr)
            return 1
    print("checkout flow: ok")
    return 0


def _report(title: str, checks: list[Check]) -> bool:
    print(title)
    for check in checks:
        print(f"  {'ok  ' if check.holds else 'FAIL'} {check.what}")
    if not all(check.holds for check in checks):
        print("checkout flow: a check did not hold", file=sys.stderr)
        return False
    return True


async def checkout(
    stub: Stub, args: argparse.Namespace, metadata: tuple[tuple[str, str], ...]
) -> tuple[list[Check], pb.Session]:
    """Create, update with the order, retrieve; print each answer; return the backend's checks
    and the session as retrieved.

    Raises ``CallFailed`` for the first call that fails.
    """
    created = await _call(
        "CreateSession",
        stub.CreateSession(
            pb.CreateSessionRequest(merchant=args.merchant, correlation_id="checkout-flow"),
            metadata=metadata,
            timeout=DEADLINE_SECONDS,
        ),
    )
    print(f"1. CreateSession    {_session(created.session)}")

    order = pb.Order(amount=args.amount, currency=args.currency, id=args.order_id)
    updated = await _call(
        "UpdateSession",
        stub.UpdateSession(
            pb.UpdateSessionRequest(
                merchant=args.merchant,
                correlation_id="checkout-flow",
                # The version just seen: the gateway refuses the update if someone changed the
                # session since (ABORTED SESSION_VERSION_MISMATCH), rather than overwrite it.
                session=pb.SessionRevision(id=created.session.id, version=created.session.version),
                order=order,
            ),
            metadata=metadata,
            timeout=DEADLINE_SECONDS,
        ),
    )
    print(f"2. UpdateSession    {_session(updated.session)}  order {_order(updated.order)}")

    # What the payer's browser does through session.js, never the backend: the card goes into
    # the session at the gateway. The backend never sees the number; the answer shows it masked.
    carded = await _call(
        "UpdateSession",
        stub.UpdateSession(
            pb.UpdateSessionRequest(
                merchant=args.merchant,
                session=pb.SessionRevision(id=created.session.id),
                extra_fields={
                    "sourceOfFunds.provided.card.number": TEST_CARD,
                    "sourceOfFunds.provided.card.expiry.month": args.expiry_month,
                    "sourceOfFunds.provided.card.expiry.year": args.expiry_year,
                    "sourceOfFunds.provided.card.securityCode": TEST_SECURITY_CODE,
                },
            ),
            metadata=metadata,
            timeout=DEADLINE_SECONDS,
        ),
    )
    print(f"3. (the browser)    {_session(carded.session)}  card {_card(carded.extra_fields)}")

    retrieved = await _call(
        "RetrieveSession",
        stub.RetrieveSession(
            pb.RetrieveSessionRequest(
                merchant=args.merchant,
                correlation_id="checkout-flow",
                session=pb.SessionRef(id=created.session.id),
            ),
            metadata=metadata,
            timeout=DEADLINE_SECONDS,
        ),
    )
    print(f"4. RetrieveSession  {_session(retrieved.session)}  order {_order(retrieved.order)}")
    for name, value in sorted(retrieved.extra_fields.items()):
        print(f"     also held: {name}={value}")

    held = retrieved.order
    session = retrieved.session
    checks = [
        Check(
            retrieved.result == pb.RESULT_SUCCESS,
            f"result {pb.Result.Name(retrieved.result).removeprefix('RESULT_')}",
        ),
        Check(
            session.id == created.session.id,
            f"it is the session created: {session.id}",
        ),
        Check(
            same_amount(held.amount, order.amount),
            f"it holds the amount set: {held.amount or '(none)'} (set {order.amount})",
        ),
        Check(
            held.currency == order.currency,
            f"it holds the currency set: {held.currency or '(none)'} (set {order.currency})",
        ),
        Check(
            held.id == order.id,
            f"it holds the order id set: {held.id or '(none)'} (set {order.id})",
        ),
        Check(
            session.update_status == pb.SESSION_UPDATE_STATUS_SUCCESS,
            f"its last update succeeded: updateStatus {_update_status(session.update_status)}",
        ),
        Check(
            session.version == carded.session.version != created.session.version,
            f"its version is the last update's: {session.version or '(none)'} "
            f"(created {created.session.version}, updated {carded.session.version})",
        ),
        Check(
            "sourceOfFunds.provided.card.number" in retrieved.extra_fields,
            f"it holds a card: {_card(retrieved.extra_fields)}",
        ),
    ]
    return checks, session


async def pay_flow(
    stub: PaymentStub,
    args: argparse.Namespace,
    session: pb.Session,
    metadata: tuple[tuple[str, str], ...],
) -> list[Check]:
    """Pay (or authorize and capture) with the session; with ``--lose-answer``, retry with the
    same ids and read the order back. The checks of what the backend records.

    The transaction id is chosen before the first call and kept: it is what makes a retry safe.
    """
    order = pb.Order(
        id=args.order_id,
        amount=args.amount,
        currency=args.currency,
        reference=ANSWER_LOST if args.lose_answer else "",
    )
    transaction = pay.NewTransaction(id=f"{'auth' if args.authorize else 'pay'}-1")
    send: Any = stub.Authorize if args.authorize else stub.Pay
    rpc = "Authorize" if args.authorize else "Pay"
    request: Any = (pay.AuthorizeRequest if args.authorize else pay.PayRequest)(
        merchant=args.merchant,
        correlation_id="checkout-flow",
        order=order,
        transaction=transaction,
        session=pb.SessionRevision(id=session.id, version=session.version),
    )
    paid, outcome = await _call_told(
        rpc, send(request, metadata=metadata, timeout=PAY_DEADLINE_SECONDS)
    )
    print(f"5. {rpc:<16}{_transaction(paid)}{_told(outcome)}")
    checks = [
        Check(paid.result == pb.RESULT_SUCCESS, f"result {_result(paid.result)}"),
        Check(
            paid.response.gateway_code == pay.GATEWAY_CODE_APPROVED,
            f"gateway code {_gateway_code(paid.response.gateway_code)}",
        ),
        Check(
            same_amount(paid.transaction.amount, args.amount),
            f"amount {paid.transaction.amount} {paid.transaction.currency} "
            f"(asked {args.amount} {args.currency})",
        ),
        Check(
            TEST_CARD not in str(paid),
            f"the card shows masked: {paid.source_of_funds.provided.card.number or '(none)'}",
        ),
    ]
    if args.lose_answer:
        checks.append(Check(outcome == "reconciled", f"the lost answer was found again: {outcome}"))
        again, outcome = await _call_told(
            rpc, send(request, metadata=metadata, timeout=PAY_DEADLINE_SECONDS)
        )
        print(f"   {rpc + ' again':<16}{_transaction(again)}{_told(outcome)}")
        checks.append(
            Check(
                outcome == "replayed" and again.transaction == paid.transaction,
                f"a retry with the same ids gets the same transaction: {outcome}",
            )
        )
    if args.authorize:
        captured, outcome = await _call_told(
            "Capture",
            stub.Capture(
                pay.CaptureRequest(
                    merchant=args.merchant,
                    correlation_id="checkout-flow",
                    order=pay.OrderRef(id=args.order_id),
                    transaction=pay.AmountTransaction(
                        id="capture-1", amount=args.amount, currency=args.currency
                    ),
                ),
                metadata=metadata,
                timeout=PAY_DEADLINE_SECONDS,
            ),
        )
        print(f"6. Capture         {_transaction(captured)}{_told(outcome)}")
        checks.append(
            Check(
                captured.result == pb.RESULT_SUCCESS
                and captured.order.status == pay.ORDER_STATUS_CAPTURED,
                f"captured: result {_result(captured.result)}, order "
                f"{pay.OrderStatus.Name(captured.order.status).removeprefix('ORDER_STATUS_')}",
            )
        )
    held = await _call(
        "RetrieveOrder",
        stub.RetrieveOrder(
            pay.RetrieveOrderRequest(merchant=args.merchant, order=pay.OrderRef(id=args.order_id)),
            metadata=metadata,
            timeout=DEADLINE_SECONDS,
        ),
    )
    kinds = [_type(t.transaction.type) for t in held.transactions]
    print(f"   RetrieveOrder   order {held.id} {_status(held.status)}  transactions {kinds}")
    checks.append(
        Check(
            same_amount(held.total_captured_amount, args.amount),
            f"the order holds one capture of the amount: captured {held.total_captured_amount}, "
            f"transactions {', '.join(kinds)}",
        )
    )
    print(
        f"Record: order {held.id}, transaction {paid.transaction.id}, "
        f"{_result(paid.result)} {_gateway_code(paid.response.gateway_code)}, "
        f"authorization code {paid.transaction.authorization_code or '-'}, "
        f"receipt {paid.transaction.receipt or '-'}"
    )
    return checks


async def _call(rpc: str, call: grpc.aio.UnaryUnaryCall[Any, _Response]) -> _Response:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise CallFailed(rpc, describe_failure(error)) from None


async def _call_told(
    rpc: str, call: grpc.aio.UnaryUnaryCall[Any, _Response]
) -> tuple[_Response, str | None]:
    """The answer, and the ``nvp-adapter-outcome`` trailer: how a payment's answer came."""
    response = await _call(rpc, call)
    return response, told_by(await call.trailing_metadata())


def _told(outcome: str | None) -> str:
    return "" if outcome is None else f"  ({OUTCOME_TRAILER}: {outcome})"


def _result(value: pb.Result.ValueType) -> str:
    return pb.Result.Name(value).removeprefix("RESULT_")


def _gateway_code(value: pay.GatewayCode.ValueType) -> str:
    return pay.GatewayCode.Name(value).removeprefix("GATEWAY_CODE_")


def _status(value: pay.OrderStatus.ValueType) -> str:
    return pay.OrderStatus.Name(value).removeprefix("ORDER_STATUS_")


def _type(value: pay.TransactionType.ValueType) -> str:
    return pay.TransactionType.Name(value).removeprefix("TRANSACTION_TYPE_")


def _transaction(answer: Any) -> str:
    return (
        f"transaction {answer.transaction.id} {_type(answer.transaction.type)} "
        f"{answer.transaction.amount} {answer.transaction.currency}  "
        f"{_result(answer.result)} {_gateway_code(answer.response.gateway_code)}  "
        f"order {_status(answer.order.status)}"
    )


def _card(fields: Any) -> str:
    number = fields.get("sourceOfFunds.provided.card.number", "(none)")
    month = fields.get("sourceOfFunds.provided.card.expiry.month", "?")
    year = fields.get("sourceOfFunds.provided.card.expiry.year", "?")
    return f"{number} {month}/{year}"


def _update_status(value: pb.SessionUpdateStatus.ValueType) -> str:
    return pb.SessionUpdateStatus.Name(value).removeprefix("SESSION_UPDATE_STATUS_")


def _session(session: pb.Session) -> str:
    return (
        f"session {session.id}  version {session.version}  "
        f"updateStatus {_update_status(session.update_status)}"
    )


def _order(order: pb.Order) -> str:
    return f"{order.id or '-'} {order.amount or '-'} {order.currency or '-'}"


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
