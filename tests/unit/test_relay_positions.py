"""The relay's positions are stored off its cycle (services/relay/positions.py PositionWriter):
the next batch does not wait for the last one's commit, yet only handed-over (confirmed)
positions are stored, in order, one save in flight at a time, and a failed save is neither lost
nor silent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from services.relay.positions import PositionWriter


def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.005)


class SlowStore:
    """A position store whose saves wait for `release` (a slow PostgreSQL commit), and can be
    told to fail its next one."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.saves: list[tuple[str, int]] = []
        self.stored: dict[str, int] = {}
        self.fail_next = False
        self.closed = False

    def load(self) -> dict[str, int]:
        return dict(self.stored)

    def save(self, service: str, next_position: int) -> None:
        self.saves.append((service, next_position))
        self.release.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise OSError("the store went away (test)")
        self.stored[service] = next_position

    def close(self) -> None:
        self.closed = True


def test_a_position_is_handed_over_without_waiting_for_its_commit_and_the_latest_counts():
    store = SlowStore()
    writer = PositionWriter(store)
    started = time.monotonic()
    writer.save("identity", 10)
    until(lambda: store.saves)  # 10 is being stored
    writer.save("identity", 20)
    writer.save("identity", 30)
    # A synchronous store would block here until released.
    assert time.monotonic() - started < 0.5
    assert store.stored == {}
    store.release.set()
    writer.flush(5)
    # In order; 20, superseded while 10 was being stored, is not stored on its own.
    assert store.saves == [("identity", 10), ("identity", 30)]
    assert store.stored == {"identity": 30}
    writer.close()
    assert store.closed


def test_a_save_longer_than_the_lag_makes_the_hand_over_wait():
    """The lag is bounded: what a crash publishes again is at most about `lag_seconds` of
    confirmed events."""
    store = SlowStore()
    writer = PositionWriter(store, lag_seconds=0.2)
    writer.save("identity", 10)
    time.sleep(0.3)  # the save of 10 is now older than the lag
    second = threading.Thread(target=writer.save, args=("identity", 20))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # waits for the slow save, as a synchronous store would
    store.release.set()
    second.join(5)
    writer.flush(5)
    assert store.stored == {"identity": 20}
    writer.close()


def test_one_service_saved_again_and_again_does_not_hold_back_anothers():
    store = SlowStore()
    store.release.set()
    writer = PositionWriter(store)
    for position in range(1, 200):
        writer.save("identity", position)
        if position == 3:
            writer.save("training", 5)
    writer.flush(5)
    assert store.stored == {"identity": 199, "training": 5}
    writer.close()


def test_a_failed_save_is_raised_by_the_next_hand_over_and_its_position_stored_again():
    store = SlowStore()
    store.release.set()
    store.fail_next = True
    writer = PositionWriter(store)
    writer.save("identity", 10)  # fails on the thread
    until(lambda: writer._error is not None)
    with pytest.raises(OSError, match="went away"):
        writer.save("identity", 20)  # not taken: the relay publishes that batch again
    writer.flush(5)
    assert store.stored == {"identity": 10}  # tried again once the relay heard
    writer.save("identity", 20)
    writer.flush(5)
    assert store.stored == {"identity": 20}
    writer.close()


def test_closing_stores_the_last_position_handed_over():
    store = SlowStore()
    writer = PositionWriter(store)
    writer.save("identity", 7)
    threading.Timer(0.2, store.release.set).start()
    writer.close()
    assert store.stored == {"identity": 7}
    assert store.closed


def test_loading_waits_for_what_was_handed_over():
    store = SlowStore()
    writer = PositionWriter(store)
    writer.save("identity", 7)
    threading.Timer(0.2, store.release.set).start()
    assert writer.load() == {"identity": 7}
    writer.close()
