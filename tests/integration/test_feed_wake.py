"""The feeds wake on the store rather than on the clock (shared/store/wake.py): an event stored
reaches a waiting reader — a service's StreamEvents, a long poll of its public feed, the relay,
the gateway's StreamEvents — well before the fallback poll, which each test sets to 30 s. On
PostgreSQL the event is stored by a second application on the same store (another replica of
the service: only its NOTIFY can tell the reader); on SQLite by the reader's own application
(no NOTIFY there: the in-process wake). And when the notifications are lost, the fallback poll
still delivers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.feed.v1 import public_feed_service_pb2 as public_pb
from qiji.platform.v1 import platform_feed_service_pb2 as platform_pb

import services.platform.grpc_api as platform_api
import shared.grpc.feed as feed_api
import shared.grpc.public_feed as public_api
from services.identity.application import IdentityApplication
from services.identity.public_events import CATALOGUE as IDENTITY_EVENTS
from services.platform.application import PlatformFeed
from services.relay.relay import Relay
from shared.grpc.feed import FeedServicer
from shared.grpc.public_feed import read_public
from shared.grpc.upstream import LocalUpstream, LogWatch
from shared.store.persistence import postgres_conninfo
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, MemoryPositions, actor, as_actor, settings_for

LONG_POLL = 30.0  # the fallback poll of every test but the last: a wake must come first
PROMPT = 3.0  # "well before": generous for a loaded machine, a tenth of the poll
REGISTERED = "qiji.identity.v1.RiderRegistered"


class Active:
    """A gRPC servicer context that stays active until cancelled."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def is_active(self) -> bool:
        return not self.cancelled.is_set()


def started(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(target()), daemon=True)
    thread.start()
    return thread, result


@pytest.fixture
def apps(store_env: dict[str, str]) -> Iterator[tuple[IdentityApplication, IdentityApplication]]:
    """(reader, writer): two applications on one PostgreSQL store, the writer as another
    replica would be; on SQLite one application, reading what it stores itself."""
    reader = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    writer = reader
    if store_env.get("QIJI_PERSISTENCE") == "postgres":
        writer = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        yield reader, writer
    finally:
        if writer is not reader:
            writer.close()
        reader.close()


@pytest.fixture
def long_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_api, "POLL_SECONDS", LONG_POLL)
    monkeypatch.setattr(public_api, "POLL_SECONDS", LONG_POLL)
    monkeypatch.setattr(platform_api, "STREAM_POLL_SECONDS", LONG_POLL)


def listening(app: IdentityApplication) -> None:
    """On PostgreSQL, waits until the reader LISTENs (what is stored before it was read)."""
    app.log_generation()
    if app._listener is not None:
        assert app._listener.listening(10), "the store's notifications were never listened to"


def register(writer: IdentityApplication, tree: dict[str, str], number: int) -> str:
    platform = actor("platform-co", "platform", organisation_id=tree["platform"])
    with as_actor(platform):
        return str(writer.register_rider(
            platform_id=tree["platform"], platform_rider_id=f"W{number}", name="王骑手",
            phone="13812345678", national_id="", home_street_id=tree["street"],
            station_id=tree["station"])["rider_id"])


@pytest.fixture
def tree(apps: tuple[IdentityApplication, IdentityApplication]) -> dict[str, str]:
    made = build_city(in_application(apps[1]))
    return {"street": made.street, "platform": made.platform, "station": made.station}


def long_poll(reader: IdentityApplication, seconds: float = LONG_POLL) -> Any:
    wait = Duration()
    wait.FromSeconds(int(seconds))
    return read_public(reader, IDENTITY_EVENTS, public_pb.ReadPublicEventsRequest(
        from_position=reader.last_position() + 1, all_platforms=True, max_wait=wait))


@pytest.mark.usefixtures("long_polls")
def test_a_long_poll_of_the_public_feed_is_answered_as_soon_as_an_event_is_stored(apps, tree):
    reader, writer = apps
    listening(reader)
    thread, answers = started(lambda: long_poll(reader))
    time.sleep(0.3)  # the poll waits
    assert not answers
    stored = time.monotonic()
    rider = register(writer, tree, 1)
    thread.join(PROMPT)
    assert answers, f"no answer within {PROMPT} s of the store: the long poll polls"
    assert time.monotonic() - stored < PROMPT
    assert [e.event.type for e in answers[0].events] == [REGISTERED]
    assert answers[0].events[0].event.attributes["subject"].ce_string.endswith(rider)


@pytest.mark.usefixtures("long_polls")
def test_a_services_stream_sends_an_event_as_soon_as_it_is_stored(apps, tree):
    reader, writer = apps
    listening(reader)
    context = Active()
    stream = FeedServicer(reader, threading.Event()).StreamEvents(
        feed_pb.StreamEventsRequest(from_position=reader.last_position() + 1), context)
    thread, received = started(lambda: next(stream))
    time.sleep(0.3)
    stored = time.monotonic()
    rider = register(writer, tree, 2)
    thread.join(PROMPT)
    context.cancelled.set()
    assert received, f"nothing streamed within {PROMPT} s of the store: the stream polls"
    assert time.monotonic() - stored < PROMPT
    assert received[0].event.originator_id == rider


class Published(list[tuple[str, dict[str, Any]]]):
    def __call__(self, key: str, event: dict[str, Any]) -> None:
        self.append((key, event))


@contextmanager
def idle_relay(reader: Any, upstream: LocalUpstream) -> Iterator[tuple[Relay, Published]]:
    """A relay of `upstream` on its own thread, with its LogWatch, caught up and then idle
    (waiting on the watch, its fallback poll 30 s away); stopped on leaving."""
    stopping = threading.Event()
    upstreams = {"identity": upstream}
    watch = LogWatch(upstreams, stopping).start()
    published = Published()
    relay = Relay(upstreams, MemoryPositions(), published, watch=watch)
    thread = threading.Thread(target=relay.run_forever, args=(stopping, LONG_POLL),
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while relay.services["identity"].next_position <= reader.last_position():
            assert time.monotonic() < deadline, "the relay never caught up"
            time.sleep(0.05)
        time.sleep(0.5)  # idle
        yield relay, published
    finally:
        stopping.set()
        watch.stop()
        thread.join(5)


def published_at_once(published: Published, store: Callable[[], str]) -> str:
    """Stores an event (`store` returns its rider) and waits for the relay to publish
    something more, at most PROMPT seconds: a relay that polls would take the poll's 30."""
    before = len(published)
    stored = time.monotonic()
    rider = store()
    while len(published) == before and time.monotonic() - stored < PROMPT:
        time.sleep(0.01)
    assert len(published) > before, f"not published within {PROMPT} s: the relay polls"
    return rider


@pytest.mark.usefixtures("long_polls")
def test_the_relay_publishes_an_event_as_soon_as_it_is_stored_not_at_its_poll(apps, tree):
    reader, writer = apps
    listening(reader)
    with idle_relay(reader, LocalUpstream(reader, IDENTITY_EVENTS)) as (_, published):
        rider = published_at_once(published, lambda: register(writer, tree, 3))
        _, event = published[-1]
        assert event["type"] == REGISTERED and event["subject"].endswith(rider)


class Counted(LocalUpstream):
    """A service's public feed that notes each read: (from_position, held as a long poll)."""

    def __init__(self, app: Any, catalogue: Any):
        super().__init__(app, catalogue)
        self.reads: list[tuple[int, bool]] = []

    def read_public_events(self, request: Any) -> Any:
        self.reads.append((request.from_position, request.HasField("max_wait")))
        return super().read_public_events(request)


@pytest.mark.usefixtures("long_polls")
def test_an_idle_relay_gets_an_event_in_one_call_the_watch_long_polling_its_own_read(apps, tree):
    """Issue 20: the watch long-polls the relay's next read itself and hands it the answer;
    the relay does not read the same position again (one call, not two, on the event's way)."""
    reader, writer = apps
    listening(reader)
    upstream = Counted(reader, IDENTITY_EVENTS)
    with idle_relay(reader, upstream) as (relay, published):  # the watch holds its next read
        waiting_at = relay.services["identity"].next_position
        rider = published_at_once(published, lambda: register(writer, tree, 4))
        assert published[-1][1]["subject"].endswith(rider)
        time.sleep(0.2)
        from_there = [held for position, held in upstream.reads if position == waiting_at]
        assert from_there == [True], from_there  # the long poll only: no second read


@pytest.mark.usefixtures("long_polls")
def test_the_gateways_stream_sends_an_event_as_soon_as_it_is_stored(apps, tree):
    reader, writer = apps
    listening(reader)
    stopping = threading.Event()
    upstreams = {"identity": LocalUpstream(reader, IDENTITY_EVENTS)}
    watch = LogWatch(upstreams, stopping).start()
    servicer = platform_api.PlatformFeedServicer(PlatformFeed(upstreams, watch), stopping)
    context = Active()
    platform = actor("platform-co", "platform", organisation_id=tree["platform"])

    def first() -> Any:
        with as_actor(platform):
            return next(servicer.StreamEvents(
                platform_pb.StreamEventsRequest(types=[REGISTERED]), context))

    thread, received = started(first)
    try:
        time.sleep(0.5)  # the stream read everything (nothing of the type) and waits
        assert not received
        stored = time.monotonic()
        rider = register(writer, tree, 4)
        thread.join(PROMPT)
        assert received, f"nothing streamed within {PROMPT} s of the store: the stream polls"
        assert time.monotonic() - stored < PROMPT
        assert received[0].event.event.attributes["subject"].ce_string.endswith(rider)
    finally:
        context.cancelled.set()
        stopping.set()
        watch.stop()


@pytest.mark.postgres
def test_without_notifications_the_fallback_poll_still_delivers_and_listening_comes_back(
        postgres_env, monkeypatch):
    """The listening connection is killed (its notifications lost with it): what is stored
    meanwhile reaches a long poll by the fallback poll; the listener connects again and wakes
    readers at once after that."""
    monkeypatch.setattr(public_api, "POLL_SECONDS", 0.5)
    reader = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    writer = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    try:
        made = build_city(in_application(writer))
        tree = {"street": made.street, "platform": made.platform, "station": made.station}
        listening(reader)
        listener = reader._listener
        assert listener is not None
        # Lose the notifications: the listener's connection dies and cannot be made again
        # for now, so no wake comes.
        connect, away = listener._connect, threading.Event()

        def refused() -> Any:
            if away.is_set():
                raise psycopg.OperationalError("the store cannot be reached (test)")
            return connect()

        away.set()
        monkeypatch.setattr(listener, "_connect", refused)
        with psycopg.connect(postgres_conninfo(reader.settings), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query ILIKE 'LISTEN%%' AND datname = current_database()").fetchall()
        assert killed
        deadline = time.monotonic() + 5
        while listener._listening.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        thread, answers = started(lambda: long_poll(reader, 20))
        time.sleep(0.2)
        register(writer, tree, 5)
        thread.join(2.5)  # the 0.5 s poll, not a wake (none can come: nobody listens)
        assert answers and [e.event.type for e in answers[0].events] == [REGISTERED]
        # Back after its backoff; a wake is prompt again (the poll is made long).
        away.clear()
        assert listener.listening(10)
        monkeypatch.setattr(public_api, "POLL_SECONDS", LONG_POLL)
        thread, answers = started(lambda: long_poll(reader))
        time.sleep(0.3)
        stored = time.monotonic()
        register(writer, tree, 6)
        thread.join(PROMPT)
        assert answers and time.monotonic() - stored < PROMPT
    finally:
        writer.close()
        reader.close()
