"""Volunteer activities over a real store: a community publishes, riders sign up (exactly the
places, however many race for them), withdraw, are told of a cancellation; attendance confirms
their hours as ConfirmVolunteerService does, and badges follow."""

# badges' own world (tests/integration/test_badges_app.py) is imported, not copied: each test
# naming it as its fixture reads to ruff as a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest

from services.badges.application import BadgesApplication
from services.badges.domain.activities import VolunteerActivityKind, VolunteerSignUpStatus
from services.badges.public_events import CATALOGUE
from services.identity.domain.values import Amenity
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    QijiError,
)
from shared.followers import Follower, LocalFeed
from shared.public_feed import Fact
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for
from tests.integration.test_badges_app import (  # noqa: F401 - `world` is a fixture
    ADMIN,
    ISSUER_KEYS,
    OFFICE,
    PLATFORM,
    URLS,
    criteria,
    new_rider,
    world,
)

COMMUNITY = actor("beidajie-community", "community")


def plan(w, **given):
    now = w["clock"].now
    base = dict(title="助老送餐", description="为独居老人送午餐",
                kind=VolunteerActivityKind.ELDERLY_CARE,
                starts_at=now + timedelta(days=2), ends_at=now + timedelta(days=2, hours=3),
                service_space_id="", address="北大街18号", places=10,
                sign_up_deadline=now + timedelta(days=1))
    return {**base, **given}


def publish(w, **given) -> str:
    with as_actor(ADMIN):
        return w["badges"].publish_volunteer_activity(
            community_id=w["community"], **plan(w, **given))["activity_id"]


def sign_up(w, activity_id, rider_id):
    with as_actor(PLATFORM):
        return w["badges"].sign_up_for_volunteer_activity(activity_id=activity_id,
                                                          rider_id=rider_id)


def attend(w, activity_id, rider_id, hours=""):
    with as_actor(ADMIN):
        return w["badges"].record_volunteer_attendance(activity_id=activity_id,
                                                       rider_id=rider_id, hours=hours)


def activity(w, activity_id):
    return w["badges"].volunteer_activity(activity_id)


def test_riders_sign_up_attend_and_their_hours_are_confirmed_as_volunteer_service(world):
    with as_actor(ADMIN):
        green = world["badges"].create_badge_class(
            name="青蜂骑士", description="", image_url="", issuer_id=world["city"],
            criteria=criteria(min_volunteer_hours="3"), validity_days=0)["badge_class_id"]
    a, b = new_rider(world), new_rider(world)
    activity_id = publish(world)
    sign_up(world, activity_id, a)
    sign_up(world, activity_id, b)
    assert (activity(world, activity_id).places_taken,
            activity(world, activity_id).places_left) == (2, 8)
    world["clock"].now += timedelta(days=2, hours=1)
    whole = attend(world, activity_id, a)
    part = attend(world, activity_id, b, hours="1.5")
    badges = world["badges"]
    # The whole activity (3 h) for a, which meets 青蜂骑士 at once; 1.5 h for b.
    assert len(whole["award_ids"]) == 1
    assert badges.award(whole["award_ids"][0]).badge_class_id == green
    assert part["award_ids"] == []
    shift = badges.shift(whole["shift_id"])
    assert (shift.status, shift.hours, shift.community_id, shift.activity) == (
        "CONFIRMED", Decimal("3.00"), world["community"], "助老送餐")
    with as_actor(PLATFORM):
        _, _, hours = badges.volunteer_service(rider_id=b, status="", page_size=0,
                                               page_token="")
    assert hours == Decimal("1.5")
    roll = {s.rider_id: s for s in badges.volunteer_sign_ups(
        activity_id=activity_id, rider_id="", status=None, page_size=0, page_token="")[0]}
    assert {r: (s.status, s.hours) for r, s in roll.items()} == {
        a: ("ATTENDED", Decimal("3.00")), b: ("ATTENDED", Decimal("1.5"))}


def test_attendance_is_recorded_once_per_rider_per_activity(world):
    rider = new_rider(world)
    activity_id = publish(world)
    sign_up(world, activity_id, rider)
    with pytest.raises(FailedPrecondition) as early:
        attend(world, activity_id, rider)
    assert early.value.reason == "ACTIVITY_NOT_STARTED"
    world["clock"].now += timedelta(days=2)
    first = attend(world, activity_id, rider)
    with pytest.raises(AlreadyExists) as again:
        attend(world, activity_id, rider, hours="1")
    assert again.value.reason == "ATTENDANCE_ALREADY_RECORDED"
    record = world["badges"]._rider_record(rider)
    assert list(record.shifts) == [first["shift_id"]]
    # A rider who never signed up has no attendance to record.
    with pytest.raises(NotFound):
        attend(world, activity_id, new_rider(world))


def test_a_retried_attendance_answers_as_the_first_and_confirms_nothing_more(world):
    rider = new_rider(world)
    activity_id = publish(world)
    sign_up(world, activity_id, rider)
    world["clock"].now += timedelta(days=2)
    request = b"attendance " + rider.encode()

    def record():
        with as_actor(ADMIN, rpc="RecordVolunteerAttendance", request_id="att-1",
                      request=request):
            return world["badges"].record_volunteer_attendance(
                activity_id=activity_id, rider_id=rider, hours="2")
    first = record()
    assert record() == first
    confirmed = [n for n in world["badges"].read_log(1, 10_000)
                 if n.topic.endswith("VolunteerShift.Confirmed")]
    assert len(confirmed) == 1


def test_hours_served_are_bounded_by_the_activitys_length(world):
    rider = new_rider(world)
    activity_id = publish(world)
    sign_up(world, activity_id, rider)
    world["clock"].now += timedelta(days=2)
    with pytest.raises(InvalidArgument) as error:
        attend(world, activity_id, rider, hours="3.25")
    assert [(f.field, f.reason) for f in error.value.violations] == [
        ("hours", "HOURS_ABOVE_ACTIVITY_LENGTH")]
    assert world["badges"]._rider_record(rider).shifts == {}


def test_a_full_activity_refuses_the_next_rider_and_a_withdrawal_frees_the_place(world):
    a, b, c = new_rider(world), new_rider(world), new_rider(world)
    activity_id = publish(world, places=2)
    sign_up(world, activity_id, a)
    with pytest.raises(AlreadyExists) as twice:
        sign_up(world, activity_id, a)
    assert twice.value.reason == "ALREADY_SIGNED_UP"
    sign_up(world, activity_id, b)
    with pytest.raises(FailedPrecondition) as full:
        sign_up(world, activity_id, c)
    assert full.value.reason == "ACTIVITY_FULL"
    with as_actor(PLATFORM):
        world["badges"].withdraw_volunteer_sign_up(activity_id=activity_id, rider_id=a)
    sign_up(world, activity_id, c)
    # The one who withdrew may come back, if a place is left: none is.
    with pytest.raises(FailedPrecondition):
        sign_up(world, activity_id, a)
    assert activity(world, activity_id).places_taken == 2


def test_sign_up_and_withdrawal_close_at_the_deadline(world):
    a, b = new_rider(world), new_rider(world)
    activity_id = publish(world)
    sign_up(world, activity_id, a)
    world["clock"].now += timedelta(days=1)
    with pytest.raises(FailedPrecondition) as late:
        sign_up(world, activity_id, b)
    assert late.value.reason == "SIGN_UP_CLOSED"
    with pytest.raises(FailedPrecondition) as withdraw, as_actor(PLATFORM):
        world["badges"].withdraw_volunteer_sign_up(activity_id=activity_id, rider_id=a)
    assert withdraw.value.reason == "SIGN_UP_CLOSED"


def test_only_an_active_rider_signs_up(world):
    rider = new_rider(world)
    with as_actor(PLATFORM):
        world["identity"].suspend_rider(rider_id=rider, reason="投诉核查中")
    world["follower"].run_once()
    with pytest.raises(FailedPrecondition) as error:
        sign_up(world, publish(world), rider)
    assert error.value.reason == "RIDER_NOT_ACTIVE"


def test_a_cancellation_cancels_every_sign_up_and_tells_each_riders_platform(world):
    a, b = new_rider(world), new_rider(world)
    activity_id = publish(world)
    sign_up(world, activity_id, a)
    sign_up(world, activity_id, b)
    with as_actor(PLATFORM):
        world["badges"].withdraw_volunteer_sign_up(activity_id=activity_id, rider_id=b)
    with as_actor(ADMIN):
        result = world["badges"].cancel_volunteer_activity(activity_id=activity_id,
                                                           reason="暴雨预警，活动取消")
    assert result["cancelled_rider_ids"] == [a]
    cancelled = activity(world, activity_id)
    assert (cancelled.status, cancelled.places_taken, cancelled.cancel_reason) == (
        "CANCELLED", 0, "暴雨预警，活动取消")
    with pytest.raises(FailedPrecondition) as error:
        sign_up(world, activity_id, new_rider(world))
    assert error.value.reason == "ACTIVITY_CANCELLED"
    published = feed(world["badges"], world["platform"])
    told = [(t, d["rider_id"]) for t, d in published if "SignUpCancelled" in t]
    assert told == [("qiji.badges.v1.VolunteerSignUpCancelled", a)]
    assert [t for t, _ in published].count("qiji.badges.v1.VolunteerActivityCancelled") == 1


def test_an_activity_with_attendance_cannot_be_cancelled(world):
    rider = new_rider(world)
    activity_id = publish(world)
    sign_up(world, activity_id, rider)
    world["clock"].now += timedelta(days=2)
    attend(world, activity_id, rider)
    with pytest.raises(FailedPrecondition) as error, as_actor(ADMIN):
        world["badges"].cancel_volunteer_activity(activity_id=activity_id, reason="误操作")
    assert error.value.reason == "ATTENDANCE_RECORDED"


def test_a_revision_never_leaves_fewer_places_than_riders_signed_up(world):
    a, b = new_rider(world), new_rider(world)
    activity_id = publish(world, places=5)
    sign_up(world, activity_id, a)
    sign_up(world, activity_id, b)
    badges = world["badges"]
    with pytest.raises(FailedPrecondition) as error, as_actor(ADMIN):
        badges.revise_volunteer_activity(activity_id=activity_id, **plan(world, places=1))
    assert error.value.reason == "PLACES_BELOW_SIGN_UPS"
    with as_actor(ADMIN):
        badges.revise_volunteer_activity(activity_id=activity_id,
                                         **plan(world, places=2, title="助老送餐（改到周六）"))
    revised = activity(world, activity_id)
    assert (revised.places, revised.places_left, revised.title, len(revised.sign_ups)) == (
        2, 0, "助老送餐（改到周六）", 2)
    world["clock"].now += timedelta(days=2)
    with pytest.raises(FailedPrecondition) as started, as_actor(ADMIN):
        badges.revise_volunteer_activity(activity_id=activity_id, **plan(world))
    assert started.value.reason == "ACTIVITY_STARTED"


def test_every_fault_of_an_activity_is_told_in_one_answer(world):
    now = world["clock"].now
    with as_actor(ADMIN):
        space_elsewhere = world["identity"].create_service_space(
            street_id=make_street(world), name="别处驿站", address="别处",
            amenities=[Amenity.REST], opening_hours=[])["service_space_id"]
    with pytest.raises(InvalidArgument) as error, as_actor(ADMIN):
        world["badges"].publish_volunteer_activity(
            community_id=world["street"], title=" ", description="", kind=None,
            starts_at=now - timedelta(hours=1), ends_at=now - timedelta(hours=2),
            service_space_id=space_elsewhere, address="", places=0,
            sign_up_deadline=now + timedelta(days=3))
    found = {(f.field, f.reason) for f in error.value.violations}
    assert found == {
        ("title", "FIELD_REQUIRED"), ("kind", "ENUM_VALUE_REQUIRED"),
        ("start_time", "TIME_IN_THE_PAST"), ("end_time", "END_TIME_NOT_AFTER_START_TIME"),
        ("places", "VALUE_OUT_OF_RANGE"), ("sign_up_deadline", "DEADLINE_AFTER_START"),
        ("community_id", "ORGANISATION_KIND_NOT_ALLOWED")}
    # Where: a space in the community's own street, or an address.
    with pytest.raises(InvalidArgument) as elsewhere, as_actor(ADMIN):
        world["badges"].publish_volunteer_activity(
            community_id=world["community"], **plan(world, service_space_id=space_elsewhere))
    assert [(f.field, f.reason) for f in elsewhere.value.violations] == [
        ("service_space_id", "SERVICE_SPACE_IN_ANOTHER_STREET")]
    with pytest.raises(InvalidArgument) as nowhere, as_actor(ADMIN):
        world["badges"].publish_volunteer_activity(
            community_id=world["community"], **plan(world, address=""))
    assert [(f.field, f.reason) for f in nowhere.value.violations] == [
        ("service_space_id", "PLACE_REQUIRED")]


def make_street(w) -> str:
    from services.identity.domain.values import OrganisationKind
    with as_actor(ADMIN):
        district = w["identity"].create_organisation(
            kind=OrganisationKind.DISTRICT, name="天宁区", parent_id=w["city"],
            department_function=None)["organisation_id"]
        return w["identity"].create_organisation(
            kind=OrganisationKind.STREET, name="别的街道", parent_id=district,
            department_function=None)["organisation_id"]


def test_lists_filter_by_community_street_kind_and_open_for_sign_up(world):
    badges = world["badges"]
    full = publish(world, places=1)
    open_one = publish(world, kind=VolunteerActivityKind.ENVIRONMENT, title="荷悦体育公园义务巡河")
    cancelled = publish(world)
    sign_up(world, full, new_rider(world))
    with as_actor(ADMIN):
        badges.cancel_volunteer_activity(activity_id=cancelled, reason="场地占用")

    def listed(**given):
        query = dict(community_id="", street_id="", open_for_sign_up=False, kind=None,
                     page_size=0, page_token="")
        return [str(a.id) for a in badges.list_volunteer_activities(**{**query, **given})[0]]
    assert listed(street_id=world["street"]) == [full, open_one, cancelled]
    assert listed(community_id=world["community"], open_for_sign_up=True) == [open_one]
    assert listed(kind=VolunteerActivityKind.ENVIRONMENT) == [open_one]
    assert listed(street_id=make_street(world)) == []
    first, token = badges.list_volunteer_activities(
        community_id="", street_id=world["street"], open_for_sign_up=False, kind=None,
        page_size=2, page_token="")
    rest, end = badges.list_volunteer_activities(
        community_id="", street_id=world["street"], open_for_sign_up=False, kind=None,
        page_size=2, page_token=token)
    assert [str(a.id) for a in first + rest] == [full, open_one, cancelled] and end == ""


def test_a_riders_sign_ups_are_listed_for_their_platform(world):
    rider = new_rider(world)
    one, two = publish(world), publish(world)
    sign_up(world, one, rider)
    sign_up(world, two, rider)
    with as_actor(PLATFORM):
        world["badges"].withdraw_volunteer_sign_up(activity_id=two, rider_id=rider)
    found, _ = world["badges"].volunteer_sign_ups(
        activity_id="", rider_id=rider, status=None, page_size=0, page_token="")
    assert [(s.activity_id, s.status) for s in found] == [(one, "SIGNED_UP"),
                                                          (two, "WITHDRAWN")]
    signed, _ = world["badges"].volunteer_sign_ups(
        activity_id="", rider_id=rider, status=VolunteerSignUpStatus.SIGNED_UP, page_size=0,
        page_token="")
    assert [s.activity_id for s in signed] == [one]
    with pytest.raises(InvalidArgument) as error:
        world["badges"].volunteer_sign_ups(activity_id="", rider_id="", status=None,
                                           page_size=-1, page_token="")
    assert {(f.field, f.reason) for f in error.value.violations} == {
        ("activity_id", "FIELD_REQUIRED"), ("page_size", "PAGE_SIZE_NEGATIVE")}


def test_the_feed_carries_an_activity_and_each_riders_part_to_the_riders_platform(world):
    rider = new_rider(world)
    activity_id = publish(world)
    sign_up(world, activity_id, rider)
    world["clock"].now += timedelta(days=2)
    shift_id = attend(world, activity_id, rider, hours="2")["shift_id"]
    published = feed(world["badges"], world["platform"])
    assert [t for t, _ in published] == [
        "qiji.badges.v1.VolunteerActivityPublished", "qiji.badges.v1.VolunteerSignUpAccepted",
        "qiji.badges.v1.VolunteerAttendanceConfirmed"]
    assert published[0][1]["street_id"] == world["street"]
    assert published[2][1] == {"activity_id": activity_id, "rider_id": rider,
                               "community_id": world["community"], "hours": "2",
                               "shift_id": shift_id,
                               "confirmed_time": published[2][1]["confirmed_time"]}
    # Another platform learns that the activity exists, nothing of this rider.
    assert [t for t, _ in feed(world["badges"], "another-platform")] == [
        "qiji.badges.v1.VolunteerActivityPublished"]


def feed(app: BadgesApplication, platform: str) -> list[tuple[str, dict]]:
    found = []
    for n in app.read_log(1, 10_000):
        fact = Fact(n.id, n.originator_id, n.originator_version, n.topic,
                    app.to_domain_event(n), platform)
        found += [(e.type, e.data) for e in CATALOGUE.map(app, fact)
                  if "Volunteer" in e.type]
    return found


def _race(n, fn):
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def run(i):
        barrier.wait()
        try:
            fn(i)
            outcomes.append("ok")
        except QijiError as error:
            outcomes.append(error.reason)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Counter(outcomes)


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_forty_riders_racing_for_ten_places_on_two_replicas_get_exactly_ten(world, store_env):
    # A second process's worth of badges on the same database: the two decide only by the
    # activity's versions (the in-process queue does not reach across replicas).
    replica = BadgesApplication(settings_for("badges", store_env), MASTER_KEY,
                                clock=world["clock"], issuer_keys=ISSUER_KEYS, urls=URLS)
    replica.identity_follower = Follower(replica, LocalFeed(world["identity"]),
                                         replica.follow_identity,
                                         topics=BadgesApplication.IDENTITY_TOPICS)
    try:
        riders = [new_rider(world) for _ in range(40)]
        replica.identity_follower.run_once()
        activity_id = publish(world, places=10)
        apps = [world["badges"], replica]

        def take(i):
            with as_actor(PLATFORM):
                apps[i % 2].sign_up_for_volunteer_activity(activity_id=activity_id,
                                                           rider_id=riders[i])
        outcome = _race(40, take)
    finally:
        replica.close()
    assert outcome == {"ok": 10, "ACTIVITY_FULL": 30}
    assert activity(world, activity_id).places_taken == 10
    signed = [n for n in world["badges"].read_log(1, 100_000)
              if n.topic.endswith("VolunteerActivity.SignedUp")]
    assert len(signed) == 10
