"""Followers: a service's policies reacting to another service's events, read through that
service's feed. Each upstream event takes effect exactly once: the follower stores its tracking
position in the same transaction as the events its policy produces (eventsourcing's Tracking),
so a crash, a restart or a redelivery can never apply an event twice or skip one.

Upstream events arrive as plain data (topic and decoded state), not as the upstream's Python
classes: a service depends on another's published event contract, not on its code. They arrive
as stored, MAC and all: the follower checks each one's MAC before its policy sees it (every
service holds the audit key: they share the master key). The upstream's feed checks what the
follower cannot, holding no view of the upstream's table: that each event stands in its place
among its aggregate's versions (shared/continuity.py: a genuine event moved later in the log
would pass its MAC), and ends its answer at one that does not. Either way the follower stops at
that event — it is never acted on, nor anything after it, until the upstream's store is
repaired — and raises the integrity alarm (shared/integrity.py).

A batch read from the feed is applied in one transaction: each event's policy runs in turn,
reading through the aggregate cache what the events before it in the batch changed, not yet
committed (shared/store/cache.py `pending`), and every reaction of the batch is stored with one
tracking record at the batch's last position. A view shows only what is committed: a policy
that reads one while the batch holds reactions makes the follower commit them first, then
decide that event again (PendingReactions). An event whose policy does nothing is passed
without a write: the position moves on in memory and reaches the store with the next batch that
reacts, or once TRACK_EVERY positions have gone by without one, so a restart reads again at most
that tail (a policy that did nothing for an event does nothing for it again). One transaction
per event, as before, only after a batch met a conflict (a command changed an aggregate its
reactions change, or another replica applied part of it)."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import grpc
import structlog
from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import IntegrityError, Tracking

from shared import context, metrics
from shared.application import META_KEY, QijiApplication
from shared.config import Settings, TlsSettings
from shared.context import Actor, RequestContext
from shared.continuity import Failure, read_checked
from shared.errors import DataLoss, Unavailable
from shared.grpc.channels import open_channel
from shared.integrity import ALARM, MAC_PROBLEM
from shared.leadership import Lease
from shared.leadership import leadership as hold_leadership
from shared.store import (
    STORE_DOWN_ERRORS,
    BatchTracking,
    Collected,
    OutageNotice,
    PendingReactions,
    qiji_transcoder,
)

log = structlog.get_logger(__name__)

BATCH = 200
# The most positions passed in memory (events this follower did nothing for) before a tracking
# record is written for them alone: what a restart may read again.
TRACK_EVERY = 1000
# The longest wait between tries of an upstream that does not answer.
MAX_BACKOFF = 4.0
# How long a read that found its upstream unreachable waits for the channel to dial it again:
# beyond the reconnect back-off's ceiling and its jitter (shared/grpc/channels.py RECONNECT).
REDIAL_SECONDS = 1.5
REFUSED_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


_TRANSCODER = qiji_transcoder()


@dataclass(frozen=True)
class UpstreamEvent:
    upstream: str
    position: int
    originator_id: uuid.UUID
    originator_version: int
    topic: str
    # The state as stored (JSON bytes with its MAC): checked before anything decodes it.
    stored_state: bytes = field(repr=False)

    @functools.cached_property
    def state(self) -> dict[str, Any]:
        """The decoded state (with the same transcodings every Qiji application uses)."""
        return _TRANSCODER.decode(self.stored_state)

    @property
    def name(self) -> str:
        """The event's class name, e.g. "Rider.Suspended"."""
        return self.topic.rsplit(":", 1)[-1]

    @property
    def timestamp(self) -> datetime:
        return self.state["timestamp"]

    @property
    def meta(self) -> dict[str, str]:
        return dict(self.state.get(META_KEY) or {})


class Feed(Protocol):
    """Where a follower reads an upstream log: `read` a batch from a position."""

    name: str
    # Where the latest read stopped, at an event the upstream found out of its place (or
    # failing its MAC), and why; None when it did not. The events read are those before it.
    failure: Failure | None

    def read(self, from_position: int, limit: int, topics: Sequence[str], *,
             redial: bool = False) -> list[UpstreamEvent]:
        """`redial`: a request is waiting on this read (a directory's miss). An upstream that
        restarted a moment ago is then waited for while the channel dials it again, not
        reported away; a loop in the background asks again by itself, and must not wait (it
        would hold up the process's stop)."""
        ...

    def wait(self, timeout: float) -> None:
        """Blocks until new events may be there (or the timeout passes)."""
        ...

    @property
    def last_position(self) -> int:
        """The upstream's highest position, as far as the feed knows."""
        ...


class LocalFeed:
    """Reads another application's log in this process: for tests, and for tools."""

    def __init__(self, app: QijiApplication, name: str | None = None):
        self.name = name or app.name
        self._app = app
        self.failure: Failure | None = None

    def read(self, from_position: int, limit: int, topics: Sequence[str], *,
             redial: bool = False) -> list[UpstreamEvent]:
        # What the upstream's FeedService serves, without the network (nothing to dial).
        notifications, self.failure = read_checked(self._app, from_position, limit, topics)
        return [UpstreamEvent(self.name, n.id, n.originator_id, n.originator_version, n.topic,
                              n.state) for n in notifications]

    def wait(self, timeout: float) -> None:
        self._app.wait_for_log_change(timeout)

    @property
    def last_position(self) -> int:
        return self._app.last_position()


class GrpcFeed:
    """Reads another service's log through its FeedService, with a `service` role token."""

    def __init__(self, name: str, address: str, token: str, poll_seconds: float = 0.5,
                 tls: TlsSettings | None = None):
        from qiji.feed.v1 import feed_service_pb2 as pb
        from qiji.feed.v1 import feed_service_pb2_grpc as pb_grpc
        from qiji.feed.v1 import public_feed_service_pb2 as public_pb
        from qiji.feed.v1 import public_feed_service_pb2_grpc as public_grpc
        self.name = name
        self._pb = pb
        self._public_pb = public_pb
        self._channel = open_channel(address, tls)
        self._stub = pb_grpc.FeedServiceStub(self._channel)
        self._public = public_grpc.PublicFeedServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._poll = poll_seconds
        self._last_seen = 0
        self.failure: Failure | None = None

    @classmethod
    def of(cls, upstream: str, settings: Settings) -> GrpcFeed:
        """`upstream`'s feed as this service's settings say: its address, the `service` token,
        and the transport security of this service's own channels."""
        return cls(upstream, settings.upstreams[upstream], settings.service_token,
                   tls=settings.tls)

    def read(self, from_position: int, limit: int, topics: Sequence[str], *,
             redial: bool = False) -> list[UpstreamEvent]:
        request = self._pb.ReadEventsRequest(from_position=from_position, limit=limit,
                                             topics=list(topics))
        try:
            # Short: a request may be waiting on this read (catching up on a miss).
            reply = self._stub.ReadEvents(request, metadata=self._metadata, timeout=5)
        except grpc.RpcError as error:
            # Just after the upstream restarted, the channel may still be waiting out its
            # reconnect back-off: a request would be told the upstream cannot be reached
            # while it is back. Asked again once the channel has dialled it; an upstream still
            # away costs the request REDIAL_SECONDS more, not a wait to its deadline.
            if not redial or error.code() is not grpc.StatusCode.UNAVAILABLE \
                    or not self._redialled():
                raise
            reply = self._stub.ReadEvents(request, metadata=self._metadata, timeout=5)
        self._last_seen = reply.last_position
        failure = reply.integrity_failure
        self.failure = (Failure(failure.position, failure.problem, failure.topic)
                        if reply.HasField("integrity_failure") else None)
        return [UpstreamEvent(self.name, e.position, uuid.UUID(e.originator_id),
                              e.originator_version, e.topic, e.state)
                for e in reply.events]

    def _redialled(self) -> bool:
        """Whether the channel is connected to the upstream within REDIAL_SECONDS."""
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=REDIAL_SECONDS)
            return True
        except grpc.FutureTimeoutError:
            ready.cancel()  # stops watching the channel
            return False

    def wait(self, timeout: float) -> None:
        """A long poll: the upstream's PublicFeedService (the same port, the same `service`
        token) is asked to answer as soon as its log grows past what the latest read saw
        (`max_wait`, woken by its store's notifications), so an idle follower reads a new
        event at once instead of at its next poll, and asks no more often than it polled. The
        answer's events are not used: the follower reads them from its own position, checked
        as always. An upstream that cannot be asked so (down, or older than `max_wait`: it
        answers at once) is waited for as before, by sleeping."""
        from google.protobuf.duration_pb2 import Duration
        started = time.monotonic()
        held = Duration()
        held.FromMilliseconds(int(timeout * 1000))
        start = self._last_seen + 1
        try:
            reply = self._public.ReadPublicEvents(
                self._public_pb.ReadPublicEventsRequest(from_position=start, limit=1,
                                                        max_wait=held),
                metadata=self._metadata, timeout=timeout + 5)
            if reply.last_position >= start:
                return  # grown: read now
        except grpc.RpcError as error:
            log.debug("follower.long_poll_failed", upstream=self.name, error=repr(error))
        # Not grown (or not asked): the rest of the wait, so that nothing asks in a loop.
        time.sleep(max(0.0, min(timeout, self._poll) - (time.monotonic() - started)))

    @property
    def last_position(self) -> int:
        """The upstream's last position as of the latest read (for the lag metric)."""
        return self._last_seen

    def close(self) -> None:
        self._channel.close()


Policy = Callable[[UpstreamEvent, ProcessingEvent], None]
# For a batch of upstream events, the ids of the aggregates whose existence the policy will ask
# (`exists`): the follower asks the store about all of them in one statement before the batch.
LooksUp = Callable[[Sequence[UpstreamEvent]], Iterable[uuid.UUID]]

# Where a service's upstreams are read, by the upstream's name: a new feed for each call
# (GrpcFeed.of in a deployment, a LocalFeed in tests). An application is handed one when it is
# made (shared/grpc/server.py) and makes from it the followers and views its requests read;
# made without one (None), it follows nothing until a test wires what it needs.
FeedSource = Callable[[str], Feed]


def follower_of(app: QijiApplication, feeds: FeedSource | None, upstream: str,
                policy: Policy, topics: Sequence[str], looks_up: LooksUp | None = None
                ) -> Follower | None:
    """The follower of `upstream` an application keeps (its requests catch up through it), or
    None when the application was made without feeds."""
    return Follower(app, feeds(upstream), policy, topics=topics,
                    looks_up=looks_up) if feeds is not None else None



class Follower:
    """Applies `policy` to each upstream event after this app's tracked position."""

    def __init__(self, app: QijiApplication, feed: Feed, policy: Policy,
                 topics: Sequence[str] = (), looks_up: LooksUp | None = None):
        self.app = app
        self.feed = feed
        self.policy = policy
        self.looks_up = looks_up
        self.topics = list(topics)
        self.upstream = feed.name
        self.actor = Actor(principal=f"{app.name}-follower-of-{feed.name}",
                           roles=frozenset({"service"}))
        self.reader = f"{app.name}.follower"
        self._check = app.event_mac.check
        self._lock = threading.Lock()
        # The code the upstream refuses this follower's token with, while it does: the
        # service's health (`qiji.followers`) and /metrics say so instead of failing silently.
        self.refused: str | None = None
        # (the tracked position it continues, the position reached in memory): events passed
        # without a reaction since this follower's own last tracking record. Good only while
        # the store is still tracked where it was: a write by anyone else voids it.
        self._passed = (0, 0)

    @property
    def position(self) -> int:
        """The last upstream position that took effect here (or was passed over: its policy
        did nothing)."""
        return self._continue_from(self._tracked())

    def _tracked(self) -> int:
        return self.app.recorder.max_tracking_id(self.upstream) or 0  # type: ignore[attr-defined]

    def _continue_from(self, tracked: int) -> int:
        base, reached = self._passed
        return reached if base == tracked and reached > tracked else tracked

    @property
    def stopped_at(self) -> int:
        """The upstream position this follower is stopped at (0: it is not)."""
        return ALARM.stopped_at(self.upstream, self.reader)

    def run_once(self) -> int:
        """Processes what the upstream has now; returns how many events it processed."""
        done = 0
        with self._lock:
            one_by_one = False
            while True:
                tracked = self._tracked()
                start = self._continue_from(tracked) + 1
                events = self.feed.read(start, BATCH, self.topics)
                intact = []
                for upstream_event in events:
                    if not self._intact(upstream_event):
                        break  # stopped: nothing after it either, until it is repaired
                    intact.append(upstream_event)
                if one_by_one:
                    # After a conflict: what was read again, one transaction each (each
                    # retried on its own conflicts); then batches again.
                    for upstream_event in intact:
                        self.process(upstream_event)
                    one_by_one = False
                elif intact and not self._apply_all(intact, tracked):
                    one_by_one = True
                    continue
                done += len(intact)
                if len(intact) < len(events):
                    return done  # stopped at the event after them
                failure = self.feed.failure
                if failure is not None:
                    self._stop(failure.position, f"{failure.problem}; {self.app.name} does "
                                                 "not act on it")
                    return done
                # Read past where it stopped, if it had: the event there is gone or repaired.
                ALARM.passed(self.upstream, self.reader, start,
                             events[-1].position if len(events) == BATCH
                             else max([self.feed.last_position, *(e.position for e in events)]))
                if len(events) < BATCH:
                    # Caught up: every upstream event up to the position the upstream reported
                    # with this read took effect here, or is of a topic this follower passes
                    # over. (Its tracked position alone stops at the last event it reacted to,
                    # which would show a caught-up follower as lagging for ever.)
                    metrics.FOLLOWER_POSITION.labels(self.app.name, self.upstream).set(
                        max(self.position, self.feed.last_position))
                    metrics.FOLLOWER_LAG.labels(self.app.name, self.upstream).set(0)
                    return done
                metrics.FOLLOWER_LAG.labels(self.app.name, self.upstream).set(
                    max(0, self.feed.last_position - self.position))

    def _intact(self, event: UpstreamEvent) -> bool:
        if self._check(event.originator_id, event.originator_version, event.topic,
                       event.stored_state):
            return True
        self._stop(event.position, f"{MAC_PROBLEM}; {self.app.name} does not act on it")
        return False

    def _stop(self, position: int, problem: str) -> None:
        ALARM.broken(self.upstream, self.reader, position, problem)
        metrics.FOLLOWER_LAG.labels(self.app.name, self.upstream).set(
            max(0, self.feed.last_position - self.position))

    def catch_up(self) -> None:
        """Applies what the upstream has now, for a request that names something not known
        here yet. An upstream that cannot be reached is the caller's UNAVAILABLE (retry), not
        an internal error: what this service already knows keeps being served.

        Once per request served (the guard's): after one catch-up, everything the upstream
        stored before the request came is known here, so a request naming twenty unknown
        things costs one read of the upstream, not twenty."""
        caught_up = context.current().caught_up
        if caught_up is not None and self.upstream in caught_up:
            return
        try:
            self.run_once()
        except grpc.RpcError as error:
            raise Unavailable(
                f"{self.upstream} cannot be reached to look this up; retry shortly",
                reason="UPSTREAM_UNAVAILABLE", upstream=self.upstream,
                code=error.code().name) from None
        stopped_at = self.stopped_at
        if stopped_at:
            # What the request names may lie past the event this follower stopped at: "not
            # found" would be a guess. Not retryable until the upstream's store is repaired.
            raise DataLoss(
                f"{self.upstream}'s log is stopped at position {stopped_at}: an event "
                "there fails its integrity check, so nothing after it is known here yet; the "
                "operators are alerted", reason="UPSTREAM_INTEGRITY_FAILED",
                upstream=self.upstream, position=str(stopped_at))
        if caught_up is not None:
            caught_up.add(self.upstream)

    def _context(self, upstream_event: UpstreamEvent) -> RequestContext:
        return RequestContext(
            actor=self.actor, rpc=f"follow:{self.upstream}:{upstream_event.name}",
            request_id=f"{self.upstream}:{upstream_event.position}",
            # The reaction shares its cause's correlation id: one story across services.
            correlation_id=upstream_event.meta.get("correlation_id") or str(uuid.uuid4()))

    def _apply_all(self, events: list[UpstreamEvent], tracked: int) -> bool:
        """Applies `events` in as few batches as the policies allow (a policy that reads a
        view begins a new one); False: one met a conflict, the rest are not applied."""
        while events:
            applied = self._apply(events, tracked)
            if applied is None:
                return False
            # Committed up to there (a batch cut short always holds reactions): the rest goes
            # on from its tracking record, that event first, the view then current.
            events, tracked = events[applied:], events[applied - 1].position
        return True

    def _apply(self, events: list[UpstreamEvent], tracked: int) -> int | None:
        """Applies `events`, read after `tracked` (and after what was passed in memory since),
        in one transaction with one tracking record at the last; in none when no policy
        reacted and fewer than TRACK_EVERY positions went by untracked. Returns how many it
        applied: fewer than all when a policy read a view while the batch held reactions (the
        ones before it are committed, that one is not begun); None when it met a conflict and
        stored nothing (the caller reads again and goes one by one)."""
        batch = ProcessingEvent[uuid.UUID]()
        applied = 0
        # What the batch's reactions changed, read by the policies after them as if stored.
        aggregates = self.app.aggregates
        with aggregates.pending(batch.aggregates, batch.events), aggregates.existence_of(
                self.looks_up(events) if self.looks_up is not None else ()):
            for upstream_event in events:
                processing = Collected()
                try:
                    with context.acting_as(self._context(upstream_event)) as ctx:
                        self.policy(upstream_event, processing)
                except PendingReactions:
                    break  # a view would not show the batch's reactions: commit them first
                applied += 1
                # Stamped now, with this event's request and correlation ids: the store would
                # stamp them all with the context current when the batch is stored.
                for event in processing.events:
                    if META_KEY not in vars(event):
                        object.__setattr__(event, META_KEY, ctx.event_metadata())
                batch.events.extend(processing.events)
                batch.aggregates.update(processing.aggregates)
                batch.saved_kwargs.update(processing.saved_kwargs)
        last = events[applied - 1].position
        if not batch.events and last - tracked < TRACK_EVERY:
            self._passed = (tracked, last)
            return applied
        batch.tracking = BatchTracking(application_name=self.upstream, notification_id=last,
                                       after=tracked)
        if self.app.settings.persistence != "postgres" and self._tracked() != tracked:
            # (On PostgreSQL the recorder checks this in the transaction, under its lock.)
            self._conflict(events, "tracked elsewhere meanwhile")
            return None
        try:
            self.app.record(batch)
        except IntegrityError as error:
            self._conflict(events, str(error))
            return None
        self._passed = (last, last)
        return applied

    def _conflict(self, events: list[UpstreamEvent], problem: str) -> None:
        self._passed = (0, 0)
        log.info("follower.batch_conflict", upstream=self.upstream,
                 first=events[0].position, last=events[-1].position, problem=problem)

    def process(self, upstream_event: UpstreamEvent) -> None:
        """Applies one upstream event in a transaction of its own (after a batch's conflict)."""
        tracking = Tracking(application_name=self.upstream,
                            notification_id=upstream_event.position)
        ctx = self._context(upstream_event)
        for attempt in range(8):
            if self.app.recorder.has_tracking_id(  # type: ignore[attr-defined]
                    self.upstream, upstream_event.position):
                return  # another replica (or an earlier run) already applied it
            processing = Collected(tracking=tracking)
            with context.acting_as(ctx):
                self.policy(upstream_event, processing)
                try:
                    self.app.record(processing)
                    return
                except IntegrityError:
                    # Either the tracking row exists (checked again above) or a concurrent
                    # command changed an aggregate the policy touched: decide again.
                    log.info("follower.conflict", upstream=self.upstream,
                             position=upstream_event.position, attempt=attempt + 1)
        raise RuntimeError(f"could not apply {self.upstream}#{upstream_event.position}")

    def _refused(self, code: str) -> None:
        if self.refused is None:
            # Not an outage: nothing changes until an operator fixes the token.
            log.error("follower.upstream_refused", upstream=self.upstream, code=code,
                      fix="QIJI_SERVICE_TOKEN must be a `service` token in the upstream's "
                      "tokens file (deploy/restart after replacing it)")
        self.refused = code
        metrics.FOLLOWER_REFUSED.labels(self.app.name, self.upstream).set(1)

    def run_forever(self, stopping: threading.Event, idle_wait: float = 0.5) -> None:
        """Follows the upstream until `stopping` is set, as the single leader among replicas;
        survives upstream outages by retrying, and steps down to queue for leadership again
        when its lock went with a restart of the store."""
        while not stopping.is_set():
            with leadership(self.app, self.upstream, stopping) as lease:
                if lease is None:
                    return  # stopped while waiting to lead
                try:
                    self._follow(stopping, lease, idle_wait)
                finally:
                    self._stop_reporting()

    def _stop_reporting(self) -> None:
        """A replica that no longer leads measures no lag, meets no refusal and stands at no
        bad event: left in /metrics (and in `qiji.integrity`), its last figures would go on
        alerting beside the new leader's, and after the repair. (The position stays: it is
        the store's, whichever replica read it.)"""
        metrics.FOLLOWER_LAG.remove(self.app.name, self.upstream)
        metrics.FOLLOWER_REFUSED.remove(self.app.name, self.upstream)
        ALARM.withdraw(self.upstream, self.reader)

    def _follow(self, stopping: threading.Event, lease: Lease, idle_wait: float) -> None:
        backoff, store = 0.5, OutageNotice("follower", upstream=self.upstream)
        try:
            # The leader reports where it stands from the moment it leads, before its first
            # read (an upstream that is down would otherwise leave no trace in /metrics).
            metrics.FOLLOWER_POSITION.labels(self.app.name, self.upstream).set(self.position)
        except Exception:  # the store is down: the loop below reports and retries
            log.warning("follower.position_unknown", upstream=self.upstream)
        while not stopping.is_set() and lease.held():
            try:
                if self.run_once() == 0:
                    self.feed.wait(idle_wait)
                if backoff > 0.5:
                    log.info("follower.upstream_back", upstream=self.upstream)
                if self.refused is not None:
                    log.info("follower.upstream_accepts", upstream=self.upstream)
                    self.refused = None
                    metrics.FOLLOWER_REFUSED.labels(self.app.name, self.upstream).set(0)
                store.worked()
                backoff = 0.5
            except grpc.RpcError as error:
                if error.code() in REFUSED_CODES:
                    self._refused(error.code().name)
                # An upstream that is down (or not deployed yet) delays reactions and loses
                # none: the position is only moved by what was applied. Said once, not
                # every second.
                elif backoff == 0.5:
                    log.warning("follower.upstream_unavailable", upstream=self.upstream,
                                code=error.code().name)
                stopping.wait(backoff)
                # Short: an upstream that is back is noticed within seconds.
                backoff = min(backoff * 2, MAX_BACKOFF)
            except STORE_DOWN_ERRORS as error:
                # Our own store is away (restarting): the same, and no traceback for it. A
                # short, fixed wait: the health probe reopens the store within seconds.
                store.failed(error)
                stopping.wait(1.0)
            except Exception:
                # Not `self.position`: it reads the store, which may be what just failed, and
                # an exception here would end the follower's thread for good.
                log.exception("follower.failed", upstream=self.upstream)
                stopping.wait(2.0)


@contextmanager
def leadership(app: QijiApplication, upstream: str, stopping: threading.Event
               ) -> Iterator[Lease | None]:
    """Only one replica follows a given upstream at a time (shared.leadership). Work under it
    goes on while `lease.held()`; then leadership() is entered again. None: stopped first."""
    with hold_leadership(app.settings, f"{app.settings.postgres_schema}:{app.name}:{upstream}",
                         f".{app.name}-follows-{upstream}.lock", stopping,
                         work=upstream) as lease:
        yield lease
