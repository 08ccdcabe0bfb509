"""The embedded gateway's session store: bounded, expiring, each session private to its merchant.

>>> store = SessionStore(StoreLimits(max_sessions=2, max_sessions_per_merchant=1), merchants=2)
>>> session_id = store.add(StoredSession("SHOP1", 100, "030f712301", 900.0), now=0.0)
>>> store.get(session_id, "SHOP1", 100, now=1.0).version
'030f712301'
>>> store.get(session_id, "SHOP2", 100, now=1.0) is None  # another merchant's
True

Pure and synchronous; time is whatever ``now`` the caller passes (the gateway's clock). A session
lives ``ttl_seconds`` from its creation, whatever is done with it; updates replace the session's
snapshot in place. Every bound is a ``StoreLimits`` field, checked once at construction; each
merchant may hold its ``fair_share`` of the store.
"""

from __future__ import annotations

import os
import string
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "DEFAULT_AUTHENTICATION_LIMIT",
    "DEFAULT_MAX_FIELDS_PER_SESSION",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_SESSIONS_PER_MERCHANT",
    "DEFAULT_MAX_SESSION_BYTES",
    "DEFAULT_MAX_VALUE_BYTES",
    "DEFAULT_TTL_SECONDS",
    "NO_UPDATE",
    "SESSION_ID_PREFIX",
    "RandomBytes",
    "SessionStore",
    "StoreFull",
    "StoreLimits",
    "StoredSession",
    "fair_share",
    "merchant_share",
    "random_bytes",
    "session_id_chars",
]

SESSION_ID_PREFIX = "SESSION0002"
NO_UPDATE = "NO_UPDATE"
DEFAULT_AUTHENTICATION_LIMIT = 5
"""``session.authenticationLimit`` of a session created without one."""

DEFAULT_TTL_SECONDS = 900.0
"""A session lives 15 minutes from its creation."""
DEFAULT_MAX_SESSIONS = 100_000
DEFAULT_MAX_SESSIONS_PER_MERCHANT = 50_000
"""Half the store: one merchant alone never fills it (a soak run creates 25,000 sessions)."""
DEFAULT_MAX_FIELDS_PER_SESSION = 50
"""Room for an order, billing and shipping addresses, the customer and a card."""
DEFAULT_MAX_VALUE_BYTES = 512
"""The longest value of the contract, 127 characters of ``order.description``, fits in UTF-8."""
DEFAULT_MAX_SESSION_BYTES = 8192
"""With the default sessions, at most about 800 MB of field data (plus Python's overhead)."""

_SESSION_ID_ALPHABET = string.digits + string.ascii_uppercase
_SESSION_ID_RANDOM_CHARS = 20
# Each random byte below 252 stands for the character at its value modulo 36 (7 bytes for each
# character); the 4 bytes above are dropped, so that no character is likelier than another.
_KEPT_BYTES = 256 - 256 % len(_SESSION_ID_ALPHABET)
_CHAR_OF_BYTE = bytes(ord(_SESSION_ID_ALPHABET[b % len(_SESSION_ID_ALPHABET)]) for b in range(256))
_DROPPED_BYTES = bytes(range(_KEPT_BYTES, 256))


def _no_data() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """The store's bounds; the defaults are those of ``nvp-adapter gateway``.

    ``max_sessions_per_merchant`` must be below ``max_sessions``, so that one merchant that has
    filled its share never refuses another. ``max_value_bytes`` and ``max_session_bytes`` count
    UTF-8 bytes; the latter is the sum over a session's stored names and values, which is what
    bounds the store's memory (about ``max_sessions`` x ``max_session_bytes`` of field data).
    """

    ttl_seconds: float = DEFAULT_TTL_SECONDS
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_sessions_per_merchant: int = DEFAULT_MAX_SESSIONS_PER_MERCHANT
    max_fields_per_session: int = DEFAULT_MAX_FIELDS_PER_SESSION
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES

    def __post_init__(self) -> None:
        if not self.ttl_seconds > 0:
            raise ValueError("session_ttl_seconds must be positive")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if not 1 <= self.max_sessions_per_merchant < self.max_sessions:
            # Equal would let one merchant fill the store and refuse every other one.
            raise ValueError("max_sessions_per_merchant must be at least 1 and below max_sessions")
        for name in ("max_fields_per_session", "max_value_bytes", "max_session_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What the gateway remembers of a session; ``expires_at`` is on the gateway's clock.

    ``data`` holds the session's fields by NVP name (``order.amount``, ``billing.address.city``),
    read-only; an update makes a new ``StoredSession``.
    """

    merchant: str
    api_version: int
    version: str
    expires_at: float
    authentication_limit: int = DEFAULT_AUTHENTICATION_LIMIT
    update_status: str = NO_UPDATE
    # Out of the repr: a session may hold a card's number and security code.
    data: Mapping[str, str] = field(default_factory=_no_data, hash=False, repr=False)


class StoreFull(Exception):
    """No room for another session: in all, or for this merchant. Raised by ``add``."""


def fair_share(limits: StoreLimits, merchants: int) -> int:
    """What one of ``merchants`` merchants may hold: the total divided among them, or the
    per-merchant bound if lower. The shares add up to no more than the total, so no set of
    merchants can refuse another.

    >>> fair_share(StoreLimits(max_sessions=100_000, max_sessions_per_merchant=50_000), 3)
    33333

    Raises ValueError when there are more merchants than the store holds sessions.
    """
    return merchant_share(
        limits.max_sessions, limits.max_sessions_per_merchant, merchants, what="session"
    )


def merchant_share(total: int, per_merchant: int, merchants: int, *, what: str) -> int:
    """``fair_share`` for any bounded store: ``total`` items in all, ``per_merchant`` at most
    for one merchant; ``what`` names an item (its bound is ``max_<what>s``), for the error.

    >>> merchant_share(100_000, 50_000, 3, what="order")
    33333

    Raises ValueError when there are more merchants than the store holds items.
    """
    if merchants < 1:
        raise ValueError("a store serves at least one merchant")
    if merchants > total:
        raise ValueError(
            f"max_{what}s ({total}) leaves no {what} for each of {merchants} merchants"
        )
    return min(per_merchant, total // merchants)


class SessionStore:
    """Live sessions by id, in creation order (which is expiry order: one TTL, a clock that
    does not go back), so expired sessions are always at the front and purging is cheap.

    ``merchants`` is how many merchants the store serves: each may hold its ``fair_share``.
    """

    def __init__(self, limits: StoreLimits | None = None, merchants: int = 1) -> None:
        self.limits = limits or StoreLimits()
        self.share = fair_share(self.limits, merchants)
        """Live sessions one merchant may hold at most."""
        self._sessions: OrderedDict[str, StoredSession] = OrderedDict()
        self._per_merchant: Counter[str] = Counter()

    def count(self, now: float) -> int:
        """How many sessions are live at ``now``."""
        self._purge(now)
        return len(self._sessions)

    def count_for(self, merchant: str, now: float) -> int:
        """How many of ``merchant``'s sessions are live at ``now``."""
        self._purge(now)
        return self._per_merchant[merchant]

    def peek(self, session_id: str, now: float) -> StoredSession | None:
        """The live session with this id, whoever owns it; None if unknown or expired."""
        stored = self._sessions.get(session_id)
        if stored is None or stored.expires_at <= now:
            return None
        return stored

    def get(
        self, session_id: str, merchant: str, api_version: int, now: float
    ) -> StoredSession | None:
        """The live session with this id as ``merchant`` sees it under ``api_version``.

        None when it was never created, has expired, belongs to another merchant, or was
        created under another API version: to the caller, all four are the same unknown id.
        """
        stored = self.peek(session_id, now)
        if stored is None or stored.merchant != merchant or stored.api_version != api_version:
            return None
        return stored

    def add(self, stored: StoredSession, now: float) -> str:
        """Keep a new session under a fresh id, and return the id.

        Raises ``StoreFull`` when this merchant holds its ``share`` of live sessions, or the
        store ``max_sessions`` (which fair shares never reach).
        """
        self._purge(now)
        if (
            len(self._sessions) >= self.limits.max_sessions
            or self._per_merchant[stored.merchant] >= self.share
        ):
            raise StoreFull
        session_id = self._new_session_id()
        self._sessions[session_id] = stored
        self._per_merchant[stored.merchant] += 1
        return session_id

    def replace(self, session_id: str, stored: StoredSession) -> None:
        """Put a new snapshot of a session that is in the store; it keeps its place (and expiry).

        Raises KeyError for an id the store does not hold, ValueError for a change of owner.
        """
        if self._sessions[session_id].merchant != stored.merchant:
            raise ValueError("a session never changes merchant")
        self._sessions[session_id] = stored

    def _purge(self, now: float) -> None:
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires_at > now:
                return
            self._sessions.popitem(last=False)
            self._per_merchant[oldest.merchant] -= 1
            if not self._per_merchant[oldest.merchant]:
                del self._per_merchant[oldest.merchant]

    def _new_session_id(self) -> str:
        while True:  # a repeat is ~1 in 36**20, but a duplicate would hand out a live session
            session_id = SESSION_ID_PREFIX + session_id_chars()
            if session_id not in self._sessions:
                return session_id


class RandomBytes:
    """The operating system's CSPRNG (``os.urandom``, as ``secrets`` reads it), read ``chunk``
    bytes at a time and handed out in order: one ``getrandom`` call for about 150 session ids
    and versions instead of one for each. No byte is handed out twice.

    >>> len(random_bytes(5))
    5
    """

    def __init__(self, chunk: int = 4096, source: Callable[[int], bytes] = os.urandom) -> None:
        self._chunk = chunk
        self._source = source
        self._held = b""
        self._at = 0

    def __call__(self, count: int) -> bytes:
        end = self._at + count
        if end > len(self._held):
            self._held, self._at, end = self._source(max(self._chunk, count)), 0, count
        drawn = self._held[self._at : end]
        self._at = end
        return drawn


random_bytes = RandomBytes()
"""The embedded gateway's one source of random bytes: ids, versions, its decoy password."""


def session_id_chars(random_bytes: Callable[[int], bytes] = random_bytes) -> str:
    """20 characters of 0-9 A-Z, each drawn uniformly and on its own, from ``random_bytes``.

    One random read (rarely two) for the 20, instead of one for each character.
    """
    chars = b""
    while len(chars) < _SESSION_ID_RANDOM_CHARS:
        drawn = random_bytes(_SESSION_ID_RANDOM_CHARS + 4)  # 4 spare: ~1 in 25,000 draws twice
        chars += drawn.translate(_CHAR_OF_BYTE, _DROPPED_BYTES)
    return chars[:_SESSION_ID_RANDOM_CHARS].decode("ascii")
