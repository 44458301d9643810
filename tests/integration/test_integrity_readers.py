"""Nothing acts on a forged event: the attack of issue 15 on PostgreSQL. A copy of one rider's
`Rider.Verified` row is inserted by SQL as the next version of another rider. Training's
follower must not act on it, the relay must not publish it (under any CloudEvent id), the
platform gateway must not pass it, and none of them may skip it: they stop there, say so, and
go on once the row is removed."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from qiji.feed.v1.feed_service_pb2 import ReadEventsRequest
from qiji.feed.v1.public_feed_service_pb2 import ReadPublicEventsRequest

from services.identity.application import IdentityApplication
from services.identity.public_events import CATALOGUE as IDENTITY_PUBLIC
from services.platform.application import PlatformFeed
from services.relay.relay import Relay
from services.training.application import TrainingApplication
from services.training.domain.model import Learner
from shared.continuity import EventsTable, read_checked
from shared.errors import DataLoss
from shared.followers import Follower, LocalFeed
from shared.grpc.feed import FeedServicer
from shared.grpc.public_feed import read_public
from shared.grpc.upstream import LocalUpstream
from shared.integrity import ALARM, EventIntegrityError
from shared.metrics import REGISTRY
from shared.store import postgres_conninfo
from tests.conftest import MASTER_KEY, MemoryPositions, as_actor, settings_for
from tests.integration.test_audit import ADMIN, city, forge_verified, register

pytestmark = pytest.mark.postgres


@pytest.fixture
def world(postgres_env):
    identity = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    training = TrainingApplication(settings_for("training", {
        **postgres_env, "QIJI_POSTGRES_SCHEMA": postgres_env["QIJI_POSTGRES_SCHEMA"] + "_t"}),
        MASTER_KEY)
    follower = Follower(training, LocalFeed(identity), training.follow_identity,
                        topics=TrainingApplication.IDENTITY_TOPICS)
    published: list[tuple[str, dict]] = []
    relay = Relay({"identity": LocalUpstream(identity, IDENTITY_PUBLIC)}, MemoryPositions(),
                  lambda type_name, event: published.append((type_name, event)))
    gateway = PlatformFeed({"identity": LocalUpstream(identity, IDENTITY_PUBLIC)})
    orgs = city(identity)
    verified, victim = register(identity, orgs, range(2))
    with as_actor(ADMIN):
        identity.verify_rider(rider_id=verified)
    conn = psycopg.connect(postgres_conninfo(identity.settings), autocommit=True)
    table = f'"{identity.settings.postgres_schema}".identity_events'
    (victim_registered,) = conn.execute(f"SELECT notification_id FROM {table} WHERE "
                                        "originator_id = %s", (victim,)).fetchone()
    yield {"victim_registered": victim_registered, "identity": identity, "training": training,
           "follower": follower, "relay": relay, "published": published, "gateway": gateway,
           "orgs": orgs, "verified": verified, "victim": victim, "conn": conn, "table": table}
    conn.close()
    training.close()
    identity.close()


def learner_verified(training: TrainingApplication, rider: str) -> bool:
    return training.get(Learner.create_id(rider), Learner, "learner").verified


def relayed(world: dict, type_name: str, rider: str) -> list[dict]:
    """What the relay published about `rider` (to the rider's platform: the key ends in the
    type)."""
    return [e for key, e in world["published"]
            if key.endswith(f".{type_name}") and e["subject"] == rider]


def intact(reader: str) -> float | None:
    return REGISTRY.get_sample_value("qiji_audit_intact", {"log": "identity", "reader": reader})


def test_a_forged_next_version_is_neither_followed_nor_published_nor_skipped(world):
    identity, follower, relay = world["identity"], world["follower"], world["relay"]
    state = relay.services["identity"]
    follower.run_once()
    relay.run_once(state)
    assert learner_verified(world["training"], world["verified"])
    assert not learner_verified(world["training"], world["victim"])
    assert relayed(world, "qiji.identity.v1.RiderVerified", world["verified"])

    forged = forge_verified(world["conn"], world["table"], world["victim"], world["verified"])
    later = register(identity, world["orgs"], range(5, 6))[0]  # genuine, after the forgery

    # Training's follower stops at the forgery: it does not verify the victim, nor take in
    # the genuine rider after it, and says where it stopped.
    assert follower.run_once() == 0
    assert follower.stopped_at == forged
    assert follower.position < forged
    assert not learner_verified(world["training"], world["victim"])
    assert not world["training"].exists(Learner.create_id(later))
    assert intact("training.follower") == 0
    # A request naming the rider after it is told why, not "not found".
    with pytest.raises(DataLoss) as stopped:
        follower.catch_up()
    assert stopped.value.reason == "UPSTREAM_INTEGRITY_FAILED"
    assert stopped.value.metadata["position"] == str(forged)

    # The relay publishes nothing of it, nor after it; it stores the position it stopped at.
    published = len(world["published"])
    relay.run_once(state)
    assert len(world["published"]) == published
    assert not relayed(world, "qiji.identity.v1.RiderVerified", world["victim"])
    assert not relayed(world, "qiji.identity.v1.RiderRegistered", later)
    assert (state.stopped_at, state.next_position) == (forged, forged)
    assert intact("relay") == 0

    # The riders' platform reading the gateway from the start gets what came before, and a cursor
    # that stops there: even before the forgery, at the victim's own registration, whose
    # public form is built from the rider as stored today (consent), forgery included.
    page = world["gateway"].read({"identity": 1}, 1000, [], world["orgs"]["platform"])
    subjects = [(e.type, e.attributes["subject"].ce_string) for e, _ in page.events]
    assert ("qiji.identity.v1.RiderRegistered", world["verified"]) in subjects
    assert ("qiji.identity.v1.RiderVerified", world["victim"]) not in subjects
    assert ("qiji.identity.v1.RiderRegistered", later) not in subjects
    assert page.positions["identity"] == world["victim_registered"] < forged
    assert not page.caught_up
    assert intact("platform") == 0

    # identity itself: its view of riders is stopped there, and a list needing it is refused
    # (DATA_LOSS) rather than answered without what came after.
    with pytest.raises(EventIntegrityError):
        identity.views.catch_up()
    assert {b.reader for b in ALARM.found() if b.log == "identity"} >= {
        "training.follower", "relay", "platform", "identity.view.identity",
        "identity.public-feed"}

    # Repaired (the forged row removed): everyone goes on from where they stopped, and the
    # genuine rider after it arrives; the victim was never verified anywhere.
    world["conn"].execute(f"DELETE FROM {world['table']} WHERE notification_id = %s", (forged,))
    follower.run_once()
    relay.run_once(state)
    identity.views.catch_up()
    assert world["training"].exists(Learner.create_id(later))
    assert not learner_verified(world["training"], world["victim"])
    assert relayed(world, "qiji.identity.v1.RiderRegistered", later)
    assert not relayed(world, "qiji.identity.v1.RiderVerified", world["victim"])
    assert state.stopped_at == 0 and follower.stopped_at == 0
    assert intact("relay") == intact("training.follower") == 1


def test_the_public_feed_names_where_it_stopped_and_why(world):
    forged = forge_verified(world["conn"], world["table"], world["victim"], world["verified"])
    after_victim = world["victim_registered"] + 1
    platform = world["orgs"]["platform"]  # the riders' platform reads them
    reply = read_public(world["identity"], IDENTITY_PUBLIC, ReadPublicEventsRequest(
        from_position=after_victim, limit=1000, consumer_organisation_id=platform))
    assert (reply.integrity_failure.position, reply.next_position) == (forged, forged)
    assert "MAC" in reply.integrity_failure.problem
    assert [e.position for e in reply.events] == [forged - 1]  # the genuine RiderVerified
    # From the start: the victim's registration is rendered from the rider as stored today,
    # which holds the forgery: it stops there, and says which stored event it needs.
    reply = read_public(world["identity"], IDENTITY_PUBLIC, ReadPublicEventsRequest(
        limit=1000, consumer_organisation_id=platform))
    assert reply.integrity_failure.position == world["victim_registered"]
    assert f"{world['victim']} v2" in reply.integrity_failure.problem
    assert all(e.position < world["victim_registered"] for e in reply.events)
    assert not any(json.loads(e.event.text_data).get("rider_id") == world["victim"]
                   for e in reply.events)


# ----------------------------------------------------------------------- a moved genuine event
# The MAC covers an event's aggregate, version, topic and content, not its position: the
# lifting of a suspension (v3) deleted and stored again, unchanged, at the end of the log after
# the suspension that followed it (v4).


def move_to_the_end(world: dict, rider: str, topic_end: str) -> int:
    """Deletes the rider's event whose topic ends in `topic_end` and stores it again, byte for
    byte, after everything else: its new position."""
    conn, table = world["conn"], world["table"]
    with conn.transaction():
        row = conn.execute(f"DELETE FROM {table} WHERE originator_id = %s AND topic LIKE %s"
                           " RETURNING originator_id, originator_version, topic, state",
                           (rider, f"%{topic_end}")).fetchone()
        conn.execute(f"INSERT INTO {table} (originator_id, originator_version, topic, state)"
                     " VALUES (%s, %s, %s, %s)", row)
    return conn.execute(f"SELECT max(notification_id) FROM {table}").fetchone()[0]


def test_a_genuine_event_moved_later_in_the_log_is_acted_on_by_no_reader(world):
    identity, training, follower, relay = (world["identity"], world["training"],
                                           world["follower"], world["relay"])
    rider, state = world["victim"], relay.services["identity"]
    with as_actor(ADMIN):
        identity.suspend_rider(rider_id=rider, reason="a")
        identity.reinstate_rider(rider_id=rider, reason="b")
        identity.suspend_rider(rider_id=rider, reason="c")
    follower.run_once()
    relay.run_once(state)
    identity.views.catch_up()
    suspended = learner(training, rider).suspended
    assert suspended

    moved = move_to_the_end(world, rider, "Rider.Reinstated")
    published = len(world["published"])
    # Training does not lift the suspension a second time, out of order.
    assert follower.run_once() == 0
    assert follower.stopped_at == moved and intact("training.follower") == 0
    training.repository.cache.__init__(maxsize=10)
    assert learner(training, rider).suspended
    # The relay publishes nothing again; identity's own view of riders stops there.
    relay.run_once(state)
    assert len(world["published"]) == published and state.stopped_at == moved
    with pytest.raises(EventIntegrityError):
        identity.views.catch_up()
    # Read over the network, identity's feed says where and why.
    reply = FeedServicer(identity, threading.Event()).ReadEvents(
        ReadEventsRequest(from_position=moved), None)
    assert (list(reply.events), reply.next_position) == ([], moved)
    assert reply.integrity_failure.position == moved
    assert "version 3 of" in reply.integrity_failure.problem  # registered, suspended, lifted
    assert "comes after its version 4" in reply.integrity_failure.problem
    # A reader from the start stops where the event is missing from its place.
    _, failure = read_checked(identity, 1, 1000)
    assert failure is not None and failure.position < moved
    assert "version 4 of" in failure.problem and "comes before its version 3" in failure.problem


def test_the_public_feeds_one_statement_reads_what_its_three_did(world):
    """The public feed reads the last position, the page and each event's neighbours in one
    statement on PostgreSQL (issue 20). It must give exactly what the three separate reads give
    — the topics filtered, the limit kept, each neighbour the aggregate's version - 1 and + 1,
    the last position even when the page is empty — or the place check downstream would pass a
    moved event, or the feed skip or repeat one."""
    identity, rider = world["identity"], world["victim"]
    with as_actor(ADMIN):
        identity.suspend_rider(rider_id=rider, reason="a")
        identity.reinstate_rider(rider_id=rider, reason="b")
        identity.suspend_rider(rider_id=rider, reason="c")
    moved = move_to_the_end(world, rider, "Rider.Reinstated")
    table = EventsTable(identity)
    assert table.postgres
    every = IDENTITY_PUBLIC.topics_for([])
    some = IDENTITY_PUBLIC.topics_for(["qiji.identity.v1.RiderSuspended",
                                       "qiji.identity.v1.RiderReinstated"])
    last = identity.last_position()
    for start, limit, topics in [(1, 1000, every), (1, 3, every), (2, 1000, some),
                                 (moved, 10, some), (moved - 1, 1, some), (last + 1, 10, every)]:
        notifications = identity.read_log(start, limit, topics)
        assert table.read_placed(identity, start, limit, topics) == (
            last, notifications, table.neighbours(
                [(n.id, n.originator_id, n.originator_version) for n in notifications])), (
            start, limit, topics)
    # The moved event shows out of place in the combined read's answer.
    _, page, neighbours = table.read_placed(identity, moved, 10, some)
    assert [n.id for n in page] == [moved]
    (before, after), = neighbours
    assert before is not None and after is not None and after < moved


def learner(training: TrainingApplication, rider: str) -> Learner:
    return training.get(Learner.create_id(rider), Learner, "learner")


# ----------------------------------------------------------------------- when an alarm clears


def test_a_read_that_looks_elsewhere_does_not_clear_the_alarm(world):
    """Consumers read the public feed from their own cursors, for their own types: the relay
    stopped at a forged row stays stopped, and says so, whatever others read meanwhile."""
    identity, relay, gateway = world["identity"], world["relay"], world["gateway"]
    state = relay.services["identity"]
    forged = forge_verified(world["conn"], world["table"], world["victim"], world["verified"])
    platform = world["orgs"]["platform"]
    for _ in range(2):
        relay.run_once(state)
        gateway.read({"identity": 1}, 1000, [], platform)
        assert intact("identity.public-feed") == intact("platform") == 0
        # A witness reading only checkpoints, the platform reading after the forged row:
        # neither passed where those stopped.
        read_public(identity, IDENTITY_PUBLIC, ReadPublicEventsRequest(
            limit=1000, types=["qiji.identity.v1.LogCheckpointSigned"]))
        read_public(identity, IDENTITY_PUBLIC, ReadPublicEventsRequest(
            from_position=forged + 1, limit=1000, consumer_organisation_id=platform))
        gateway.read({"identity": 1}, 1000, ["qiji.identity.v1.LogCheckpointSigned"], platform)
        gateway.read({"identity": forged + 1}, 1000, [], platform)
        assert intact("identity.public-feed") == intact("platform") == intact("relay") == 0
    # Repaired: the next reads that pass the position clear it.
    world["conn"].execute(f"DELETE FROM {world['table']} WHERE notification_id = %s", (forged,))
    relay.run_once(state)
    gateway.read({"identity": 1}, 1000, [], platform)
    assert intact("identity.public-feed") == intact("platform") == intact("relay") == 1


def test_a_follower_that_stands_down_takes_its_alarm_with_it(world):
    """The leader stopped at a forged row hands over (a restart, a lost lock): its replica no
    longer reads, so neither its metric nor `qiji.integrity` may go on saying it is stopped
    there — after the repair they would page for ever."""
    forged = forge_verified(world["conn"], world["table"], world["victim"], world["verified"])
    register(world["identity"], world["orgs"], range(5, 6))
    follower, stopping = world["follower"], threading.Event()
    heard: list[bool] = []
    ALARM.listen(heard.append)
    try:
        leading = threading.Thread(target=follower.run_forever, args=(stopping, 0.05))
        leading.start()
        deadline = time.monotonic() + 10
        while follower.stopped_at != forged and time.monotonic() < deadline:
            time.sleep(0.05)
        assert intact("training.follower") == 0
        stopping.set()
        leading.join(timeout=10)
    finally:
        ALARM.forget(heard.append)
    assert not leading.is_alive()
    assert "training.follower" not in {b.reader for b in ALARM.found()}
    assert intact("training.follower") is None  # no series: the leader reports
    assert heard[0] is True and heard[-1] is (bool(ALARM.found()))


def test_a_relay_that_stands_down_takes_its_alarm_with_it(world):
    forge_verified(world["conn"], world["table"], world["victim"], world["verified"])
    relay, stopping = world["relay"], threading.Event()
    publishing = threading.Thread(target=relay.run_forever, args=(stopping, 0.05))
    publishing.start()
    deadline = time.monotonic() + 10
    # (At the victim's registration: its public form is built from the rider as stored today.)
    while not relay.services["identity"].stopped_at and time.monotonic() < deadline:
        time.sleep(0.05)
    assert intact("relay") == 0
    stopping.set()
    publishing.join(timeout=10)
    assert not publishing.is_alive()
    assert "relay" not in {b.reader for b in ALARM.found()} and intact("relay") is None
