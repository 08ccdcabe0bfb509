"""The session store's ids: 20 characters of 0-9 A-Z drawn uniformly, in one random read."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from adapter.embedded.store import (
    SESSION_ID_PREFIX,
    RandomBytes,
    SessionStore,
    StoredSession,
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
