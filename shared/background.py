"""Background work: the loop that keeps a derived, in-memory view close behind the feeds it
reads (the tenancy directory, merchants' map of service spaces, identity's riders' records),
and the stop every gRPC process waits for — each said once, so that a view says only how it
catches up and a process only what it starts and stops."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import structlog

from shared import context
from shared.errors import Unavailable

log = structlog.get_logger(__name__)

LONGEST_WAIT = 30.0
BATCH = 1000


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


class FeedMirror:
    """A view of some of one upstream's published topics, read from position 1 into memory and
    rebuilt when the process starts (dropping it loses nothing): merchants' map of service
    spaces and its directory of badge classes. Caught up at most once per request (a miss may
    be something created upstream a moment ago), and kept close behind by `run_forever`. A
    subclass names what it reads and says how each event changes it (`_apply`)."""

    # Its thread's name, and its key among what a request has already caught up with.
    upstream: str
    # The service read, and what it is read for: said in the caller's UNAVAILABLE.
    upstream_service: str
    unreachable: str
    topics: Sequence[str]

    def __init__(self, feed: Any):
        self._feed = feed
        self._lock = threading.Lock()
        self.position = 0

    def catch_up(self) -> int:
        """Applies what the upstream stored since the last look; once per request at most. The
        upstream out of reach is the caller's UNAVAILABLE (retry): what it holds is not
        guessed."""
        caught_up = context.current().caught_up
        if caught_up is not None and self.upstream in caught_up:
            return 0
        try:
            applied = self._catch_up()
        except grpc.RpcError as error:
            raise Unavailable(f"{self.upstream_service} cannot be reached {self.unreachable}; "
                              "retry shortly", reason="UPSTREAM_UNAVAILABLE",
                              upstream=self.upstream_service, code=error.code().name) from None
        if caught_up is not None:
            caught_up.add(self.upstream)
        return applied

    def run_forever(self, stopping: threading.Event, every: float = 2.0) -> None:
        keep_behind(lambda: self.catch_up() >= 0, stopping, name=self.upstream, every=every)

    def _catch_up(self) -> int:
        with self._lock:
            applied = 0
            while True:
                events = self._feed.read(self.position + 1, BATCH, list(self.topics))
                for e in events:
                    self._apply(e.topic, str(e.originator_id), e.state)
                    self.position = e.position
                applied += len(events)
                if len(events) < BATCH:
                    return applied

    def _apply(self, topic: str, ident: str, state: Any) -> None:
        raise NotImplementedError


def until_signalled(stopping_event: str = "service.stopping") -> threading.Event:
    """An event that SIGTERM or SIGINT sets (saying so once in the log as `stopping_event`):
    what a process's main thread waits on before it stops its server and background work."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info(stopping_event, signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stopping
