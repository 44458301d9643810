"""A started process moves its start-up objects out of the garbage collector's sight
(shared/background.py settled): a full collection then scans only what was made since."""

from __future__ import annotations

import gc
import time

from shared.background import settled


def test_after_settling_a_full_collection_no_longer_scans_the_start_up_objects():
    kept = [[n] for n in range(200_000)]  # what a service builds as it starts (lists: tracked)
    try:
        started = time.perf_counter()
        gc.collect()
        before = time.perf_counter() - started
        settled()
        assert gc.get_freeze_count() >= len(kept)
        started = time.perf_counter()
        gc.collect()
        after = time.perf_counter() - started
        assert after < before / 3, (before, after)
    finally:
        gc.unfreeze()
