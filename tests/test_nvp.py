"""The NVP codec: real form-encoding out, strict decoding in."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter import nvp

TEXT = st.text(st.characters(exclude_categories=["Cs"]))  # protobuf strings hold no surrogates
NAMES = TEXT.filter(bool)


@pytest.mark.parametrize(
    ("fields", "wire"),
    [
        ({"merchant": "TEST7006259"}, b"merchant=TEST7006259"),
        ({"a": "x y"}, b"a=x+y"),
        ({"a": "1&b=2"}, b"a=1%26b%3D2"),
        ({"a": "+%"}, b"a=%2B%25"),
        ({"a": "é€"}, b"a=%C3%A9%E2%82%AC"),
        ({"a": ""}, b"a="),
        ({"session.id": "S", "result": "SUCCESS"}, b"session.id=S&result=SUCCESS"),
        ({"order.item[0].name": "x"}, b"order.item%5B0%5D.name=x"),
    ],
)
def test_encode_table(fields: dict[str, str], wire: bytes) -> None:
    """Encoding is application/x-www-form-urlencoded in UTF-8: reserved characters are escaped."""
    assert nvp.encode(fields) == wire


@pytest.mark.parametrize(
    ("wire", "fields"),
    [
        (
            b"merchant=TEST7006259&result=SUCCESS&session.id=SESSION0002378433591N3262498M20"
            b"&session.updateStatus=SUCCESS&session.version=030f712301",
            {
                "merchant": "TEST7006259",
                "result": "SUCCESS",
                "session.id": "SESSION0002378433591N3262498M20",
                "session.updateStatus": "SUCCESS",
                "session.version": "030f712301",
            },
        ),
        (
            b"error.cause=INVALID_REQUEST&error.explanation=Value+%27PAY%27+is+invalid.&result=ERROR",
            {
                "error.cause": "INVALID_REQUEST",
                "error.explanation": "Value 'PAY' is invalid.",
                "result": "ERROR",
            },
        ),
        (b"a=%c3%a9", {"a": "é"}),
        (b"a=\xc3\xa9", {"a": "é"}),
        (b"a=", {"a": ""}),
        (b"a=1=2", {"a": "1=2"}),
        (b"result=FAILURE&result=SUCCESS", {"result": "SUCCESS"}),
    ],
)
def test_decode_table(wire: bytes, fields: dict[str, str]) -> None:
    """Real gateway bodies decode; lower-case escapes and raw UTF-8 pass; the last value wins."""
    assert nvp.decode(wire) == fields


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"", "empty body"),
        (b"result", "no '='"),
        (b"=SUCCESS", "empty name"),
        (b"result=SUCCESS&", "no '='"),
        (b"a=%", "percent-escape"),
        (b"a=%4", "percent-escape"),
        (b"a=%zz", "percent-escape"),
        (b"a=%C3", "UTF-8"),
        (b"a=\xff", "UTF-8"),
        (b"<html><body>502 Bad Gateway</body></html>", "no '='"),
    ],
)
def test_decode_refuses(wire: bytes, why: str) -> None:
    """Malformed bodies raise NvpDecodeError, whose message says why without echoing the body."""
    with pytest.raises(nvp.NvpDecodeError, match=why):
        nvp.decode(wire)


@given(st.dictionaries(NAMES, TEXT, min_size=1))
def test_round_trip(fields: dict[str, str]) -> None:
    """Whatever the names and values, decoding an encoding gives back the same fields."""
    assert nvp.decode(nvp.encode(fields)) == fields


@given(TEXT, TEXT)
def test_no_value_can_smuggle_a_field(value: str, name_tail: str) -> None:
    """No value, whatever it holds, adds, drops or changes another field on the wire."""
    fields = {"apiOperation": "CREATE_SESSION", "correlationId": value, "merchant": "M1"}
    fields["x" + name_tail] = value
    decoded = nvp.decode(nvp.encode(fields))
    assert decoded == fields
    assert list(decoded) == list(fields)


@given(st.binary(max_size=512))
def test_decoder_raises_only_its_own_error(body: bytes) -> None:
    """Any bytes at all either decode or raise NvpDecodeError, never another exception."""
    with contextlib.suppress(nvp.NvpDecodeError):
        nvp.decode(body)


def test_decode_error_is_a_value_error() -> None:
    """NvpDecodeError is a ValueError, so generic handlers treat it as bad data."""
    assert issubclass(nvp.NvpDecodeError, ValueError)
