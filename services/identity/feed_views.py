"""A read model of other services' published events, kept in identity's memory and close
behind their feeds: the reading said once (each upstream's events applied once, in log order,
MAC checked; an integrity failure stops that upstream's part there and raises the alarm; an
upstream out of reach said in the answer), so that each view says only what it keeps. A
rider's own record (rider_record.py) and the partner register's contributions (partners.py)
are such views."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc
import structlog

from shared import context, metrics
from shared.background import keep_behind
from shared.followers import Feed, UpstreamEvent
from shared.integrity import ALARM, MAC_PROBLEM

log = structlog.get_logger(__name__)

BATCH = 500
PROGRESS_EVERY = 10_000
# The name its metrics carry, beside the followers of every service.
_APP = "identity"


@dataclass(frozen=True)
class SourceState:
    """How current one upstream's part of a record is."""

    service: str
    # The upstream's log position the record reflects, through.
    position: int
    # True when everything the upstream stored before the record was asked for is in it.
    current: bool
    # Why not, when it is not: "UNAVAILABLE" (cannot be reached), "PERMISSION_DENIED" (the
    # service token is refused), or the integrity problem at `stopped_at`.
    problem: str = ""
    stopped_at: int = 0


@dataclass
class _Source:
    name: str
    feed: Feed
    topics: tuple[str, ...]
    position: int = 0
    stopped_at: int = 0
    problem: str = ""
    unreachable: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    # When the newest completed catch-up began (monotonic): a request that came before that
    # needs no catch-up of its own.
    fresh_since: float = -1.0


class FeedView:
    """The reading of a view's upstreams, and what keeps it current (one of identity's
    background workers). A view names its upstreams' topics (`sources`), applies each event in
    `_apply` (under `self._lock`), and says who it is: `upstream` (its thread's name), `reader`
    (its name in the integrity alarm), `log_name` and `shows_nothing` (what its log lines say
    of an event it stopped at)."""

    upstream = ""
    reader = ""
    log_name = ""
    shows_nothing = "the view does not show it"

    def __init__(self, feeds: Mapping[str, Feed], sources: Mapping[str, tuple[str, ...]], *,
                 check_mac: Callable[..., bool]):
        unknown = set(feeds) - set(sources)
        if unknown:
            raise ValueError(f"{self.upstream} reads nothing of {sorted(unknown)}")
        self._sources = {name: _Source(name, feed, sources[name])
                         for name, feed in feeds.items()}
        self._check_mac = check_mac
        self._lock = threading.RLock()

    def _apply(self, event: UpstreamEvent) -> None:
        raise NotImplementedError

    def sources_now(self) -> list[SourceState]:
        """Every upstream caught up (once per request: a request that reads the view twice
        reads the feeds once), and how current each part is."""
        caught_up = context.current().caught_up
        if caught_up is not None and self.upstream in caught_up:
            return [self._state(s, current=not s.unreachable) for s in self._sources.values()]
        sources = self.catch_up()
        if caught_up is not None:
            caught_up.add(self.upstream)
        return sources

    @property
    def refused(self) -> str | None:
        """The upstreams that refuse identity's service token, if any (the service's health,
        `qiji.followers`, turns NOT_SERVING while one does)."""
        refused = [s.name for s in self._sources.values()
                   if s.unreachable in ("UNAUTHENTICATED", "PERMISSION_DENIED")]
        return ", ".join(refused) or None

    # -------------------------------------------------------------- keeping current

    def run_forever(self, stopping: threading.Event, every: float = 1.0) -> None:
        """Built as the process starts (progress in the log) and kept close behind."""
        keep_behind(lambda: all(s.current for s in self.catch_up()), stopping,
                    name=self.upstream, every=every)

    def catch_up(self) -> list[SourceState]:
        """Applies what every upstream stored since the last look (what it can reach)."""
        return [self._catch_up(source) for source in self._sources.values()]

    def _catch_up(self, source: _Source) -> SourceState:
        asked = time.monotonic()
        with source.lock:
            if source.fresh_since < asked:
                began = time.monotonic()
                if self._read(source):
                    source.fresh_since = began
            return self._state(source, current=source.fresh_since >= asked)

    def _state(self, source: _Source, *, current: bool) -> SourceState:
        if source.stopped_at:
            return SourceState(source.name, source.position, False, source.problem,
                               source.stopped_at)
        return SourceState(source.name, source.position, current and not source.unreachable,
                           source.unreachable)

    def _read(self, source: _Source) -> bool:
        """Reads and applies the upstream's new events; True when it caught up with it."""
        applied, started = 0, time.perf_counter()
        try:
            while True:
                start = source.position + 1
                events = source.feed.read(start, BATCH, source.topics)
                for event in events:
                    if not self._check_mac(event.originator_id, event.originator_version,
                                           event.topic, event.stored_state):
                        self._stop(source, event.position,
                                   f"{MAC_PROBLEM}; {self.shows_nothing}")
                        return False
                    with self._lock:
                        self._apply(event)
                    source.position = event.position
                applied += len(events)
                failure = source.feed.failure
                if failure is not None:
                    self._stop(source, failure.position,
                               f"{failure.problem}; {self.shows_nothing}")
                    return False
                through = (events[-1].position if len(events) == BATCH
                           else max([source.feed.last_position, source.position]))
                ALARM.passed(source.name, self.reader, start, through)
                if source.stopped_at and through >= source.stopped_at:
                    source.stopped_at, source.problem = 0, ""  # repaired
                if applied // PROGRESS_EVERY > (applied - len(events)) // PROGRESS_EVERY:
                    # A long rebuild shows that it is moving, and how fast.
                    log.info(f"{self.log_name}.rebuild.progress", upstream=source.name,
                             events=applied, position=source.position,
                             per_second=round(applied / (time.perf_counter() - started)))
                if len(events) < BATCH:
                    break
        except grpc.RpcError as error:
            code = error.code().name if isinstance(error, grpc.Call) else "UNAVAILABLE"
            refused = code in ("UNAUTHENTICATED", "PERMISSION_DENIED")
            if source.unreachable != code:
                # Said once, not every second. A refusal is no outage: nothing changes until
                # an operator fixes the token, so health and /metrics say it too.
                if refused:
                    log.error(f"{self.log_name}.upstream_refused", upstream=source.name,
                              code=code, fix="QIJI_SERVICE_TOKEN must be a `service` token in "
                              "the upstream's tokens file")
                else:
                    log.warning(f"{self.log_name}.upstream_unavailable", upstream=source.name,
                                code=code)
            source.unreachable = code
            metrics.FOLLOWER_REFUSED.labels(_APP, source.name).set(1 if refused else 0)
            return False
        if source.unreachable:
            log.info(f"{self.log_name}.upstream_back", upstream=source.name)
            source.unreachable = ""
            metrics.FOLLOWER_REFUSED.labels(_APP, source.name).set(0)
        metrics.FOLLOWER_POSITION.labels(_APP, source.name).set(
            max(source.position, source.feed.last_position))
        if applied >= PROGRESS_EVERY:
            log.info(f"{self.log_name}.rebuild.done", upstream=source.name, events=applied,
                     seconds=round(time.perf_counter() - started, 2))
        return True

    def _stop(self, source: _Source, position: int, problem: str) -> None:
        if source.stopped_at != position:
            log.error(f"{self.log_name}.integrity_stop", upstream=source.name, position=position,
                      problem=problem)
        source.stopped_at, source.problem = position, problem
        ALARM.broken(source.name, self.reader, position, problem)

