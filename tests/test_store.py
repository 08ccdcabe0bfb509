"""The session store's ids: 20 base-36 characters drawn uniformly, in one random read."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.embedded.store import SESSION_ID_PREFIX, SessionStore, StoredSession, session_id_chars

CHOICES = 36**20


@pytest.mark.parametrize(
    ("number", "chars"),
    [
        (0, "0" * 20),
        (35, "0" * 19 + "Z"),
        (36, "0" * 18 + "10"),
        (CHOICES - 1, "Z" * 20),
    ],
)
def test_session_id_chars_table(number: int, chars: str) -> None:
    """The number is written in base 36, digits then upper-case letters, padded to 20."""
    assert session_id_chars(number) == chars


@given(st.integers(min_value=0, max_value=CHOICES - 1))
def test_session_id_chars_is_one_to_one(number: int) -> None:
    """Every number below 36**20 is its own 20 characters: no id is likelier than another."""
    chars = session_id_chars(number)
    assert re.fullmatch(r"[0-9A-Z]{20}", chars)
    assert int(chars, 36) == number


def test_new_ids_have_the_gateway_form_and_differ() -> None:
    """A thousand sessions get a thousand ids, each the prefix and 20 of 0-9 A-Z."""
    store = SessionStore()
    ids = {store.add(StoredSession("M1", 100, "0123456789", 900.0), now=0.0) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(re.escape(SESSION_ID_PREFIX) + r"[0-9A-Z]{20}", i) for i in ids)
