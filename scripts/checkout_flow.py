"""Run the gateway's Hosted Session flow as a merchant backend does, and check what it gets back.

Usage: .venv/bin/python scripts/checkout_flow.py [--target HOST:PORT] [--merchant TESTMERCHANT]
       [--amount 10.50] [--currency USD] [--order-id ID]
       [--token-file FILE] [--ca-file CA.pem [--cert-file C.pem --key-file K.pem]]

1. CreateSession: a new, empty session.
2. UpdateSession: the order (amount, currency, order id) stored in it, with the version just seen.
3. RetrieveSession: what the session holds. (Between 2 and 3 the payer's browser adds the card
   through the gateway's session.js; that is no call of the backend's.)

Then it prints what a backend checks before it pays: the session holds the amount and currency it
set, its last update succeeded, and the version to keep for the pay step. Exit 0 when every check
holds; 1 when a call fails (its status and rich details are printed) or a check does not hold;
2 for a usage error or a file that cannot be read.

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
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc_calls import (
    add_connection_arguments,
    call_metadata,
    describe_failure,
    open_channel,
    uses_connection_arguments,
)

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import DEMO_MERCHANT, LogSettings, ServerSettings, Settings
from adapter.observability.logs import configure_logging

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

_Response = TypeVar("_Response")

DEADLINE_SECONDS = 10.0


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
    add_connection_arguments(parser)
    args = parser.parse_args(argv)
    if args.target is None and uses_connection_arguments(args):
        parser.error("--token-file, --ca-file, --cert-file and --key-file need --target")
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
        stub: Stub = session_service_pb2_grpc.SessionServiceStub(channel)
        try:
            checks, session = await checkout(stub, args, metadata)
        except CallFailed as failure:
            print(f"{failure.rpc} failed: {failure.lines[0]}", file=sys.stderr)
            print("\n".join(failure.lines[1:]), file=sys.stderr)
            return 1
    print("What the backend checks before it pays:")
    for check in checks:
        print(f"  {'ok  ' if check.holds else 'FAIL'} {check.what}")
    if not all(check.holds for check in checks):
        print("checkout flow: a check did not hold", file=sys.stderr)
        return 1
    print(f"Keep for the pay step: session {session.id}, version {session.version}")
    print("checkout flow: ok")
    return 0


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
    print(f"3. RetrieveSession  {_session(retrieved.session)}  order {_order(retrieved.order)}")
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
            _same_amount(held.amount, order.amount),
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
            session.version == updated.session.version != created.session.version,
            f"its version is the update's: {session.version or '(none)'} "
            f"(created {created.session.version}, updated {updated.session.version})",
        ),
    ]
    return checks, session


async def _call(rpc: str, call: grpc.aio.UnaryUnaryCall[Any, _Response]) -> _Response:
    try:
        return await call
    except grpc.aio.AioRpcError:
        raise CallFailed(rpc, await describe_failure(call)) from None


def _same_amount(held: str, sent: str) -> bool:
    """Equal as decimals: the gateway may write ``10.50`` back as ``10.5``; never as floats."""
    try:
        return Decimal(held) == Decimal(sent)
    except InvalidOperation:
        return False


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
