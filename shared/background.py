"""Background work: the loop that keeps a derived, in-memory view close behind the feeds it
reads (the tenancy directory, merchants' map of service spaces, identity's riders' records),
the loop of a job done every few seconds (lapsing codes, expiring awards, escalating missed
deadlines, sealing the log), and the stop every gRPC process waits for — each said once, so
that a view says only how it catches up, a job only what one round does, and a process only
what it starts and stops."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import grpc
import structlog

from shared import context
from shared.context import Actor, RequestContext
from shared.errors import Unavailable
from shared.leadership import Lease, leadership
from shared.store import STORE_DOWN_ERRORS, OutageNotice

if TYPE_CHECKING:
    from shared.application import QijiApplication

App = TypeVar("App", bound="QijiApplication")

log = structlog.get_logger(__name__)

LONGEST_WAIT = 30.0
BATCH = 1000


def settled() -> None:
    """Called once a process has started: what it built to serve (modules, catalogues, protobuf
    descriptors, ~70,000 objects in a service) is moved out of the garbage collector's sight
    (`gc.freeze`). A full collection over it took 40–56 ms on this 2-core machine, every thread
    of the process stopped meanwhile — a request, or every event on the feed, stalled that long
    (issue 20: the feed's p99); after the freeze it scans only what was made since. Nothing is
    kept alive that would not have been: those objects live as long as the process anyway."""
    gc.collect()
    gc.freeze()


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


class PeriodicJob(Generic[App]):
    """Work a service does every `every` seconds in a thread of its own, beside its followers
    (the server factory runs anything with `upstream` and `run_forever`): merchants' lapse of
    expired codes, badges' expiry and re-evaluation, governance's deadline schedulers, the
    audit sealer. A subclass says what one round does (`round`, returning how many things it
    did) and, in class attributes, what the job is called; the rest is said here once:

    - a round runs as the job's own actor (`principal`, with the `service` role) when it has
      one, so what it stores says who did it;
    - a failing round never ends the thread: the store being away (restarting) is said once
      when it goes and once when it is back (`<job>.store_unavailable`, `<job>.store_back`),
      anything else is logged with its traceback (`<job>.failed`); either way the next tick
      tries again;
    - a round that did something says so (`done`, with `counted=n`);
    - a job that must run on one replica at a time (`led`) runs under the leadership lock of
      `upstream`, and steps down and queues for it again when the lock went with a restart of
      the store; the others run on every replica, their commands being safe to race;
    - a job with a `wake` event runs as soon as it is set rather than at its next tick.

    Its work is driven by the log, never by timers of its own, so a restart loses nothing."""

    # Names its thread (`<service>-follows-<upstream>`) and, when led, its leadership lock.
    upstream: ClassVar[str]
    # The first word of its log lines: `<job>.failed`, `<job>.store_unavailable`.
    job: ClassVar[str]
    # What a round that did something logs, and the field its count goes in ("" for nothing).
    done: ClassVar[str] = ""
    counted: ClassVar[str] = "count"
    # The actor its rounds act as, and the name of what they do (the events' `rpc`).
    principal: ClassVar[str] = ""
    rpc: ClassVar[str] = ""
    # One replica at a time (a leadership lock), or every replica.
    led: ClassVar[bool] = False
    # The first round at once (resuming what a restart interrupted), or after `every`.
    at_start: ClassVar[bool] = False

    # After a failed round, the least time before the next one, even when woken: a job woken
    # over and over must not spin on a fault.
    FAILURE_PAUSE: ClassVar[float] = 1.0
    # How long a wait for the wake event lasts before it looks at `stopping`: a shutdown is
    # not held up by a long one.
    WAKE_LOOK: ClassVar[float] = 0.5

    def __init__(self, app: App, every: float, *,
                 wake: threading.Event | None = None):
        self.app = app
        self.every = every
        self.wake = wake
        self.actor = (Actor(principal=self.principal, roles=frozenset({"service"}))
                      if self.principal else None)
        self._outage = OutageNotice(self.job)

    def round(self) -> int:
        """One round of the job; returns how many things it did."""
        raise NotImplementedError

    def run_once(self) -> int:
        """One round, as the job's actor: what the loop runs every tick, and what a test calls."""
        acting = (context.acting_as(RequestContext(actor=self.actor, rpc=self.rpc))
                  if self.actor is not None else nullcontext())
        with acting:
            return self.round()

    def run_forever(self, stopping: threading.Event) -> None:
        """Runs a round every `every` seconds (or when woken) until `stopping` is set."""
        while not stopping.is_set():
            with self._leading(stopping) as lease:
                if lease is None:
                    return  # stopped while waiting to lead
                failed = False
                due = self.at_start or self._due(stopping, failed)
                while due and lease.held():
                    failed = not self._round()
                    due = self._due(stopping, failed)

    @contextmanager
    def _leading(self, stopping: threading.Event) -> Iterator[Lease | None]:
        if not self.led:
            yield None if stopping.is_set() else Lease(None, self.upstream)
            return
        settings, name = self.app.settings, self.app.name
        with leadership(settings, f"{settings.postgres_schema}:{name}:{self.upstream}",
                        f".{name}-follows-{self.upstream}.lock", stopping,
                        work=self.upstream) as lease:
            yield lease

    def _round(self) -> bool:
        """One round, its failure logged and left for the next tick; False if it failed."""
        try:
            did = self.run_once()
        except STORE_DOWN_ERRORS as error:  # restarting: the next tick will do
            self._outage.failed(error)
            return False
        except Exception:
            log.exception(f"{self.job}.failed")
            return False
        if did and self.done:
            log.info(self.done, **{self.counted: did})
        self._outage.worked()
        return True

    def _due(self, stopping: threading.Event, failed: bool) -> bool:
        """Waits until the next round is due: `every` seconds on, or as soon as the wake event
        is set (not before FAILURE_PAUSE after a failed round); False when stopping."""
        if self.wake is None:
            return not stopping.wait(self.every)
        start = time.monotonic()
        deadline = start + self.every
        heed_wake = start + (self.FAILURE_PAUSE if failed else 0.0)
        while not stopping.is_set():
            now = time.monotonic()
            if now >= deadline:
                return True
            if now < heed_wake:
                stopping.wait(min(heed_wake, deadline) - now)
            elif self.wake.wait(min(self.WAKE_LOOK, deadline - now)):
                return True
        return False


def until_signalled(stopping_event: str = "service.stopping") -> threading.Event:
    """An event that SIGTERM or SIGINT sets (saying so in the log as `stopping_event`, before
    anyone waiting on it wakes): what a process's main thread waits on before it stops its
    server and background work. Call it from the main thread.

    The signal's number reaches a thread of its own through a pipe, written by the
    interpreter's C-level handler itself (`signal.set_wakeup_fd`), which reads it, logs and
    sets the event, where taking a lock is only waiting. Two ways that lost a stop are so
    closed:
    - A Python handler runs on the main thread between two of its bytecodes: had it logged,
      or set the event (both take a lock), while that thread held the same lock mid-line, the
      process would wait on itself for ever.
    - The kernel gives a process's signal to any of its threads that does not block it. One
      taken by another thread (a service has dozens: grpcio's, the store's pools) does not
      wake the main thread from `Event.wait()`, and a Python handler runs only once the main
      thread runs again: a stop was lost until a second signal happened to reach the main
      thread, or SIGKILL (tests/unit/test_stop_while_logging.py sends one to another thread).
      The C-level handler runs in whichever thread takes the signal, and writes at once."""
    stopping = threading.Event()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # a full pipe: stops are already queued

    def watch() -> None:
        while signums := os.read(read_end, 64):
            # The wakeup pipe is told of every signal with a Python handler: only these stop.
            for signum in (s for s in signums if s in (signal.SIGTERM, signal.SIGINT)):
                log.info(stopping_event, signal=signal.Signals(signum).name)
                stopping.set()

    threading.Thread(target=watch, name="signals", daemon=True).start()
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    # A Python handler must be installed for the C-level one to catch the signal at all
    # (the default would end the process at once); the wakeup pipe does the work.
    signal.signal(signal.SIGTERM, _noted_by_the_wakeup_pipe)
    signal.signal(signal.SIGINT, _noted_by_the_wakeup_pipe)
    return stopping


def _noted_by_the_wakeup_pipe(_signum: int, _frame: object) -> None:
    """Nothing to do: `until_signalled`'s wakeup pipe has the signal already."""
