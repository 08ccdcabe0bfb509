"""The embedded gateway: an in-memory MPGS that answers the session operations (CREATE_SESSION,
UPDATE_SESSION, RETRIEVE_SESSION) and the payment ones (AUTHORIZE, PAY, CAPTURE, REFUND, VOID,
RETRIEVE_TRANSACTION, RETRIEVE_ORDER), with two faces.

- In-process: ``EmbeddedGateway.handle(version, body)`` takes the request bytes and gives back
  the upstream client's ``Reply`` (HTTP status and NVP body), with no socket, or ``AnswerLost``
  when a test asked it to lose the answer; ``EmbeddedTransport`` puts it behind the upstream
  client's transport seam (a lost answer: ``UpstreamConnectionLost``).
- Over HTTP(S): ``start_http_gateway`` (or ``create_app`` for your own runner) serves the same
  object on ``POST /api/nvp/version/{N}``, so any NVP client can be tried against it, with its
  connections bounded (``adapter/net/http_guard.py``); ``StandaloneGateway`` is
  ``nvp-adapter gateway``:
  that, from the settings, with HTTPS, certificate authentication and files reloaded.

Both faces share one implementation, so they answer byte for byte alike. The sessions live in a
bounded ``SessionStore`` (``store.py``); what a session may hold is ``session_fields.py``; the
payment operations are ``payments.py``, over the orders of ``orders.py`` and the cards of
``cards.py``; how answers and errors are written is ``answers.py``.
"""

from __future__ import annotations

from adapter.embedded.gateway import AnswerLost, EmbeddedGateway, StoredSession
from adapter.embedded.http import certificate_subject, create_app, start_http_gateway
from adapter.embedded.store import StoreLimits
from adapter.embedded.transport import EmbeddedTransport

__all__ = [
    "AnswerLost",
    "EmbeddedGateway",
    "EmbeddedTransport",
    "StoreLimits",
    "StoredSession",
    "certificate_subject",
    "create_app",
    "start_http_gateway",
]
