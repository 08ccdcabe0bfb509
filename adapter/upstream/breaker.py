"""A small circuit breaker, so callers are not held for full timeouts while the gateway is down.

::

    CLOSED --(threshold transport failures in a row)--> OPEN --(cool-down passes)--> HALF_OPEN
      ^                                                  ^                              |
      +------------------(the probe succeeds)------------+----(the probe fails)---------+

In OPEN every attempt fails at once with ``CircuitOpen``; in HALF_OPEN exactly one attempt, the
probe, goes to the gateway while the others still fail fast. Only transport failures count (the
gateway unreachable, the connection lost, no answer in time, an HTTP 429/5xx front page): a
gateway that answers, even with an error, is up.

>>> breaker = CircuitBreaker(threshold=2, cooldown=10.0, clock=lambda: 0.0)
>>> probe = breaker.admit(); breaker.failed(probe); probe = breaker.admit(); breaker.failed(probe)
>>> breaker.state
<State.OPEN: 'open'>
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from adapter.core.errors import CircuitOpen

__all__ = ["CircuitBreaker", "State"]

_BUSY_PROBE_RETRY_SECONDS = 0.5
"""The retry advice while another call's probe is deciding whether the circuit closes."""


class State(enum.Enum):
    """Where the breaker is; see the module's diagram."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Counts consecutive transport failures and fails fast while the gateway is down.

    ``threshold`` 0 turns it off. ``on_change(opened)`` is told when the circuit opens (True) and
    when it closes again (False), for the health status.
    """

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state.value}, failures={self._failures})"

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self._probing or self._clock() >= self._opened_at + self._cooldown:
            return State.HALF_OPEN
        return State.OPEN

    def admit(self) -> bool:
        """Let one attempt through, or raise ``CircuitOpen``; True if it is the half-open probe.

        Every admitted attempt must end in exactly one of ``succeeded``, ``failed`` or
        ``abandoned`` with the flag this returned.
        """
        if self._opened_at is None:
            return False
        remaining = self._opened_at + self._cooldown - self._clock()
        if remaining > 0:
            raise CircuitOpen(self._failures, remaining)
        if self._probing:
            raise CircuitOpen(self._failures, _BUSY_PROBE_RETRY_SECONDS)
        self._probing = True
        return True

    def succeeded(self, probe: bool) -> None:
        """The gateway answered: the failure count starts again and an open circuit closes."""
        self._failures = 0
        if probe:
            self._probing = False
        if self._opened_at is not None and (probe or not self._probing):
            self._opened_at = None
            self._notify(opened=False)

    def failed(self, probe: bool) -> None:
        """A transport failure: count it; open the circuit at the threshold or on a failed probe."""
        self._failures += 1
        if probe:
            self._probing = False
            self._opened_at = self._clock()
            self._notify(opened=True)
        elif self._threshold and self._opened_at is None and self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._notify(opened=True)

    def abandoned(self, probe: bool) -> None:
        """The attempt ended without telling anything about the gateway (cancelled, overloaded)."""
        if probe:
            self._probing = False

    def _notify(self, *, opened: bool) -> None:
        if self._on_change is not None:
            self._on_change(opened)
