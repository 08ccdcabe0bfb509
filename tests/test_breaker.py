"""The circuit breaker's state machine, on a clock the test moves."""

from __future__ import annotations

import pytest

from adapter.core.errors import CircuitOpen
from adapter.upstream.breaker import CircuitBreaker, State


class Clock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> list[bool]:
    return []


@pytest.fixture
def breaker(clock: Clock, changes: list[bool]) -> CircuitBreaker:
    return CircuitBreaker(3, 10.0, clock=clock, on_change=changes.append)


def fail_times(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.failed(breaker.admit())


def state_of(breaker: CircuitBreaker) -> State:
    """Read the state afresh (a direct second read would keep mypy's narrowing from the first)."""
    return breaker.state


def test_opens_after_threshold_failures_in_a_row(
    breaker: CircuitBreaker, changes: list[bool]
) -> None:
    """Three transport failures in a row open the circuit, and it says so once."""
    fail_times(breaker, 2)
    assert breaker.state is State.CLOSED
    fail_times(breaker, 1)
    assert state_of(breaker) is State.OPEN
    assert changes == [True]


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    fail_times(breaker, 2)
    breaker.succeeded(breaker.admit())
    fail_times(breaker, 2)
    assert breaker.state is State.CLOSED


def test_open_fails_fast_with_the_time_left(breaker: CircuitBreaker, clock: Clock) -> None:
    """While open, every attempt is refused with the cool-down's remaining time as advice."""
    fail_times(breaker, 3)
    clock.now += 4.0
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit()
    assert caught.value.retry_after == pytest.approx(6.0)
    assert caught.value.failures == 3


def test_one_probe_after_the_cooldown(breaker: CircuitBreaker, clock: Clock) -> None:
    """After the cool-down exactly one attempt probes; the others still fail fast."""
    fail_times(breaker, 3)
    clock.now += 10.0
    assert breaker.state is State.HALF_OPEN
    assert breaker.admit() is True
    with pytest.raises(CircuitOpen):
        breaker.admit()


def test_a_good_probe_closes(breaker: CircuitBreaker, clock: Clock, changes: list[bool]) -> None:
    """A successful probe closes the circuit: calls flow again and health is told."""
    fail_times(breaker, 3)
    clock.now += 10.0
    breaker.succeeded(breaker.admit())
    assert breaker.state is State.CLOSED
    assert breaker.admit() is False
    assert changes == [True, False]


def test_a_failed_probe_reopens_for_a_new_cooldown(
    breaker: CircuitBreaker, clock: Clock, changes: list[bool]
) -> None:
    """A failed probe opens the circuit again for a whole new cool-down."""
    fail_times(breaker, 3)
    clock.now += 10.0
    breaker.failed(breaker.admit())
    assert breaker.state is State.OPEN
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        breaker.admit()
    assert changes == [True, True]


def test_an_abandoned_probe_lets_another_probe(breaker: CircuitBreaker, clock: Clock) -> None:
    """A probe that ends without news (cancelled, overloaded) frees the way for the next one."""
    fail_times(breaker, 3)
    clock.now += 10.0
    breaker.abandoned(breaker.admit())
    assert breaker.admit() is True


def test_threshold_zero_turns_it_off(clock: Clock) -> None:
    """With threshold 0 the circuit never opens."""
    breaker = CircuitBreaker(0, 10.0, clock=clock)
    fail_times(breaker, 100)
    assert breaker.state is State.CLOSED
    assert breaker.admit() is False


def test_repr_tells_the_state(breaker: CircuitBreaker) -> None:
    """The repr says the state and the failure count, for logs and debugging."""
    fail_times(breaker, 3)
    assert repr(breaker) == "CircuitBreaker(state=open, failures=3)"
