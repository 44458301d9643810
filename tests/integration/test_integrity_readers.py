"""Nothing acts on a forged event: the attack of issue 15 on PostgreSQL. A copy of one rider's
`Rider.Verified` row is inserted by SQL as the next version of another rider. Training's
follower must not act on it, the relay must not publish it (under any CloudEvent id), the
platform gateway must not pass it, and none of them may skip it: they stop there, say so, and
go on once the row is removed."""

from __future__ import annotations

import json

import psycopg
import pytest
from qiji.feed.v1.public_feed_service_pb2 import ReadPublicEventsRequest

from services.identity.application import IdentityApplication
from services.identity.public_events import CATALOGUE as IDENTITY_PUBLIC
from services.platform.application import LocalUpstream, PlatformFeed
from services.relay.relay import Relay
from services.training.application import TrainingApplication
from services.training.domain.model import Learner
from shared.errors import DataLoss
from shared.followers import Follower, LocalFeed
from shared.grpc.public_feed import read_public
from shared.integrity import ALARM, EventIntegrityError
from shared.metrics import REGISTRY
from shared.persistence import postgres_conninfo
from tests.conftest import MASTER_KEY, as_actor, settings_for
from tests.integration.test_audit import ADMIN, city, forge_verified, register

pytestmark = pytest.mark.postgres


class Positions:
    """The relay's positions, in memory."""

    def __init__(self) -> None:
        self.stored: dict[str, int] = {}

    def load(self) -> dict[str, int]:
        return dict(self.stored)

    def save(self, service: str, next_position: int) -> None:
        self.stored[service] = next_position

    def close(self) -> None:
        pass


@pytest.fixture
def world(postgres_env):
    identity = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    training = TrainingApplication(settings_for("training", {
        **postgres_env, "QIJI_POSTGRES_SCHEMA": postgres_env["QIJI_POSTGRES_SCHEMA"] + "_t"}),
        MASTER_KEY)
    follower = Follower(training, LocalFeed(identity), training.follow_identity,
                        topics=TrainingApplication.IDENTITY_TOPICS)
    published: list[tuple[str, dict]] = []
    relay = Relay({"identity": LocalUpstream(identity, IDENTITY_PUBLIC)}, Positions(),
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
