"""Background work that keeps a derived, in-memory view close behind the feeds it reads (the
tenancy directory, merchants' map of service spaces, identity's riders' records): one loop,
said once, so that each view says only how it catches up."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from shared.errors import Unavailable

log = structlog.get_logger(__name__)

LONGEST_WAIT = 30.0


def keep_behind(catch_up: Callable[[], bool], stopping: threading.Event, *, name: str,
                every: float) -> None:
    """Calls `catch_up` every `every` seconds until `stopping` is set, so that a request rarely
    waits for a catch-up of its own (one that misses still catches up itself). While the view
    cannot be brought up to date — `catch_up` returns False (some of what it reads is out of
    reach: the view says so itself), raises Unavailable, or fails — it waits twice as long each
    time, up to 30 s, and looks again: an upstream that is back is noticed, nothing is lost."""
    wait = every
    while not stopping.is_set():
        try:
            wait = every if catch_up() else min(wait * 2, LONGEST_WAIT)
        except Unavailable:
            wait = min(wait * 2, LONGEST_WAIT)
        except Exception:
            log.exception("view.catch_up_failed", view=name)
            wait = min(wait * 2, LONGEST_WAIT)
        stopping.wait(wait)
