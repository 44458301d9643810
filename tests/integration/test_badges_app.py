"""badges over a real store: volunteer hours, training and governance evidence, automatic and
manual awards, revocation, expiry, credentials, and followers that crash mid-stream."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.badges.application import BadgesApplication
from services.badges.credentials import PublicUrls
from services.badges.domain.criteria import Track
from services.badges.domain.model import Award, BadgeClass, VolunteerShift
from services.badges.service import ExpiryJob
from services.governance import events as governance_events
from services.identity.application import IdentityApplication
from services.training import events as training_events
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from shared.followers import Follower, LocalFeed, UpstreamEvent
from tests.city import build_city, in_application
from tests.conftest import (
    ISSUER_URL,
    MASTER_KEY,
    actor,
    as_actor,
    badges_keys,
    settings_for,
    stored_state,
)

# Configured, as in production: the same keys across restarts, so credentials keep verifying.
ISSUER_KEYS = badges_keys()
URLS = PublicUrls(ISSUER_URL)
ADMIN = actor("city", "city_admin")
OFFICE = actor("beidajie-desk", "street_office")
PLATFORM = actor("platform-co", "platform")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


class ListFeed:
    """An upstream holding events under a published contract's topics."""

    failure = None  # a list is never out of order

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[UpstreamEvent] = []

    def add(self, topic: str, originator: uuid.UUID, **state) -> None:
        state.setdefault("timestamp", datetime.now(UTC))
        self.events.append(UpstreamEvent(self.name, len(self.events) + 1, originator, 1, topic,
                                         stored_state(originator, 1, topic, state)))

    def read(self, from_position, limit, topics, *, redial=False):
        return [e for e in self.events[from_position - 1:][:limit]
                if not topics or e.topic in topics]

    def wait(self, timeout):
        pass

    @property
    def last_position(self):
        return len(self.events)


def criteria(**given):
    base = {"min_volunteer_hours": "", "required_course_ids": [], "track_requirements": [],
            "min_verified_reports": 0, "within_days": 0, "narrative": ""}
    return {**base, **given}


@pytest.fixture
def world(store_env):
    clock = Clock()
    identity = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    badges = BadgesApplication(settings_for("badges", store_env), MASTER_KEY, clock=clock,
                               issuer_keys=ISSUER_KEYS, urls=URLS)
    follower = Follower(badges, LocalFeed(identity), badges.follow_identity,
                        topics=BadgesApplication.IDENTITY_TOPICS)
    badges.identity_follower = follower
    training, governance = ListFeed("training"), ListFeed("governance")
    made = build_city(in_application(identity), also=("community",))
    city, street, community = made.city, made.street, made.community
    platform, station = made.platform, made.station
    w = dict(identity=identity, badges=badges, follower=follower, clock=clock, city=city,
             street=street, community=community, platform=platform, station=station,
             training=training, governance=governance, riders=0,
             training_follower=Follower(badges, training, badges.follow_training,
                                        topics=BadgesApplication.TRAINING_TOPICS),
             governance_follower=Follower(badges, governance, badges.follow_governance,
                                          topics=BadgesApplication.GOVERNANCE_TOPICS))
    yield w
    badges.close()
    identity.close()


def new_rider(w) -> str:
    w["riders"] += 1
    with as_actor(PLATFORM):
        rider_id = w["identity"].register_rider(
            platform_id=w["platform"], platform_rider_id=f"R{w['riders']}", name="骑手",
            phone="13812345678", national_id="", home_street_id=w["street"],
            station_id=w["station"])["rider_id"]
        w["identity"].verify_rider(rider_id=rider_id)
    w["follower"].run_once()
    return rider_id


def badge(w, name="金蜂骑士", **given) -> str:
    with as_actor(ADMIN):
        return w["badges"].create_badge_class(
            name=name, description="Golden Bee Knight", image_url="https://example.org/b.png",
            issuer_id=w["city"], criteria=criteria(**given),
            validity_days=given.pop("validity_days", 0) if "validity_days" in given else 0,
        )["badge_class_id"]


def serve(w, rider_id, hours) -> dict:
    with as_actor(PLATFORM):
        shift = w["badges"].log_volunteer_service(
            rider_id=rider_id, community_id=w["community"], activity="帮助独居老人",
            started_at=w["clock"]() - timedelta(hours=3), hours=hours)["shift_id"]
    with as_actor(OFFICE):
        return w["badges"].confirm_volunteer_service(shift_id=shift)


def test_confirmed_hours_award_a_badge_the_moment_they_meet_the_criteria(world):
    golden = badge(world, min_volunteer_hours="10")
    rider = new_rider(world)
    assert serve(world, rider, "6")["award_ids"] == []
    with as_actor(PLATFORM):  # logged but never confirmed: does not count
        world["badges"].log_volunteer_service(
            rider_id=rider, community_id=world["community"], activity="x",
            started_at=world["clock"]() - timedelta(hours=1), hours="8")
    awarded = serve(world, rider, "4")["award_ids"]
    assert len(awarded) == 1
    award = world["badges"].award(awarded[0])
    assert (award.badge_class_id, award.kind, award.criteria_version) == (golden, "AUTOMATIC", 1)
    assert [e["narrative"] for e in award.evidence] == [
        "6 h of volunteer service confirmed", "4 h of volunteer service confirmed"]
    assert award.awarded_by == "beidajie-desk"
    assert serve(world, rider, "4")["award_ids"] == []  # never the same badge twice at once


def test_reading_awards_classes_and_shifts_leaves_the_cached_aggregates_as_stored(world,
                                                                                store_env):
    """The badge accessors hand out the cached aggregates themselves (`view`), not copies:
    every read of them - the Get, the rider's list, the explanation, the credential, the
    achievement, the service list, and a second rider's award, decided on the same class -
    must leave them as a fresh process reads them from the store."""
    golden = badge(world, min_volunteer_hours="10")
    rider = new_rider(world)
    first_shift = serve(world, rider, "6")["shift_id"]
    [award_id] = serve(world, rider, "4")["award_ids"]
    app = world["badges"]
    with as_actor(ADMIN):
        app.award(award_id)
        app.badge_class(golden)
        app.shift(first_shift)
        app.rider_awards(rider_id=rider, include_inactive=True)
        app.explain(rider_id=rider, badge_class_id=golden)
        app.export_credential(award_id=award_id)
        app.achievement(badge_class_id=golden)
        app.volunteer_service(rider_id=rider, status="", page_size=10, page_token="")
    assert serve(world, new_rider(world), "10")["award_ids"]
    fresh = BadgesApplication(settings_for("badges", store_env), MASTER_KEY,
                              clock=world["clock"], issuer_keys=ISSUER_KEYS, urls=URLS)

    def stored(reader: BadgesApplication, ident: str, kind: type, label: str) -> dict:
        return {k: v for k, v in vars(reader.view(ident, kind, label)).items()
                if k != "_pending_events"}
    try:
        for ident, kind, label in ((award_id, Award, "award"), (golden, BadgeClass, "badge_class"),
                                   (first_shift, VolunteerShift, "shift")):
            assert stored(app, ident, kind, label) == stored(fresh, ident, kind, label), label
    finally:
        fresh.close()


def test_hours_confirmed_for_a_rider_verified_a_moment_ago_award_at_once(world):
    """badges had heard of the registration but not yet of the verification (its follower runs
    a moment behind identity): the confirmation that meets the criteria still awards then, not
    only when the verification arrives later."""
    golden = badge(world, min_volunteer_hours="10")
    with as_actor(PLATFORM):
        rider = world["identity"].register_rider(
            platform_id=world["platform"], platform_rider_id="R-just-now", name="骑手",
            phone="13812345678", national_id="", home_street_id=world["street"],
            station_id=world["station"])["rider_id"]
        world["follower"].run_once()  # the registration only
        world["identity"].verify_rider(rider_id=rider)
    awarded = serve(world, rider, "10")["award_ids"]
    assert [world["badges"].award(a).badge_class_id for a in awarded] == [golden]


def test_training_completions_count_through_the_published_contract(world):
    green = badge(world, "青蜂骑士", track_requirements=[(Track.GRASSROOTS_GOVERNANCE, 2)])
    rider = new_rider(world)
    learner = uuid.uuid4()
    t = world["training"]
    t.add(training_events.LEARNER_NOTED, learner, rider_id=rider)
    for result in ("PASSED", "FAILED", "PASSED"):
        t.add(training_events.COURSE_COMPLETED, learner, course_id=str(uuid.uuid4()),
              session_id=str(uuid.uuid4()), track="GRASSROOTS_GOVERNANCE", hours="1.5",
              result=result, score=None, at=world["clock"]())
    world["training_follower"].run_once()
    awards = world["badges"].rider_awards(rider_id=rider, include_inactive=False)
    assert [a.badge_class_id for a in awards] == [green]
    assert [e["position"] for e in awards[0].evidence] == [2, 4]


def test_verified_reports_count_and_the_award_explains_itself(world):
    probe = badge(world, "移动探头", min_verified_reports=2)
    rider = new_rider(world)
    for _ in range(2):
        world["governance"].add(governance_events.REPORT_VERIFIED, uuid.uuid4(),
                                rider_id=rider, street_id=world["street"], kind="ANOMALY",
                                category="ROAD_HAZARD", at=world["clock"]())
    world["governance_follower"].run_once()
    why = world["badges"].explain(rider_id=rider, badge_class_id=probe)
    assert "2 verified governance report(s)" in why.text
    assert "log position 1" in why.text and "log position 2" in why.text


def test_a_verified_report_the_rider_reopened_counts_no_more_until_verified_again(world):
    """governance's Report.Reopened (an unsatisfied rating of a verified report): the report
    stops counting toward the next badge; verified again (the office upheld it), it counts."""
    probe = badge(world, "移动探头", min_verified_reports=2)
    rider = new_rider(world)
    reports = [uuid.uuid4(), uuid.uuid4()]

    def verified(report):
        world["governance"].add(governance_events.REPORT_VERIFIED, report, rider_id=rider,
                                street_id=world["street"], kind="ANOMALY",
                                category="ROAD_HAZARD", at=world["clock"]())
    verified(reports[0])
    world["governance"].add(governance_events.REPORT_REOPENED, reports[0], rider_id=rider,
                            street_id=world["street"], was_verified=True, at=world["clock"]())
    verified(reports[1])
    world["governance_follower"].run_once()
    assert world["badges"].rider_awards(rider_id=rider, include_inactive=False) == []
    verified(reports[0])  # upheld: verified again
    world["governance_follower"].run_once()
    awards = world["badges"].rider_awards(rider_id=rider, include_inactive=False)
    assert [a.badge_class_id for a in awards] == [probe]


def test_revised_criteria_never_change_an_award_already_made(world):
    golden = badge(world, min_volunteer_hours="2")
    first = new_rider(world)
    serve(world, first, "2")
    with as_actor(ADMIN):
        world["badges"].revise_badge_criteria(badge_class_id=golden,
                                              criteria=criteria(min_volunteer_hours="20"))
    second = new_rider(world)
    assert serve(world, second, "2")["award_ids"] == []
    why = world["badges"].explain(rider_id=first, badge_class_id=golden)
    assert why.award.criteria_version == 1
    assert str(why.criteria.min_volunteer_hours) == "2"


def test_manual_awards_need_a_reason_revocation_is_final_for_automatic_awards(world):
    golden = badge(world, min_volunteer_hours="2")
    rider = new_rider(world)
    with as_actor(OFFICE):
        with pytest.raises(InvalidArgument) as unreasoned:
            world["badges"].grant_badge(rider_id=rider, badge_class_id=golden, reason="",
                                        evidence=[])
        assert [(v.field, v.reason) for v in unreasoned.value.violations] == [
            ("reason", "FIELD_REQUIRED"), ("evidence", "EVIDENCE_REQUIRED")]
        award = world["badges"].grant_badge(
            rider_id=rider, badge_class_id=golden, reason="救助落水儿童",
            evidence=[{"reference": "news:2026-06-05", "narrative": "reported by 常州日报"}])
        with pytest.raises(AlreadyExists):
            world["badges"].grant_badge(rider_id=rider, badge_class_id=golden, reason="again",
                                        evidence=[{"reference": "x", "narrative": ""}])
        world["badges"].revoke_award(award_id=award["award_id"], reason="granted in error")
        with pytest.raises(FailedPrecondition) as error:
            world["badges"].revoke_award(award_id=award["award_id"], reason="twice")
        assert error.value.reason == "AWARD_REVOKED"
    assert serve(world, rider, "4")["award_ids"] == []  # an official revoked it: not re-made


def test_a_badge_no_longer_or_never_held_is_not_found_and_says_why(world):
    golden = badge(world, min_volunteer_hours="2")
    rider, other = new_rider(world), new_rider(world)
    award_id = serve(world, rider, "2")["award_ids"][0]
    with as_actor(OFFICE):
        world["badges"].revoke_award(award_id=award_id, reason="hours logged twice")
    with as_actor(OFFICE), pytest.raises(NotFound) as revoked:
        world["badges"].explain(rider_id=rider, badge_class_id=golden)
    # NOT_FOUND, as every release answered, and the reason too; the message says what ended it.
    assert revoked.value.reason == "AWARD_NOT_FOUND"
    assert revoked.value.message.startswith(
        f"rider {rider} no longer holds 金蜂骑士: award {award_id} (made ")
    assert revoked.value.message.endswith(
        f"was revoked {world['clock']().isoformat()} by beidajie-desk: hours logged twice; "
        f"its trail: qiji audit history badges {award_id}")
    # The reason is free text: an auditor learns that there was one.
    with as_actor(actor("auditor", "auditor")), pytest.raises(NotFound) as masked:
        world["badges"].explain(rider_id=rider, badge_class_id=golden)
    assert "hours logged twice" not in masked.value.message
    assert "[withheld: 18 characters]" in masked.value.message
    with pytest.raises(NotFound) as never:
        world["badges"].explain(rider_id=other, badge_class_id=golden)
    assert never.value.message == f"rider {other} has never held 金蜂骑士 (badge class {golden})"


def test_awards_expire_on_their_date(world):
    golden = badge(world, min_volunteer_hours="2", validity_days=30)
    rider = new_rider(world)
    award_id = serve(world, rider, "2")["award_ids"][0]
    job = ExpiryJob(world["badges"])
    assert job.run_once() == 0
    world["clock"].now += timedelta(days=31)
    assert job.run_once() == 1
    assert job.run_once() == 0
    assert world["badges"].award(award_id).status == "EXPIRED"
    with as_actor(ADMIN):
        holders, _ = world["badges"].badge_holders(badge_class_id=golden, page_size=10,
                                                   page_token="")
    assert holders == []


def test_an_award_past_its_expiry_reads_expired_before_the_job_stores_it(world):
    """GetAward says what VerifyCredential and the holder lists say: the expiry job runs now
    and then, and a rider's badge must not read ACTIVE to an official in the meantime."""
    from qiji.badges.v1 import badges_service_pb2 as pb

    from services.badges.grpc_api import BadgesServicer
    badge(world, min_volunteer_hours="2", validity_days=30)
    award_id = serve(world, new_rider(world), "2")["award_ids"][0]
    servicer = BadgesServicer(world["badges"])

    def shown() -> int:
        with as_actor(ADMIN):
            return servicer.GetAward(pb.GetAwardRequest(award_id=award_id), None).award.status
    assert shown() == pb.AWARD_STATUS_ACTIVE
    world["clock"].now += timedelta(days=31)
    assert world["badges"].award(award_id).status == "ACTIVE"  # nothing stored it yet
    assert shown() == pb.AWARD_STATUS_EXPIRED


def test_criteria_that_can_never_be_met_are_refused(world):
    for bad, field, reason in (
            (criteria(), "criteria", "CRITERIA_EMPTY"),
            (criteria(min_volunteer_hours="100", within_days=2),
             "criteria.min_volunteer_hours", "CRITERIA_UNREACHABLE"),
            (criteria(min_volunteer_hours="1", track_requirements=[(None, 1)]),
             "criteria.track_requirements[0].track", "ENUM_VALUE_REQUIRED"),
            (criteria(required_course_ids=["not-a-course"]),
             "criteria.required_course_ids[0]", "INVALID_ID")):
        with as_actor(ADMIN), pytest.raises(InvalidArgument) as error:
            world["badges"].create_badge_class(name="x", description="", image_url="",
                                               issuer_id=world["city"], criteria=bad,
                                               validity_days=0)
        assert [(v.field, v.reason) for v in error.value.violations] == [(field, reason)]
        assert error.value.reason == reason
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as no_track:
        world["badges"].create_badge_class(
            name="x", description="", image_url="", issuer_id=world["city"],
            criteria=criteria(min_volunteer_hours="1", track_requirements=[(None, 1)]),
            validity_days=0)
    # The wire's names for the tracks, as a caller sets them.
    assert no_track.value.violations[0].description.startswith(
        "must be one of TRACK_CIVIC_EDUCATION, TRACK_SKILLS, ")


def test_a_follower_killed_mid_stream_awards_nothing_twice_and_misses_nothing(world,
                                                                             store_env):
    probe = badge(world, "移动探头", min_verified_reports=1)
    riders = [new_rider(world) for _ in range(6)]
    for rider in riders:
        world["governance"].add(governance_events.REPORT_VERIFIED, uuid.uuid4(),
                                rider_id=rider, street_id=world["street"], kind="ANOMALY",
                                category="FIRE", at=world["clock"]())
    seen = []

    def crashing(upstream, processing):
        if len(seen) == 3:
            raise SystemExit("killed")  # the process dies in the middle of the stream
        seen.append(upstream.position)
        world["badges"].follow_governance(upstream, processing)

    with pytest.raises(SystemExit):
        Follower(world["badges"], world["governance"], crashing,
                 topics=BadgesApplication.GOVERNANCE_TOPICS).run_once()
    world["badges"].close()
    restarted = BadgesApplication(settings_for("badges", store_env), MASTER_KEY,
                                  clock=world["clock"], issuer_keys=ISSUER_KEYS, urls=URLS)
    try:
        follower = Follower(restarted, world["governance"], restarted.follow_governance,
                            topics=BadgesApplication.GOVERNANCE_TOPICS)
        # Whatever it had not committed when it died is not stored (reactions are committed
        # with their tracking record, a batch at a time; badges' policy reads its views, so
        # the follower commits before each reaction): the restart applies the rest, each once.
        assert follower.position < max(seen)
        assert follower.run_once() > 0
        with as_actor(ADMIN):
            holders, _ = restarted.badge_holders(badge_class_id=probe, page_size=50,
                                                 page_token="")
        assert sorted(a.rider_id for a in holders) == sorted(riders)
    finally:
        world["badges"] = restarted


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_two_confirmations_at_once_that_each_complete_the_criteria_award_once(world):
    golden = badge(world, min_volunteer_hours="4")
    rider = new_rider(world)
    shifts = []
    with as_actor(PLATFORM):
        for _ in range(2):
            shifts.append(world["badges"].log_volunteer_service(
                rider_id=rider, community_id=world["community"], activity="x",
                started_at=world["clock"]() - timedelta(hours=2), hours="4")["shift_id"])
    barrier = threading.Barrier(2)

    def confirm(shift_id):
        barrier.wait()
        with as_actor(OFFICE):
            world["badges"].confirm_volunteer_service(shift_id=shift_id)

    threads = [threading.Thread(target=confirm, args=(s,)) for s in shifts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    awards = world["badges"].rider_awards(rider_id=rider, include_inactive=True)
    assert [a.badge_class_id for a in awards] == [golden]


# ---------------------------------------------------------------------------- one round (issue 23)


def test_a_grant_with_three_problems_gets_three_violations_in_one_answer(world):
    """Format, rule and a reference to nothing, each with its reason, in ONE
    INVALID_ARGUMENT; the badge class that does not exist is BADGE_CLASS_NOT_FOUND among them.
    The rider, looked up only once nothing else is wrong, is not mentioned (B1)."""
    with as_actor(OFFICE), pytest.raises(InvalidArgument) as error:
        world["badges"].grant_badge(rider_id=str(uuid.uuid4()),
                                    badge_class_id=str(uuid.uuid4()), reason=" ",
                                    evidence=[{"reference": "", "narrative": " "}])
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("reason", "FIELD_REQUIRED"), ("evidence[0]", "EVIDENCE_EMPTY"),
        ("badge_class_id", "BADGE_CLASS_NOT_FOUND")]


def test_service_logged_at_a_street_is_told_the_kind_it_named_and_the_kind_it_needs(world):
    """badges notes communities apart from other organisations; what a caller reads names
    both kinds as the wire does (R1), whichever the service noted."""
    with as_actor(PLATFORM), pytest.raises(InvalidArgument) as error:
        world["badges"].log_volunteer_service(
            rider_id=new_rider(world), community_id=world["street"], activity="x",
            started_at=world["clock"].now - timedelta(hours=2), hours="1")
    assert [(v.field, v.reason, v.description) for v in error.value.violations] == [
        ("community_id", "ORGANISATION_KIND_NOT_ALLOWED",
         "must be an ORGANISATION_KIND_COMMUNITY, not an ORGANISATION_KIND_STREET")]


def test_a_grant_whose_only_fault_is_an_unknown_badge_class_is_not_found(world):
    rider = new_rider(world)
    with as_actor(OFFICE), pytest.raises(NotFound) as error:
        world["badges"].grant_badge(rider_id=rider, badge_class_id=str(uuid.uuid4()),
                                    reason="救助落水儿童",
                                    evidence=[{"reference": "news:1", "narrative": ""}])
    assert error.value.reason == "BADGE_CLASS_NOT_FOUND"


def test_a_badge_class_with_a_bad_picture_and_a_community_issuer_gets_both_at_once(world):
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as error:
        world["badges"].create_badge_class(
            name="", description="", image_url="ftp://x", issuer_id=world["community"],
            criteria=criteria(min_volunteer_hours="2"), validity_days=-1,
            image=b"GIF89a", image_media_type="image/gif")
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("name", "FIELD_REQUIRED"), ("image_url", "IMAGE_URL_INVALID"),
        ("validity_days", "VALUE_OUT_OF_RANGE"),
        ("image_media_type", "IMAGE_MEDIA_TYPE_NOT_ALLOWED"),
        ("issuer_id", "ORGANISATION_KIND_NOT_ALLOWED")]
    # A community is an organisation: what is wrong is its kind, named as the wire names it.
    assert error.value.violations[-1].description == (
        "an ORGANISATION_KIND_COMMUNITY may not issue badges")
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as large:
        world["badges"].upload_badge_image(badge_class_id=badge(world, min_volunteer_hours="2"),
                                           image=b"\x89PNG\r\n\x1a\n" + b"0" * 300_000,
                                           media_type="image/png")
    assert large.value.reason == "IMAGE_TOO_LARGE"


def test_a_course_passed_before_verification_counts_only_once_the_rider_is_verified(world):
    """Pre-job training comes before verification (training takes a registered rider there):
    badges still awards active riders only, and counts the course when the rider is verified."""
    course = str(uuid.uuid4())
    civic = badge(world, "岗前之星", required_course_ids=[course])
    with as_actor(PLATFORM):
        rider = world["identity"].register_rider(
            platform_id=world["platform"], platform_rider_id="NEW1", name="新骑手",
            phone="13812345678", national_id="", home_street_id=world["street"],
            station_id=world["station"])["rider_id"]
    world["follower"].run_once()
    learner = uuid.uuid4()
    world["training"].add(training_events.LEARNER_NOTED, learner, rider_id=rider)
    world["training"].add(training_events.COURSE_COMPLETED, learner, course_id=course,
                          session_id=str(uuid.uuid4()), track="CIVIC_EDUCATION", hours="2",
                          result="PASSED", score=None, at=world["clock"]())
    world["training_follower"].run_once()
    assert world["badges"].rider_awards(rider_id=rider, include_inactive=True) == []
    with as_actor(PLATFORM):
        world["identity"].verify_rider(rider_id=rider)
    world["follower"].run_once()
    awards = world["badges"].rider_awards(rider_id=rider, include_inactive=False)
    assert [a.badge_class_id for a in awards] == [civic]
