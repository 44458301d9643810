"""A follower applies a batch of upstream events in one transaction with one tracking record
(shared/followers.py), and passes events its policy ignores without a write: each upstream
event still takes effect exactly once, across a crash mid-batch, a restart and a second
replica."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import IntegrityError

from services.identity import events as identity_events
from services.identity.application import IdentityApplication
from services.training import events as training_events
from services.training.application import TrainingApplication
from services.training.domain.model import Learner
from shared import followers, metrics
from shared.followers import Follower, LocalFeed
from shared.store import BatchTracking
from shared.views import LogFollower
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for

ADMIN = actor("city", "city_admin")
PLATFORM = actor("platform-co", "platform")
LEARNER_CREATED = training_events.LEARNER_NOTED


@pytest.fixture
def world(store_env):
    identity = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    training = TrainingApplication(settings_for("training", store_env), MASTER_KEY)
    city = build_city(in_application(identity))
    yield {"identity": identity, "training": training, "city": city, "env": store_env}
    training.close()
    identity.close()


def register(w, count: int, *, verify: bool = False) -> list[str]:
    riders = []
    for _ in range(count):
        n = len(w.setdefault("riders", [])) + 1
        with as_actor(PLATFORM):
            rider = w["identity"].register_rider(
                platform_id=w["city"].platform, platform_rider_id=f"R{n}", name="骑手",
                phone="13812345678", national_id="", home_street_id=w["city"].street,
                station_id=w["city"].station)["rider_id"]
        if verify:
            with as_actor(ADMIN):
                w["identity"].verify_rider(rider_id=rider)
        w["riders"].append(rider)
        riders.append(rider)
    return riders


def follower(w, policy=None, topics=TrainingApplication.IDENTITY_TOPICS,
             training=None, looks_up=None) -> Follower:
    training = training or w["training"]
    return Follower(training, LocalFeed(w["identity"]), policy or training.follow_identity,
                    topics=topics, looks_up=looks_up)


def learners_created(training) -> int:
    return sum(1 for n in training.read_log(1, 100_000) if n.topic == LEARNER_CREATED)


def tracked(training) -> int:
    return training.recorder.max_tracking_id("identity") or 0


def test_a_crash_inside_a_batch_stores_none_of_it_and_the_restart_applies_each_once(world):
    register(world, 6)
    seen: list[int] = []

    def crashing(upstream, processing):
        if upstream.topic == identity_events.RIDER_REGISTERED and len(seen) == 3:
            raise SystemExit("killed")  # the process dies in the middle of the batch
        if upstream.topic == identity_events.RIDER_REGISTERED:
            seen.append(upstream.position)
        world["training"].follow_identity(upstream, processing)

    with pytest.raises(SystemExit):
        follower(world, crashing).run_once()
    # Nothing partial: not the three learners decided before the crash, nor their position.
    assert learners_created(world["training"]) == 0
    assert tracked(world["training"]) == 0
    world["training"].close()
    world["training"] = TrainingApplication(settings_for("training", world["env"]), MASTER_KEY)
    restarted = follower(world)
    assert restarted.position == 0
    restarted.run_once()
    assert learners_created(world["training"]) == 6
    assert restarted.run_once() == 0  # nothing twice
    assert learners_created(world["training"]) == 6


def test_later_events_of_a_batch_decide_on_what_earlier_ones_changed(world, monkeypatch):
    # Registered, verified and suspended in one batch: the learner created by the first is
    # read, not yet committed, by the policies of the next two.
    [rider] = register(world, 1, verify=True)
    with as_actor(ADMIN):
        world["identity"].suspend_rider(rider_id=rider, reason="complaint")
    f = follower(world)

    def one_by_one(_event):
        raise AssertionError("the batch met a conflict and went one by one")
    monkeypatch.setattr(f, "process", one_by_one)
    f.run_once()
    assert tracked(world["training"]) == world["identity"].last_position()
    assert learners_created(world["training"]) == 1
    learner = world["training"].get(Learner.create_id(rider), Learner, "learner")
    assert (learner.verified, learner.suspended) == (True, True)


def test_events_passed_over_are_tracked_with_the_next_reaction_or_every_track_every(
        world, monkeypatch):
    monkeypatch.setattr(followers, "TRACK_EVERY", 10)
    register(world, 2)
    start = world["identity"].last_position()
    reacted: list[int] = []

    def registrations_only(upstream, processing):
        # Passes over everything but the riders registered from here on.
        if upstream.position > start and upstream.topic == identity_events.RIDER_REGISTERED:
            reacted.append(upstream.position)
            world["training"].follow_identity(upstream, processing)

    f = follower(world, registrations_only)
    f.run_once()
    # Fewer than TRACK_EVERY positions passed: no write at all, the position in memory.
    assert tracked(world["training"]) == 0
    assert f.position == start
    register(world, 1)
    f.run_once()
    # The reaction's tracking record covers what was passed before it.
    assert len(reacted) == 1 and reacted[0] > start
    assert tracked(world["training"]) == reacted[0]
    # A restart reads nothing again before it: nothing is applied twice.
    again = follower(world, registrations_only)
    assert again.position == f.position
    assert again.run_once() == 0 and reacted == [tracked(world["training"])]
    # Passed over only: a tracking record once TRACK_EVERY positions went by untracked.
    with as_actor(ADMIN):
        for rider in world["riders"]:
            world["identity"].verify_rider(rider_id=rider)
    passer = follower(world, lambda upstream, processing: None, topics=())  # every event
    first = tracked(world["training"])
    passer.run_once()
    assert passer.position == world["identity"].last_position()
    assert tracked(world["training"]) == first  # a handful of positions: in memory only
    register(world, 10)
    passer.run_once()
    assert tracked(world["training"]) == world["identity"].last_position()


def test_a_batch_read_before_another_replica_applied_it_is_refused(world):
    register(world, 3)
    stale = follower(world)
    # Another replica (a request's catch-up on it, say) applies the log first.
    replica = TrainingApplication(settings_for("training", world["env"]), MASTER_KEY)
    try:
        follower(world, training=replica).run_once()
    finally:
        replica.close()
    assert learners_created(world["training"]) == 3
    # The stale one had read the same events after position 0: its batch is refused whole,
    # not stored beside the other's (its one tracking record is at another position).
    events = LocalFeed(world["identity"]).read(1, 1000, TrainingApplication.IDENTITY_TOPICS)
    assert stale._apply(events, 0) is None
    assert learners_created(world["training"]) == 3
    stale.run_once()  # reads again from the tracked position: nothing left to do
    assert learners_created(world["training"]) == 3


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_the_recorder_refuses_a_batch_tracked_past_where_it_was_read(world):
    register(world, 1)
    recorder = world["training"].recorder
    recorder.insert_events([], tracking=BatchTracking("identity", 5, after=0))
    with pytest.raises(IntegrityError):
        recorder.insert_events([], tracking=BatchTracking("identity", 9, after=3))
    recorder.insert_events([], tracking=BatchTracking("identity", 9, after=5))
    assert tracked(world["training"]) == 9


def test_a_lag_of_many_batches_drains_in_one_run_each_event_applied_once(world, monkeypatch):
    monkeypatch.setattr(followers, "BATCH", 4)  # 25 riders: many batches, and a partial last
    register(world, 25, verify=True)
    f = follower(world)
    lag = {"service": "training", "upstream": "identity"}
    metrics.FOLLOWER_LAG.labels("training", "identity").set(5000)  # behind, as after a failover
    f.run_once()
    assert f.position == world["identity"].last_position()
    assert metrics.REGISTRY.get_sample_value("qiji_follower_lag_events", lag) == 0
    assert learners_created(world["training"]) == 25
    assert f.run_once() == 0 and learners_created(world["training"]) == 25


def test_a_policy_reading_a_view_sees_the_reactions_before_it_in_its_batch(world):
    # A view follows the store's committed log: a policy reading one in the middle of a batch
    # (merchants' follow_badges asks its view who holds an award granted a moment before)
    # must see the reactions before it. The follower commits them first, then goes on.
    noted: list[int] = []
    view = LogFollower(world["training"], "test", lambda _position, event: noted.append(
        1 if isinstance(event, Learner.Noted) else 0))
    register(world, 5)
    seen_by_policy: list[int] = []

    def reading_a_view(upstream, processing):
        if upstream.topic == identity_events.RIDER_REGISTERED:
            view.catch_up()
            seen_by_policy.append(sum(noted))
        world["training"].follow_identity(upstream, processing)

    f = follower(world, reading_a_view)
    f.run_once()
    assert seen_by_policy == [0, 1, 2, 3, 4]
    assert learners_created(world["training"]) == 5


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_a_batch_asks_whether_its_learners_exist_in_one_statement(world, monkeypatch):
    # The reacting follower asked `SELECT 1` once per rider registered (42 % of its time):
    # now the batch's learners are asked about together, and nobody asks one by one.
    riders = register(world, 8)
    training = world["training"]
    recorder = training.recorder
    one_by_one: list[object] = []
    together: list[list[object]] = []
    has_events_after, stored_among = recorder.has_events_after, recorder.stored_among
    learner_ids = {Learner.create_id(r) for r in riders}

    def counted_one(ident, version):
        if ident in learner_ids:
            one_by_one.append(ident)
        return has_events_after(ident, version)

    def counted_together(idents):
        together.append(list(idents))
        return stored_among(idents)

    monkeypatch.setattr(recorder, "has_events_after", counted_one)
    monkeypatch.setattr(recorder, "stored_among", counted_together)
    monkeypatch.setattr(training.aggregates, "_newer_than", counted_one)
    monkeypatch.setattr(training.aggregates, "_stored_among", counted_together)
    follower(world, looks_up=training.identity_learners).run_once()
    assert learners_created(training) == 8
    assert not one_by_one
    assert len(together) == 1 and set(together[0]) == learner_ids


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_a_learner_stored_meanwhile_is_not_created_twice(world, monkeypatch):
    # The batch's answer "not stored" can be overtaken by another writer before the batch is
    # stored: its creation then conflicts, and the event is decided again, one by one.
    riders = register(world, 3)
    training = world["training"]
    stored_among = training.aggregates._stored_among

    def then_another_writer(idents):
        found = stored_among(idents)
        if not getattr(then_another_writer, "done", False):
            then_another_writer.done = True  # type: ignore[attr-defined]
            training.save(Learner(rider_id=riders[1]))  # another replica, meanwhile
        return found

    monkeypatch.setattr(training.aggregates, "_stored_among", then_another_writer)
    reader = follower(world, looks_up=training.identity_learners)
    reader.run_once()
    assert getattr(then_another_writer, "done", False)
    assert learners_created(training) == 3  # one each, none twice
    assert reader.position == world["identity"].last_position()
