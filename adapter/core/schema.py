"""NVP names derived from the proto, once, at import time.

The proto is the single source of names: a field's NVP name is its JSON name, a nested message
adds a dotted prefix (``session.updateStatus``), an enum value's NVP text is its name minus the
enum's prefix (``RESULT_SUCCESS`` -> ``SUCCESS``), and the ``apiOperation`` of an RPC is its name
in upper snake case (``CreateSession`` -> ``CREATE_SESSION``), and a repeated message field
holds the answer's indexed names (``transaction[0].result``). Nothing here is written per
operation; ``Operation.for_method`` builds everything from the service descriptor, with the
request rules of its service (``SESSION_RULES``, ``PAYMENT_RULES``).

>>> op = OPERATIONS["CreateSession"]
>>> op.api_operation
'CREATE_SESSION'
>>> sorted(op.response.names)
['correlationId', 'merchant', 'result', 'session.id', 'session.updateStatus', 'session.version']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from adapter._proto.mpgs.gateway.v1 import (
    gateway_error_pb2,
    payment_service_pb2,
    retry_safety_pb2,
    session_service_pb2,
)
from adapter.core import money, nvp
from adapter.core.errors import RequestInvalid
from adapter.core.redaction import names_card_secret, scrub_unmodelled

__all__ = [
    "EXTRA_FIELDS",
    "GATEWAY_ERROR",
    "MAX_NAME_LENGTH",
    "OPERATIONS",
    "PAYMENT_RULES",
    "PAYMENT_SERVICE",
    "REQUIRED",
    "SERVICES",
    "SESSION_RULES",
    "SESSION_SERVICE",
    "TOGETHER",
    "VALUE_RULES",
    "MessageSchema",
    "Operation",
    "Rules",
    "ValueRule",
    "check_extra_key",
    "retry_safety",
]

EXTRA_FIELDS = "extra_fields"
"""The map field, in requests and responses, that carries NVP fields the proto does not model."""

MAX_NAME_LENGTH = 100


@dataclass(frozen=True, slots=True)
class ValueRule:
    """What a modelled request field's value must look like, and how the BadRequest says so."""

    description: str
    pattern: re.Pattern[str] | None = None
    max_length: int | None = None

    def admits(self, value: str) -> bool:
        if self.max_length is not None and len(value) > self.max_length:
            return False
        return self.pattern is None or self.pattern.fullmatch(value) is not None


_ANY_TEXT = re.compile(r".+", re.DOTALL)
_AMOUNT = ValueRule(
    "a plain decimal: 1 to 14 integer digits and at most 3 decimals, no sign, no exponent (such "
    "as 10.50)",
    re.compile(r"[0-9]{1,14}(\.[0-9]{1,3})?"),
)
_CURRENCY = ValueRule(
    "an ISO 4217 code: 3 upper-case letters (such as USD)", re.compile(r"[A-Z]{3}")
)
_PAYMENT_ID = ValueRule(
    "1 to 40 characters of 0-9 a-z A-Z - _ .", re.compile(r"[0-9A-Za-z_.-]{1,40}")
)
_REFERENCE = ValueRule("1 to 40 characters", _ANY_TEXT, 40)
# Per NVP name: checked wherever a request models the name (and the caller set it), before any
# upstream call. The gateway's own limits (CONTRACT §2, §8), so that nothing it would refuse for
# its form is sent, and nothing it accepts is refused. Amounts are decimal strings end to end.
# correlationId: the gateway documents at most 100 characters; the bounds on extra_fields keep a
# request (and so the echo of it in the answer) near 100 * (100 + 1024) characters, a few hundred
# KB at most even in 4-byte UTF-8, far inside gRPC's default 4 MiB, so that no request accepted
# upstream comes back with an answer that cannot be sent.
VALUE_RULES: Mapping[str, ValueRule] = MappingProxyType(
    {
        nvp.MERCHANT: ValueRule("1 to 12 characters of 0-9 a-z A-Z - _", nvp.MERCHANT_ID),
        "correlationId": ValueRule("at most 100 characters", max_length=100),
        "session.id": ValueRule(
            "31 to 35 characters of 0-9 A-Z a-z", re.compile(r"[0-9A-Za-z]{31,35}")
        ),
        "session.version": ValueRule(
            "exactly 10 characters of 0-9 a-z", re.compile(r"[0-9a-z]{10}")
        ),
        "order.amount": _AMOUNT,
        "order.currency": _CURRENCY,
        "order.id": ValueRule("1 to 40 characters", _ANY_TEXT, 40),
        "order.reference": _REFERENCE,
        "order.description": ValueRule("1 to 127 characters", _ANY_TEXT, 127),
        "transaction.id": _PAYMENT_ID,
        "transaction.targetTransactionId": _PAYMENT_ID,
        "transaction.amount": _AMOUNT,
        "transaction.currency": _CURRENCY,
        "transaction.reference": _REFERENCE,
    }
)
REQUIRED: frozenset[str] = frozenset({nvp.MERCHANT, "session.id"})
"""NVP names a session request must set wherever it models them."""
TOGETHER: tuple[tuple[str, str], ...] = (("order.amount", "order.currency"),)
"""Pairs of NVP names a request sets both of, or neither."""
_PRICES: tuple[tuple[str, str], ...] = (
    ("order.amount", "order.currency"),
    ("transaction.amount", "transaction.currency"),
)


@dataclass(frozen=True, slots=True)
class Rules:
    """What one service's requests must hold, checked before any upstream call.

    ``values``: each modelled name's form; ``required``: names set wherever a request models
    them; ``together``: pairs set both or neither; ``priced``: (amount, currency) pairs whose
    amount is above zero and has no more decimals than the currency's ISO 4217 minor unit;
    ``no_card_data``: no extra field may name a card's number or security code.
    """

    values: Mapping[str, ValueRule]
    required: frozenset[str]
    together: tuple[tuple[str, str], ...]
    priced: tuple[tuple[str, str], ...] = ()
    no_card_data: bool = False


SESSION_RULES = Rules(VALUE_RULES, REQUIRED, TOGETHER)
"""CONTRACT §8: a session's order is stored as given; only its form is checked."""
PAYMENT_RULES = Rules(
    MappingProxyType({**VALUE_RULES, "order.id": _PAYMENT_ID}),
    REQUIRED
    | {"order.id", "transaction.id", "transaction.targetTransactionId"}
    | {name for pair in _PRICES for name in pair},
    _PRICES,
    _PRICES,
    no_card_data=True,
)
"""CONTRACT §9: every id, amount and currency a payment operation models is required; the
optional ones are ``correlationId``, ``session.version`` and the references and description. The
card comes from the session, never through the API: a payment's extra fields may not carry one."""
MAX_EXTRA_FIELDS = 100
MAX_EXTRA_VALUE_LENGTH = 1024
_NVP_NAME = re.compile(r"[A-Za-z0-9]+(\[[0-9]+\])?(\.[A-Za-z0-9]+(\[[0-9]+\])?)*")
_INDEXED = re.compile(r"([A-Za-z0-9]+)\[(0|[1-9][0-9]{0,5})\]\.(.+)", re.DOTALL)
"""``transaction[3].response.gatewayCode``: a repeated field's name, the index, the element's name.
No leading zeros (one element, one spelling) and at most 6 digits; anything else is a leftover."""
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@dataclass(frozen=True, slots=True)
class _Leaf:
    """One scalar proto field reachable from a message, and how its value reads on the wire."""

    path: tuple[str, ...]  # proto field names from the top message down to the scalar
    enum_by_text: Mapping[str, int] | None  # NVP text -> enum number, None for strings
    text_by_enum: Mapping[int, str] | None

    @property
    def proto_path(self) -> str:
        return ".".join(self.path)


def _enum_texts(enum: EnumDescriptor) -> dict[str, int]:
    zero = enum.values_by_number[0].name
    if not zero.endswith("_UNSPECIFIED"):
        raise TypeError(f"enum {enum.full_name} needs an _UNSPECIFIED zero value")
    prefix = zero.removesuffix("UNSPECIFIED")
    return {v.name.removeprefix(prefix): v.number for v in enum.values if v.number != 0}


def _leaves(message: Descriptor, prefix: str, path: tuple[str, ...]) -> dict[str, _Leaf]:
    leaves: dict[str, _Leaf] = {}
    for field in message.fields:
        if field.name == EXTRA_FIELDS or (not path and _is_repeated_message(field)):
            continue  # a top-level repeated message is a MessageSchema of its own (``_elements``)
        name, where = prefix + field.json_name, (*path, field.name)
        if field.is_repeated:
            raise TypeError(f"{field.full_name}: only a top-level repeated message has an NVP form")
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            leaves.update(_leaves(field.message_type, name + ".", where))
        elif field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            by_text = _enum_texts(field.enum_type)
            leaves[name] = _Leaf(
                where,
                MappingProxyType(by_text),
                MappingProxyType({n: t for t, n in by_text.items()}),
            )
        elif field.type == FieldDescriptor.TYPE_STRING:
            leaves[name] = _Leaf(where, None, None)
        else:  # a new kind of field needs a decision on its wire form, not a silent guess
            raise TypeError(f"{field.full_name}: no NVP form defined for this field type")
    return leaves


def _is_repeated_message(field: FieldDescriptor) -> bool:
    return (
        field.is_repeated
        and field.message_type is not None
        and not field.message_type.GetOptions().map_entry
    )


class MessageSchema:
    """The NVP view of one proto message: which names it models and how to convert values.

    A top-level repeated message field holds the answer's indexed names: ``transaction[n].x``
    is the element schema's ``x``, the elements in the order of their indexes.
    """

    def __init__(self, descriptor: Descriptor, prefix: str = "") -> None:
        self.descriptor = descriptor
        self.message_class: type[Message] = GetMessageClass(descriptor)
        self._leaves = _leaves(descriptor, prefix, ())
        self._elements = {
            prefix + field.json_name: (field.name, MessageSchema(field.message_type))
            for field in descriptor.fields
            if field.message_type is not None
            and _is_repeated_message(field)
            and field.name != EXTRA_FIELDS
        }
        self.names = frozenset(self._leaves)
        self.ordered_names = tuple(self._leaves)
        """The names in the proto's field order: checks report the first field that fails."""
        self.has_extra_fields = EXTRA_FIELDS in descriptor.fields_by_name
        self._proto_path_by_name = {name: leaf.proto_path for name, leaf in self._leaves.items()}

    def proto_path(self, name: str) -> str | None:
        """The proto field path (``session.update_status``) behind an NVP name, if modelled."""
        return self._proto_path_by_name.get(name)

    def parse(self, fields: Mapping[str, str]) -> tuple[Message, dict[str, str]]:
        """Build the message from NVP fields; return it with every pair it could not hold.

        An enum text the proto lacks leaves the field at ``_UNSPECIFIED`` and keeps the raw text
        among the leftovers under its NVP name. Where the message has ``extra_fields``, the
        leftovers are stored there too, so nothing the gateway said is dropped.
        """
        message = self.message_class()
        leftovers: dict[str, str] = {}
        indexed: dict[str, dict[int, dict[str, str]]] = {}
        for name, value in fields.items():
            leaf = self._leaves.get(name)
            if leaf is None:
                match = _INDEXED.fullmatch(name) if self._elements else None
                if match is not None and match[1] in self._elements:
                    element = indexed.setdefault(match[1], {}).setdefault(int(match[2]), {})
                    element[match[3]] = value
                else:
                    leftovers[name] = value
                continue
            target: Any = message
            for step in leaf.path[:-1]:
                target = getattr(target, step)
            if leaf.enum_by_text is None:
                setattr(target, leaf.path[-1], value)
            elif (number := leaf.enum_by_text.get(value)) is not None:
                setattr(target, leaf.path[-1], number)
            else:
                leftovers[name] = value
        for repeated, elements in indexed.items():
            field_name, schema = self._elements[repeated]
            for index in sorted(elements):
                item, rest = schema.parse(elements[index])
                getattr(message, field_name).append(item)
                leftovers.update({f"{repeated}[{index}].{name}": v for name, v in rest.items()})
        if self.has_extra_fields:
            getattr(message, EXTRA_FIELDS).update(leftovers)
        return message, leftovers

    def render(self, message: Message) -> dict[str, str]:
        """The NVP pairs of the message's non-empty modelled fields (``extra_fields`` aside)."""
        fields: dict[str, str] = {}
        for name, leaf in self._leaves.items():
            value: Any = message
            for step in leaf.path:
                value = getattr(value, step)
            if leaf.text_by_enum is not None:
                if value:
                    fields[name] = leaf.text_by_enum[value]
            elif value:
                fields[name] = value
        return fields


def _upper_snake(name: str) -> str:
    return _CAMEL_HUMP.sub("_", name).upper()


@dataclass(frozen=True)
class Operation:
    """One RPC and its NVP operation, derived from the method descriptor."""

    rpc_name: str
    api_operation: str
    request: MessageSchema
    response: MessageSchema
    reserved: frozenset[str]  # names a caller may not set through extra_fields
    repeatable: bool  # the proto declares RETRY_SAFETY_REPEATABLE: see adapter/retry.py
    rules: Rules
    moves_money: bool
    """Not repeatable, and named by the pair (``order.id``, ``transaction.id``): an operation
    whose lost answer is found again by retrieving the pair (CONTRACT §9)."""

    @classmethod
    def for_method(cls, method: MethodDescriptor, rules: Rules = SESSION_RULES) -> Operation:
        request = MessageSchema(method.input_type)
        repeatable = retry_safety(method) == retry_safety_pb2.RETRY_SAFETY_REPEATABLE
        return cls(
            rpc_name=method.name,
            api_operation=_upper_snake(method.name),
            request=request,
            response=MessageSchema(method.output_type),
            reserved=nvp.ADAPTER_OWNED | {nvp.MERCHANT} | request.names,
            repeatable=repeatable,
            rules=rules,
            moves_money=not repeatable and {"order.id", "transaction.id"} <= request.names,
        )

    def parse_request(self, raw: bytes) -> Message:
        """The request message from its wire bytes; ``RequestInvalid`` if they do not parse."""
        try:
            return self.request.message_class.FromString(raw)
        except DecodeError as exc:
            raise RequestInvalid("", f"not a valid {self.request.descriptor.name}: {exc}") from None

    def encode_request(self, message: Message) -> dict[str, str]:
        """The NVP fields for a request (credentials aside), after checking every value.

        Raises ``RequestInvalid`` naming the proto field for a required field left empty, a
        value its rule refuses, one of a pair set together without the other, an amount its
        currency refuses (the operation's ``rules``), more than ``MAX_EXTRA_FIELDS`` extra fields
        (naming ``extra_fields``), and naming ``extra_fields[<key>]`` for a key that is not an
        NVP name, that the adapter or a modelled field owns, or whose value is over
        ``MAX_EXTRA_VALUE_LENGTH`` characters.
        """
        fields = {nvp.API_OPERATION: self.api_operation, **self.request.render(message)}
        rules = self.rules
        for name in self.request.ordered_names:
            rule = rules.values.get(name)
            value = fields.get(name)
            if value is None:
                if name in rules.required:
                    raise RequestInvalid(
                        self._path(name), f"required: {rule.description if rule else 'set it'}"
                    )
            elif rule is not None and not rule.admits(value):
                raise RequestInvalid(self._path(name), rule.description)
        for first, second in rules.together:
            if first in self.request.names and (first in fields) != (second in fields):
                missing, given = (second, first) if first in fields else (first, second)
                raise RequestInvalid(self._path(missing), f"required with {self._path(given)}")
        for amount, currency in rules.priced:
            if amount in fields and currency in fields:
                self._check_price(fields[amount], fields[currency], amount, currency)
        if self.request.has_extra_fields:
            extra = getattr(message, EXTRA_FIELDS)
            if len(extra) > MAX_EXTRA_FIELDS:
                raise RequestInvalid(EXTRA_FIELDS, f"at most {MAX_EXTRA_FIELDS} entries")
            for key, value in extra.items():
                check_extra_key(key, self.reserved)
                if rules.no_card_data and names_card_secret(key):
                    raise RequestInvalid(
                        f"{EXTRA_FIELDS}[{key}]",
                        "card data comes from the session (the payer's browser puts it there), "
                        "never through a payment request",
                    )
                check_extra_value(key, value)
                fields[key] = value
        return fields

    def _path(self, name: str) -> str:
        return self.request.proto_path(name) or name

    def _check_price(
        self, amount: str, currency: str, amount_name: str, currency_name: str
    ) -> None:
        if money.minor_unit(currency) is None:
            raise RequestInvalid(
                self._path(currency_name), "an ISO 4217 currency code with a minor unit"
            )
        if (problem := money.amount_problem(amount, currency)) is not None:
            raise RequestInvalid(self._path(amount_name), problem)

    def decode_response(self, fields: Mapping[str, str]) -> Message:
        """The typed response for a successful NVP answer.

        Modelled fields are set exactly as the gateway sent them; what lands in ``extra_fields``
        is the gateway's free text, scrubbed of an echoed ``apiPassword`` (``adapter.redaction``).
        """
        message, leftovers = self.response.parse(fields)
        if self.response.has_extra_fields:
            extra = getattr(message, EXTRA_FIELDS)
            extra.clear()
            extra.update(scrub_unmodelled(leftovers))
        return message

    def field_path(self, nvp_name: str, request: Message | None) -> str:
        """Where in the request the caller set an NVP field, for a FieldViolation.

        The proto path of a modelled field, ``extra_fields[<name>]`` for an extra field, else
        the NVP name itself.
        """
        if (path := self.request.proto_path(nvp_name)) is not None:
            return path
        extra = getattr(request, EXTRA_FIELDS, {}) if self.request.has_extra_fields else {}
        if nvp_name in extra:
            return f"{EXTRA_FIELDS}[{nvp_name}]"
        return nvp_name


def retry_safety(method: MethodDescriptor) -> int:
    """The RPC's ``(mpgs.gateway.v1.retry_safety)`` option; UNSPECIFIED where it says none."""
    options = method.GetOptions()
    return int(options.Extensions[retry_safety_pb2.retry_safety])


def check_extra_key(key: str, reserved: frozenset[str]) -> None:
    """Refuse an ``extra_fields`` key that is not an NVP name or that is not the caller's."""
    where = f"{EXTRA_FIELDS}[{key}]"
    if len(key) > MAX_NAME_LENGTH or not _NVP_NAME.fullmatch(key):
        raise RequestInvalid(
            where,
            "must be an NVP name: letters and digits in dot-separated segments, each with an "
            f"optional [n] index, at most {MAX_NAME_LENGTH} characters",
        )
    if key in reserved:
        raise RequestInvalid(where, f"{key!r} is set by the adapter or by a modelled field")


def check_extra_value(key: str, value: str) -> None:
    """Refuse an ``extra_fields`` value over ``MAX_EXTRA_VALUE_LENGTH`` characters."""
    if len(value) > MAX_EXTRA_VALUE_LENGTH:
        raise RequestInvalid(
            f"{EXTRA_FIELDS}[{key}]", f"at most {MAX_EXTRA_VALUE_LENGTH} characters"
        )


SESSION_SERVICE = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"]
PAYMENT_SERVICE = payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"]
SERVICES = ((SESSION_SERVICE, SESSION_RULES), (PAYMENT_SERVICE, PAYMENT_RULES))
"""Every service the adapter serves, with the rules its requests are held to."""
OPERATIONS: Mapping[str, Operation] = MappingProxyType(
    {m.name: Operation.for_method(m, rules) for service, rules in SERVICES for m in service.methods}
)
"""Every RPC by name (names are unique across the services)."""
GATEWAY_ERROR = MessageSchema(gateway_error_pb2.GatewayError.DESCRIPTOR, prefix="error.")
