"""Sessions, learners and courses on their own: capacity, double booking, results."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.training.domain.model import Course, Learner, TrainingSession
from services.training.domain.values import (
    CompletionResult,
    CourseStatus,
    EnrolmentStatus,
    PairMember,
    TeachingPair,
    parse_course_hours,
)
from shared.errors import AlreadyExists, FailedPrecondition, NotFound, Violations

T0 = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)


def a_session(capacity=2) -> TrainingSession:
    return TrainingSession(course_id="c", service_space_id="s", starts_at=T0,
                           ends_at=T0 + timedelta(hours=2), capacity=capacity, pair={})


def test_capacity_is_never_exceeded_and_a_withdrawal_frees_a_place():
    s = a_session(capacity=2)
    before = T0 - timedelta(days=1)
    s.enrol("a", before)
    s.enrol("b", before)
    with pytest.raises(FailedPrecondition) as error:
        s.enrol("c", before)
    assert error.value.reason == "SESSION_FULL"
    s.withdraw("a", before)
    s.enrol("c", before)
    assert s.places_taken == 2


def test_enrolling_twice_or_after_the_start_is_refused():
    s = a_session()
    s.enrol("a", T0 - timedelta(hours=1))
    with pytest.raises(AlreadyExists):
        s.enrol("a", T0 - timedelta(hours=1))
    with pytest.raises(FailedPrecondition) as error:
        s.enrol("b", T0)
    assert error.value.reason == "SESSION_STARTED"


def test_a_cancelled_enrolment_gives_its_place_back_and_can_be_retaken():
    s = a_session(capacity=1)
    s.enrol("a", T0 - timedelta(days=1))
    s.cancel_enrolment("a", "rider suspended")
    assert s.places_taken == 0
    s.cancel_enrolment("a", "again")  # not enrolled any more: nothing happens
    assert len([e for e in s.collect_events() if type(e).__name__ == "EnrolmentCancelled"]) == 1


def test_completion_needs_a_check_in_and_an_enrolment():
    s = a_session()
    with pytest.raises(NotFound):
        s.record_completion("a", CompletionResult.PASSED, None, T0)
    s.enrol("a", T0 - timedelta(days=1))
    with pytest.raises(FailedPrecondition) as error:
        s.record_completion("a", CompletionResult.PASSED, None, T0)
    assert error.value.reason == "ENROLMENT_ENROLLED"
    s.check_in("a", T0)
    s.record_completion("a", CompletionResult.PASSED, 88, T0)
    assert s.enrolments["a"]["status"] == "PASSED"
    assert s.places_taken == 1


def test_overlapping_bookings_are_refused_but_adjacent_ones_are_not():
    learner = Learner(rider_id="r")
    learner.book("s1", T0, T0 + timedelta(hours=2))
    with pytest.raises(FailedPrecondition) as error:
        learner.book("s2", T0 + timedelta(hours=1), T0 + timedelta(hours=3))
    assert error.value.reason == "OVERLAPPING_SESSION"
    assert "s1" not in error.value.message and "s1" not in error.value.metadata.values()
    learner.book("s3", T0 + timedelta(hours=2), T0 + timedelta(hours=3))
    learner.release("s1")
    learner.book("s2", T0 + timedelta(hours=1), T0 + timedelta(hours=2))


def test_only_a_verified_learner_who_is_neither_suspended_nor_gone_is_active():
    learner = Learner(rider_id="r")
    assert not learner.is_active
    learner.note_status(verified=True, suspended=False, left=False)
    assert learner.is_active
    learner.note_status(verified=True, suspended=True, left=False)
    with pytest.raises(FailedPrecondition):
        learner.require_active()


def test_certification_is_stored_once_and_only_when_every_course_is_passed():
    learner = Learner(rider_id="r")
    done = {"session_id": "s", "track": "SKILLS", "hours": Decimal(1), "score": None, "at": T0}
    learner.record_completion(course_id="a", result="PASSED", **done)
    assert not learner.certify_if_complete(["a", "b"], 1, T0)
    learner.record_completion(course_id="b", result="FAILED", **done)
    assert not learner.certify_if_complete(["a", "b"], 1, T0)
    learner.record_completion(course_id="b", result="PASSED", **done)
    assert learner.certify_if_complete(["a", "b"], 1, T0)
    assert not learner.certify_if_complete(["a", "b"], 1, T0)


def test_a_course_goes_draft_published_retired_and_never_back():
    course = Course(track="SKILLS", title="t", description="", hours=Decimal(1),
                    formats=["CLASSROOM"], provider_id="p", instructor_name="i",
                    instructor_kind="TEACHER")
    with pytest.raises(FailedPrecondition):
        course.require_published()
    course.publish()
    course.retire()
    assert course.status is CourseStatus.RETIRED
    with pytest.raises(FailedPrecondition):
        course.publish()
    with pytest.raises(FailedPrecondition):
        course.retire()


@pytest.mark.parametrize("text,ok", [("1.5", True), ("0.25", True), ("200", True),
                                     ("0", False), ("-1", False), ("1.1", False),
                                     ("abc", False), ("NaN", False), ("201", False),
                                     ("1_5", False), ("0.2500000000000000000000000001", False),
                                     ("１.5", False), (" 1.5", False)])
def test_course_hours_are_positive_quarter_hours(text, ok):
    v = Violations()
    assert (parse_course_hours(v, "hours", text) is not None) is ok
    assert (v.items == []) is ok


def test_a_checked_in_rider_is_not_cancelled_and_keeps_their_place():
    s = a_session()
    s.enrol("a", T0 - timedelta(days=1))
    s.check_in("a", T0)
    assert s.cancel_enrolment("a", "suspended") is False
    assert s.places_taken == 1


def test_a_result_is_refused_before_the_session_starts_even_after_an_early_check_in():
    s = a_session()
    s.enrol("a", T0 - timedelta(days=1))
    s.check_in("a", T0 - timedelta(minutes=30))  # check-in opens an hour early
    with pytest.raises(FailedPrecondition) as error:
        s.record_completion("a", CompletionResult.PASSED, 90, T0 - timedelta(seconds=1))
    assert error.value.reason == "SESSION_NOT_STARTED"
    assert error.value.metadata["start_time"] == T0.isoformat()
    assert s.status_of("a") is EnrolmentStatus.CHECKED_IN
    assert not [e for e in s.collect_events() if type(e).__name__ == "CompletionRecorded"]
    # From the start on, and after the end too (an exam marked later).
    s.record_completion("a", CompletionResult.PASSED, 90, T0 + timedelta(hours=5))
    assert s.status_of("a") is EnrolmentStatus.PASSED


def test_a_check_in_long_before_the_start_is_refused():
    s = a_session()
    s.enrol("a", T0 - timedelta(days=1))
    with pytest.raises(FailedPrecondition) as error:
        s.check_in("a", T0 - timedelta(hours=1, seconds=1))
    assert error.value.reason == "OUTSIDE_CHECK_IN_WINDOW"


def test_a_registered_rider_may_enrol_in_pre_job_courses_only_and_never_when_barred():
    learner = Learner(rider_id="r")  # registered, not verified
    learner.require_may_enrol(pre_job=True)
    with pytest.raises(FailedPrecondition) as error:
        learner.require_may_enrol(pre_job=False)
    assert (error.value.reason, "not verified" in error.value.message) == (
        "RIDER_NOT_ACTIVE", True)
    for suspended, left, said in ((True, False, "suspended"), (False, True, "has left")):
        learner.note_status(verified=False, suspended=suspended, left=left)
        for pre_job in (True, False):
            with pytest.raises(FailedPrecondition) as error:
                learner.require_may_enrol(pre_job=pre_job)
            assert error.value.reason == "RIDER_NOT_ACTIVE" and said in error.value.message
    learner.note_status(verified=True, suspended=False, left=False)
    learner.require_may_enrol(pre_job=False)
    learner.require_may_enrol(pre_job=True)


def a_course(formats=("CLASSROOM",)) -> Course:
    return Course(track="SKILLS", title="t", description="", hours=Decimal(1),
                  formats=list(formats), provider_id="p", instructor_name="i",
                  instructor_kind="TEACHER")


MASTER = PairMember("station", "刘站长")
TEACHER = PairMember("university", "陈老师")


def test_a_paired_course_needs_both_its_station_master_and_its_teacher():
    paired = a_course(["CLASSROOM", "PAIRED_TEACHING"])
    assert paired.paired and not a_course().paired
    v = Violations()
    paired.check_pair(v, TeachingPair(station_master=MASTER))
    assert [(i.field, i.reason) for i in v.items] == [
        ("pair.teacher", "TEACHING_PAIR_INCOMPLETE")]
    v = Violations()
    paired.check_pair(v, TeachingPair())
    assert [i.field for i in v.items] == ["pair.station_master", "pair.teacher"]
    v = Violations()
    paired.check_pair(v, TeachingPair(MASTER, TEACHER))
    a_course().check_pair(v, TeachingPair(teacher=TEACHER))
    a_course().check_pair(v, TeachingPair())
    assert v.items == []


def test_a_session_keeps_its_pair_and_one_stored_before_pairs_names_nobody():
    course = a_course(["PAIRED_TEACHING"])
    course.publish()
    s = TrainingSession.schedule(course, course_id="c", service_space_id="s", starts_at=T0,
                                 ends_at=T0 + timedelta(hours=1), capacity=5,
                                 pair=TeachingPair(MASTER, TEACHER))
    assert TeachingPair.from_event(s.pair) == TeachingPair(MASTER, TEACHER)
    assert s.pair == {"station_master": {"station_id": "station", "name": "刘站长"},
                      "teacher": {"provider_id": "university", "name": "陈老师"}}
    old = {"course_id": "c", "service_space_id": "s", "starts_at": T0, "ends_at": T0,
           "capacity": 1}
    TrainingSession.Scheduled.upcast_v1_v2(old)
    assert TeachingPair.from_event(old["pair"]) == TeachingPair()
