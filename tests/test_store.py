"""The session store: ids of 20 characters of 0-9 A-Z drawn uniformly in one random read, and
fair shares of its room."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.embedded.store import (
    SESSION_ID_PREFIX,
    RandomBytes,
    SessionStore,
    StoredSession,
    StoreFull,
    StoreLimits,
    fair_share,
    session_id_chars,
)

ALPHABET = string.digits + string.ascii_uppercase


def source(data: bytes) -> Callable[[int], bytes]:
    """A random source that hands out ``data``, then zero bytes."""
    rest = bytearray(data)

    def read(count: int) -> bytes:
        taken = bytes(rest[:count]).ljust(count, b"\0")
        del rest[:count]
        return taken

    return read


def reference(data: bytes) -> str:
    """Byte by byte: a byte below 252 is the character at its value modulo 36, others dropped."""
    kept = [ALPHABET[b % 36] for b in data if b < 252]
    return "".join(kept + ["0"] * 20)[:20]


def test_every_character_stands_for_as_many_bytes() -> None:
    """Of the 256 byte values, each character takes exactly 7 and 4 are dropped: no bias."""
    firsts = [session_id_chars(source(bytes([b]) + b"\1" * 23))[0] for b in range(256)]
    assert Counter(firsts[:252]) == Counter(dict.fromkeys(ALPHABET, 7))
    assert firsts[252:] == ["1"] * 4  # dropped: the next byte's character comes first


@given(st.binary(max_size=64))
def test_session_id_chars_reads_bytes_as_the_reference(data: bytes) -> None:
    """Any random bytes make the characters the byte-by-byte reading makes, dropped ones
    skipped and a second read taken when too many were dropped."""
    assert session_id_chars(source(data)) == reference(data)


def test_new_ids_have_the_gateway_form_and_differ() -> None:
    """A thousand sessions get a thousand ids, each the prefix and 20 of 0-9 A-Z."""
    store = SessionStore()
    ids = {store.add(StoredSession("M1", 100, "0123456789", 900.0), now=0.0) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(re.escape(SESSION_ID_PREFIX) + r"[0-9A-Z]{20}", i) for i in ids)


@given(st.integers(min_value=1, max_value=64), st.lists(st.integers(0, 100), max_size=40))
def test_random_bytes_hands_out_each_read_byte_once_in_order(chunk: int, counts: list[int]) -> None:
    """Reads of any sizes, over chunk boundaries and past a whole chunk, get the bytes the
    source gave, in order, none twice: a read that does not fit what is left starts a new
    chunk, of at least its own size."""
    reads: list[bytes] = []

    def source(count: int) -> bytes:
        reads.append(bytes((len(reads) + i) % 256 for i in range(count)))
        return reads[-1]

    random_bytes = RandomBytes(chunk, source)
    drawn = [random_bytes(count) for count in counts]
    assert [len(piece) for piece in drawn] == counts
    current, at, used = b"", 0, 0
    for piece, count in zip(drawn, counts, strict=True):
        if at + count > len(current):
            current, at = reads[used], 0
            used += 1
            assert len(current) == max(chunk, count)
        assert piece == current[at : at + count]
        at += count
    assert used == len(reads)


def fill(store: SessionStore, merchant: str, now: float = 0.0) -> int:
    """Create sessions for ``merchant`` until the store refuses; how many it took."""
    for created in range(store.limits.max_sessions + 1):
        try:
            store.add(StoredSession(merchant, 100, "030f712301", 900.0), now)
        except StoreFull:
            return created
    raise AssertionError("the store never refused")


def test_merchants_that_fill_their_shares_leave_a_third_its_own() -> None:
    """Two merchants as fast as they can go fill only their shares: a third still gets its
    whole share (here 6 sessions, 3 merchants, each bound to 3 alone: 2 each)."""
    store = SessionStore(StoreLimits(max_sessions=6, max_sessions_per_merchant=3), merchants=3)
    assert (fill(store, "SHOP1"), fill(store, "SHOP2")) == (2, 2)
    assert fill(store, "SHOP3") == 2
    assert store.count(0.0) == 6


@pytest.mark.parametrize(
    ("total", "per_merchant", "merchants", "share"),
    [
        (100_000, 50_000, 1, 50_000),
        (100_000, 50_000, 2, 50_000),
        (100_000, 50_000, 3, 33_333),
        (10, 9, 10, 1),
        (10, 2, 3, 2),
    ],
)
def test_a_share_is_the_total_divided_or_the_merchants_bound_if_lower(
    total: int, per_merchant: int, merchants: int, share: int
) -> None:
    """The shares of all merchants never add up to more than the store holds."""
    limits = StoreLimits(max_sessions=total, max_sessions_per_merchant=per_merchant)
    assert fair_share(limits, merchants) == share
    assert share * merchants <= total


def test_more_merchants_than_sessions_is_refused() -> None:
    """A store that cannot give each merchant one session is a mistake, not a race."""
    with pytest.raises(ValueError, match="leaves no session for each of 3 merchants"):
        SessionStore(StoreLimits(max_sessions=2, max_sessions_per_merchant=1), merchants=3)
