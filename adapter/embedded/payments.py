"""AUTHORIZE, PAY, CAPTURE, REFUND, VOID, RETRIEVE_TRANSACTION and RETRIEVE_ORDER as MPGS answers
them, in memory: the embedded gateway's payment operations (contract §9).

Checks run in this order, and the first failure answers: the order id (and for every operation
but PAY and AUTHORIZE, that the merchant holds such an order), the transaction id and whether the
pair (order, transaction) is held already, then the operation's own fields, then the session and
its card (PAY, AUTHORIZE), then whether the order's state allows the operation, then room in the
store. Only then is the transaction recorded, in the same synchronous call: no other request can
come between the check of the pair and its commit.

A transaction's outcome is the acquirer's (for PAY and AUTHORIZE, from the card's expiry:
``cards.outcome``); a declined one is recorded like any other, its pair used for ever, and
answered HTTP 200 with ``result=FAILURE``. Captures, refunds and voids within what the order
allows are approved. An order whose reference is ``TEST-ANSWER-LOST`` has every money-moving
operation carried out and its answer lost (``AnswerLost``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal

from adapter.embedded import cards, session_fields, store
from adapter.embedded.answers import (
    SUCCESS,
    AnswerLost,
    Request,
    busy,
    echo_correlation_id,
    error,
    invalid,
    missing,
    reply,
)
from adapter.embedded.cards import APPROVED, Card
from adapter.embedded.orders import (
    AUTHORIZATION,
    CAPTURE,
    PAYMENT,
    REFUND,
    VOID_TYPES,
    Order,
    OrderLimits,
    OrderStore,
    Transaction,
    minor_unit,
    parse_amount,
    render,
)
from adapter.embedded.store import StoredSession, StoreFull
from adapter.upstream.client import Reply

__all__ = [
    "ACCEPTED",
    "ANSWER_LOST_REFERENCE",
    "MONEY_MOVING",
    "OPERATIONS",
    "TAKES_SESSION_FIELDS",
    "Payments",
]

PAY = "PAY"
AUTHORIZE = "AUTHORIZE"
CAPTURE_OPERATION = "CAPTURE"
REFUND_OPERATION = "REFUND"
VOID = "VOID"
RETRIEVE_TRANSACTION = "RETRIEVE_TRANSACTION"
RETRIEVE_ORDER = "RETRIEVE_ORDER"
MONEY_MOVING = frozenset({PAY, AUTHORIZE, CAPTURE_OPERATION, REFUND_OPERATION, VOID})
OPERATIONS = MONEY_MOVING | {RETRIEVE_TRANSACTION, RETRIEVE_ORDER}
TAKES_SESSION_FIELDS = frozenset({PAY, AUTHORIZE})
"""Operations that also take every field a session may hold (extra fields pass)."""
ANSWER_LOST_REFERENCE = "TEST-ANSWER-LOST"
"""The ``order.reference`` that makes the gateway lose its answers to an order's money moves."""

ORDER_ID = "order.id"
ORDER_AMOUNT = "order.amount"
ORDER_CURRENCY = "order.currency"
ORDER_REFERENCE = "order.reference"
ORDER_DESCRIPTION = "order.description"
TRANSACTION_ID = "transaction.id"
TRANSACTION_AMOUNT = "transaction.amount"
TRANSACTION_CURRENCY = "transaction.currency"
TRANSACTION_REFERENCE = "transaction.reference"
TARGET_ID = "transaction.targetTransactionId"
SESSION_ID = "session.id"
SESSION_VERSION = "session.version"

_PAYING = {
    ORDER_ID,
    TRANSACTION_ID,
    ORDER_AMOUNT,
    ORDER_CURRENCY,
    SESSION_ID,
    SESSION_VERSION,
    ORDER_REFERENCE,
    ORDER_DESCRIPTION,
    TRANSACTION_REFERENCE,
}
_FOLLOWING = {ORDER_ID, TRANSACTION_ID, TRANSACTION_AMOUNT, TRANSACTION_CURRENCY}
ACCEPTED: Mapping[str, frozenset[str]] = {
    PAY: frozenset(_PAYING),
    AUTHORIZE: frozenset(_PAYING),
    CAPTURE_OPERATION: frozenset(_FOLLOWING | {TRANSACTION_REFERENCE}),
    REFUND_OPERATION: frozenset(_FOLLOWING | {TRANSACTION_REFERENCE}),
    VOID: frozenset({ORDER_ID, TRANSACTION_ID, TARGET_ID}),
    RETRIEVE_TRANSACTION: frozenset({ORDER_ID, TRANSACTION_ID}),
    RETRIEVE_ORDER: frozenset({ORDER_ID}),
}
"""Field names each payment operation takes, beside the protocol's own."""

_ID = re.compile(r"[0-9A-Za-z._-]{1,40}")
_LENGTHS = {ORDER_REFERENCE: 40, ORDER_DESCRIPTION: 127, TRANSACTION_REFERENCE: 40}
_PAYMENT_TYPES = {PAY: PAYMENT, AUTHORIZE: AUTHORIZATION}
_FOLLOWING_TYPES = {CAPTURE_OPERATION: CAPTURE, REFUND_OPERATION: REFUND}
_CARD_PARTS = (cards.NUMBER, cards.EXPIRY_MONTH, cards.EXPIRY_YEAR)
_ENTRY_POINT = "WEB_SERVICES_API"
_HTTP_OK = 200

FindSession = Callable[[Request], StoredSession]
"""The live session a PAY or AUTHORIZE names, as the request's merchant sees it; raises
``Refused`` naming ``session.id`` or ``session.version``."""


class Payments:
    """The payment operations over one bounded ``OrderStore``.

    ``find_session`` looks up the session a payment names (the gateway's own session check);
    ``random_bytes`` draws authorization codes and receipt numbers.
    """

    def __init__(
        self,
        limits: OrderLimits,
        *,
        merchants: int,
        find_session: FindSession,
        random_bytes: Callable[[int], bytes] = store.random_bytes,
    ) -> None:
        self.orders = OrderStore(limits, merchants)
        self._find_session = find_session
        self._random_bytes = random_bytes

    def handle(self, operation: str, request: Request) -> Reply | AnswerLost:
        """Carry out one of ``OPERATIONS``; raises ``Refused`` with the error answer."""
        if operation in _PAYMENT_TYPES:
            return self._pay(_PAYMENT_TYPES[operation], request)
        if operation in _FOLLOWING_TYPES:
            return self._follow(_FOLLOWING_TYPES[operation], request)
        if operation == VOID:
            return self._void(request)
        order = self._order(request)
        if operation == RETRIEVE_ORDER:
            return reply(_HTTP_OK, _order_answer(request, order))
        transaction_id = _id(request.fields, TRANSACTION_ID)
        transaction = order.transactions.get(transaction_id)
        if transaction is None:
            raise invalid(TRANSACTION_ID, transaction_id, "No such transaction on this order.")
        return reply(_HTTP_OK, _transaction_answer(request, order, transaction))

    def _pay(self, kind: str, request: Request) -> Reply | AnswerLost:
        fields = request.fields
        order_id = _id(fields, ORDER_ID)
        order = self.orders.get(request.merchant, order_id)
        transaction_id = self._new_transaction_id(fields, order)
        currency = _currency(fields, ORDER_CURRENCY)
        amount = _amount(fields, ORDER_AMOUNT, currency)
        texts = _texts(fields, (ORDER_REFERENCE, ORDER_DESCRIPTION, TRANSACTION_REFERENCE))
        for name, value in fields.items():  # extra session fields: the form a session takes
            if name not in _PAYING and not session_fields.valid_value(name, value):
                raise invalid(name, value)
        session = self._find_session(request)
        for name in _CARD_PARTS:
            if name not in session.data:
                raise missing(name)
        if order is not None and order.funded:
            raise invalid(ORDER_ID, order_id, "The order has a successful payment already.")
        if not self.orders.room_for(request.merchant, order):
            raise busy()
        data = session.data
        now = datetime.fromtimestamp(request.wall, UTC)
        outcome = cards.outcome(
            data[cards.EXPIRY_MONTH], data[cards.EXPIRY_YEAR], today=(now.year, now.month)
        )
        if order is None:
            order = Order(request.merchant, order_id, currency, request.wall)
            try:
                self.orders.add(order)
            except StoreFull:  # room_for said there was room, in this same call
                raise busy() from None
        order.card = cards.card_of(data)
        order.reference = texts.get(ORDER_REFERENCE, order.reference)
        order.description = texts.get(ORDER_DESCRIPTION, order.description)
        transaction = self._transaction(
            request,
            transaction_id,
            kind,
            amount=amount,
            currency=currency,
            outcome=outcome,
            reference=texts.get(TRANSACTION_REFERENCE),
        )
        return self._commit(request, order, transaction)

    def _follow(self, kind: str, request: Request) -> Reply | AnswerLost:
        fields = request.fields
        order = self._order(request)
        transaction_id = self._new_transaction_id(fields, order)
        currency = _currency(fields, TRANSACTION_CURRENCY)
        amount = _amount(fields, TRANSACTION_AMOUNT, currency)
        texts = _texts(fields, (TRANSACTION_REFERENCE,))
        if currency != order.currency:
            raise invalid(
                TRANSACTION_CURRENCY, currency, f"The order's currency is {order.currency}."
            )
        left = order.left_to_capture if kind == CAPTURE else order.left_to_refund
        if amount > left:
            raise invalid(
                TRANSACTION_AMOUNT,
                fields[TRANSACTION_AMOUNT],
                f"It exceeds the {render(left, currency)} left to {kind.lower()}.",
            )
        if not self.orders.room_for(request.merchant, order):
            raise busy()
        transaction = self._transaction(
            request,
            transaction_id,
            kind,
            amount=amount,
            currency=currency,
            reference=texts.get(TRANSACTION_REFERENCE),
        )
        return self._commit(request, order, transaction)

    def _void(self, request: Request) -> Reply | AnswerLost:
        fields = request.fields
        order = self._order(request)
        transaction_id = self._new_transaction_id(fields, order)
        target_id = _id(fields, TARGET_ID)
        target = order.transactions.get(target_id)
        if target is None:
            raise invalid(TARGET_ID, target_id, "No such transaction on this order.")
        voidable = order.voidable()
        if voidable is None or voidable.id != target_id:
            raise error(
                400,
                f"Transaction '{target_id}' cannot be voided: only the order's last successful "
                "authorization, payment, capture or refund not voided yet can be.",
            )
        if not self.orders.room_for(request.merchant, order):
            raise busy()
        transaction = self._transaction(
            request,
            transaction_id,
            VOID_TYPES[target.type],
            amount=target.amount,
            currency=target.currency,
            target=target_id,
        )
        return self._commit(request, order, transaction)

    def _order(self, request: Request) -> Order:
        order_id = _id(request.fields, ORDER_ID)
        order = self.orders.get(request.merchant, order_id)
        if order is None:  # never made, or another merchant's: the same unknown id
            raise invalid(ORDER_ID, order_id, "No such order.")
        return order

    @staticmethod
    def _new_transaction_id(fields: Mapping[str, str], order: Order | None) -> str:
        transaction_id = _id(fields, TRANSACTION_ID)
        if order is not None and transaction_id in order.transactions:
            raise invalid(
                TRANSACTION_ID, transaction_id, "The order holds a transaction with this id."
            )
        return transaction_id

    def _transaction(
        self,
        request: Request,
        transaction_id: str,
        kind: str,
        *,
        amount: Decimal,
        currency: str,
        outcome: cards.Outcome = APPROVED,
        reference: str | None = None,
        target: str | None = None,
    ) -> Transaction:
        approved = outcome.approved
        return Transaction(
            transaction_id,
            kind,
            amount,
            currency,
            outcome,
            request.wall,
            request.api_version,
            reference=reference,
            authorization_code=self._digits(6) if approved else None,
            receipt=self._digits(12) if approved else None,
            target=target,
        )

    def _commit(
        self, request: Request, order: Order, transaction: Transaction
    ) -> Reply | AnswerLost:
        order.add(transaction)
        answer = reply(_HTTP_OK, _transaction_answer(request, order, transaction))
        if order.reference == ANSWER_LOST_REFERENCE:
            return AnswerLost(answer)
        return answer

    def _digits(self, count: int) -> str:
        drawn = int.from_bytes(self._random_bytes(8), "big") % 10**count
        return str(drawn).zfill(count)


def _id(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name, "")
    if not value:
        raise missing(name)
    if not _ID.fullmatch(value):
        raise invalid(name, value)
    return value


def _currency(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name, "")
    if not value:
        raise missing(name)
    if minor_unit(value) is None:
        raise invalid(name, value)
    return value


def _amount(fields: Mapping[str, str], name: str, currency: str) -> Decimal:
    value = fields.get(name, "")
    if not value:
        raise missing(name)
    amount = parse_amount(value, currency)
    if amount is None:
        raise invalid(name, value)
    return amount


def _texts(fields: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    texts = {name: fields[name] for name in names if name in fields}
    for name, value in texts.items():
        if not 1 <= len(value) <= _LENGTHS[name]:
            raise invalid(name, value)
    return texts


def _time(wall: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as MPGS writes times."""
    shown = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
    return shown.replace("+00:00", "Z")


def _order_fields(order: Order) -> dict[str, str]:
    """The order's own fields, unprefixed, as RETRIEVE_ORDER answers them."""
    fields = {
        "id": order.id,
        "status": order.status,
        "amount": render(order.amount, order.currency),
        "currency": order.currency,
        "totalAuthorizedAmount": render(order.authorized, order.currency),
        "totalCapturedAmount": render(order.captured, order.currency),
        "totalRefundedAmount": render(order.refunded, order.currency),
        "creationTime": _time(order.created),
    }
    if order.reference is not None:
        fields["reference"] = order.reference
    if order.description is not None:
        fields["description"] = order.description
    return fields


def _transaction_fields(order: Order, transaction: Transaction) -> dict[str, str]:
    """One transaction as MPGS answers it, with its order as it stands now."""
    outcome = transaction.outcome
    fields = {
        "merchant": order.merchant,
        "result": outcome.result,
        "response.gatewayCode": outcome.gateway_code,
        "response.gatewayRecommendation": outcome.recommendation,
        "response.acquirerCode": outcome.acquirer_code,
        "response.acquirerMessage": outcome.acquirer_message,
        "transaction.id": transaction.id,
        "transaction.type": transaction.type,
        "transaction.amount": render(transaction.amount, transaction.currency),
        "transaction.currency": transaction.currency,
        "timeOfRecord": _time(transaction.time),
        "version": str(transaction.api_version),
        "gatewayEntryPoint": _ENTRY_POINT,
    }
    fields.update({f"order.{name}": value for name, value in _order_fields(order).items()})
    optional = {
        "transaction.reference": transaction.reference,
        "transaction.authorizationCode": transaction.authorization_code,
        "transaction.receipt": transaction.receipt,
        "transaction.targetTransactionId": transaction.target,
    }
    fields.update({name: value for name, value in optional.items() if value is not None})
    card: Card | None = order.card
    if card is not None:
        fields.update(card.fields())
    return fields


def _transaction_answer(request: Request, order: Order, transaction: Transaction) -> dict[str, str]:
    answer = _transaction_fields(order, transaction)
    echo_correlation_id(request.fields, answer)
    return answer


def _order_answer(request: Request, order: Order) -> dict[str, str]:
    answer = {"merchant": order.merchant, "result": SUCCESS, **_order_fields(order)}
    for n, transaction in enumerate(order.transactions.values()):
        element = _transaction_fields(order, transaction)
        answer.update({f"transaction[{n}].{name}": value for name, value in element.items()})
    echo_correlation_id(request.fields, answer)
    return answer
