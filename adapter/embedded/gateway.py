"""CREATE_SESSION as MPGS answers it, in memory: pure, synchronous, no I/O.

>>> gateway = EmbeddedGateway({"TESTMERCHANT": "0123456789abcdef0123456789abcdef"})
>>> reply = gateway.handle("100", b"apiOperation=CREATE_SESSION&merchant=TESTMERCHANT"
...     b"&apiUsername=merchant.TESTMERCHANT&apiPassword=0123456789abcdef0123456789abcdef")
>>> reply.status, nvp.decode(reply.body)["session.updateStatus"]
(201, 'NO_UPDATE')

Checks run in the gateway's order: the body, the API version, the credentials, ``apiOperation``,
``merchant``, every other field, then room in the session store. The first failure answers, as an
NVP error body with ``result=ERROR``; nothing the caller sent as ``apiPassword`` is ever echoed.
Not thread-safe: it is meant to be called from one event loop, where ``handle`` never awaits.

Credentials are an ``apiPassword``, or a verified TLS client certificate whose subject CN is the
merchant id (certificate authentication): the HTTP face passes that CN as ``certificate``, taken
from the TLS layer, never from anything the client wrote. An account whose password is None is
accepted by certificate alone.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from adapter import nvp

SUPPORTED_API_VERSIONS = range(1, 101)
"""The ``{N}`` of ``/api/nvp/version/{N}`` this gateway answers."""
AUTHENTICATION_LIMITS = range(1, 26)
"""What ``session.authenticationLimit`` may be."""
CREATE_SESSION = "CREATE_SESSION"
CORRELATION_ID = "correlationId"
AUTHENTICATION_LIMIT = "session.authenticationLimit"
SESSION_ID = "session.id"
SESSION_UPDATE_STATUS = "session.updateStatus"
SESSION_VERSION = "session.version"
SESSION_ID_PREFIX = "SESSION0002"

INVALID_REQUEST = "INVALID_REQUEST"
SERVER_BUSY = "SERVER_BUSY"
INVALID = "INVALID"
MISSING = "MISSING"
UNSUPPORTED = "UNSUPPORTED"

_ACCEPTED = frozenset(
    {
        nvp.API_OPERATION,
        nvp.API_USERNAME,
        nvp.API_PASSWORD,
        nvp.MERCHANT,
        CORRELATION_ID,
        AUTHENTICATION_LIMIT,
    }
)
_SESSION_ID_ALPHABET = string.digits + string.ascii_uppercase
_SESSION_ID_RANDOM_CHARS = 20
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
        "RETRIEVE_SESSION",
        "RETRIEVE_TRANSACTION",
        "UPDATE_SESSION",
        "VERIFY",
        "VOID",
    }
)
# ASCII only: str.isdigit() would also take '²' and Arabic-Indic digits.
_NUMBER = re.compile(r"[0-9]{1,9}")
_SHOWN_CHARS = 100  # keeps error.field and error.explanation within the contract's lengths


@dataclass(frozen=True, slots=True)
class GatewayReply:
    """One HTTP answer: the status and the NVP body."""

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What the gateway remembers of a session; ``expires_at`` is on the gateway's clock."""

    merchant: str
    api_version: int
    version: str
    expires_at: float


class _Refused(Exception):
    """Carries the error answer from the check that failed back to ``handle``; never escapes."""

    def __init__(self, reply: GatewayReply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class EmbeddedGateway:
    """An in-memory MPGS that knows CREATE_SESSION; ``accounts`` maps merchant id -> password.

    A password of None: the merchant is accepted only with its client certificate.

    >>> EmbeddedGateway({"TESTMERCHANT": "secret"})
    EmbeddedGateway(merchants=['TESTMERCHANT'], sessions=0)
    """

    def __init__(
        self,
        accounts: Mapping[str, str | None],
        *,
        session_ttl_seconds: float = 900.0,
        max_sessions: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for merchant, password in accounts.items():
            if not nvp.MERCHANT_ID.fullmatch(merchant):
                raise ValueError(f"invalid merchant id {merchant!r}")
            if password is not None and not password:  # "" would let "apiPassword=" in
                raise ValueError(f"merchant {merchant!r} has an empty password")
        if not session_ttl_seconds > 0:
            raise ValueError("session_ttl_seconds must be positive")
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        # A copy: later edits to the caller's mapping must not change who may log in.
        self._accounts: dict[str, str | None] = dict(accounts)
        self._ttl = session_ttl_seconds
        self._max_sessions = max_sessions
        self._clock = clock
        self._decoy = secrets.token_hex(16)
        # Insertion order is expiry order (one TTL, a clock that does not go back), so the
        # expired sessions are always at the front and purging is cheap.
        self._sessions: OrderedDict[str, StoredSession] = OrderedDict()

    def __repr__(self) -> str:
        return f"EmbeddedGateway(merchants={list(self._accounts)!r}, sessions={self.session_count})"

    @property
    def session_count(self) -> int:
        """How many sessions are live now."""
        self._purge_expired(self._clock())
        return len(self._sessions)

    def session(self, session_id: str) -> StoredSession | None:
        """The live session with this id, or None (never created, or expired)."""
        stored = self._sessions.get(session_id)
        if stored is None or stored.expires_at <= self._clock():
            return None
        return stored

    def handle(self, version: str, body: bytes, *, certificate: str | None = None) -> GatewayReply:
        """Answer one ``POST /api/nvp/version/{version}`` with this body; never raises.

        ``certificate`` is the subject CN of the client's verified TLS certificate, if it sent
        one: it stands in for ``apiPassword`` when it names the merchant the request is for.
        """
        try:
            return self._create_session(version, body, certificate)
        except _Refused as refused:
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

    def _create_session(self, version: str, body: bytes, certificate: str | None) -> GatewayReply:
        try:
            fields = nvp.decode(body)
        except nvp.NvpDecodeError:
            raise _error(400, "Request body is not a valid form-encoded NVP body.") from None
        api_version = _api_version(version)
        authenticated = self._authenticate(fields, certificate)
        _check_operation(fields)
        _check_merchant(fields, authenticated)
        _check_no_other_fields(fields)
        limit = _authentication_limit(fields)
        now = self._clock()
        self._purge_expired(now)
        if len(self._sessions) >= self._max_sessions:
            raise _error(503, "The gateway is busy; try again later.", cause=SERVER_BUSY)
        session_id = self._new_session_id()
        stored = StoredSession(authenticated, api_version, secrets.token_hex(5), now + self._ttl)
        self._sessions[session_id] = stored
        answer = {
            nvp.MERCHANT: authenticated,
            nvp.RESULT: "SUCCESS",
            SESSION_ID: session_id,
            SESSION_UPDATE_STATUS: "NO_UPDATE",
            SESSION_VERSION: stored.version,
        }
        if fields.get(CORRELATION_ID):  # empty is the same as absent
            answer[CORRELATION_ID] = fields[CORRELATION_ID]
        if limit is not None:
            answer[AUTHENTICATION_LIMIT] = str(limit)
        return _reply(201, answer)

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
            raise _Refused(_reply(401, _error_fields("Invalid credentials.")))
        return claimed

    def _purge_expired(self, now: float) -> None:
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires_at > now:
                return
            self._sessions.popitem(last=False)

    def _new_session_id(self) -> str:
        while True:  # a repeat is ~1 in 36**20, but a duplicate would hand out a live session
            session_id = SESSION_ID_PREFIX + "".join(
                secrets.choice(_SESSION_ID_ALPHABET) for _ in range(_SESSION_ID_RANDOM_CHARS)
            )
            if session_id not in self._sessions:
                return session_id


def request_too_large(max_bytes: int) -> GatewayReply:
    """The answer for a body over the HTTP face's cap, in the gateway's own error format."""
    return _reply(413, _error_fields(f"Request body exceeds the {max_bytes}-byte limit."))


def _api_version(version: str) -> int:
    if _NUMBER.fullmatch(version) and int(version) in SUPPORTED_API_VERSIONS:
        return int(version)
    raise _error(400, f"Unsupported API version '{_shown(version)}'.")


def _check_operation(fields: Mapping[str, str]) -> None:
    operation = fields.get(nvp.API_OPERATION, "")
    if not operation:
        raise _missing(nvp.API_OPERATION)
    if operation != CREATE_SESSION:
        explanation = f"Value '{_shown(operation)}' is invalid."
        if operation in _KNOWN_OPERATIONS:
            words = operation.replace("_", " ").capitalize()
            explanation += f" {words} request not permitted for this merchant."
        raise _error(400, explanation, field=nvp.API_OPERATION, validation_type=INVALID)


def _check_merchant(fields: Mapping[str, str], authenticated: str) -> None:
    merchant = fields.get(nvp.MERCHANT, "")
    if not merchant:
        raise _missing(nvp.MERCHANT)
    if not nvp.MERCHANT_ID.fullmatch(merchant):
        raise _invalid(nvp.MERCHANT, merchant)
    if merchant != authenticated:
        raise _error(
            400, "Authenticated entity not authorised to perform operation for target entity"
        )


def _check_no_other_fields(fields: Mapping[str, str]) -> None:
    for name in fields:  # the first one in the body is the one named, as a client sent it
        if name not in _ACCEPTED:
            raise _error(
                400,
                f"Unexpected parameter '{_shown(name)}'",
                field=_shown(name),
                validation_type=UNSUPPORTED,
            )


def _authentication_limit(fields: Mapping[str, str]) -> int | None:
    raw = fields.get(AUTHENTICATION_LIMIT)
    if raw is None:
        return None
    if _NUMBER.fullmatch(raw) and int(raw) in AUTHENTICATION_LIMITS:
        return int(raw)
    raise _invalid(AUTHENTICATION_LIMIT, raw)


def _missing(field: str) -> _Refused:
    return _error(400, f"Missing parameter '{field}'.", field=field, validation_type=MISSING)


def _invalid(field: str, value: str) -> _Refused:
    return _error(400, f"Value '{_shown(value)}' is invalid.", field=field, validation_type=INVALID)


def _error(
    status: int,
    explanation: str,
    *,
    cause: str = INVALID_REQUEST,
    field: str | None = None,
    validation_type: str | None = None,
) -> _Refused:
    fields = _error_fields(explanation, cause)
    if field is not None:
        fields[nvp.ERROR_FIELD] = field
    if validation_type is not None:
        fields[nvp.ERROR_VALIDATION_TYPE] = validation_type
    return _Refused(_reply(status, fields))


def _error_fields(explanation: str, cause: str = INVALID_REQUEST) -> dict[str, str]:
    return {
        nvp.ERROR_CAUSE: cause,
        nvp.ERROR_EXPLANATION: explanation,
        nvp.RESULT: nvp.RESULT_ERROR,
    }


def _reply(status: int, fields: Mapping[str, str]) -> GatewayReply:
    # MPGS lists its fields in name order; clients must not care, but the bodies then read alike.
    return GatewayReply(status, nvp.encode(dict(sorted(fields.items()))))


def _shown(text: str) -> str:
    """Caller text fit to quote in an error: clipped, and lone surrogates (from a URL) replaced."""
    clipped = text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
    return clipped.encode("utf-8", "replace").decode("utf-8")
