"""The aggregate cache's look at the log (shared/store/cache.py LogWatermark): one query for
everything stored since the last look, shared by the reads waiting for it, and marks that say
through which position a cached version is known current."""

from __future__ import annotations

import threading
import time
import uuid

from shared.store.cache import LogWatermark


class FakeLog:
    """A log of (position, aggregate id), counting how often it is asked."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, uuid.UUID]] = []
        self.asked = 0
        self.delay = 0.0

    def append(self, ident: uuid.UUID) -> int:
        self.rows.append((len(self.rows) + 1, ident))
        return len(self.rows)

    def changes_after(self, position: int, limit: int) -> list[tuple[int, uuid.UUID]]:
        self.asked += 1
        time.sleep(self.delay)
        return [r for r in self.rows if r[0] > position][:limit]

    def head(self) -> int:
        return len(self.rows)


def test_a_version_marked_current_is_stale_once_a_look_sees_a_later_event_of_it() -> None:
    log, x, y = FakeLog(), uuid.uuid4(), uuid.uuid4()
    watermark = LogWatermark(log.changes_after, log.head)
    log.append(x)
    watermark.look()  # the first look starts at the head
    watermark.current_through(x, 1, watermark.position)
    watermark.current_through(y, 4, watermark.position)
    assert watermark.changed(x, 1) is False
    log.append(x)  # another replica stores x's next version
    assert watermark.changed(x, 1) is False  # not looked at yet...
    watermark.look()
    assert watermark.changed(x, 1) is True  # ...and now it is known
    assert watermark.changed(y, 4) is False


def test_what_is_not_known_is_left_to_the_store() -> None:
    log, x = FakeLog(), uuid.uuid4()
    watermark = LogWatermark(log.changes_after, log.head)
    watermark.current_through(x, 1, 0)
    assert watermark.changed(x, 1) is None  # no look yet
    watermark.look()
    # Marked before the first look: what came before it was never read.
    assert watermark.changed(x, 1) is None
    watermark.current_through(x, 1, watermark.position)
    # A mark of another version than the cached copy's tells nothing of that copy (a slower
    # reader may have cached an older version after a newer one was marked).
    assert watermark.changed(x, 2) is None
    assert watermark.changed(uuid.uuid4(), 1) is None  # never marked


def test_a_read_after_a_save_in_the_same_request_keeps_the_saves_mark() -> None:
    """A command stores x at version 2 (its event at the log's new head) and its answer reads x
    back, through where the request had looked at the log before the save. That read's mark
    must not replace the save's: the next look sees x's own event, which the save's mark
    covers and the read's does not — x would be read from the store again for nothing."""
    log, x = FakeLog(), uuid.uuid4()
    watermark = LogWatermark(log.changes_after, log.head)
    log.append(x)
    watermark.look()
    looked = watermark.position  # where the request looked, before its save
    position = log.append(x)  # the command's own event of x, version 2
    watermark.current_through(x, 2, position)  # saved
    watermark.current_through(x, 2, looked)  # read back to answer
    watermark.look()
    assert watermark.changed(x, 2) is False
    log.append(x)  # and someone's later event of it is still seen
    watermark.look()
    assert watermark.changed(x, 2) is True


def test_changes_forgotten_to_bound_memory_leave_older_marks_to_the_store() -> None:
    log, x, y = FakeLog(), uuid.uuid4(), uuid.uuid4()
    watermark = LogWatermark(log.changes_after, log.head)
    watermark.FORGET_AFTER = 2
    watermark.look()
    watermark.current_through(x, 1, watermark.position)
    for _ in range(3):
        log.append(y)
        log.append(uuid.uuid4())
    log.append(x)
    watermark.look()
    assert watermark.changed(x, 1) is None  # x's change was forgotten: ask the store


def test_a_look_reads_the_log_in_pages_up_to_its_head() -> None:
    log, x = FakeLog(), uuid.uuid4()
    watermark = LogWatermark(log.changes_after, log.head)
    watermark.PAGE = 3
    watermark.look()
    watermark.current_through(x, 1, watermark.position)
    for _ in range(7):
        log.append(uuid.uuid4())
    log.append(x)
    watermark.look()
    assert watermark.position == 8
    assert watermark.changed(x, 1) is True


def test_concurrent_reads_share_looks_and_each_waits_for_one_begun_after_it() -> None:
    log = FakeLog()
    watermark = LogWatermark(log.changes_after, log.head)
    watermark.look()
    log.delay = 0.02
    seen: list[bool] = []
    x = uuid.uuid4()
    watermark.current_through(x, 1, watermark.position)

    def read() -> None:
        # Stored before this read began: the read must see it.
        log.append(x)
        watermark.look()
        seen.append(watermark.changed(x, 1) is True)

    readers = [threading.Thread(target=read) for _ in range(16)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert seen == [True] * 16
    # Sixteen reads, far fewer looks: those that waited together shared the next one.
    assert log.asked < 16


def test_a_look_that_fails_leaves_the_next_reader_to_look_again() -> None:
    log = FakeLog()
    watermark = LogWatermark(log.changes_after, log.head)
    watermark.look()
    broken = True

    def changes_after(position: int, limit: int) -> list[tuple[int, uuid.UUID]]:
        if broken:
            raise ConnectionError("store away")
        return log.changes_after(position, limit)

    watermark._changes_after = changes_after
    try:
        watermark.look()
    except ConnectionError:
        pass
    broken = False
    x = uuid.uuid4()
    watermark.current_through(x, 1, watermark.position)
    log.append(x)
    watermark.look()
    assert watermark.changed(x, 1) is True


def test_readers_waiting_for_a_look_that_fails_look_again_and_see_what_came_before_them() -> None:
    """The readers waiting for a look each sleep on their own lock (shared/store/cache.py
    `_Look`): when the look they waited for fails, each must look again as if it had just come
    — none may return without a look begun after it, nor sleep forever."""
    log = FakeLog()
    watermark = LogWatermark(log.changes_after, log.head)
    watermark.look()
    x = uuid.uuid4()
    watermark.current_through(x, 1, watermark.position)
    in_flight, fail = threading.Event(), threading.Event()
    calls = 0

    def changes_after(position: int, limit: int) -> list[tuple[int, uuid.UUID]]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the look in flight when the readers come: it ends well
            in_flight.set()
            fail.wait(5)
            return log.changes_after(position, limit)
        if calls == 2:  # the next, which they all wait for: it fails
            raise ConnectionError("store away")
        return log.changes_after(position, limit)

    watermark._changes_after = changes_after
    errors: list[BaseException] = []
    seen: list[bool] = []

    def read(append: bool) -> None:
        if append:
            log.append(x)
        try:
            watermark.look()
        except ConnectionError as error:
            errors.append(error)
            return
        if append:  # the first reader's look began before x's events: it need not see them
            seen.append(watermark.changed(x, 1) is True)

    first = threading.Thread(target=read, args=(False,))
    first.start()
    in_flight.wait(5)
    readers = [threading.Thread(target=read, args=(True,)) for _ in range(6)]
    for reader in readers:
        reader.start()
    time.sleep(0.05)  # all six wait for the next look
    fail.set()
    for thread in [first, *readers]:
        thread.join(5)
        assert not thread.is_alive()
    # The failed look's maker is told; the other five looked again and saw x's event.
    assert len(errors) == 1
    assert seen.count(True) == 5


def test_many_readers_each_see_what_was_stored_before_they_came() -> None:
    log = FakeLog()
    watermark = LogWatermark(log.changes_after, log.head)
    watermark.look()
    log.delay = 0.001
    marked = [uuid.uuid4() for _ in range(64)]
    for x in marked:
        watermark.current_through(x, 1, watermark.position)
    seen: list[bool] = []

    def read(x: uuid.UUID) -> None:
        for _ in range(5):
            log.append(x)
            watermark.look()
            seen.append(watermark.changed(x, 1) is True)

    readers = [threading.Thread(target=read, args=(x,)) for x in marked]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(20)
        assert not reader.is_alive()
    assert seen == [True] * 320
