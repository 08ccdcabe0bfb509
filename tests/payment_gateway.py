"""A scripted MPGS-like payment gateway on loopback, and the client helpers the payment tests share.

``PaymentGateway`` is a raw HTTP/1.1 peer on 127.0.0.1 port 0 (asyncio streams, so that "no
answer" means exactly that: the connection closes, or stays silent, and not one byte of a
response is written). It carries out ``PAY``, ``AUTHORIZE``, ``CAPTURE``, ``REFUND``, ``VOID``
and ``RETRIEVE_TRANSACTION`` just far enough for the exactly-once tests:

- it holds one transaction per pair (``order.id``, ``transaction.id``) and refuses a pair it
  already holds with ``INVALID_REQUEST`` on ``transaction.id``, as MPGS does;
- it answers a transaction in MPGS's NVP shape (a few of the fields of CONTRACT §9's sample);
- it counts every request by ``apiOperation`` and by pair;
- a test scripts faults per operation (``script``): lose the answer before or after committing,
  hang before or after committing, a bare HTTP status before or after committing, SERVER_BUSY,
  LOCK_FAILURE. ``write_amount`` rewrites every amount it answers (``1`` for ``1.00``).

The gateway's codec is ``urllib.parse``, an oracle independent of the adapter's. Below it: how
the payment tests start an adapter, call it, read its outcome trailer and scrape its counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families

from adapter._proto.mpgs.gateway.v1 import payment_service_pb2 as pay
from adapter._proto.mpgs.gateway.v1 import payment_service_pb2_grpc
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.app import build_server
from adapter.config import Settings
from adapter.server import AdapterServer
from tests.conftest import MERCHANT, PASSWORD, Failure, fail

if TYPE_CHECKING:  # the async stub classes exist only in the generated type stubs
    from google.protobuf.message import Message

    from adapter._proto.mpgs.gateway.v1.payment_service_pb2_grpc import (
        PaymentServiceAsyncStub as PaymentStub,
    )
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

__all__ = [
    "BUSY",
    "LOCK_FAILURE",
    "MONEY_MOVING",
    "OUTCOME_TRAILER",
    "SESSION_ID",
    "Fault",
    "PaymentAdapter",
    "PaymentGateway",
    "Then",
    "Transaction",
    "authorize_request",
    "capture_request",
    "pay_request",
    "reconciliations",
    "refund_request",
    "refused",
    "run_gateway",
    "start_payment_adapter",
    "void_request",
    "with_outcome",
]

MONEY_MOVING = frozenset({"PAY", "AUTHORIZE", "CAPTURE", "REFUND", "VOID"})
OUTCOME_TRAILER = "nvp-adapter-outcome"
SESSION_ID = "SESSION0002378433591N3262498M20"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=UTF-8"
_TYPES = {"PAY": "PAYMENT", "AUTHORIZE": "AUTHORIZATION", "CAPTURE": "CAPTURE", "REFUND": "REFUND"}
_MAX_HEAD = 64 * 1024


class Then(Enum):
    """What the gateway does once it has read a request (and, per ``Fault.commit``, carried out
    the operation or not)."""

    CLOSE = "close"
    """Close the connection (a FIN) without a byte of an answer."""
    HANG = "hang"
    """Say nothing until the client gives up and closes the connection."""
    STATUS = "status"
    """Answer ``Fault.status`` with an empty body: a load balancer's answer, no NVP."""
    BUSY = "busy"
    """Answer ``result=ERROR`` with ``error.cause=SERVER_BUSY``."""
    LOCK_FAILURE = "lock_failure"
    """Answer a transaction whose ``response.gatewayCode`` is ``LOCK_FAILURE``, holding nothing."""
    REFUSE = "refuse"
    """Answer ``INVALID_REQUEST`` naming ``Fault.field``, with ``Fault.explanation``."""


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour: carry out the operation first (``commit``) or not, then
    ``then``."""

    then: Then
    commit: bool = False
    status: int = 0
    field: str = ""
    explanation: str = ""

    @classmethod
    def lose(cls, *, commit: bool) -> Fault:
        return cls(Then.CLOSE, commit)

    @classmethod
    def hang(cls, *, commit: bool) -> Fault:
        return cls(Then.HANG, commit)

    @classmethod
    def http(cls, status: int, *, commit: bool) -> Fault:
        return cls(Then.STATUS, commit, status)

    @classmethod
    def refuse(cls, field: str, explanation: str) -> Fault:
        return cls(Then.REFUSE, field=field, explanation=explanation)


BUSY = Fault(Then.BUSY)
LOCK_FAILURE = Fault(Then.LOCK_FAILURE)


@dataclass
class Transaction:
    """What the gateway holds of one transaction."""

    order_id: str
    id: str
    type: str
    amount: str
    currency: str
    receipt: str
    target: str = ""
    result: str = "SUCCESS"
    gateway_code: str = "APPROVED"


@dataclass
class _Order:
    id: str
    amount: str
    currency: str
    authorized: Decimal = Decimal(0)
    captured: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    status: str = "INITIATED"
    transactions: dict[str, Transaction] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One request the gateway read in full."""

    operation: str
    pair: tuple[str, str]
    fields: Mapping[str, str]
    at: float
    """The event loop's clock when the request had arrived in full."""


class PaymentGateway:
    """An MPGS-like gateway on 127.0.0.1 port 0; see the module docstring."""

    def __init__(self) -> None:
        self.orders: dict[str, _Order] = {}
        self.requests: list[Received] = []
        self.faults: dict[str, list[Fault]] = {}
        self.forever: dict[str, Fault] = {}
        self.write_amount: Callable[[str], str] = lambda amount: amount
        self.duplicate_explanation = "Value is invalid. Transaction already exists for this order"
        self.arrived = asyncio.Condition()
        self.port = 0
        self._receipts = itertools.count(104214137174)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._idle: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- what a test scripts and reads ---------------------------------------------------------

    def script(self, operation: str, fault: Fault, times: int | None = 1) -> None:
        """Misbehave on the next ``times`` requests of ``operation`` (every one with None)."""
        if times is None:
            self.forever[operation] = fault
        else:
            self.faults.setdefault(operation, []).extend([fault] * times)

    def unscript(self, operation: str) -> None:
        """Behave again on every request of ``operation``."""
        self.faults.pop(operation, None)
        self.forever.pop(operation, None)

    def received(self, operation: str, pair: tuple[str, str] | None = None) -> int:
        """How many ``operation`` requests arrived (for ``pair`` when given)."""
        return sum(1 for r in self.requests if r.operation == operation and pair in (None, r.pair))

    def money_moving(self, pair: tuple[str, str]) -> int:
        """How many money-moving requests for ``pair`` arrived, whatever their operation."""
        return sum(1 for r in self.requests if r.operation in MONEY_MOVING and r.pair == pair)

    def held(self, pair: tuple[str, str]) -> Transaction | None:
        order = self.orders.get(pair[0])
        return None if order is None else order.transactions.get(pair[1])

    def count_held(self) -> int:
        return sum(len(order.transactions) for order in self.orders.values())

    async def wait_for(self, operation: str, count: int = 1) -> None:
        """Until ``count`` requests of ``operation`` have arrived."""
        async with self.arrived:
            await self.arrived.wait_for(lambda: self.received(operation) >= count)

    def prepare(self, operation: str, **fields: str) -> Transaction:
        """Carry out ``operation`` as if a request with these NVP fields (keyword names with
        ``_`` for ``.``) had come from elsewhere: held, not counted among the requests."""
        named = {name.replace("_", "."): value for name, value in fields.items()}
        status, answer = self._operate(operation, named)
        assert status is HTTPStatus.OK, answer
        held = self.held((named["order.id"], named["transaction.id"]))
        assert held is not None
        return held

    async def drop_idle(self) -> None:
        """Close every keep-alive connection waiting for its next request, at once (a FIN sent
        now, not on the loop's next turn), as a load balancer's idle timeout would."""
        for writer in list(self._idle):
            _shut_down_now(writer)
            writer.close()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # --- the wire -------------------------------------------------------------------------------

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._idle.discard(writer)
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; True to keep the connection for the next one."""
        self._idle.add(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        self._idle.discard(writer)
        assert len(head) < _MAX_HEAD
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        keep = headers.get(b"connection", b"").lower() != b"close"
        body = await reader.readexactly(length)
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
        operation = fields.get("apiOperation", "")
        pair = (fields.get("order.id", ""), fields.get("transaction.id", ""))
        async with self.arrived:
            loop = asyncio.get_running_loop()
            self.requests.append(Received(operation, pair, fields, loop.time()))
            self.arrived.notify_all()
        fault = self._next_fault(operation)
        if not _authenticated(fields):
            credentials = _error("INVALID_REQUEST", "Invalid credentials.")
            return await _answer(writer, HTTPStatus.UNAUTHORIZED, credentials)
        if fault is None:
            return await _answer(writer, *self._operate(operation, fields)) and keep
        if fault.commit:
            self._operate(operation, fields)
        return await self._misbehave(fault, operation, fields, reader, writer) and keep

    async def _misbehave(
        self,
        fault: Fault,
        operation: str,
        fields: Mapping[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Carry out ``fault.then``; True to keep the connection."""
        if fault.then is Then.CLOSE:
            writer.close()
            return False
        if fault.then is Then.HANG:
            await reader.read()  # returns once the client closes its end
            return False
        answers: dict[Then, Callable[[], tuple[HTTPStatus, dict[str, str]]]] = {
            Then.STATUS: lambda: (HTTPStatus(fault.status), {}),
            Then.BUSY: lambda: (
                HTTPStatus.SERVICE_UNAVAILABLE,
                _error("SERVER_BUSY", "Try again later"),
            ),
            Then.REFUSE: lambda: _invalid(fault.field, fault.explanation),
            Then.LOCK_FAILURE: lambda: (HTTPStatus.OK, self._lock_failure(operation, fields)),
        }
        return await _answer(writer, *answers[fault.then]())

    def _next_fault(self, operation: str) -> Fault | None:
        queue = self.faults.get(operation)
        if queue:
            return queue.pop(0)
        return self.forever.get(operation)

    # --- the operations -------------------------------------------------------------------------

    def _operate(
        self, operation: str, fields: Mapping[str, str]
    ) -> tuple[HTTPStatus, dict[str, str]]:
        """Carry out one operation, atomically (no await in here): the answer's status and
        fields."""
        order_id, transaction_id = fields.get("order.id", ""), fields.get("transaction.id", "")
        order = self.orders.get(order_id)
        if operation not in MONEY_MOVING:
            return self._read(operation, order, order_id, transaction_id, fields)
        if order is not None and transaction_id in order.transactions:
            return _invalid("transaction.id", self.duplicate_explanation)
        if operation in ("PAY", "AUTHORIZE"):
            amount, currency = fields["order.amount"], fields["order.currency"]
            if order is None:
                order = self.orders[order_id] = _Order(order_id, amount, currency)
            order.authorized += Decimal(amount)
            if operation == "PAY":
                order.captured += Decimal(amount)
            order.status = "CAPTURED" if operation == "PAY" else "AUTHORIZED"
            kind, target = _TYPES[operation], ""
        elif order is None:
            return _invalid("order.id", f"Value '{order_id}' is invalid. No such order")
        elif operation == "VOID":
            target = fields.get("transaction.targetTransactionId", "")
            voided = order.transactions.get(target)
            if voided is None:
                return _invalid("transaction.targetTransactionId", f"Value '{target}' is invalid.")
            kind, amount, currency = f"VOID_{voided.type}", voided.amount, voided.currency
            order.status = "CANCELLED"
        else:
            amount, currency = fields["transaction.amount"], fields["transaction.currency"]
            if not _take(order, operation, Decimal(amount)):
                return _invalid("transaction.amount", "Requested amount exceeds the balance")
            kind, target = _TYPES[operation], ""
        transaction = Transaction(
            order_id, transaction_id, kind, amount, currency, self._receipt(), target
        )
        order.transactions[transaction_id] = transaction
        return HTTPStatus.OK, self._render(order, transaction, fields)

    def _read(
        self,
        operation: str,
        order: _Order | None,
        order_id: str,
        transaction_id: str,
        fields: Mapping[str, str],
    ) -> tuple[HTTPStatus, dict[str, str]]:
        """RETRIEVE_TRANSACTION, the one other operation this gateway knows."""
        if operation != "RETRIEVE_TRANSACTION":
            return _invalid("apiOperation", f"Value '{operation}' is invalid.")
        if order is None:
            return _invalid("order.id", f"Value '{order_id}' is invalid. No such order")
        transaction = order.transactions.get(transaction_id)
        if transaction is None:
            return _invalid(
                "transaction.id", f"Value '{transaction_id}' is invalid. No such transaction"
            )
        return HTTPStatus.OK, self._render(order, transaction, fields)

    def _lock_failure(self, operation: str, fields: Mapping[str, str]) -> dict[str, str]:
        order_id, transaction_id = fields.get("order.id", ""), fields.get("transaction.id", "")
        amount = fields.get("order.amount") or fields.get("transaction.amount", "1")
        currency = fields.get("order.currency") or fields.get("transaction.currency", "USD")
        order = self.orders.get(order_id) or _Order(order_id, amount, currency)
        transaction = Transaction(
            order_id,
            transaction_id,
            _TYPES.get(operation, "VOID_PAYMENT"),
            amount,
            currency,
            "",
            result="FAILURE",
            gateway_code="LOCK_FAILURE",
        )
        return self._render(order, transaction, fields)

    def _receipt(self) -> str:
        return str(next(self._receipts))

    def _render(
        self, order: _Order, transaction: Transaction, request: Mapping[str, str]
    ) -> dict[str, str]:
        """A transaction answer in MPGS's NVP shape."""
        write = self.write_amount
        answer = {
            "merchant": request.get("merchant", ""),
            "result": transaction.result,
            "gatewayEntryPoint": "WEB_SERVICES_API",
            "order.id": order.id,
            "order.amount": write(order.amount),
            "order.currency": order.currency,
            "order.status": order.status,
            "order.totalAuthorizedAmount": write(str(order.authorized)),
            "order.totalCapturedAmount": write(str(order.captured)),
            "order.totalRefundedAmount": write(str(order.refunded)),
            "order.creationTime": "2021-02-11T14:12:48.116Z",
            "response.gatewayCode": transaction.gateway_code,
            "response.acquirerCode": "00",
            "response.acquirerMessage": "Approved",
            "sourceOfFunds.type": "CARD",
            "sourceOfFunds.provided.card.brand": "MASTERCARD",
            "sourceOfFunds.provided.card.number": "512345xxxxxx0008",
            "timeOfRecord": "2021-02-11T14:13:55.156Z",
            "transaction.id": transaction.id,
            "transaction.type": transaction.type,
            "transaction.amount": write(transaction.amount),
            "transaction.currency": transaction.currency,
            "transaction.receipt": transaction.receipt,
            "transaction.acquirer.id": "SYSTEST_ACQ_S2I",
            "version": "100",
        }
        if transaction.target:
            answer["transaction.targetTransactionId"] = transaction.target
        if correlation := request.get("correlationId"):
            answer["correlationId"] = correlation
        return answer


def _take(order: _Order, operation: str, amount: Decimal) -> bool:
    """Capture or refund ``amount`` if what is left allows it; False (nothing changed) if not."""
    if operation == "CAPTURE":
        if amount > order.authorized - order.captured:
            return False
        order.captured += amount
        order.status = "CAPTURED" if order.captured == order.authorized else "PARTIALLY_CAPTURED"
    else:
        if amount > order.captured - order.refunded:
            return False
        order.refunded += amount
        order.status = "REFUNDED" if order.refunded == order.captured else "PARTIALLY_REFUNDED"
    return True


def _authenticated(fields: Mapping[str, str]) -> bool:
    return fields.get("apiUsername") == f"merchant.{MERCHANT}" and (
        fields.get("apiPassword") == PASSWORD
    )


def _error(cause: str, explanation: str, **more: str) -> dict[str, str]:
    return {
        "error.cause": cause,
        "error.explanation": explanation,
        **{f"error.{k}": v for k, v in more.items()},
        "result": "ERROR",
    }


def _invalid(name: str, explanation: str) -> tuple[HTTPStatus, dict[str, str]]:
    return HTTPStatus.BAD_REQUEST, _error(
        "INVALID_REQUEST", explanation, field=name, validationType="INVALID"
    )


async def _answer(writer: asyncio.StreamWriter, status: HTTPStatus, fields: dict[str, str]) -> bool:
    body = urlencode(fields).encode() if fields else b""
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    writer.write(head + body)
    await writer.drain()
    return True


def _shut_down_now(writer: asyncio.StreamWriter) -> None:
    """Send the FIN at once: a transport's own close waits for the loop's next turn, a window an
    in-process client could write into."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with socket.socket(fileno=os.dup(sock.fileno())) as dup, contextlib.suppress(OSError):
        dup.shutdown(socket.SHUT_RDWR)


@contextlib.asynccontextmanager
async def run_gateway() -> AsyncIterator[PaymentGateway]:
    """A started ``PaymentGateway``, closed on exit."""
    gateway = PaymentGateway()
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.aclose()


# --- the adapter side ---------------------------------------------------------------------------


@dataclass
class PaymentAdapter:
    """An adapter running in-process, and a PaymentService stub connected to it."""

    server: AdapterServer
    stub: PaymentStub


async def start_payment_adapter(stack: AsyncExitStack, settings: Settings) -> PaymentAdapter:
    """Start the adapter for ``settings`` on ``stack``; its server and a PaymentService stub."""
    server = await stack.enter_async_context(build_server(settings))
    channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
    return PaymentAdapter(server, payment_service_pb2_grpc.PaymentServiceStub(channel))


async def with_outcome(
    stub: PaymentStub, request: Message, deadline: float | None = 5.0
) -> tuple[Any, str | None]:
    """Make a call that must succeed: its response and the ``nvp-adapter-outcome`` trailer."""
    rpc = getattr(stub, request.DESCRIPTOR.name.removesuffix("Request"))
    call = rpc(request, timeout=deadline)
    response = await call
    trailers = await call.trailing_metadata()
    outcomes = [value for key, value in trailers or () if key == OUTCOME_TRAILER]
    assert len(outcomes) <= 1, f"the outcome trailer came {len(outcomes)} times"
    return response, outcomes[0] if outcomes else None


async def reconciliations(server: AdapterServer) -> dict[tuple[str, str], float]:
    """``nvp_adapter_reconciliations_total`` from a real scrape of ``/metrics``: each non-zero
    sample's value by (operation, outcome)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "nvp_adapter_reconciliations_total" and sample.value:
                counts[sample.labels["operation"], sample.labels["outcome"]] = sample.value
    return counts


async def refused(stub: PaymentStub, request: Message, deadline: float = 5.0) -> Failure:
    """``conftest.fail`` for a PaymentService call (it picks the RPC by the request's type)."""
    return await fail(cast("Stub", stub), request, deadline)


# --- requests -----------------------------------------------------------------------------------


def pay_request(
    order_id: str = "order-1", transaction_id: str = "pay-1", amount: str = "10.00", **more: Any
) -> pay.PayRequest:
    return pay.PayRequest(
        merchant=MERCHANT,
        order=pb.Order(id=order_id, amount=amount, currency=more.pop("currency", "USD")),
        transaction=pay.NewTransaction(id=transaction_id),
        session=pb.SessionRevision(id=SESSION_ID),
        **more,
    )


def authorize_request(
    order_id: str = "order-1", transaction_id: str = "auth-1", amount: str = "10.00"
) -> pay.AuthorizeRequest:
    return pay.AuthorizeRequest(
        merchant=MERCHANT,
        order=pb.Order(id=order_id, amount=amount, currency="USD"),
        transaction=pay.NewTransaction(id=transaction_id),
        session=pb.SessionRevision(id=SESSION_ID),
    )


def capture_request(
    order_id: str = "order-1", transaction_id: str = "capture-1", amount: str = "10.00"
) -> pay.CaptureRequest:
    return pay.CaptureRequest(
        merchant=MERCHANT,
        order=pay.OrderRef(id=order_id),
        transaction=pay.AmountTransaction(id=transaction_id, amount=amount, currency="USD"),
    )


def refund_request(
    order_id: str = "order-1", transaction_id: str = "refund-1", amount: str = "10.00"
) -> pay.RefundRequest:
    return pay.RefundRequest(
        merchant=MERCHANT,
        order=pay.OrderRef(id=order_id),
        transaction=pay.AmountTransaction(id=transaction_id, amount=amount, currency="USD"),
    )


def void_request(
    order_id: str = "order-1", transaction_id: str = "void-1", target: str = "pay-1"
) -> pay.VoidRequest:
    return pay.VoidRequest(
        merchant=MERCHANT,
        order=pay.OrderRef(id=order_id),
        transaction=pay.VoidTransaction(id=transaction_id, target_transaction_id=target),
    )
