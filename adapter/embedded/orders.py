"""The embedded gateway's orders: amounts in a currency's minor unit, each order's transactions and
the state they leave it in, and a bounded store that keeps each merchant's orders private.

>>> from adapter.embedded.cards import APPROVED
>>> order = Order("SHOP1", "order-1", "EUR", created=0.0)
>>> order.add(Transaction("1", AUTHORIZATION, Decimal("10.00"), "EUR", APPROVED, 0.0, 100))
>>> order.add(Transaction("2", CAPTURE, Decimal("4.00"), "EUR", APPROVED, 0.0, 100))
>>> order.status, render(order.authorized, "EUR"), render(order.captured, "EUR")
('PARTIALLY_CAPTURED', '10.00', '4.00')

Pure and synchronous, with exact decimals throughout. ``Order`` answers what an operation may do
(``left_to_capture``, ``voidable``) and records what was done (``add``); whether a request may do
it, and the error when not, is the gateway's (``payments.py``). Orders never expire: past the
store's bounds a new order or transaction is refused, as ``StoreFull``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from iso4217 import Currency

from adapter.embedded.cards import Card, Outcome
from adapter.embedded.store import StoreFull, merchant_share

__all__ = [
    "AUTHORIZATION",
    "CAPTURE",
    "DEFAULT_MAX_ORDERS",
    "DEFAULT_MAX_ORDERS_PER_MERCHANT",
    "DEFAULT_MAX_TRANSACTIONS_PER_ORDER",
    "PAYMENT",
    "REFUND",
    "VOID_TYPES",
    "Order",
    "OrderLimits",
    "OrderStore",
    "Transaction",
    "minor_unit",
    "parse_amount",
    "render",
]

AUTHORIZATION = "AUTHORIZATION"
PAYMENT = "PAYMENT"
CAPTURE = "CAPTURE"
REFUND = "REFUND"
VOID_TYPES = {
    AUTHORIZATION: "VOID_AUTHORIZATION",
    CAPTURE: "VOID_CAPTURE",
    PAYMENT: "VOID_PAYMENT",
    REFUND: "VOID_REFUND",
}
"""The type of the void of each kind of transaction."""

DEFAULT_MAX_ORDERS = 100_000
DEFAULT_MAX_ORDERS_PER_MERCHANT = 50_000
"""Half the store, as for sessions: one merchant alone never fills it."""
DEFAULT_MAX_TRANSACTIONS_PER_ORDER = 50
"""Room for retries after declines, partial captures and refunds, and their voids."""

# A plain decimal: at most 14 digits before the point and 1 to 3 after it; no sign, no exponent.
_AMOUNT = re.compile(r"[0-9]{1,14}(?:\.[0-9]{1,3})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_ZERO = Decimal(0)


def minor_unit(currency: str) -> int | None:
    """The ISO 4217 minor unit (decimals) of a currency code; None for an unknown code or one
    with no minor unit (gold, the test code XXX): neither is money an order can be in."""
    if not _CURRENCY.fullmatch(currency):
        return None
    try:
        return Currency(currency).exponent
    except ValueError:
        return None


def parse_amount(text: str, currency: str) -> Decimal | None:
    """The amount as an exact decimal, or None unless it is a plain decimal above zero with no
    more decimals than ``currency`` has (which must be known: see ``minor_unit``)."""
    decimals = minor_unit(currency)
    if decimals is None or not _AMOUNT.fullmatch(text):
        return None
    amount = Decimal(text)
    fraction = text.partition(".")[2]
    if amount <= 0 or len(fraction) > decimals:
        return None
    return amount


def render(amount: Decimal, currency: str) -> str:
    """An amount as the gateway writes it: exactly the currency's decimals (``10.00``, ``1000``)."""
    decimals = minor_unit(currency) or 0
    return f"{amount.quantize(Decimal(1).scaleb(-decimals)):f}"


@dataclass(frozen=True, slots=True)
class Transaction:
    """One transaction as recorded; ``target`` is the transaction a void voids.

    ``time`` is on the gateway's wall clock (seconds since the epoch), ``api_version`` the one
    of the request that made it.
    """

    id: str
    type: str
    amount: Decimal
    currency: str
    outcome: Outcome
    time: float
    api_version: int
    reference: str | None = None
    authorization_code: str | None = None
    receipt: str | None = None
    target: str | None = None


@dataclass(eq=False)
class Order:
    """One merchant's order: its transactions in creation order and the totals they leave.

    ``amount`` and ``currency`` are those of the latest payment or authorization attempt (a
    retry after a decline may change them); ``card`` is the one it was paid with, masked.
    """

    merchant: str
    id: str
    currency: str
    created: float
    amount: Decimal = _ZERO
    reference: str | None = None
    description: str | None = None
    card: Card | None = None
    transactions: dict[str, Transaction] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)
    authorized: Decimal = _ZERO
    captured: Decimal = _ZERO
    refunded: Decimal = _ZERO

    @property
    def status(self) -> str:
        """The order's state, from its totals and history."""
        if self.authorized == 0:
            return "CANCELLED" if self.funded else "FAILED"
        if self.refunded:
            return "REFUNDED" if self.refunded == self.captured else "PARTIALLY_REFUNDED"
        if self.captured:
            return "CAPTURED" if self.captured == self.authorized else "PARTIALLY_CAPTURED"
        return "AUTHORIZED"

    @property
    def funded(self) -> bool:
        """Whether a payment or authorization ever succeeded (voided or not): then no other may."""
        return any(t.type in (AUTHORIZATION, PAYMENT) for t in self._succeeded())

    @property
    def left_to_capture(self) -> Decimal:
        return self.authorized - self.captured

    @property
    def left_to_refund(self) -> Decimal:
        return self.captured - self.refunded

    def voidable(self) -> Transaction | None:
        """The one transaction a void may target: the last successful authorization, payment,
        capture or refund not voided yet; None if there is none."""
        for transaction in reversed(self._succeeded()):
            if transaction.type in VOID_TYPES and transaction.id not in self.voided:
                return transaction
        return None

    def add(self, transaction: Transaction) -> None:
        """Record a transaction the gateway carried out, and move the totals as it does.

        Raises ValueError for a transaction id the order already holds, or a transaction the
        order's state does not allow (the gateway checks first: this is the last guard).
        """
        if transaction.id in self.transactions:
            raise ValueError(f"transaction {transaction.id!r} exists")
        amount = transaction.amount if transaction.outcome.approved else _ZERO
        kind = transaction.type
        if kind in (AUTHORIZATION, PAYMENT):
            if self.funded:
                raise ValueError("the order is paid for already")
            self.amount, self.currency = transaction.amount, transaction.currency
            self.authorized = amount
            self.captured = amount if kind == PAYMENT else _ZERO
        elif kind == CAPTURE:
            self._check(amount <= self.left_to_capture)
            self.captured += amount
        elif kind == REFUND:
            self._check(amount <= self.left_to_refund)
            self.refunded += amount
        else:
            self._undo(transaction)
        self.transactions[transaction.id] = transaction

    def _undo(self, void: Transaction) -> None:
        target = self.voidable()
        if target is None or target.id != void.target or void.type != VOID_TYPES[target.type]:
            raise ValueError("only the last successful transaction not voided yet may be voided")
        if target.type == AUTHORIZATION:
            self.authorized -= target.amount
        elif target.type == PAYMENT:
            self.authorized -= target.amount
            self.captured -= target.amount
        elif target.type == CAPTURE:
            self.captured -= target.amount
        else:
            self.refunded -= target.amount
        self.voided.add(target.id)

    def _succeeded(self) -> list[Transaction]:
        return [t for t in self.transactions.values() if t.outcome.approved]

    @staticmethod
    def _check(allowed: bool) -> None:
        if not allowed:
            raise ValueError("the order's state does not allow this transaction")


@dataclass(frozen=True, slots=True)
class OrderLimits:
    """The order store's bounds; ``max_orders_per_merchant`` must be below ``max_orders``, so
    one merchant at its share never refuses another."""

    max_orders: int = DEFAULT_MAX_ORDERS
    max_orders_per_merchant: int = DEFAULT_MAX_ORDERS_PER_MERCHANT
    max_transactions_per_order: int = DEFAULT_MAX_TRANSACTIONS_PER_ORDER

    def __post_init__(self) -> None:
        if self.max_orders < 1:
            raise ValueError("max_orders must be at least 1")
        if not 1 <= self.max_orders_per_merchant < self.max_orders:
            raise ValueError("max_orders_per_merchant must be at least 1 and below max_orders")
        if self.max_transactions_per_order < 1:
            raise ValueError("max_transactions_per_order must be at least 1")


class OrderStore:
    """Orders by merchant and order id, each merchant held to its fair share of ``max_orders``.

    ``merchants`` is how many merchants the store serves (see ``store.merchant_share``).
    """

    def __init__(self, limits: OrderLimits | None = None, merchants: int = 1) -> None:
        self.limits = limits or OrderLimits()
        self.share = merchant_share(
            self.limits.max_orders, self.limits.max_orders_per_merchant, merchants, what="order"
        )
        """Orders one merchant may hold at most."""
        self._orders: dict[tuple[str, str], Order] = {}
        self._per_merchant: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._orders)

    def count_for(self, merchant: str) -> int:
        """How many orders ``merchant`` holds."""
        return self._per_merchant[merchant]

    def get(self, merchant: str, order_id: str) -> Order | None:
        """``merchant``'s order with this id; None if it has none (another's is not its own)."""
        return self._orders.get((merchant, order_id))

    def room_for(self, merchant: str, order: Order | None) -> bool:
        """Whether ``merchant`` may add one transaction to ``order`` (None: to a new order)."""
        if order is None:
            return (
                len(self._orders) < self.limits.max_orders
                and self._per_merchant[merchant] < self.share
            )
        return len(order.transactions) < self.limits.max_transactions_per_order

    def add(self, order: Order) -> None:
        """Keep a new order. Raises ``StoreFull`` past a bound, ValueError for an id it holds."""
        key = (order.merchant, order.id)
        if key in self._orders:
            raise ValueError(f"order {order.id!r} exists")
        if not self.room_for(order.merchant, None):
            raise StoreFull
        self._orders[key] = order
        self._per_merchant[order.merchant] += 1
