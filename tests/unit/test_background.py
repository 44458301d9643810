"""keep_behind: the one loop that keeps a derived view close behind its feeds."""

from __future__ import annotations

import threading

from shared.background import keep_behind
from shared.errors import Unavailable


class Clock(threading.Event):
    """A stop signal that records each wait instead of sleeping, and stops after `ticks`."""

    def __init__(self, ticks: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.ticks = ticks

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0)
        if len(self.waits) >= self.ticks:
            self.set()
        return self.is_set()


def test_a_view_that_cannot_catch_up_waits_longer_each_time_and_recovers_at_once() -> None:
    outcomes = iter([True, False, False, Unavailable("down", reason="UPSTREAM_UNAVAILABLE"),
                     RuntimeError("bug"), True, True])

    def catch_up() -> bool:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    clock = Clock(ticks=7)
    keep_behind(catch_up, clock, name="test", every=1.0)
    assert clock.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 1.0, 1.0]


def test_the_wait_never_grows_past_thirty_seconds() -> None:
    clock = Clock(ticks=8)
    keep_behind(lambda: False, clock, name="test", every=2.0)
    assert clock.waits[-3:] == [30.0, 30.0, 30.0]


def test_a_stopped_process_does_not_catch_up_again() -> None:
    clock = Clock(ticks=1)
    clock.set()
    calls = []
    keep_behind(lambda: calls.append(1) is None, clock, name="test", every=1.0)
    assert calls == []
