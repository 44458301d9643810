"""The platform company's feed over real stores: identity and training in-process (training
following identity), read through the gateway's PlatformFeed as the platform would, with its
cursor, its types and its organisation's consents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.identity.application import IdentityApplication
from services.identity.domain.values import Amenity, ConsentScope
from services.identity.public_events import CATALOGUE as IDENTITY_EVENTS
from services.platform.application import PlatformFeed
from services.platform.cursor import decode
from services.training.application import TrainingApplication
from services.training.domain.values import (
    CompletionResult,
    CourseFormat,
    InstructorKind,
    Track,
)
from services.training.public_events import CATALOGUE as TRAINING_EVENTS
from shared.errors import InvalidArgument
from shared.followers import Follower, LocalFeed
from shared.grpc.upstream import LocalUpstream
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for

ADMIN = actor("city", "city_admin")
PHONE = "13812345678"
RIDER_TYPES = ["qiji.identity.v1.RiderRegistered", "qiji.identity.v1.RiderVerified",
               "qiji.training.v1.PreJobCertified"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(store_env):
    clock = Clock()
    identity = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    training = TrainingApplication(settings_for("training", store_env), MASTER_KEY, clock=clock)
    training.identity_follower = Follower(training, LocalFeed(identity),
                                          training.follow_identity,
                                          topics=TrainingApplication.IDENTITY_TOPICS)
    made = build_city(in_application(identity), also=("provider",))
    street, platform, station = made.street, made.platform, made.station
    university = made.provider
    other = made.add("other", "PLATFORM", "Other Co")
    with as_actor(ADMIN):
        space = identity.create_service_space(
            street_id=street, name="荷花池驿站", address="北大街 1 号",
            amenities=[Amenity.REST], opening_hours=[])["service_space_id"]
    feed = PlatformFeed({"identity": LocalUpstream(identity, IDENTITY_EVENTS),
                         "training": LocalUpstream(training, TRAINING_EVENTS)})
    yield {"identity": identity, "training": training, "clock": clock, "feed": feed,
           "street": street, "platform": platform, "other": other, "station": station,
           "university": university, "space": space}
    training.close()
    identity.close()


def platform_actor(w):
    return actor("platform-co", "platform", organisation_id=w["platform"])


def register(w, number: int, *, verify: bool = True) -> str:
    with as_actor(platform_actor(w)):
        rider = w["identity"].register_rider(
            platform_id=w["platform"], platform_rider_id=f"R{number}", name="王骑手",
            phone=PHONE, national_id="", home_street_id=w["street"],
            station_id=w["station"])["rider_id"]
        if verify:
            w["identity"].verify_rider(rider_id=rider)
    return rider


def certify(w, rider: str) -> None:
    t, clock = w["training"], w["clock"]
    with as_actor(ADMIN):
        course = t.draft_course(
            track=Track.SKILLS, title="安全骑行", description="", hours="2",
            formats=[CourseFormat.CLASSROOM], provider_id=w["university"],
            instructor_name="张老师", instructor_kind=InstructorKind.TEACHER)["course_id"]
        t.publish_course(course_id=course)
        t.set_pre_job_courses(course_ids=[course])
        starts = clock() + timedelta(hours=1)
        session = t.schedule_session(course_id=course, service_space_id=w["space"],
                                     starts_at=starts, ends_at=starts + timedelta(hours=2),
                                     capacity=5)["session_id"]
    with as_actor(platform_actor(w)):
        t.enrol_rider(session_id=session, rider_id=rider)
        clock.now += timedelta(hours=1)
        t.check_in_rider(session_id=session, rider_id=rider)
        t.record_completion(session_id=session, rider_id=rider,
                            result=CompletionResult.PASSED, score=95)


def read_all(w, organisation: str, types=(), cursor: str = "", page_size: int = 2):
    """Pages through the feed from `cursor` to the end; returns (events, final cursor)."""
    feed = w["feed"]
    positions = feed.decode_cursor(cursor)
    events = []
    while True:
        page = feed.read(positions, page_size, list(types), organisation)
        events += [(json.loads(e.text_data), e, c) for e, c in page.events]
        positions = page.positions
        if page.caught_up:
            return events, page.next_cursor


def test_a_rider_is_registered_verified_and_certified_in_order_with_a_cursor(world):
    rider = register(world, 1)
    certify(world, rider)
    events, cursor = read_all(world, world["platform"], RIDER_TYPES)
    assert [e.type for _, e, _ in events] == RIDER_TYPES
    assert {e.attributes["subject"].ce_string for _, e, _ in events} == {rider}
    assert all(e.attributes["datacontenttype"].ce_string == "application/json"
               for _, e, _ in events)
    assert events[2][0]["rider_id"] == rider
    # Nothing new: the final cursor reads nothing; a cursor after the first event reads the rest.
    assert read_all(world, world["platform"], RIDER_TYPES, cursor)[0] == []
    rest, _ = read_all(world, world["platform"], RIDER_TYPES, events[0][2])
    assert [e.id for _, e, _ in rest] == [e.id for _, e, _ in events[1:]]


def test_event_ids_are_stable_across_reads(world):
    register(world, 1)
    first, _ = read_all(world, world["platform"])
    again, _ = read_all(world, world["platform"], page_size=100)
    assert [e.id for _, e, _ in first] == [e.id for _, e, _ in again]
    assert len({e.id for _, e, _ in first}) == len(first)


def test_internal_events_are_left_out_but_the_cursor_moves_past_them(world):
    register(world, 1, verify=False)
    events, cursor = read_all(world, world["platform"])
    assert [e.type for _, e, _ in events] == ["qiji.identity.v1.RiderRegistered"]
    # Organisations and service spaces are internal: the cursor is past all of them.
    assert decode(cursor, ["identity", "training"])["identity"] == (
        world["identity"].last_position() + 1)


def test_without_consent_no_name_or_phone_is_sent(world):
    register(world, 1)
    events, _ = read_all(world, world["platform"])
    assert events and all(PHONE not in e.text_data and "王骑手" not in e.text_data
                          for _, e, _ in events)


def test_consent_opens_the_phone_to_its_organisation_only_until_withdrawn(world):
    rider = register(world, 1)
    with as_actor(platform_actor(world)):
        consent = world["identity"].grant_consent(
            rider_id=rider, scope=ConsentScope.PHONE,
            recipient_id=world["platform"])["consent_id"]
    events, cursor = read_all(world, world["platform"])
    registered = next(d for d, e, _ in events if e.type.endswith("RiderRegistered"))
    assert registered["phone"] == PHONE and "name" not in registered
    granted = next(d for d, e, _ in events if e.type.endswith("RiderConsentGranted"))
    assert granted["scope"] == "PHONE" and granted["phone"] == PHONE
    others, _ = read_all(world, world["other"])
    assert all(PHONE not in e.text_data for _, e, _ in others)
    assert not any(e.type.endswith("RiderConsentGranted") for _, e, _ in others)

    with as_actor(platform_actor(world)):
        world["identity"].withdraw_consent(rider_id=rider, consent_id=consent)
    after, _ = read_all(world, world["platform"], cursor=cursor)
    assert [(e.type, d["scope"]) for d, e, _ in after] == [
        ("qiji.identity.v1.RiderConsentWithdrawn", "PHONE")]
    # From then on the phone is gone everywhere, also from a replay of the whole history.
    replay, _ = read_all(world, world["platform"])
    assert all(PHONE not in e.text_data for _, e, _ in replay)


def test_unknown_types_and_bad_cursors_are_invalid_arguments(world):
    with pytest.raises(InvalidArgument) as error:
        world["feed"].read(world["feed"].decode_cursor(""), 10, ["qiji.badges.v1.Nope"], "")
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("types", "EVENT_TYPE_UNKNOWN")]
    assert "qiji.badges.v1.Nope" in error.value.violations[0].description
    with pytest.raises(InvalidArgument) as bad_cursor:
        world["feed"].decode_cursor("not-a-cursor")
    assert bad_cursor.value.reason == "CURSOR_INVALID"


# ---------------------------------------------------------------------------- limits


def test_a_feed_limit_above_the_maximum_is_coerced_to_it_and_only_a_negative_one_refused(
        world, monkeypatch):
    """AIP-158, as for page sizes: a reader asking for more than a batch holds gets a full
    batch and reads on from next_position. (The maximum, 1000, made 2 here: the same code
    path without a thousand events to write.)"""
    import threading

    from qiji.feed.v1 import feed_service_pb2 as feed_pb
    from qiji.feed.v1 import public_feed_service_pb2 as public_pb

    from shared.grpc import feed
    from shared.grpc.public_feed import read_public

    for number in range(3):
        register(world, number)  # registered and verified: six public events
    identity = world["identity"]
    internal = feed.FeedServicer(identity, threading.Event())
    assert len(internal.ReadEvents(feed_pb.ReadEventsRequest(limit=5000), None).events) == (
        identity.last_position())  # not refused: the whole (short) log
    monkeypatch.setattr(feed, "MAX_LIMIT", 2)
    batch = internal.ReadEvents(feed_pb.ReadEventsRequest(limit=5000), None)
    assert [e.position for e in batch.events] == [1, 2] and batch.next_position == 3

    public = [n.id for n in identity.read_log(1, 10_000, IDENTITY_EVENTS.topics_for([]))]
    read = read_public(identity, IDENTITY_EVENTS, public_pb.ReadPublicEventsRequest(
        limit=5000, consumer_organisation_id=world["platform"]))
    assert [e.position for e in read.events] == public[:2]
    assert read.next_position == public[1] + 1
    rest = read_public(identity, IDENTITY_EVENTS, public_pb.ReadPublicEventsRequest(
        from_position=read.next_position, limit=5000,
        consumer_organisation_id=world["platform"]))
    assert [e.position for e in rest.events] == public[2:4]

    with pytest.raises(InvalidArgument) as refused:
        internal.ReadEvents(feed_pb.ReadEventsRequest(limit=-1), None)
    assert [(v.field, v.reason) for v in refused.value.violations] == [
        ("limit", "VALUE_OUT_OF_RANGE")]
    with pytest.raises(InvalidArgument) as refused_public:
        read_public(identity, IDENTITY_EVENTS, public_pb.ReadPublicEventsRequest(limit=-1))
    assert [(v.field, v.reason) for v in refused_public.value.violations] == [
        ("limit", "VALUE_OUT_OF_RANGE")]


def test_a_rider_certified_before_verification_reaches_their_platform_feed(world):
    """Pre-job training comes first: the platform learns of the certification of a rider it
    has not verified yet, as of any other of its riders, and verifies them afterwards."""
    rider = register(world, 1, verify=False)
    certify(world, rider)
    with as_actor(platform_actor(world)):
        world["identity"].verify_rider(rider_id=rider)
    events, _ = read_all(world, world["platform"], RIDER_TYPES)
    assert [e.type for _, e, _ in events] == ["qiji.identity.v1.RiderRegistered",
                                              "qiji.training.v1.PreJobCertified",
                                              "qiji.identity.v1.RiderVerified"]
    assert events[1][0]["rider_id"] == rider
    # Another platform's feed does not carry it.
    assert read_all(world, world["other"], ["qiji.training.v1.PreJobCertified"])[0] == []
