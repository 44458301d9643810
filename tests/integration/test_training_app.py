"""training over a real store, following a real identity application's log in-process."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from eventsourcing.utils import get_topic

from services.identity.application import IdentityApplication
from services.identity.domain.values import Amenity
from services.training.application import TrainingApplication
from services.training.domain.model import Learner
from services.training.domain.values import (
    CompletionResult,
    CourseFormat,
    EnrolmentStatus,
    InstructorKind,
    PairMember,
    TeachingPair,
    Track,
)
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from shared.followers import Follower, LocalFeed
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for, store_as_released

ADMIN = actor("city", "city_admin")
PLATFORM = actor("platform-co", "platform")


class Clock:
    """Training's clock, moved by the test; it starts at the real now because identity's events
    (which training compares against) carry real times."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def world(store_env, clock):
    """identity and training on the same kind of store; training follows identity's log."""
    identity = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    training = TrainingApplication(settings_for("training", store_env), MASTER_KEY, clock=clock)
    follower = Follower(training, LocalFeed(identity), training.follow_identity,
                        topics=TrainingApplication.IDENTITY_TOPICS)
    training.identity_follower = follower
    made = build_city(in_application(identity), also=("provider",))
    street, platform, station = made.street, made.platform, made.station
    university = made.provider
    with as_actor(ADMIN):
        space = identity.create_service_space(
            street_id=street, name="荷花池驿站", address="北大街 1 号",
            amenities=[Amenity.REST], opening_hours=[])["service_space_id"]
    w = {"identity": identity, "training": training, "follower": follower, "street": street,
         "platform": platform, "station": station, "university": university, "space": space,
         "riders": 0}
    yield w
    training.close()
    identity.close()


def new_rider(w, *, verify=True) -> str:
    w["riders"] += 1
    with as_actor(PLATFORM):
        rider_id = w["identity"].register_rider(
            platform_id=w["platform"], platform_rider_id=f"R{w['riders']}", name="骑手",
            phone="13812345678", national_id="", home_street_id=w["street"],
            station_id=w["station"])["rider_id"]
        if verify:
            w["identity"].verify_rider(rider_id=rider_id)
    return rider_id


def published_course(w, track=Track.CIVIC_EDUCATION, hours="1.5") -> str:
    t = w["training"]
    with as_actor(ADMIN):
        course_id = t.draft_course(
            track=track, title="红色思政第一课", description="", hours=hours,
            formats=[CourseFormat.MORNING_MEETING, CourseFormat.CLASSROOM],
            provider_id=w["university"], instructor_name="张老师",
            instructor_kind=InstructorKind.TEACHER)["course_id"]
        t.publish_course(course_id=course_id)
    return course_id


def session(w, course_id, *, start_in_hours=24, hours=2, capacity=20) -> str:
    starts = w["training"].clock() + timedelta(hours=start_in_hours)
    with as_actor(ADMIN):
        return w["training"].schedule_session(
            course_id=course_id, service_space_id=w["space"], starts_at=starts,
            ends_at=starts + timedelta(hours=hours), capacity=capacity)["session_id"]


def enrol(w, session_id, rider_id):
    with as_actor(PLATFORM):
        return w["training"].enrol_rider(session_id=session_id, rider_id=rider_id)


def test_a_verified_rider_enrols_and_takes_a_place(world):
    s = session(world, published_course(world))
    rider = new_rider(world)
    enrol(world, s, rider)
    view = world["training"].session(s)
    assert view.places_taken == 1
    assert view.enrolments[rider]["status"] == EnrolmentStatus.ENROLLED.value


def test_an_unverified_or_suspended_rider_cannot_enrol(world):
    s = session(world, published_course(world))
    unverified = new_rider(world, verify=False)
    with pytest.raises(FailedPrecondition) as error:
        enrol(world, s, unverified)
    assert error.value.reason == "RIDER_NOT_ACTIVE"
    suspended = new_rider(world)
    with as_actor(ADMIN):
        world["identity"].suspend_rider(rider_id=suspended, reason="complaint")
    with pytest.raises(FailedPrecondition):
        enrol(world, s, suspended)


def test_a_rider_unknown_to_identity_is_not_found(world):
    s = session(world, published_course(world))
    with pytest.raises(NotFound):
        enrol(world, s, "5b0b276e-3dca-4072-bc38-1c35fa3f20b2")


def test_a_learners_status_stored_under_its_old_topic_replays_as_status_noted(world, clock):
    """Release 0.1.0 stored a rider's status, as training noted it, as Learner.RiderStatusNoted;
    it is StatusNoted now, as every follower of identity names it. Events stored under the old
    topic still replay (register_topic in the domain model, same fields), and what is noted
    next is stored under the new one."""
    rider_id = str(uuid.uuid4())
    ident = Learner.create_id(rider_id)
    old_topic = "services.training.domain.model:Learner.RiderStatusNoted"
    at = clock.now - timedelta(days=30)
    stored = [(get_topic(Learner.Noted),
               {"rider_id": rider_id, "originator_topic": get_topic(Learner), "timestamp": at}),
              (old_topic, {"verified": True, "suspended": False, "left": False,
                           "timestamp": at}),
              (old_topic, {"verified": True, "suspended": False, "left": True,
                           "timestamp": at})]
    training = world["training"]
    store_as_released(training, ident, stored)
    learner = training.get(ident, Learner, "learner")
    assert (learner.version, learner.verified, learner.left, learner.is_active) == (
        3, True, True, False)
    learner.note_status(verified=True, suspended=True, left=True)
    training.save(learner)
    assert [type(e) for e in training.events.get(ident)] == [
        Learner.Noted, Learner.StatusNoted, Learner.StatusNoted, Learner.StatusNoted]
    assert [n.topic for n in training.read_log(1, 100_000) if n.originator_id == ident] == [
        get_topic(Learner.Noted), old_topic, old_topic, get_topic(Learner.StatusNoted)]
    assert training.get(ident, Learner, "learner").suspended


def test_a_full_session_refuses_the_next_rider(world):
    s = session(world, published_course(world), capacity=2)
    enrol(world, s, new_rider(world))
    enrol(world, s, new_rider(world))
    with pytest.raises(FailedPrecondition) as error:
        enrol(world, s, new_rider(world))
    assert error.value.reason == "SESSION_FULL"


def test_a_rider_is_never_booked_into_overlapping_sessions(world):
    course = published_course(world)
    first = session(world, course, start_in_hours=24, hours=2)
    overlapping = session(world, course, start_in_hours=25, hours=2)
    later = session(world, course, start_in_hours=26, hours=1)
    rider = new_rider(world)
    enrol(world, first, rider)
    with pytest.raises(FailedPrecondition) as error:
        enrol(world, overlapping, rider)
    assert error.value.reason == "OVERLAPPING_SESSION"
    enrol(world, later, rider)  # back to back is fine
    with pytest.raises(AlreadyExists):
        enrol(world, first, rider)


def test_a_retired_course_takes_no_new_sessions_but_keeps_its_history(world):
    course = published_course(world)
    s = session(world, course)
    rider = new_rider(world)
    enrol(world, s, rider)
    with as_actor(ADMIN):
        world["training"].retire_course(course_id=course)
    with pytest.raises(FailedPrecondition) as error:
        session(world, course)
    assert error.value.reason == "COURSE_RETIRED"
    with pytest.raises(FailedPrecondition):
        enrol(world, s, new_rider(world))
    assert world["training"].session(s).places_taken == 1


def test_bad_times_and_capacities_are_field_violations(world):
    course = published_course(world)
    now = world["training"].clock()
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as error:
        world["training"].schedule_session(course_id=course, service_space_id=world["space"],
                                           starts_at=now + timedelta(hours=2),
                                           ends_at=now + timedelta(hours=1), capacity=-1)
    assert {(v.field, v.reason) for v in error.value.violations} == {
        ("end_time", "END_TIME_NOT_AFTER_START_TIME"), ("capacity", "VALUE_OUT_OF_RANGE")}


def test_a_reference_to_another_kind_of_thing_names_both_as_the_contract_does(world):
    """A street where a service space is asked, and a service space where a provider (an
    organisation) is: REFERENCE_KIND_NOT_ALLOWED, each named by its resource type (R2)."""
    course = published_course(world)
    now = world["training"].clock()
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as error:
        world["training"].schedule_session(course_id=course, service_space_id=world["street"],
                                           starts_at=now + timedelta(hours=2),
                                           ends_at=now + timedelta(hours=3), capacity=5)
    assert [(v.field, v.reason, v.description) for v in error.value.violations] == [
        ("service_space_id", "REFERENCE_KIND_NOT_ALLOWED",
         "must name a qiji.city/ServiceSpace, not a qiji.city/Organisation")]


def test_suspension_cancels_future_enrolments_exactly_once(world, clock):
    course = published_course(world)
    future = session(world, course, start_in_hours=24)
    rider = new_rider(world)
    enrol(world, future, rider)
    with as_actor(ADMIN):
        world["identity"].suspend_rider(rider_id=rider, reason="complaint")
    world["follower"].run_once()
    world["follower"].run_once()  # nothing new: nothing happens twice
    view = world["training"].session(future)
    assert view.enrolments[rider]["status"] == EnrolmentStatus.CANCELLED.value
    assert "complaint" in view.enrolments[rider]["reason"]
    cancelled = [n for n in world["training"].read_log(1, 10_000)
                 if n.topic.endswith("EnrolmentCancelled")]
    assert len(cancelled) == 1
    assert view.places_taken == 0


def test_a_restarted_follower_resumes_after_its_tracked_position(world, store_env, clock):
    rider = new_rider(world)
    world["follower"].run_once()
    position = world["follower"].position
    assert position == world["identity"].last_position() or position > 0
    world["training"].close()
    reopened = TrainingApplication(settings_for("training", store_env), MASTER_KEY, clock=clock)
    try:
        follower = Follower(reopened, LocalFeed(world["identity"]), reopened.follow_identity,
                            topics=TrainingApplication.IDENTITY_TOPICS)
        assert follower.position == position
        assert follower.run_once() == 0
        with as_actor(ADMIN):
            world["identity"].record_rider_left(rider_id=rider, reason="moved")
        assert follower.run_once() == 1
    finally:
        reopened.close()


def test_passing_every_pre_job_course_certifies_the_rider_once(world, clock):
    civic = published_course(world, Track.CIVIC_EDUCATION, "1.5")
    skills = published_course(world, Track.SKILLS, "2")
    with as_actor(ADMIN):
        world["training"].set_pre_job_courses(course_ids=[civic, skills])
    rider = new_rider(world)
    s1 = session(world, civic, start_in_hours=1)
    s2 = session(world, skills, start_in_hours=4)
    enrol(world, s1, rider)
    enrol(world, s2, rider)
    t = world["training"]
    with as_actor(PLATFORM):
        clock.now += timedelta(hours=1)
        t.check_in_rider(session_id=s1, rider_id=rider)
        first = t.record_completion(session_id=s1, rider_id=rider,
                                    result=CompletionResult.PASSED, score=90)
        # "As of" replays events by when they were stored, which is the real time.
        between = datetime.now(UTC)
        clock.now += timedelta(hours=3)
        t.check_in_rider(session_id=s2, rider_id=rider)
        second = t.record_completion(session_id=s2, rider_id=rider,
                                     result=CompletionResult.PASSED, score=None)
    assert not first["pre_job_certified"]
    assert second["pre_job_certified"]
    certified = [n for n in t.read_log(1, 10_000) if n.topic.endswith("PreJobCertified")]
    assert len(certified) == 1
    transcript = t.transcript(rider_id=rider)
    assert transcript.hours_by_track == {Track.CIVIC_EDUCATION: Decimal("1.5"),
                                         Track.SKILLS: Decimal("2")}
    assert transcript.certified_at == clock.now
    # As of a moment between the two completions: one course, not certified.
    earlier = t.transcript(rider_id=rider, as_of=between)
    assert earlier.hours_by_track == {Track.CIVIC_EDUCATION: Decimal("1.5")}
    assert earlier.certified_at is None
    # Before the rider existed: an empty transcript, not an error.
    assert t.transcript(rider_id=rider, as_of=datetime(2020, 1, 1, tzinfo=UTC)
                        ).completions == []


@pytest.mark.parametrize("as_of", [None, datetime(2020, 1, 1, tzinfo=UTC)])
def test_the_transcript_of_an_unknown_rider_names_the_rider_id_the_caller_sent(world, as_of):
    """Not the learner id training keeps the rider under: that is no id the caller knows."""
    unknown = "5b0b276e-3dca-4072-bc38-1c35fa3f20b2"
    with pytest.raises(NotFound) as error:
        world["training"].transcript(rider_id=unknown, as_of=as_of)
    assert error.value.reason == "RIDER_NOT_FOUND"
    assert error.value.metadata == {"kind": "rider", "id": unknown}
    assert error.value.message == f"rider {unknown!r} not found"


def test_check_in_and_results_follow_the_session(world, clock):
    s = session(world, published_course(world), start_in_hours=3)
    rider, absent = new_rider(world), new_rider(world)
    enrol(world, s, rider)
    enrol(world, s, absent)
    t = world["training"]
    with as_actor(PLATFORM):
        with pytest.raises(FailedPrecondition) as error:
            t.check_in_rider(session_id=s, rider_id=rider)
        assert error.value.reason == "OUTSIDE_CHECK_IN_WINDOW"
        with pytest.raises(FailedPrecondition):
            t.record_completion(session_id=s, rider_id=rider, result=CompletionResult.PASSED,
                                score=None)
        clock.now += timedelta(hours=3)
        t.check_in_rider(session_id=s, rider_id=rider)
        t.record_no_show(session_id=s, rider_id=absent)
        t.record_completion(session_id=s, rider_id=rider, result=CompletionResult.FAILED,
                            score=40)
    view = t.session(s)
    assert view.enrolments[rider]["status"] == "FAILED"
    assert view.enrolments[absent]["status"] == "NO_SHOW"
    assert t.transcript(rider_id=rider).hours_by_track == {}


@pytest.mark.postgres
def test_fifty_concurrent_enrolments_fill_twenty_places_exactly(postgres_env, clock):
    identity = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    training = TrainingApplication(settings_for("training", postgres_env), MASTER_KEY,
                                   clock=clock)
    try:
        follower = Follower(training, LocalFeed(identity), training.follow_identity,
                            topics=TrainingApplication.IDENTITY_TOPICS)
        training.identity_follower = follower
        w = {"identity": identity, "training": training, "riders": 0}
        made = build_city(in_application(identity), also=("provider",))
        w.update(street=made.street, platform=made.platform, station=made.station,
                 university=made.provider)
        with as_actor(ADMIN):
            w["space"] = identity.create_service_space(
                street_id=w["street"], name="驿站", address="x", amenities=[],
                opening_hours=[])["service_space_id"]
        riders = [new_rider(w) for _ in range(50)]
        follower.run_once()
        s = session(w, published_course(w), capacity=20)
        barrier = threading.Barrier(50)
        outcomes: list[str] = []

        def attempt(rider_id: str) -> None:
            barrier.wait()
            try:
                enrol(w, s, rider_id)
                outcomes.append("enrolled")
            except FailedPrecondition as error:
                outcomes.append(error.reason)

        threads = [threading.Thread(target=attempt, args=(r,)) for r in riders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Counter(outcomes) == {"enrolled": 20, "SESSION_FULL": 30}
        assert training.session(s).places_taken == 20
        enrolled = [n for n in training.read_log(1, 100_000) if n.topic.endswith("RiderEnrolled")]
        assert len(enrolled) == 20
    finally:
        training.close()
        identity.close()


# ---------------------------------------------------------------------------- pre-job first


def test_a_registered_rider_trains_for_the_job_before_the_platform_verifies_them(world, clock):
    """岗前培训 comes before the job: a rider not verified yet enrols in, checks in to and passes
    the pre-job courses and is certified; every other course still waits for verification."""
    pre_job, other = published_course(world), published_course(world, Track.SKILLS)
    with as_actor(ADMIN):
        world["training"].set_pre_job_courses(course_ids=[pre_job])
    newcomer = new_rider(world, verify=False)
    s, later = session(world, pre_job, start_in_hours=1), session(world, other, start_in_hours=5)
    enrol(world, s, newcomer)
    with pytest.raises(FailedPrecondition) as error:
        enrol(world, later, newcomer)
    assert error.value.reason == "RIDER_NOT_ACTIVE" and "not verified" in error.value.message
    t = world["training"]
    with as_actor(PLATFORM):
        clock.now += timedelta(hours=1)
        t.check_in_rider(session_id=s, rider_id=newcomer)
        done = t.record_completion(session_id=s, rider_id=newcomer,
                                   result=CompletionResult.PASSED, score=88)
    assert done["pre_job_certified"]
    assert t.transcript(rider_id=newcomer).certified_at == clock.now
    # Verified afterwards: the rest of the curriculum opens.
    with as_actor(PLATFORM):
        world["identity"].verify_rider(rider_id=newcomer)
    enrol(world, later, newcomer)


def test_a_suspended_or_departed_rider_may_not_enrol_even_in_pre_job_training(world):
    pre_job = published_course(world)
    with as_actor(ADMIN):
        world["training"].set_pre_job_courses(course_ids=[pre_job])
    s = session(world, pre_job)
    suspended, gone = new_rider(world, verify=False), new_rider(world, verify=False)
    with as_actor(ADMIN):
        world["identity"].suspend_rider(rider_id=suspended, reason="complaint")
    with as_actor(PLATFORM):
        world["identity"].record_rider_left(rider_id=gone, reason="moved away")
    before = world["training"].last_position()
    for rider, said in ((suspended, "suspended"), (gone, "left")):
        with pytest.raises(FailedPrecondition) as error:
            enrol(world, s, rider)
        assert error.value.reason == "RIDER_NOT_ACTIVE" and said in error.value.message
    assert world["training"].session(s).places_taken == 0
    # Only what the follower noted of identity was written, no enrolment.
    assert not [n for n in world["training"].read_log(before + 1, 1000)
                if n.topic.endswith("RiderEnrolled")]


def test_a_result_before_the_session_starts_is_refused_and_writes_nothing(world, clock):
    s = session(world, published_course(world), start_in_hours=1)
    rider = new_rider(world)
    enrol(world, s, rider)
    t = world["training"]
    with as_actor(PLATFORM):
        clock.now += timedelta(minutes=30)  # check-in is open, the session has not begun
        t.check_in_rider(session_id=s, rider_id=rider)
        before = t.last_position()
        with pytest.raises(FailedPrecondition) as error:
            t.record_completion(session_id=s, rider_id=rider, result=CompletionResult.PASSED,
                                score=90)
        assert error.value.reason == "SESSION_NOT_STARTED"
        assert t.last_position() == before
        assert t.transcript(rider_id=rider).completions == []
        clock.now += timedelta(minutes=30)  # the start: now it may be recorded
        t.record_completion(session_id=s, rider_id=rider, result=CompletionResult.PASSED,
                            score=90)
    assert t.session(s).enrolments[rider]["status"] == "PASSED"


# ---------------------------------------------------------------------------- 站长+校长


def paired_course(w) -> str:
    t = w["training"]
    with as_actor(ADMIN):
        course_id = t.draft_course(
            track=Track.SKILLS, title="站长+校长：配送实操", description="", hours="2",
            formats=[CourseFormat.PAIRED_TEACHING, CourseFormat.HANDS_ON_PRACTICE],
            provider_id=w["station"], instructor_name="刘站长",
            instructor_kind=InstructorKind.STATION_MASTER)["course_id"]
        t.publish_course(course_id=course_id)
    return course_id


def schedule_with(w, course_id, pair, **fields):
    starts = w["training"].clock() + timedelta(hours=1)
    values = {"course_id": course_id, "service_space_id": w["space"], "starts_at": starts,
              "ends_at": starts + timedelta(hours=2), "capacity": 10, **fields}
    with as_actor(ADMIN):
        return w["training"].schedule_session(pair=pair, **values)["session_id"]


def test_a_paired_session_names_its_station_master_and_teacher_on_the_session_and_transcript(
        world, clock):
    course = paired_course(world)
    pair = TeachingPair(PairMember(world["station"], "  刘站长 "),
                        PairMember(world["university"], "陈老师"))
    s = schedule_with(world, course, pair)
    t = world["training"]
    stored = TeachingPair(PairMember(world["station"], "刘站长"),
                          PairMember(world["university"], "陈老师"))
    assert t.session(s).pair == stored
    with as_actor(ADMIN):
        listed, _ = t.list_sessions(course_id=course, service_space_id="", start_after=None,
                                    page_size=10, page_token="")
    assert [v.pair for v in listed] == [stored]
    rider = new_rider(world)
    enrol(world, s, rider)
    with as_actor(PLATFORM):
        clock.now += timedelta(hours=1)
        t.check_in_rider(session_id=s, rider_id=rider)
        t.record_completion(session_id=s, rider_id=rider, result=CompletionResult.PASSED,
                            score=None)
    [done] = t.transcript(rider_id=rider).completions
    assert done["pair"] == stored
    # The pair is in the stored event, so the session's log tells who taught it.
    [scheduled] = [n for n in t.read_log(1, 10_000) if n.topic.endswith("Scheduled")
                   and str(n.originator_id) == s]
    assert b'"station_master"' in scheduled.state and b'"teacher"' in scheduled.state


def test_a_paired_course_refuses_a_session_without_both_and_every_fault_comes_at_once(world):
    course = paired_course(world)
    before = world["training"].last_position()
    with pytest.raises(InvalidArgument) as error:
        schedule_with(world, course, TeachingPair(teacher=PairMember(world["university"], "")),
                      capacity=0)
    assert {(v.field, v.reason) for v in error.value.violations} == {
        ("pair.station_master", "TEACHING_PAIR_INCOMPLETE"),
        ("pair.teacher.name", "FIELD_REQUIRED"), ("capacity", "VALUE_OUT_OF_RANGE")}
    assert world["training"].last_position() == before


def test_a_pair_member_names_an_organisation_of_its_own_kind(world):
    """A station master comes from a station, a teacher from an education provider."""
    course = published_course(world)  # not paired: either member alone is fine
    assert schedule_with(world, course, TeachingPair(
        teacher=PairMember(world["university"], "陈老师")))
    with pytest.raises(InvalidArgument) as error:
        schedule_with(world, course, TeachingPair(PairMember(world["university"], "刘站长"),
                                                  PairMember(world["station"], "陈老师")))
    assert [(v.field, v.reason, v.description) for v in error.value.violations] == [
        ("pair.station_master.station_id", "ORGANISATION_KIND_NOT_ALLOWED",
         "must be an ORGANISATION_KIND_STATION, not an ORGANISATION_KIND_EDUCATION_PROVIDER"),
        ("pair.teacher.provider_id", "ORGANISATION_KIND_NOT_ALLOWED",
         "must be an ORGANISATION_KIND_EDUCATION_PROVIDER, not an ORGANISATION_KIND_STATION")]
    unknown = "5b0b276e-3dca-4072-bc38-1c35fa3f20b2"
    with pytest.raises(NotFound) as missing:
        schedule_with(world, course, TeachingPair(PairMember(unknown, "刘站长")))
    assert missing.value.reason == "ORGANISATION_NOT_FOUND"
    with pytest.raises(InvalidArgument) as malformed:
        schedule_with(world, course, TeachingPair(PairMember("x", "刘" * 101)))
    assert {(v.field, v.reason) for v in malformed.value.violations} == {
        ("pair.station_master.station_id", "INVALID_ID"),
        ("pair.station_master.name", "TEXT_TOO_LONG")}
