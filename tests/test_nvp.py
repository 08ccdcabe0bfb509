"""The NVP codec: real form-encoding out, strict decoding in."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.core import nvp

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


def reference_encode(fields: dict[str, str]) -> bytes:
    """The codec's encoding as first written, with no fast path: what ``encode`` must equal."""
    return "&".join(
        f"{quote_plus(name, safe='')}={quote_plus(value, safe='')}"
        for name, value in fields.items()
    ).encode("ascii")


def reference_decode(body: bytes) -> dict[str, str]:
    """The codec's decoding as first written, with no fast path: what ``decode`` must equal."""
    if not body:
        raise nvp.NvpDecodeError("empty body")
    fields: dict[str, str] = {}
    for index, pair in enumerate(body.split(b"&")):
        name, sep, value = pair.partition(b"=")
        if not sep:
            raise nvp.NvpDecodeError(f"pair {index} has no '='")
        if not name:
            raise nvp.NvpDecodeError(f"pair {index} has an empty name")
        fields[reference_unquote(name, index)] = reference_unquote(value, index)
    return fields


def reference_unquote(raw: bytes, index: int) -> str:
    if re.search(rb"%(?![0-9A-Fa-f]{2})", raw):
        raise nvp.NvpDecodeError(f"pair {index} has a malformed percent-escape")
    unescaped = re.sub(
        rb"%([0-9A-Fa-f]{2})", lambda m: bytes((int(m[1], 16),)), raw.replace(b"+", b" ")
    )
    try:
        return unescaped.decode("utf-8")
    except UnicodeDecodeError:
        raise nvp.NvpDecodeError(f"pair {index} is not valid UTF-8") from None


def outcome(decoder: Callable[[bytes], dict[str, str]], body: bytes) -> object:
    """What a decoder makes of a body: its fields in order, or its error's message."""
    try:
        return list(decoder(body).items())
    except nvp.NvpDecodeError as exc:
        return str(exc)


# Plain characters, the ones that need escaping, the NVP syntax and a few multi-byte ones, so
# that both paths of the codec are taken often.
MIXED_TEXT = st.text(st.sampled_from("aZ09_.~- +%&=/[]\x00\x7fé€😀")) | TEXT
WIRE = st.binary(max_size=256) | st.lists(
    st.sampled_from(
        [
            b"a",
            b"Z",
            b"0",
            b"=",
            b"&",
            b"%",
            b"+",
            b"%2",
            b"%41",
            b"%zz",
            b"\xc3",
            b"\xa9",
            b"\xff",
            b"\xe2\x82\xac",
            b" ",
        ]
    ),
    max_size=40,
).map(b"".join)


@given(st.dictionaries(MIXED_TEXT, MIXED_TEXT))
def test_encode_equals_the_reference(fields: dict[str, str]) -> None:
    """The fast path writes exactly the bytes quote_plus would, for any names and values."""
    assert nvp.encode(fields) == reference_encode(fields)


@given(WIRE)
def test_decode_equals_the_reference(body: bytes) -> None:
    """The fast path reads any body as the general path does: the same fields in the same
    order, or the same error naming the same pair."""
    assert outcome(nvp.decode, body) == outcome(reference_decode, body)


@given(st.dictionaries(MIXED_TEXT.filter(bool), MIXED_TEXT, min_size=1))
def test_encoded_fields_decode_as_the_reference_does(fields: dict[str, str]) -> None:
    """An encoded body round-trips through both decoders alike."""
    body = nvp.encode(fields)
    assert nvp.decode(body) == reference_decode(body) == fields
