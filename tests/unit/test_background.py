"""keep_behind: the one loop that keeps a derived view close behind its feeds; PeriodicJob:
the one loop of a job done every few seconds."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from eventsourcing.persistence import OperationalError
from structlog.testing import capture_logs

from shared import context
from shared.background import PeriodicJob, keep_behind
from shared.errors import Unavailable
from tests.conftest import settings_for


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


class Job(PeriodicJob[Any]):
    """A job whose rounds do what `outcomes` says, in turn: a count, or an error raised."""

    upstream = "test"
    job, done, counted = "test_job", "test_job.did", "things"
    principal, rpc = "test-job", "DoThings"

    def __init__(self, outcomes: list[Any], every: float = 5.0, app: Any = None,
                 wake: threading.Event | None = None):
        super().__init__(app, every, wake=wake)
        self.outcomes = iter(outcomes)
        self.actors: list[str] = []

    def round(self) -> int:
        self.actors.append(f"{context.current().actor.principal} {context.current().rpc}")
        outcome = next(self.outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return int(outcome)


def test_a_job_waits_a_tick_then_runs_each_round_as_its_own_actor() -> None:
    job, clock = Job([0, 2]), Clock(ticks=3)
    with capture_logs() as logs:
        job.run_forever(clock)
    assert clock.waits == [5.0, 5.0, 5.0]
    assert job.actors == ["test-job DoThings"] * 2
    assert [(line["event"], line.get("things")) for line in logs] == [("test_job.did", 2)]


def test_a_failing_round_is_logged_and_tried_again_on_the_next_tick() -> None:
    """Never the end of the thread: a bug is logged with its traceback, the store away is said
    once when it goes and once when it is back."""
    down = OperationalError("connection refused")
    job, clock = Job([RuntimeError("bug"), down, down, 1, 0]), Clock(ticks=6)
    with capture_logs() as logs:
        job.run_forever(clock)
    assert len(job.actors) == 5
    assert clock.waits == [5.0] * 6
    assert [line["event"] for line in logs] == [
        "test_job.failed", "test_job.store_unavailable", "test_job.did", "test_job.store_back"]
    assert logs[0]["exc_info"] is True


def test_a_stopped_process_starts_no_round() -> None:
    job, clock = Job([1]), Clock(ticks=1)
    clock.set()
    job.run_forever(clock)
    assert job.actors == []


def test_a_woken_job_runs_at_once_and_a_job_at_start_first_thing(tmp_path: Path) -> None:
    wake, stopping = threading.Event(), threading.Event()

    class AtStart(Job):
        at_start = True

        def round(self) -> int:
            done = super().round()
            if len(self.actors) == 3:
                stopping.set()
            else:
                wake.set()  # as badges' command that revises a class's criteria
            return done

    job = AtStart([0, 0, 0], every=600.0, wake=wake)
    thread = threading.Thread(target=job.run_forever, args=(stopping,))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and len(job.actors) == 3


def test_a_woken_job_that_failed_pauses_before_it_runs_again() -> None:
    wake, stopping = threading.Event(), threading.Event()
    wake.set()
    class Paused(Job):
        FAILURE_PAUSE = 0.3

    job = Paused([RuntimeError("bug")], every=600.0, wake=wake)
    assert job._due(stopping, failed=False)
    timer = threading.Timer(0.1, stopping.set)
    timer.start()
    assert not job._due(stopping, failed=True), "woken within the pause after a failure"
    timer.join()


def test_a_led_job_runs_on_one_replica_at_a_time(tmp_path: Path) -> None:
    """Under the leadership lock of its name (here the embedded store's file lock): a second
    replica's job waits for it, and runs once the first has stopped."""
    app = SimpleNamespace(name="svc", settings=settings_for(
        "svc", {"QIJI_DATA_DIR": str(tmp_path / "data")}))

    class Led(Job):
        led = at_start = True

    first_stop, second_stop = threading.Event(), threading.Event()
    first, second = Led([1] * 1000, every=0.01, app=app), Led([1] * 1000, every=0.01, app=app)
    threads = [threading.Thread(target=first.run_forever, args=(first_stop,)),
               threading.Thread(target=second.run_forever, args=(second_stop,))]
    for thread in threads:
        thread.start()
    try:
        deadline = threading.Event()
        while not first.actors and not second.actors:
            deadline.wait(0.01)
        deadline.wait(0.2)
        leader, standby, stop = ((first, second, first_stop) if first.actors
                                 else (second, first, second_stop))
        assert leader.actors and not standby.actors
        stop.set()
        for _ in range(500):
            if standby.actors:
                break
            deadline.wait(0.01)
        assert standby.actors, "the standby never took over"
    finally:
        first_stop.set()
        second_stop.set()
        for thread in threads:
            thread.join(timeout=10)
