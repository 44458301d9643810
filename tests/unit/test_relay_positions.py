"""The relay's positions are stored off its cycle (services/relay/positions.py PositionWriter):
the next batch does not wait for the last one's commit, yet only handed-over (confirmed)
positions are stored, in order, one save in flight at a time, and a failed save is neither lost
nor silent."""

from __future__ import annotations

import threading
import time

import pytest

from services.relay.positions import PositionWriter


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


def test_a_position_is_handed_over_without_waiting_for_its_commit_and_one_save_is_in_flight():
    store = SlowStore()
    writer = PositionWriter(store)
    started = time.monotonic()
    writer.save("identity", 10)
    # A synchronous store would block here until released.
    assert time.monotonic() - started < 1.0
    assert store.stored == {}
    second = threading.Thread(target=writer.save, args=("identity", 20))
    second.start()
    second.join(0.3)
    # The next hand-over waits for the save before it: at most one position in flight.
    assert second.is_alive()
    store.release.set()
    second.join(5)
    writer.flush(5)
    assert store.saves == [("identity", 10), ("identity", 20)]  # in order, each one
    assert store.stored == {"identity": 20}
    writer.close()
    assert store.closed


def test_a_failed_save_is_raised_by_the_next_hand_over_and_its_position_stored_again():
    store = SlowStore()
    store.release.set()
    store.fail_next = True
    writer = PositionWriter(store)
    writer.save("identity", 10)  # fails on the thread
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
