"""The collector paused while a snapshot's large state is built (shared/store/cache.py): off in
the block, in every thread, and on again only when the last block that paused it ends, and
only if it was on before: two reads of snapshots at once must not leave the process without
its collector, nor turn it on for code that had turned it off."""

from __future__ import annotations

import gc
import threading

from shared.store.cache import collector_paused


def test_overlapping_pauses_in_two_threads_leave_the_collector_as_it_was():
    assert gc.isenabled()
    first_in, first_may_end = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with collector_paused():
            first_in.set()
            first_may_end.wait(5)
            seen.append(gc.isenabled())  # the second's block ended: still paused for this one

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the first block still runs
    first_may_end.set()
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_a_pause_where_the_collector_was_off_leaves_it_off():
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failure_inside_still_ends_the_pause():
    try:
        with collector_paused():
            raise KeyError("ledger")
    except KeyError:
        pass
    assert gc.isenabled()
