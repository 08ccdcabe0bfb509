"""Who is calling: bearer tokens and client certificates matched to ``[callers.NAME]``.

With no ``[callers]`` table there is no caller authentication (the sidecar case). With one, every
call but ``grpc.health.v1.Health`` must prove who it is, and ``CallerAuthentication`` (a grpc.aio
server interceptor applied by ``interceptors.InterceptedHandlers``, the one place this is
decided) refuses it UNAUTHENTICATED otherwise, before
any handler runs. The caller it finds is then at hand for the RPC's handler as ``current_caller()``,
which checks the merchant against the caller's list.

A token is held only as its SHA-256 digest and compared in constant time against every caller's
digest; a certificate identity comes from grpc's auth context (the TLS peer grpc verified against
``client_ca_file``), never from anything the caller writes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import grpc

from adapter.config import MAX_TOKEN_CHARS, CallerSettings
from adapter.core.errors import CallerUnauthenticated
from adapter.core.redaction import Secret
from adapter.core.status import rich_status
from adapter.net.interceptors import Behaviour, responses, wrap_behaviour
from adapter.observability.call import current_call, this_call

__all__ = ["CallerAuthentication", "Callers", "bearer_token", "current_caller"]

log = logging.getLogger("adapter.callers")

UNAUTHENTICATED_SERVICES = ("/grpc.health.v1.Health/",)
"""Methods under these prefixes answer without authentication: probes must reach them."""
_BEARER = "bearer "
_CERTIFICATE_PROPERTIES = ("peer_uri", "peer_dns", "x509_common_name")
"""Where grpc's auth context holds a verified client certificate's URI SANs, DNS SANs and CN."""


def current_caller() -> CallerSettings | None:
    """The caller authenticated for this RPC, or None when caller authentication is off."""
    call = current_call()
    return None if call is None else call.caller


class Callers:
    """The configured callers, with their token digests replaceable when a token file rotates."""

    def __init__(self, callers: Mapping[str, CallerSettings]) -> None:
        self._callers = dict(callers)

    def __repr__(self) -> str:
        return f"Callers({sorted(self._callers)!r})"

    @property
    def enabled(self) -> bool:
        return bool(self._callers)

    def replace_token(self, name: str, digest: Secret) -> None:
        """Rotation: the caller ``name`` now authenticates with the token of this digest."""
        self._callers[name] = replace(self._callers[name], token_sha256=digest)

    def identify(
        self, metadata: Sequence[tuple[str, str | bytes]], auth_context: Mapping[str, Any]
    ) -> CallerSettings | None:
        """The caller a call's ``authorization`` metadata or client certificate proves; or None."""
        value = _authorization(metadata)
        if value is None:
            return self._by_certificate(auth_context)
        # Present: a token, or nothing at all; never matched against a certificate.
        token = bearer_token(value)
        return None if token is None else self._by_token(token)

    def _by_token(self, token: bytes) -> CallerSettings | None:
        digest = hashlib.sha256(token).hexdigest().encode()
        found = None
        for caller in self._callers.values():  # every digest compared: the time tells nothing
            if caller.token_sha256 is not None and hmac.compare_digest(
                digest, caller.token_sha256.reveal().encode()
            ):
                found = caller
        return found

    def _by_certificate(self, auth_context: Mapping[str, Any]) -> CallerSettings | None:
        names = {
            value.decode("utf-8", "replace")
            for key in _CERTIFICATE_PROPERTIES
            for value in auth_context.get(key, ())
        }
        for caller in self._callers.values():
            if caller.certificate_subject is not None and caller.certificate_subject in names:
                return caller
        return None


def _authorization(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The call's first ``authorization`` value; None when it has none."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            return value
    return None


def bearer_token(authorization: str) -> bytes | None:
    """The token of ``Bearer <token>`` (the scheme in any case); None for anything else.

    An empty token, another scheme, no scheme or a token over ``MAX_TOKEN_CHARS`` is no token:
    it is never hashed, so it can match no caller whatever the configuration holds.

    >>> bearer_token("Bearer abc"), bearer_token("Basic Zm9v"), bearer_token("Bearer ")
    (b'abc', None, None)
    """
    scheme, token = authorization[: len(_BEARER)], authorization[len(_BEARER) :].strip()
    if scheme.lower() != _BEARER or not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return token.encode()


class CallerAuthentication:
    """Refuses every unauthenticated call but health's, and names the caller for the handler.

    An ``interceptors.Interceptor``. Whether callers are configured is read when a method's
    handler is wrapped, on its first call: a reload changes tokens, never whether there are any.
    """

    def __init__(self, callers: Callers) -> None:
        self._callers = callers

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any] | None, method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if (
            handler is None
            or not self._callers.enabled
            or method.startswith(UNAUTHENTICATED_SERVICES)
        ):
            return handler
        return wrap_behaviour(handler, self._unary, self._streaming)

    async def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        caller = self._callers.identify(
            tuple(context.invocation_metadata() or ()), context.auth_context()
        )
        call = this_call()
        if caller is None:
            status = rich_status(CallerUnauthenticated())
            if call.record is not None:
                call.record.reason = status.reason
            await context.abort_with_status(status.to_grpc())
        elif call.record is not None:
            call.record.caller = caller.name
        call.caller = caller

    def _unary(self, behaviour: Behaviour) -> Behaviour:
        async def authenticated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await self._authenticate(context)
            return await behaviour(request, context)

        return authenticated

    def _streaming(self, behaviour: Behaviour) -> Behaviour:
        async def authenticated(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await self._authenticate(context)
            async for response in responses(behaviour(request, context)):
                yield response

        return authenticated
