"""The relay: the platform company's event feed pushed over AMQP.

It follows every service's public log (`qiji.feed.v1.PublicFeedService/ReadPublicEvents`, the
same contract the gRPC gateway `services/platform` merges) at a position of its own per service,
and publishes each public event, as a CloudEvent 1.0 in the structured JSON format
(services/relay/cloudevents.py), to the durable topic exchange `qiji.events`. The routing key
of an event about a rider is `platform.<the rider's platform id>.<CloudEvents type>` (e.g.
`platform.7b0c….qiji.training.v1.PreJobCertified`), of any other event the type alone (a
signed checkpoint, `qiji.identity.v1.LogCheckpointSigned`): each platform binds only its own.

Guarantees:
- At least once, nothing lost. The position of a service is stored (services/relay/positions.py)
  only after the broker confirmed every message before it (publisher confirms, persistent
  messages). A broker outage, a service outage or a relay killed with `kill -9` delays events
  and loses none; what was published but not yet recorded is published again after a crash,
  with the same CloudEvents `id` (uuid5 of service, aggregate, version and type), so consumers
  drop duplicates by `id`. Positions are stored on a thread of their own
  (services/relay/positions.py PositionWriter), off the cycle's path but never more than about
  a second behind: what is repeated is at most what was confirmed in that second, plus the
  batch sent ahead (RELAY_BATCH, 200 log positions).
- Order: within one service, log order (one publisher, one channel; a batch is sent behind
  the last, and its confirms awaited, hence its position stored, only after the last's); no
  order between services, as in the gRPC feed.
- Prompt: an idle relay does not wait for its next poll. It watches every service's log with a
  long poll (`max_wait`) that the service answers as soon as its store NOTIFYs an insert
  (shared/grpc/upstream.py watch, shared/store/wake.py), and reads at once; the poll
  (RELAY_POLL_SECONDS) remains the fallback for a lost wake.
- Nothing unchecked: the relay holds no key of its own (least privilege: it faces the broker,
  and a MAC key would let whoever took it over forge events every follower accepts). Each
  service checks every event's MAC as it reads it for the relay (the only place where the row
  and the key meet) and stops its answer at one that fails (`integrity_failure`): the relay
  publishes what came before, stores that position, raises `qiji_audit_intact{reader="relay"}
  0`, logs `integrity.broken` naming the service and position, and asks again each cycle (at
  the idle pace); it never skips the event.
- No personal data over AMQP: the relay reads with `consumer_organisation_id=""`, which the
  services answer without any personal field (no name, no phone, never a national id), whatever
  consents exist. Consumers that need consented fields use the gRPC gateway with their own
  organisation's token.
- Only messages for queues that exist: the exchange is declared (durable) by the relay, but a
  consumer must declare and bind its durable queue before the events it wants are published;
  RabbitMQ drops what no queue is bound for (no `mandatory` flag: an unbound type must not stall
  the feed). A platform binds `platform.<its id>.#` for its riders' events (or
  `platform.<its id>.qiji.identity.#`, exact types...) and `qiji.#` for events about no rider.

Why the relay is not a `nameko run` service (this departs from ARCHITECTURE.md's process table,
on purpose): the relay is a gRPC client of the five services, and grpcio must not run under
eventlet's monkey-patching (`nameko run` patches sockets and threads before it imports the
service; grpcio's C core then blocks the hub, or deadlocks on its own threads). So it is a plain
threaded process that publishes with kombu (no eventlet) what nameko's standalone event
dispatcher would, on nameko's event exchange, with publisher confirms awaited once per batch
(services/relay/publisher.py). Consumers are ordinary nameko services with
`@event_handler("qiji", "<type>")` (services/relay/sample_consumer.py), which only speak AMQP
and run under `nameko run` fine.

Settings (shared/config.py rules: `RELAY_<NAME>`, then `QIJI_<NAME>`):
`RELAY_<SERVICE>_ADDRESS` (each service's gRPC address), `QIJI_SERVICE_TOKEN` (a `service`
role token), `RELAY_AMQP_URI` (default amqp://guest:guest@127.0.0.1:5672/), `RELAY_SERVICES`
(comma list, default all five), `RELAY_BATCH` (200), `RELAY_POLL_SECONDS` (0.2),
`QIJI_PERSISTENCE` and the PostgreSQL settings / `RELAY_POSTGRES_SCHEMA` (`relay`) or
`QIJI_DATA_DIR` (SQLite `relay.sqlite3`). Only one relay publishes at a time (a PostgreSQL
advisory lock, or a file lock on SQLite); a second one waits as a hot standby.
`RELAY_METRICS_PORT` (0: none) serves Prometheus /metrics with events published, positions,
lag per service and a health signal (services/relay/metrics.py), which `deploy/status` reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from qiji.feed.v1 import public_feed_service_pb2 as feed_pb

from services.relay import metrics
from services.relay.cloudevents import structured
from services.relay.positions import PositionStore, PositionWriter, open_positions
from services.relay.publisher import BatchPublisher, BrokerDown
from shared import metrics as shared_metrics
from shared.background import settled, until_signalled
from shared.config import ConfigError, Settings, load_settings
from shared.grpc.upstream import GrpcUpstream, LogWatch, Upstream, UpstreamDown
from shared.integrity import ALARM
from shared.leadership import Lease
from shared.leadership import leadership as hold_leadership
from shared.logging import configure as configure_logging
from shared.logging import exits_on_config_error, redacted
from shared.store import OutageNotice

log = structlog.get_logger(__name__)

NAME = "relay"
# kombu's retry of one publish (reconnecting on the way) before the relay's own backoff.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                        "interval_max": 1.0}
BACKOFF_START = 0.5
# Short: a service that is back is published from (and the relay healthy) within seconds.
BACKOFF_MAX = 2.0
PROGRESS_SECONDS = 5.0
# How often an idle relay, waiting for a wake, looks at whether it should stop.
STOP_CHECK_SECONDS = 0.2

Publish = Callable[[str, dict[str, Any]], None]  # or a BatchPublisher


def routing_key(type_name: str, platform_id: str) -> str:
    """Where an event goes on `qiji.events`: an event about a rider to its own platform only,
    `platform.<platform id>.<type>` (the public feed names the platform; an unknown rider's
    event gets a name no platform has); an event about no rider (a signed checkpoint) to
    everyone, `<type>`. A broker user of one platform is given topic permissions that let it
    bind nothing but its own platform's keys and those of events about no rider (README,
    "Over AMQP"), so a competitor's riders never reach its queues."""
    return f"platform.{platform_id}.{type_name}" if platform_id else type_name


def amqp_publisher(uri: str) -> BatchPublisher:
    """Publishes each batch with publisher confirms, awaited once per batch
    (services/relay/publisher.py): returns only once the broker confirmed every persistent
    message of it."""
    return BatchPublisher(uri)


@dataclass
class ServiceState:
    name: str
    upstream: Upstream
    next_position: int = 1
    published: int = 0
    retry_at: float = 0.0
    backoff: float = BACKOFF_START
    last_position: int = 0
    # The next batch, read — and with a BatchPublisher already sent — while the broker
    # confirmed the last one: (its from_position, the reply, its delivery tags or None when
    # not sent). Used only if the relay then stands exactly there; dropped on any failure
    # (what was sent of it is then read and sent again: duplicates, never a gap).
    prefetched: tuple[int, Any, Any] | None = None
    # The read after it, started as soon as it was sent (from_position, its answer when
    # called): it runs on the service while the relay awaits the confirms and stores the
    # position. Used only from exactly there.
    reading: tuple[int, Callable[[], Any]] | None = None

    @property
    def stopped_at(self) -> int:
        """The position of an event that fails its integrity check where the relay stopped: it
        is never published, nor anything after it, until the store is repaired (0: none)."""
        return ALARM.stopped_at(self.name, NAME)


@dataclass
class Relay:
    upstreams: Mapping[str, Upstream]
    positions: PositionStore
    publish: Publish
    batch: int = 200
    # Wakes an idle relay when a service's log grows (shared/grpc/upstream.py): it reads at
    # once instead of at its next poll. None: it polls only.
    watch: LogWatch | None = None
    services: dict[str, ServiceState] = field(init=False)

    def __post_init__(self) -> None:
        stored = self.positions.load()
        self.services = {name: ServiceState(name, up, next_position=stored.get(name, 1))
                         for name, up in self.upstreams.items()}
        log.info("relay.resumed", positions={s.name: s.next_position
                                             for s in self.services.values()})

    def run_once(self, state: ServiceState) -> int:
        """Publishes one batch of `state`'s service; returns how many events it published."""
        start = state.next_position
        began = time.perf_counter()
        prefetched, state.prefetched = state.prefetched, None
        sent = None  # the delivery tags of this batch, if it went out with the last one's
        try:
            if prefetched is not None and prefetched[0] == start:
                _, reply, sent = prefetched
            else:
                # What the watch read for us while we were idle, else a read now.
                reply = ((self.watch.take(state.name, start) if self.watch is not None
                          else None) or self._read(state, start))
        except UpstreamDown as down:
            metrics.UPSTREAM_UP.labels(state.name).set(0)
            self._back_off(state, "relay.upstream_unavailable", code=str(down))
            return 0
        if state.backoff > BACKOFF_START:
            log.info("relay.upstream_back", upstream=state.name)
        state.backoff = BACKOFF_START
        state.last_position = reply.last_position
        read = time.perf_counter()
        try:
            self._publish_all(state, reply, sent)
        except BrokerDown as down:
            # Keep what is confirmed: the positions wholly published before the first message
            # the broker did not confirm.
            unconfirmed = reply.events[down.confirmed]
            complete = [e.position for e in reply.events[:down.confirmed]
                        if e.position < unconfirmed.position]
            if complete:
                self._store(state, max(complete) + 1)
            state.published += down.confirmed
            metrics.PUBLISHED.labels(state.name).inc(down.confirmed)
            metrics.BROKER_UP.set(0)
            raise
        state.published += len(reply.events)
        metrics.PUBLISHED.labels(state.name).inc(len(reply.events))
        if reply.events:
            metrics.BROKER_UP.set(1)
        confirmed = time.perf_counter()
        if reply.next_position > state.next_position:
            self._store(state, reply.next_position)
        if reply.HasField("integrity_failure"):
            # The service checked each event's MAC as it read it for us and stopped at this
            # one: publish nothing of it or after it, say so, and ask again next cycle.
            failure = reply.integrity_failure
            ALARM.broken(state.name, NAME, failure.position, failure.problem)
        else:
            ALARM.passed(state.name, NAME, start, reply.next_position - 1)
        metrics.read(state.name, published_through=state.next_position - 1,
                     last_position=reply.last_position)
        if reply.events:
            # Where a cycle's time goes (the feed's latency is about one cycle): the read (0
            # when the batch was read, and sent, ahead in the cycle before), the publish (the
            # batch sent if it was not, the next read awaited and sent, this one's confirms),
            # the position handed to the store.
            log.info("relay.published", upstream=state.name, events=len(reply.events),
                     read_ms=round((read - began) * 1e3, 1),
                     publish_ms=round((confirmed - read) * 1e3, 1),
                     store_ms=round((time.perf_counter() - confirmed) * 1e3, 1),
                     next_position=state.next_position, last_position=reply.last_position)
        return len(reply.events)

    def _request(self, start: int) -> Any:
        return feed_pb.ReadPublicEventsRequest(
            from_position=start, limit=self.batch,
            # No personal data over AMQP, ever; every platform's rider events.
            consumer_organisation_id="", all_platforms=True)

    def _start_read(self, state: ServiceState, start: int) -> Callable[[], Any]:
        """A read begun now, its answer (or UpstreamDown) when called: a gRPC upstream
        answers meanwhile; another is read when asked."""
        begin = getattr(state.upstream, "start_read", None)
        if begin is None:
            return lambda: self._read(state, start)
        answer: Callable[[], Any] = begin(self._request(start))
        return answer

    def _read(self, state: ServiceState, start: int) -> Any:
        return state.upstream.read_public_events(self._request(start))

    def _publish_all(self, state: ServiceState, reply: Any, sent: Any) -> None:
        """One batch, confirms awaited once; a publisher of whole batches; a plain
        `publish(key, event)` (tests, tools) one message at a time. BrokerDown says how many
        were confirmed.

        With a BatchPublisher (send, then confirm) the batch is sent unless it went out already
        (`sent`), and while its confirms come the next batch is read and sent at once, on the
        same channel, after it: its events reach consumers without waiting for this batch's
        confirms (issue 20: the broker's fsync, now and then tens of milliseconds, was on every
        event's way). Its position is still stored only after its own confirms, a cycle later;
        if anything fails first it is dropped, read and sent again."""
        send = getattr(self.publish, "send", None)
        if send is not None and (reply.events or sent is not None):
            if sent is None:
                sent = send(_messages(reply))
            reading, state.reading = state.reading, None
            if not reply.HasField("integrity_failure"):
                try:
                    if reading is None or reading[0] != reply.next_position:
                        reading = (reply.next_position, self._start_read(state,
                                                                         reply.next_position))
                    ahead = reading[1]()
                    # Nothing ahead yet: read afresh next cycle rather than from a stale answer.
                    if ahead.events:
                        state.prefetched = (reply.next_position, ahead, send(_messages(ahead)))
                        if not ahead.HasField("integrity_failure"):
                            # The read after it runs while this batch's confirms come.
                            state.reading = (ahead.next_position,
                                             self._start_read(state, ahead.next_position))
                except UpstreamDown:
                    state.prefetched = None  # read again, and backed off, next cycle
                    state.reading = None
                except BrokerDown:
                    # The connection went while the next batch went out: this batch's confirm
                    # below says how much of it the broker had.
                    state.prefetched = None
                    state.reading = None
            try:
                self.publish.confirm(sent)  # type: ignore[attr-defined]
            except BrokerDown:
                state.prefetched = None
                state.reading = None
                raise
            return
        messages = _messages(reply)
        publish_batch = getattr(self.publish, "publish_batch", None)
        if publish_batch is not None:
            publish_batch(messages)
            return
        for index, (key, event) in enumerate(messages):
            try:
                self.publish(key, event)
            except BrokerDown as down:
                raise BrokerDown(str(down), confirmed=index) from down

    def _store(self, state: ServiceState, next_position: int) -> None:
        self.positions.save(state.name, next_position)
        state.next_position = next_position

    def _back_off(self, state: ServiceState, what: str, **fields: Any) -> None:
        if state.backoff == BACKOFF_START:  # said once per outage, not every retry
            log.warning(what, upstream=state.name, **fields)
        state.retry_at = time.monotonic() + state.backoff
        state.backoff = min(state.backoff * 2, BACKOFF_MAX)

    def run_forever(self, stopping: threading.Event, poll_seconds: float = 0.2, *,
                    lease: Lease | None = None) -> None:
        """Publishes until `stopping` is set or the `lease` on leadership is lost."""
        try:
            self._publish(stopping, poll_seconds, lease)
        finally:
            metrics.stop_reporting()
            # The relay that leads now reports where it stands, bad events included.
            for name in self.services:
                ALARM.withdraw(name, NAME)

    def _publish(self, stopping: threading.Event, poll_seconds: float, lease: Lease | None
                 ) -> None:
        broker_backoff = BACKOFF_START
        last_progress = time.monotonic()
        positions_outage = OutageNotice("relay")
        metrics.LEADER.set(1)
        while not stopping.is_set() and (lease is None or lease.held()):
            busy = False
            metrics.heartbeat()
            # Noted before the reads: a log that grows after them wakes the idle wait below.
            generation = self.watch.wake.generation if self.watch is not None else 0
            try:
                for state in self.services.values():
                    if stopping.is_set():
                        return
                    if state.retry_at <= time.monotonic():
                        self.run_once(state)
                        # More stored than read: go on at once, without the poll pause (but not
                        # for a service stopped at a bad event: it waits like an idle one).
                        if (state.next_position <= state.last_position
                                or state.prefetched is not None) and not state.stopped_at:
                            busy = True
                        elif self.watch is not None and state.backoff == BACKOFF_START:
                            # Caught up, the watch long-polls our next read itself: one
                            # call, not two (not for a service stopped at a bad event, whose
                            # next read is answered at once: it waits for the log to grow).
                            caught_up = state.next_position > state.last_position
                            self.watch.idle(state.name, state.last_position,
                                            self._request(state.next_position) if caught_up
                                            else None)
                if broker_backoff > BACKOFF_START:
                    log.info("relay.broker_back")
                broker_backoff = BACKOFF_START
                positions_outage.worked()
                # Healthy when every service's feed answered its latest read (one in backoff
                # has not); the broker and the position store answered, or we would be below.
                # (A service stopped at an event that fails its integrity check is not a sick
                # relay — restarting it would change nothing: that is the integrity alarm's.)
                metrics.HEALTHY.set(all(s.backoff == BACKOFF_START
                                        for s in self.services.values()))
            except BrokerDown as down:
                metrics.HEALTHY.set(0)
                if broker_backoff == BACKOFF_START:
                    log.warning("relay.broker_unavailable", error=str(down))
                stopping.wait(broker_backoff)
                broker_backoff = min(broker_backoff * 2, BACKOFF_MAX)
                continue
            except psycopg.OperationalError as error:
                metrics.HEALTHY.set(0)
                positions_outage.failed(error)
                stopping.wait(2.0)
                continue
            if time.monotonic() - last_progress >= PROGRESS_SECONDS:
                last_progress = time.monotonic()
                log.info("relay.progress", **{
                    s.name: {"next_position": s.next_position, "last_position": s.last_position,
                             "published": s.published} for s in self.services.values()})
            if not busy:
                self._idle(stopping, poll_seconds, generation, lease)

    def _idle(self, stopping: threading.Event, poll_seconds: float, generation: int,
              lease: Lease | None) -> None:
        """Waits for a service's log to grow (the wake) or `poll_seconds` (the fallback poll:
        no wake, or one lost), looking at `stopping` and the lease at least every
        STOP_CHECK_SECONDS."""
        if self.watch is None:
            stopping.wait(poll_seconds)
            return
        deadline = time.monotonic() + poll_seconds
        while not stopping.is_set() and (lease is None or lease.held()):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.watch.wake.wait(generation,
                                                      min(remaining, STOP_CHECK_SECONDS)):
                return


def _messages(reply: Any) -> list[tuple[str, dict[str, Any]]]:
    """A read's events as (routing key, structured CloudEvent) messages."""
    return [(routing_key(public.event.type, public.platform_id), structured(public.event))
            for public in reply.events]


@contextmanager
def leadership(settings: Settings, stopping: threading.Event) -> Iterator[Lease | None]:
    """Only one relay publishes (shared.leadership); the others stand by, healthy while they
    can reach the store. None: stopped while standing by."""
    said = False

    def standing_by(reachable: bool) -> None:
        nonlocal said
        metrics.HEALTHY.set(1 if reachable else 0)
        metrics.heartbeat()
        if not said:
            log.info("relay.standby", reason="another relay holds the lock")
            said = True

    with hold_leadership(settings, f"{settings.postgres_schema}:relay", ".relay.lock",
                         stopping, retry_seconds=1.0, waiting=standing_by,
                         work="relay") as lease:
        yield lease


def serve() -> None:
    """The process entry point: `python -m services.relay`."""
    # A setting that cannot work stops the relay at start: one line, exit code 2.
    with exits_on_config_error(NAME):
        settings = load_settings(NAME)
        configure_logging(NAME, settings.log_format)
        if not settings.service_token:
            raise ConfigError("RELAY_SERVICE_TOKEN / QIJI_SERVICE_TOKEN must be set: the "
                              "relay reads the services' public feeds with it")
    # Typed and checked at start with every other setting (shared/config.py OWN_SETTINGS).
    amqp_uri: str = settings.own_setting("AMQP_URI")
    batch: int = settings.own_setting("BATCH")
    poll: float = settings.own_setting("POLL_SECONDS")
    services: list[str] = settings.own_setting("SERVICES")
    stopping = until_signalled("relay.stopping")
    # Unhealthy until a first cycle (or standby check) says otherwise.
    metrics.LEADER.set(0)
    metrics.HEALTHY.set(0)
    shared_metrics.serve(settings.grpc_host, settings.metrics_port)
    upstreams = {s: GrpcUpstream(settings.upstreams[s], settings.service_token, settings.tls)
                 for s in services}
    # Every service's log watched (long polls that its store's NOTIFY answers) while the
    # relay leads and is idle.
    watch = LogWatch(upstreams, stopping).start()
    settled()  # start-up's objects out of the collector's way (shared/background.py)
    log.info("relay.started", upstreams={s: settings.upstreams[s] for s in services},
             broker=redacted(amqp_uri), persistence=settings.persistence,
             metrics_port=settings.metrics_port or None)
    try:
        while not stopping.is_set():  # entered again when the lock went with a store restart
            with leadership(settings, stopping) as lease:
                if lease is None:
                    break
                # Stored off the cycle's path, each after its batch's confirms.
                positions = PositionWriter(open_positions(settings))
                publisher = amqp_publisher(amqp_uri)
                try:
                    Relay(upstreams, positions, publisher, batch, watch
                          ).run_forever(stopping, poll, lease=lease)
                finally:
                    publisher.close()
                    positions.close()
                    metrics.LEADER.set(0)
    finally:
        for upstream in upstreams.values():
            upstream.close()
    log.info("relay.stopped")
