"""Money moves at most once, and a lost answer is found again: CONTRACT §9's four rules.

The gateway holds at most one transaction per pair (``order.id``, ``transaction.id``); the
adapter keeps no state of its own and builds on that alone:

1. **Never re-sent.** The money-moving request goes out as ``UNSENT_ONLY``: the client sends it
   again only when no byte of it left (``retry.RetryPolicy``).
2. **Reconciled.** When its outcome is unknown (no answer after the request was written: a read
   timeout, a reset, an HTTP 5xx without an NVP body, an answer that is not NVP), the pair is
   retrieved with ``RETRIEVE_TRANSACTION`` in the part of the caller's deadline kept for it
   (``reconcile_reserve_seconds``, at most half the time left).
3. **Replayed.** When the gateway refuses the request naming ``transaction.id`` (the pair is
   taken) or answers ``LOCK_FAILURE``, the pair is retrieved: the same transaction is the answer,
   another one is ``TransactionIdReused``.
4. **Told.** ``Settled.outcome`` says ``reconciled`` or ``replayed``; every lookup is counted in
   ``nvp_adapter_reconciliations_total`` by what it found.

What is decided comes from the gateway's fields (``error.cause``, ``error.field``, the retrieved
transaction's type, amount and currency), never from an explanation's text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from adapter.core import money, nvp
from adapter.core.errors import (
    GatewayRejected,
    TransactionIdReused,
    TransactionNotRecorded,
    UpstreamError,
    UpstreamHttpStatus,
    UpstreamProtocolError,
    UpstreamSentAndLost,
)
from adapter.observability.metrics import Metrics
from adapter.upstream.calls import Answer, UpstreamClient

__all__ = ["RECONCILED", "REPLAYED", "PaymentCalls", "Settled"]

RECONCILED = "reconciled"
REPLAYED = "replayed"
RETRIEVE_TRANSACTION = "RETRIEVE_TRANSACTION"
_INVALID_REQUEST = "INVALID_REQUEST"
_LOCK_FAILURE = "LOCK_FAILURE"
_ORDER_ID = "order.id"
_TRANSACTION_ID = "transaction.id"
_TARGET = "transaction.targetTransactionId"
_LOOKUP_ROUNDS = 2
"""Retrievals of a pair whose answer was itself lost, while the deadline allows: each is a
repeatable read, so the client also retries it when the gateway turns it away."""
_CREATES = {
    "AUTHORIZE": "AUTHORIZATION",
    "PAY": "PAYMENT",
    "CAPTURE": "CAPTURE",
    "REFUND": "REFUND",
    "VOID": "VOID_",  # VOID_AUTHORIZATION, VOID_CAPTURE, ...: whichever the target called for
}
"""The ``transaction.type`` each money-moving operation records (a prefix where it ends in _)."""


@dataclass(frozen=True, slots=True)
class Settled:
    """A money-moving call's answer, and how it was come by: None when the gateway's own answer
    to the request, else ``reconciled`` or ``replayed``."""

    answer: Answer
    outcome: str | None = None


class PaymentCalls:
    """Sends money-moving operations through ``client`` under the four rules."""

    def __init__(
        self, client: UpstreamClient, reserve_seconds: float, metrics: Metrics | None = None
    ) -> None:
        self._client = client
        self._reserve = reserve_seconds
        self._metrics = metrics

    async def call(self, fields: Mapping[str, str], time_left: float | None) -> Settled:
        """Send the operation once; find its transaction again where the answer leaves it open.

        Raises the gateway's refusal, ``TransactionIdReused``, ``TransactionNotRecorded``, or
        the send's own ``UpstreamError`` when the outcome stays unknown.
        """
        loop = asyncio.get_running_loop()
        deadline = None if time_left is None else loop.time() + time_left
        reserve = 0.0 if time_left is None else min(self._reserve, time_left / 2)
        budget = None if time_left is None else time_left - reserve
        try:
            answer = await self._client.call(fields, budget, repeatable=False)
        except GatewayRejected as refused:
            if refused.cause == _INVALID_REQUEST and refused.field == _TRANSACTION_ID:
                return await self._replay(fields, deadline, refused, refused.attempts)
            raise
        except (UpstreamSentAndLost, UpstreamHttpStatus, UpstreamProtocolError) as failure:
            if not _outcome_unknown(failure):
                raise
            return await self._reconcile(fields, deadline, failure)
        if answer.fields.get("response.gatewayCode") == _LOCK_FAILURE:
            return await self._replay(fields, deadline, answer, answer.attempts)
        return Settled(answer)

    async def _reconcile(
        self, fields: Mapping[str, str], deadline: float | None, lost: UpstreamError
    ) -> Settled:
        """Rule 2: the request may have been carried out; ask the gateway whether it was."""
        operation = fields[nvp.API_OPERATION]
        attempts = lost.attempts
        for _ in range(_LOOKUP_ROUNDS):
            try:
                found = await self._retrieve(fields, deadline)
            except GatewayRejected as refused:
                attempts += refused.attempts
                if _holds_none(refused):
                    self._count(operation, "NOT_FOUND")
                    raise TransactionNotRecorded(str(lost), attempts=attempts) from None
                break
            except UpstreamError as failure:
                attempts += failure.attempts
                if not isinstance(failure, UpstreamSentAndLost):
                    break  # turned away or unreachable even after the client's retries
                continue
            attempts += found.attempts
            self._check_same(fields, found, attempts)
            self._count(operation, "FOUND")
            return Settled(_with_attempts(found, attempts), RECONCILED)
        self._count(operation, "UNKNOWN")
        lost.attempts = attempts
        if not isinstance(lost, UpstreamSentAndLost):  # for a payment, "unknown"
            raise UpstreamSentAndLost(str(lost), attempts=attempts) from lost
        raise lost

    async def _replay(
        self,
        fields: Mapping[str, str],
        deadline: float | None,
        refusal: GatewayRejected | Answer,
        attempts: int,
    ) -> Settled:
        """Rule 3: the pair is taken (or locked): answer with its transaction if it is this one."""
        operation = fields[nvp.API_OPERATION]
        try:
            found = await self._retrieve(fields, deadline)
        except GatewayRejected as refused:
            if not _holds_none(refused):
                self._count(operation, "UNKNOWN")
                raise _unresolved(refused, attempts + refused.attempts) from None
            self._count(operation, "NOT_FOUND")
            if isinstance(refusal, Answer):  # LOCK_FAILURE, and nothing behind it: as answered
                return Settled(refusal)
            raise refusal from None
        except UpstreamError as failure:
            self._count(operation, "UNKNOWN")
            raise _unresolved(failure, attempts + failure.attempts) from None
        attempts += found.attempts
        self._check_same(fields, found, attempts)
        self._count(operation, "REPLAYED")
        return Settled(_with_attempts(found, attempts), REPLAYED)

    async def _retrieve(self, fields: Mapping[str, str], deadline: float | None) -> Answer:
        lookup = {
            nvp.API_OPERATION: RETRIEVE_TRANSACTION,
            nvp.MERCHANT: fields[nvp.MERCHANT],
            _ORDER_ID: fields[_ORDER_ID],
            _TRANSACTION_ID: fields[_TRANSACTION_ID],
        }
        if correlation := fields.get("correlationId"):
            lookup["correlationId"] = correlation
        time_left = None
        if deadline is not None:
            time_left = max(0.0, deadline - asyncio.get_running_loop().time())
        return await self._client.call(lookup, time_left, repeatable=True)

    def _check_same(self, fields: Mapping[str, str], found: Answer, attempts: int) -> None:
        """Raise ``TransactionIdReused`` unless ``found`` is the transaction ``fields`` asks for."""
        if _same_transaction(fields, found.fields):
            return
        self._count(fields[nvp.API_OPERATION], "REUSED")
        raise TransactionIdReused(
            found.fields.get("transaction.type", ""),
            found.fields.get("transaction.amount", ""),
            found.fields.get("transaction.currency", ""),
            attempts=attempts,
        )

    def _count(self, operation: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.reconciliation(operation, outcome)


def _same_transaction(asked: Mapping[str, str], held: Mapping[str, str]) -> bool:
    """Same type, amount and currency (a void: a void of the same target), amounts compared as
    decimals: the gateway may write ``1`` for ``1.00``."""
    created = _CREATES[asked[nvp.API_OPERATION]]
    held_type = held.get("transaction.type", "")
    if created.endswith("_"):
        return held_type.startswith(created) and held.get(_TARGET) == asked.get(_TARGET)
    if held_type != created:
        return False
    prefix = "transaction." if "transaction.amount" in asked else "order."
    return held.get("transaction.currency") == asked[prefix + "currency"] and money.same_amount(
        held.get("transaction.amount", ""), asked[prefix + "amount"]
    )


def _outcome_unknown(failure: UpstreamError) -> bool:
    """No valid answer came after the request was written: nothing at all, an HTTP 5xx without
    an NVP body, or an answer that is not usable HTTP or NVP. A front's 503 may follow a request
    it forwarded (a proxy whose gateway reset the connection): for a payment it says "unknown",
    not "turned away". Only a 4xx without an NVP body (a 429, a firewall's 403 page) says the
    request was not worked on."""
    if isinstance(failure, UpstreamSentAndLost):
        return True
    status = getattr(failure, "http_status", 0)
    return not (isinstance(status, int) and 400 <= status <= 499)


def _holds_none(refused: GatewayRejected) -> bool:
    """The gateway's word that it holds no transaction for the pair: ``INVALID_REQUEST`` naming
    the order (none such) or the transaction (the order exists, the transaction does not)."""
    return refused.cause == _INVALID_REQUEST and refused.field in (_ORDER_ID, _TRANSACTION_ID)


def _unresolved(failure: UpstreamError, attempts: int) -> UpstreamSentAndLost:
    return UpstreamSentAndLost(
        f"the gateway refused the transaction's ids as taken or locked, and retrieving the "
        f"transaction failed: {failure}",
        attempts=attempts,
    )


def _with_attempts(answer: Answer, attempts: int) -> Answer:
    return Answer(answer.fields, attempts, answer.http_status)
