"""An in-memory MPGS: CREATE_SESSION, UPDATE_SESSION and RETRIEVE_SESSION here, the payment
operations (AUTHORIZE, PAY, CAPTURE, REFUND, VOID, RETRIEVE_TRANSACTION, RETRIEVE_ORDER) in
``payments.py``; pure, synchronous, no I/O.

>>> gateway = EmbeddedGateway({"TESTMERCHANT": "0123456789abcdef0123456789abcdef"})
>>> reply = gateway.handle("100", b"apiOperation=CREATE_SESSION&merchant=TESTMERCHANT"
...     b"&apiUsername=merchant.TESTMERCHANT&apiPassword=0123456789abcdef0123456789abcdef")
>>> reply.status, nvp.decode(reply.body)["session.updateStatus"]
(201, 'NO_UPDATE')

Checks run in the gateway's order: the body, the API version, the credentials, ``apiOperation``,
``merchant``, the names of every other field, then what the operation itself needs (for the
payment operations, see ``payments.py``): for
CREATE_SESSION ``session.authenticationLimit`` and room in the session store; for
RETRIEVE_SESSION and UPDATE_SESSION the session (``session.id``), and for an update the version
the caller last saw (``session.version``), then the values it would store. The first failure
answers, as an NVP error body with ``result=ERROR``; nothing the caller sent as ``apiPassword``
is ever echoed, nor any card value. Not thread-safe: it is meant to be called from one event
loop, where ``handle`` never awaits (which is what makes a payment's check of its (order,
transaction) pair and its commit one step).

``handle`` answers with a ``Reply``, or with ``AnswerLost`` when the operation was carried out
and its answer is to be lost (the test hook ``order.reference=TEST-ANSWER-LOST``): each face
turns that into its own lost answer, the same for both.

A session is the merchant's that created it, under the API version that created it: to another
merchant, under another version, or after it expired, its id is unknown (``INVALID_REQUEST`` on
``session.id``). An update stores the fields it names over the ones stored, never removes one,
and gives the session ``session.updateStatus=SUCCESS`` and a new ``session.version``. One whose
values are refused stores nothing and only marks the session ``FAILURE`` (MPGS: "the last attempt
to place data into the session was unsuccessful"); one that names a version other than the
current one changes nothing at all. Unknown field names are refused before the session is looked
at, like every other name, and so do not mark it.

Credentials are an ``apiPassword``, or a verified TLS client certificate whose subject CN is the
merchant id (certificate authentication): the HTTP face passes that CN as ``certificate``, taken
from the TLS layer, never from anything the client wrote. An account whose password is None is
accepted by certificate alone.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from adapter.core import nvp
from adapter.embedded import orders, payments, session_fields, store
from adapter.embedded.answers import (
    CORRELATION_ID,
    FAILURE,
    INVALID,
    SUCCESS,
    UNSUPPORTED,
    AnswerLost,
    Refused,
    Request,
    busy,
    echo_correlation_id,
    error,
    error_fields,
    invalid,
    missing,
    reply,
    shown,
)
from adapter.embedded.orders import OrderLimits
from adapter.embedded.session_fields import ORDER_AMOUNT, ORDER_CURRENCY
from adapter.embedded.store import (
    DEFAULT_AUTHENTICATION_LIMIT,
    SESSION_ID_PREFIX,
    SessionStore,
    StoredSession,
    StoreFull,
    StoreLimits,
)
from adapter.upstream.client import Reply

__all__ = [
    "AUTHENTICATION_LIMITS",
    "CREATE_SESSION",
    "RETRIEVE_SESSION",
    "SESSION_ID_PREFIX",
    "SUPPORTED_API_VERSIONS",
    "UPDATE_SESSION",
    "AnswerLost",
    "EmbeddedGateway",
    "StoredSession",
    "request_too_large",
]

SUPPORTED_API_VERSIONS = range(1, 101)
"""The ``{N}`` of ``/api/nvp/version/{N}`` this gateway answers."""
AUTHENTICATION_LIMITS = range(1, 26)
"""What ``session.authenticationLimit`` may be."""
CREATE_SESSION = "CREATE_SESSION"
UPDATE_SESSION = "UPDATE_SESSION"
RETRIEVE_SESSION = "RETRIEVE_SESSION"
AUTHENTICATION_LIMIT = "session.authenticationLimit"
SESSION_ID = "session.id"
SESSION_UPDATE_STATUS = "session.updateStatus"
SESSION_VERSION = "session.version"

_PROTOCOL = frozenset(
    {nvp.API_OPERATION, nvp.API_USERNAME, nvp.API_PASSWORD, nvp.MERCHANT, CORRELATION_ID}
)
_ACCEPTED = {
    CREATE_SESSION: _PROTOCOL | {AUTHENTICATION_LIMIT},
    RETRIEVE_SESSION: _PROTOCOL | {SESSION_ID},
    UPDATE_SESSION: _PROTOCOL | {SESSION_ID, SESSION_VERSION},
    **{operation: _PROTOCOL | names for operation, names in payments.ACCEPTED.items()},
}
"""Field names each operation takes; some also take every session field (``_SESSION_FIELDS``)."""
_SESSION_FIELDS = payments.TAKES_SESSION_FIELDS | {UPDATE_SESSION}
# Real operation names get the real gateway's wording: "... PAY request not permitted ...".
_KNOWN_OPERATIONS = frozenset(
    {
        "AUTHENTICATE_PAYER",
        "AUTHORIZE",
        "CAPTURE",
        "DISBURSEMENT",
        "INITIATE_AUTHENTICATION",
        "PAY",
        "REFUND",
        "RETRIEVE_ORDER",
        "RETRIEVE_TRANSACTION",
        "VERIFY",
        "VOID",
    }
)
# ASCII only: str.isdigit() would also take '²' and Arabic-Indic digits.
_NUMBER = re.compile(r"[0-9]{1,9}")


class EmbeddedGateway:
    """An in-memory MPGS that knows the session and payment operations; ``accounts`` maps
    merchant id -> password (None: the merchant is accepted only with its client certificate).

    The session store's bounds are keyword arguments (see ``StoreLimits`` for the defaults):
    sessions in all and per merchant, each merchant held to its fair share of the whole
    (``store.fair_share``; past it, CREATE_SESSION is ``SERVER_BUSY``), fields
    per session, UTF-8 bytes per value and per session (past these, an update is refused as an
    ``INVALID_REQUEST`` naming the field). The order store's are too (see ``OrderLimits``):
    orders in all and per merchant, fair shares again, and transactions per order; past them a
    payment is ``SERVER_BUSY``. ``clock`` is any monotonic clock in seconds (sessions' expiry),
    ``wall_clock`` the time of day in seconds since the epoch (times in answers, cards' expiry).

    >>> EmbeddedGateway({"TESTMERCHANT": "secret"})
    EmbeddedGateway(merchants=['TESTMERCHANT'], sessions=0)
    """

    def __init__(
        self,
        accounts: Mapping[str, str | None],
        *,
        session_ttl_seconds: float = store.DEFAULT_TTL_SECONDS,
        max_sessions: int = store.DEFAULT_MAX_SESSIONS,
        max_sessions_per_merchant: int = store.DEFAULT_MAX_SESSIONS_PER_MERCHANT,
        max_fields_per_session: int = store.DEFAULT_MAX_FIELDS_PER_SESSION,
        max_value_bytes: int = store.DEFAULT_MAX_VALUE_BYTES,
        max_session_bytes: int = store.DEFAULT_MAX_SESSION_BYTES,
        max_orders: int = orders.DEFAULT_MAX_ORDERS,
        max_orders_per_merchant: int = orders.DEFAULT_MAX_ORDERS_PER_MERCHANT,
        max_transactions_per_order: int = orders.DEFAULT_MAX_TRANSACTIONS_PER_ORDER,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        for merchant, password in accounts.items():
            if not nvp.MERCHANT_ID.fullmatch(merchant):
                raise ValueError(f"invalid merchant id {merchant!r}")
            if password is not None and not password:  # "" would let "apiPassword=" in
                raise ValueError(f"merchant {merchant!r} has an empty password")
        limits = StoreLimits(
            ttl_seconds=session_ttl_seconds,
            max_sessions=max_sessions,
            max_sessions_per_merchant=max_sessions_per_merchant,
            max_fields_per_session=max_fields_per_session,
            max_value_bytes=max_value_bytes,
            max_session_bytes=max_session_bytes,
        )
        # A copy: later edits to the caller's mapping must not change who may log in.
        self._accounts: dict[str, str | None] = dict(accounts)
        self._limits = limits
        merchants = max(1, len(accounts))
        self._store = SessionStore(limits, merchants=merchants)
        order_limits = OrderLimits(max_orders, max_orders_per_merchant, max_transactions_per_order)
        self._payments = payments.Payments(
            order_limits, merchants=merchants, find_session=self._paying_session
        )
        self._clock = clock
        self._wall_clock = wall_clock
        self._decoy = store.random_bytes(16).hex()

    def __repr__(self) -> str:
        return f"EmbeddedGateway(merchants={list(self._accounts)!r}, sessions={self.session_count})"

    @property
    def session_count(self) -> int:
        """How many sessions are live now."""
        return self._store.count(self._clock())

    def session_count_for(self, merchant: str) -> int:
        """How many of ``merchant``'s sessions are live now."""
        return self._store.count_for(merchant, self._clock())

    def session(self, session_id: str) -> StoredSession | None:
        """The live session with this id, whoever owns it, or None (never created, or expired)."""
        return self._store.peek(session_id, self._clock())

    @property
    def order_count(self) -> int:
        """How many orders the gateway holds (orders never expire)."""
        return len(self._payments.orders)

    def order_count_for(self, merchant: str) -> int:
        """How many orders ``merchant`` holds."""
        return self._payments.orders.count_for(merchant)

    def handle(
        self, version: str, body: bytes, *, certificate: str | None = None
    ) -> Reply | AnswerLost:
        """Answer one ``POST /api/nvp/version/{version}`` with this body; never raises.

        ``AnswerLost`` when the operation was carried out and its answer must not reach the
        client (``payments.ANSWER_LOST_REFERENCE``).

        ``certificate`` is the subject CN of the client's verified TLS certificate, if it sent
        one: it stands in for ``apiPassword`` when it names the merchant the request is for.
        """
        try:
            request, operation = self._admit(version, body, certificate)
            if operation == CREATE_SESSION:
                return self._create_session(request)
            if operation == UPDATE_SESSION:
                return self._update_session(request)
            if operation == RETRIEVE_SESSION:
                return self._retrieve_session(request)
            return self._payments.handle(operation, request)
        except Refused as refused:
            return refused.reply

    def set_password(self, merchant: str, password: str) -> None:
        """Put a new password in force for a configured merchant (a rotated password file).

        Raises ValueError for a merchant this gateway does not know or an empty password.
        """
        if merchant not in self._accounts:
            raise ValueError(f"unknown merchant {merchant!r}")
        if not password:
            raise ValueError(f"merchant {merchant!r} has an empty password")
        self._accounts[merchant] = password

    def _admit(self, version: str, body: bytes, certificate: str | None) -> tuple[Request, str]:
        """The checks every operation shares, in the gateway's order; the operation asked for."""
        try:
            fields = nvp.decode(body)
        except nvp.NvpDecodeError:
            raise error(400, "Request body is not a valid form-encoded NVP body.") from None
        api_version = _api_version(version)
        authenticated = self._authenticate(fields, certificate)
        operation = _check_operation(fields)
        _check_merchant(fields, authenticated)
        _check_field_names(fields, operation)
        now = Request(fields, authenticated, api_version, self._clock(), self._wall_clock())
        return now, operation

    def _create_session(self, request: Request) -> Reply:
        limit = _authentication_limit(request.fields)
        stored = StoredSession(
            request.merchant,
            request.api_version,
            store.random_bytes(5).hex(),
            request.now + self._limits.ttl_seconds,
            authentication_limit=DEFAULT_AUTHENTICATION_LIMIT if limit is None else limit,
        )
        try:
            session_id = self._store.add(stored, request.now)
        except StoreFull:
            raise busy() from None
        answer = {
            nvp.MERCHANT: request.merchant,
            nvp.RESULT: SUCCESS,
            SESSION_ID: session_id,
            SESSION_UPDATE_STATUS: stored.update_status,
            SESSION_VERSION: stored.version,
        }
        echo_correlation_id(request.fields, answer)
        if limit is not None:  # echoed when asked for; Retrieve Session always shows it
            answer[AUTHENTICATION_LIMIT] = str(limit)
        return reply(201, answer)

    def _retrieve_session(self, request: Request) -> Reply:
        session_id, stored = self._find_session(request)
        return reply(201, _session_answer(request.fields, session_id, stored))

    def _update_session(self, request: Request) -> Reply:
        session_id, stored = self._find_session(request)
        expected = request.fields.get(SESSION_VERSION)
        if expected is not None and expected != stored.version:
            # Stale, or not a version at all: nothing changes, not even updateStatus.
            raise invalid(SESSION_VERSION, expected)
        updates = {
            name: value
            for name, value in request.fields.items()
            if session_fields.is_session_field(name)
        }
        try:
            data = self._merged(stored.data, updates)
        except Refused:
            self._store.replace(session_id, dataclasses.replace(stored, update_status=FAILURE))
            raise
        updated = dataclasses.replace(
            stored,
            version=_new_version(stored.version),
            update_status=SUCCESS,
            data=MappingProxyType(data),
        )
        self._store.replace(session_id, updated)
        return reply(201, _session_answer(request.fields, session_id, updated))

    def _find_session(self, request: Request) -> tuple[str, StoredSession]:
        session_id = request.fields.get(SESSION_ID, "")
        if not session_id:
            raise missing(SESSION_ID)
        stored = None
        if session_fields.SESSION_ID.fullmatch(session_id):
            stored = self._store.get(session_id, request.merchant, request.api_version, request.now)
        if stored is None:  # malformed, never issued, expired, another merchant's: all unknown
            raise invalid(SESSION_ID, session_id)
        return session_id, stored

    def _paying_session(self, request: Request) -> StoredSession:
        """The session a PAY or AUTHORIZE names, at the version the caller last saw if given."""
        _, stored = self._find_session(request)
        expected = request.fields.get(SESSION_VERSION)
        if expected is not None and expected != stored.version:
            raise invalid(SESSION_VERSION, expected)
        return stored

    def _merged(self, stored: Mapping[str, str], updates: Mapping[str, str]) -> dict[str, str]:
        """The session's fields after ``updates``, or the refusal of the first field at fault.

        Each value in body order (its form, then its size), then the pair amount and currency
        (the session must hold both or neither afterwards: a new currency for a stored amount
        is fine), then the session's own bounds, naming the first field that does not fit.
        """
        limits = self._limits
        for name, value in updates.items():
            if not session_fields.valid_value(name, value):
                raise invalid(name, value)
            if _size(value) > limits.max_value_bytes:
                raise error(
                    400,
                    f"Value exceeds the {limits.max_value_bytes}-byte limit.",
                    field=name,
                    validation_type=INVALID,
                )
        merged = {**stored, **updates}
        for present, absent in ((ORDER_AMOUNT, ORDER_CURRENCY), (ORDER_CURRENCY, ORDER_AMOUNT)):
            if present in merged and absent not in merged:
                raise missing(absent)
        if len(merged) > limits.max_fields_per_session:
            first_new = next(name for name in updates if name not in stored)
            raise error(
                400,
                f"A session holds at most {limits.max_fields_per_session} fields.",
                field=first_new,
                validation_type=INVALID,
            )
        if sum(_size(name) + _size(value) for name, value in merged.items()) > (
            limits.max_session_bytes
        ):
            grown = next(
                name for name, value in updates.items() if _size(value) > _size(stored.get(name))
            )
            raise error(
                400,
                f"A session holds at most {limits.max_session_bytes} bytes of fields.",
                field=grown,
                validation_type=INVALID,
            )
        return merged

    def _authenticate(self, fields: Mapping[str, str], certificate: str | None) -> str:
        """The merchant the credentials belong to; 401 for anything else.

        The merchant claimed is the one ``apiUsername`` names; with a certificate and no
        ``apiUsername``, the one the request is for (``merchant``). The claim holds if the
        certificate's CN is that merchant, or by its password; an ``apiPassword`` that is sent
        must be right either way, so a certificate never makes a wrong password pass.
        """
        username = fields.get(nvp.API_USERNAME)
        if username is None and certificate is not None:
            claimed: str | None = fields.get(nvp.MERCHANT, "")
        elif username is not None and username.startswith(nvp.USERNAME_PREFIX):
            claimed = username.removeprefix(nvp.USERNAME_PREFIX)
        else:
            claimed = None
        known = claimed is not None and claimed in self._accounts
        expected = self._accounts.get(claimed) if claimed is not None else None
        password = fields.get(nvp.API_PASSWORD)
        if password is None:
            accepted = known and certificate == claimed
        else:
            # Compare even for an unknown merchant, so the time taken does not tell which exist.
            matches = hmac.compare_digest(password.encode(), (expected or self._decoy).encode())
            accepted = expected is not None and matches
        if not accepted or claimed is None:
            raise Refused(reply(401, error_fields("Invalid credentials.")))
        return claimed


def _session_answer(
    fields: Mapping[str, str], session_id: str, stored: StoredSession
) -> dict[str, str]:
    """Retrieve Session's answer (an update's too): the session and every field it holds."""
    answer = {name: session_fields.shown_value(name, value) for name, value in stored.data.items()}
    answer.update(
        {
            nvp.MERCHANT: stored.merchant,
            nvp.RESULT: SUCCESS,
            SESSION_ID: session_id,
            SESSION_UPDATE_STATUS: stored.update_status,
            SESSION_VERSION: stored.version,
            AUTHENTICATION_LIMIT: str(stored.authentication_limit),
        }
    )
    echo_correlation_id(fields, answer)
    return answer


def _new_version(current: str) -> str:
    while True:  # a new version must differ from the one a caller may hold: ~1 in 2**40 repeats
        version = store.random_bytes(5).hex()
        if version != current:
            return version


def _size(value: str | None) -> int:
    return 0 if value is None else len(value.encode("utf-8"))


def known_field(name: str) -> bool:
    """Whether some operation of the gateway takes a field of this name."""
    return name in _ANY_OPERATION or session_fields.is_session_field(name)


_ANY_OPERATION = frozenset().union(*_ACCEPTED.values())


def _check_field_names(fields: Mapping[str, str], operation: str) -> None:
    accepted = _ACCEPTED[operation]
    for name in fields:  # the first one in the body is the one named, as a client sent it
        if name in accepted:
            continue
        if operation in _SESSION_FIELDS and session_fields.is_session_field(name):
            continue
        raise error(
            400,
            f"Unexpected parameter '{shown(name)}'",
            field=shown(name),
            validation_type=UNSUPPORTED,
        )


def request_too_large(max_bytes: int) -> Reply:
    """The answer for a body over the HTTP face's cap, in the gateway's own error format."""
    return reply(413, error_fields(f"Request body exceeds the {max_bytes}-byte limit."))


def _api_version(version: str) -> int:
    if _NUMBER.fullmatch(version) and int(version) in SUPPORTED_API_VERSIONS:
        return int(version)
    raise error(400, f"Unsupported API version '{shown(version)}'.")


def _check_operation(fields: Mapping[str, str]) -> str:
    operation = fields.get(nvp.API_OPERATION, "")
    if not operation:
        raise missing(nvp.API_OPERATION)
    if operation not in _ACCEPTED:
        explanation = f"Value '{shown(operation)}' is invalid."
        if operation in _KNOWN_OPERATIONS:
            words = operation.replace("_", " ").capitalize()
            explanation += f" {words} request not permitted for this merchant."
        raise error(400, explanation, field=nvp.API_OPERATION, validation_type=INVALID)
    return operation


def _check_merchant(fields: Mapping[str, str], authenticated: str) -> None:
    merchant = fields.get(nvp.MERCHANT, "")
    if not merchant:
        raise missing(nvp.MERCHANT)
    if not nvp.MERCHANT_ID.fullmatch(merchant):
        raise invalid(nvp.MERCHANT, merchant)
    if merchant != authenticated:
        raise error(
            400, "Authenticated entity not authorised to perform operation for target entity"
        )


def _authentication_limit(fields: Mapping[str, str]) -> int | None:
    raw = fields.get(AUTHENTICATION_LIMIT)
    if raw is None:
        return None
    if _NUMBER.fullmatch(raw) and int(raw) in AUTHENTICATION_LIMITS:
        return int(raw)
    raise invalid(AUTHENTICATION_LIMIT, raw)
