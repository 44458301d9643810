"""Aggregates of the training domain: courses, sessions, learners and the pre-job programme.

A session guards its capacity; a learner guards against double booking and holds the rider's
transcript. Enrolment changes both in one atomic save, so neither rule can be slipped past by
two concurrent requests: the loser of the race decides again from what the winner stored.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import register_topic
from immutables import Map

from services.training.domain.values import (
    HOLDS_A_PLACE,
    TEACHING_PAIR_INCOMPLETE,
    CompletionResult,
    CourseFormat,
    CourseStatus,
    EnrolmentStatus,
    TeachingPair,
)
from shared import rolls
from shared.errors import AlreadyExists, FailedPrecondition, NotFound, Violations
from shared.rider_status import FollowedRiderStatus
from shared.wire import wire_name

_NS = uuid.UUID("a4a1f0de-7f47-4d7c-8f3a-2b6b0b9f5c10")


def _holds_a_place(enrolment: Map[str, Any]) -> bool:
    return EnrolmentStatus(enrolment["status"]) in HOLDS_A_PLACE


@functools.lru_cache(maxsize=4096)
def _learner_id(rider_id: str) -> uuid.UUID:
    # A follower's batch asks a learner's id three times per rider registered (which exist,
    # the policy, the new Learner): a SHA-1 each. The id never changes: computed once.
    return uuid.uuid5(_NS, f"learner\n{rider_id}")
# How early before the start a rider may check in.
CHECK_IN_OPENS_SECONDS = 3600


class Course(Aggregate):
    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Drafted: ClassVar[type[Any]]
        Published: ClassVar[type[Any]]
        Retired: ClassVar[type[Any]]

    @event("Drafted")
    def __init__(self, track: str, title: str, description: str, hours: Decimal,
                 formats: list[str], provider_id: str, instructor_name: str,
                 instructor_kind: str):
        self.track = track
        self.title = title
        self.description = description
        self.hours = hours
        self.formats = list(formats)
        self.provider_id = provider_id
        self.instructor_name = instructor_name
        self.instructor_kind = instructor_kind
        self.status = CourseStatus.DRAFT

    def publish(self) -> None:
        if self.status is not CourseStatus.DRAFT:
            draft = wire_name(CourseStatus.DRAFT)
            raise FailedPrecondition(f"only a {draft} course can be published; this one is "
                                     f"{wire_name(self.status)}",
                                     reason="COURSE_NOT_DRAFT")
        self._published()

    @event("Published")
    def _published(self) -> None:
        self.status = CourseStatus.PUBLISHED

    def retire(self) -> None:
        if self.status is CourseStatus.RETIRED:
            raise FailedPrecondition("the course is already retired", reason="COURSE_RETIRED")
        self._retired()

    @event("Retired")
    def _retired(self) -> None:
        # A retired course keeps its sessions, results and hours: only new sessions are refused.
        self.status = CourseStatus.RETIRED

    @property
    def paired(self) -> bool:
        """Taught by a station master with a teacher (站长+校长): each session names both."""
        return CourseFormat.PAIRED_TEACHING.value in self.formats

    def check_pair(self, violations: Violations, pair: TeachingPair) -> None:
        """A session of a course taught 站长+校长 names both its station master and its teacher;
        another course's session may name either, both or neither."""
        if not self.paired:
            return
        for member, who in (("station_master", "station master (站长)"),
                            ("teacher", "teacher (校长)")):
            violations.require(getattr(pair, member) is not None, f"pair.{member}",
                               f"the course is taught by a station master with a teacher "
                               f"(COURSE_FORMAT_PAIRED_TEACHING): name its {who}",
                               TEACHING_PAIR_INCOMPLETE)

    def require_published(self) -> None:
        if self.status is not CourseStatus.PUBLISHED:
            reason = "COURSE_RETIRED" if self.status is CourseStatus.RETIRED else (
                "COURSE_NOT_PUBLISHED")
            raise FailedPrecondition(f"the course is {wire_name(self.status)}",
                                     reason=reason)


class TrainingSession(Aggregate):
    """One sitting of a course at a service space, with a capacity, and who teaches it when a
    station master and a teacher teach it together (站长+校长)."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        RiderEnrolled: ClassVar[type[Any]]
        EnrolmentWithdrawn: ClassVar[type[Any]]
        EnrolmentCancelled: ClassVar[type[Any]]
        RiderCheckedIn: ClassVar[type[Any]]
        NoShowRecorded: ClassVar[type[Any]]
        CompletionRecorded: ClassVar[type[Any]]

    class Scheduled(Aggregate.Created):
        # v2 added `pair`; a session scheduled before names nobody ({}).
        class_version = 2
        course_id: str
        service_space_id: str
        starts_at: datetime
        ends_at: datetime
        capacity: int
        pair: dict[str, dict[str, str]]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["pair"] = {}

    @event(Scheduled)
    def __init__(self, course_id: str, service_space_id: str, starts_at: datetime,
                 ends_at: datetime, capacity: int, pair: dict[str, dict[str, str]]):
        self.course_id = course_id
        self.service_space_id = service_space_id
        self.starts_at = starts_at
        self.ends_at = ends_at
        self.capacity = capacity
        # {"station_master": {"station_id", "name"}, "teacher": {"provider_id", "name"}},
        # each only when named (TeachingPair.as_event).
        self.pair = {k: dict(v) for k, v in pair.items()}
        # Each rider's enrolment, a roll (shared/rolls.py: a command's copy of the session
        # shares it; a session holds up to MAX_CAPACITY and the riders who withdrew), and the
        # places they hold, counted as they change rather than walked on each enrol.
        self.enrolments: rolls.Roll = Map()
        self.taken = 0

    @classmethod
    def schedule(cls, course: Course, course_id: str, service_space_id: str,
                 starts_at: datetime, ends_at: datetime, capacity: int,
                 pair: TeachingPair) -> TrainingSession:
        """A session of a published course (its pair checked with the request's other faults
        first: Course.check_pair)."""
        course.require_published()
        return cls(course_id=course_id, service_space_id=service_space_id, starts_at=starts_at,
                   ends_at=ends_at, capacity=capacity, pair=pair.as_event())

    @property
    def places_taken(self) -> int:
        return self.taken

    def _enrolment(self, rider_id: str, **changes: Any) -> None:
        """The rider's enrolment with `changes` (a new one when the rider enrols, again or for
        the first time), and the places taken as they now are."""
        self.enrolments, held = rolls.changed(
            self.enrolments, rider_id, changes, fresh="enrolled_at" in changes,
            holds_a_place=_holds_a_place)
        self.taken += held

    def status_of(self, rider_id: str) -> EnrolmentStatus | None:
        entry = self.enrolments.get(rider_id)
        return EnrolmentStatus(entry["status"]) if entry else None

    def check_enrolment(self, rider_id: str, at: datetime) -> None:
        """Whether the rider may enrol at `at`, as far as the session can tell (not enrolled
        yet, not started, not full): what enrol refuses, without enrolling."""
        status = self.status_of(rider_id)
        if status in HOLDS_A_PLACE:
            raise AlreadyExists("the rider is already enrolled in this session",
                                reason="ALREADY_ENROLLED")
        if at >= self.starts_at:
            raise FailedPrecondition("the session has already started", reason="SESSION_STARTED")
        if self.places_taken >= self.capacity:
            raise FailedPrecondition("the session is full", reason="SESSION_FULL",
                                     capacity=str(self.capacity))

    def enrol(self, rider_id: str, at: datetime) -> None:
        self.check_enrolment(rider_id, at)
        self._enrolled(rider_id=rider_id, at=at)

    @event("RiderEnrolled")
    def _enrolled(self, rider_id: str, at: datetime) -> None:
        self._enrolment(rider_id, status=EnrolmentStatus.ENROLLED.value, enrolled_at=at,
                        score=None, reason="")

    def withdraw(self, rider_id: str, at: datetime) -> None:
        self._require(rider_id, EnrolmentStatus.ENROLLED, "only an enrolled rider can withdraw")
        if at >= self.starts_at:
            raise FailedPrecondition("the session has already started", reason="SESSION_STARTED")
        self._withdrawn(rider_id=rider_id)

    @event("EnrolmentWithdrawn")
    def _withdrawn(self, rider_id: str) -> None:
        self._enrolment(rider_id, status=EnrolmentStatus.WITHDRAWN.value)

    def cancel_enrolment(self, rider_id: str, reason: str) -> bool:
        """Qiji's own cancellation, e.g. when the rider is suspended: True if it cancelled, False
        (and nothing stored) if the rider is not simply enrolled, e.g. already checked in."""
        if self.status_of(rider_id) is not EnrolmentStatus.ENROLLED:
            return False
        self._cancelled(rider_id=rider_id, reason=reason)
        return True

    @event("EnrolmentCancelled")
    def _cancelled(self, rider_id: str, reason: str) -> None:
        self._enrolment(rider_id, status=EnrolmentStatus.CANCELLED.value, reason=reason)

    def check_in(self, rider_id: str, at: datetime) -> None:
        self._require(rider_id, EnrolmentStatus.ENROLLED, "only an enrolled rider can check in")
        if not (self.starts_at.timestamp() - CHECK_IN_OPENS_SECONDS <= at.timestamp()
                <= self.ends_at.timestamp()):
            raise FailedPrecondition(
                "check-in opens an hour before the start and closes at the end",
                reason="OUTSIDE_CHECK_IN_WINDOW")
        self._checked_in(rider_id=rider_id, at=at)

    @event("RiderCheckedIn")
    def _checked_in(self, rider_id: str, at: datetime) -> None:
        self._enrolment(rider_id, status=EnrolmentStatus.CHECKED_IN.value, checked_in_at=at)

    def record_no_show(self, rider_id: str, at: datetime) -> None:
        self._require(rider_id, EnrolmentStatus.ENROLLED, "only an enrolled rider can be a no-show")
        if at < self.starts_at:
            raise FailedPrecondition("the session has not started yet",
                                     reason="SESSION_NOT_STARTED")
        self._no_show(rider_id=rider_id)

    @event("NoShowRecorded")
    def _no_show(self, rider_id: str) -> None:
        self._enrolment(rider_id, status=EnrolmentStatus.NO_SHOW.value)

    def record_completion(self, rider_id: str, result: CompletionResult,
                          score: int | None, at: datetime) -> None:
        self._require(rider_id, EnrolmentStatus.CHECKED_IN,
                      "only a rider who checked in can complete")
        # Check-in opens an hour early, but a result is what the rider did at the session: it
        # cannot be known before the session began. After its end it may still be recorded
        # (an exam marked later).
        if at < self.starts_at:
            raise FailedPrecondition(
                "the session has not started yet: a result is recorded from its start on",
                reason="SESSION_NOT_STARTED", start_time=self.starts_at.isoformat())
        self._completed(rider_id=rider_id, result=result.value, score=score)

    @event("CompletionRecorded")
    def _completed(self, rider_id: str, result: str, score: int | None) -> None:
        self._enrolment(rider_id, status=result, score=score)

    def _require(self, rider_id: str, wanted: EnrolmentStatus, message: str) -> None:
        status = self.status_of(rider_id)
        if status is None:
            raise NotFound("enrolment", rider_id)
        if status is not wanted:
            raise FailedPrecondition(f"{message} (the enrolment is "
                                     f"{wire_name(status)})",
                                     reason=f"ENROLMENT_{status.value}")


class Learner(FollowedRiderStatus, Aggregate):
    """A rider as training knows them: eligibility learned from identity's feed, bookings (to
    refuse overlapping sessions), and the transcript."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Noted: ClassVar[type[Any]]
        GrowthPlanNoted: ClassVar[type[Any]]
        StatusNoted: ClassVar[type[Any]]
        Booked: ClassVar[type[Any]]
        Released: ClassVar[type[Any]]
        CourseCompleted: ClassVar[type[Any]]
        PreJobCertified: ClassVar[type[Any]]

    @staticmethod
    def create_id(rider_id: str, **_: Any) -> uuid.UUID:
        return _learner_id(rider_id)

    @event("Noted")
    def __init__(self, rider_id: str):
        self.rider_id = rider_id
        self.verified = False
        self.suspended = False
        self.left = False
        self.bookings: dict[str, dict[str, datetime]] = {}
        self.completions: list[dict[str, Any]] = []
        self.certified_at: datetime | None = None
        self.certified_courses: list[str] = []
        # The rider's growth plans (services/training/domain/growth.py), evaluated whenever a
        # completion changes this transcript. Noted here, in the learner's own log, so that a
        # plan opened while a completion is recorded collides with it and one of them re-reads
        # the other: no step is missed between the two.
        self.growth_plans: list[str] = []

    @event("GrowthPlanNoted")
    def note_growth_plan(self, growth_plan_id: str) -> None:
        # Noted again when a plan is revised (a new path version is evaluated against this
        # transcript as it stands in the same save): listed once.
        if growth_plan_id not in self.growth_plans:
            self.growth_plans.append(growth_plan_id)

    # Named as every follower of identity names it (badges, merchants, governance). Stored
    # before as RiderStatusNoted, same fields: that topic stays registered to this class below.
    @event("StatusNoted")
    def note_status(self, verified: bool, suspended: bool, left: bool) -> None:
        self.verified, self.suspended, self.left = verified, suspended, left

    def may_enrol(self, pre_job: bool) -> bool:
        """Pre-job training (岗前培训) comes before the job: a registered rider takes it while
        the platform still checks their papers, so verification is not asked for. Every other
        course is for riders at work (active). Nobody suspended or gone enrols in anything."""
        if pre_job:
            return not self.suspended and not self.left
        return self.is_active

    def require_may_enrol(self, pre_job: bool) -> None:
        if self.may_enrol(pre_job):
            return
        if not pre_job and not self.suspended and not self.left:
            raise FailedPrecondition("the rider is not verified yet: before verification only "
                                     "the pre-job courses (岗前培训) are open to them",
                                     reason="RIDER_NOT_ACTIVE")
        self.require_active()  # says which: left or suspended

    def book(self, session_id: str, starts_at: datetime, ends_at: datetime) -> None:
        for other_id, slot in self.bookings.items():
            overlaps = starts_at < slot["ends_at"] and slot["starts_at"] < ends_at
            if other_id != session_id and overlaps:
                # Which session is not said: a street office enrolling someone else's rider
                # at its own session must not learn where that rider will be (the rider's
                # platform reads its rider's bookings itself).
                raise FailedPrecondition("the rider is booked into an overlapping session",
                                         reason="OVERLAPPING_SESSION")
        self._booked(session_id=session_id, starts_at=starts_at, ends_at=ends_at)

    @event("Booked")
    def _booked(self, session_id: str, starts_at: datetime, ends_at: datetime) -> None:
        self.bookings[session_id] = {"starts_at": starts_at, "ends_at": ends_at}

    def release(self, session_id: str) -> None:
        if session_id in self.bookings:
            self._released(session_id=session_id)

    @event("Released")
    def _released(self, session_id: str) -> None:
        del self.bookings[session_id]

    def future_bookings(self, after: datetime) -> list[str]:
        return [sid for sid, slot in self.bookings.items() if slot["starts_at"] > after]

    @event("CourseCompleted")
    def record_completion(self, course_id: str, session_id: str, track: str, hours: Decimal,
                          result: str, score: int | None, at: datetime) -> None:
        self.completions.append({"course_id": course_id, "session_id": session_id,
                                 "track": track, "hours": hours, "result": result,
                                 "score": score, "at": at})

    def passed_courses(self) -> set[str]:
        return {c["course_id"] for c in self.completions
                if c["result"] == CompletionResult.PASSED.value}

    def certify_if_complete(self, programme: list[str], programme_version: int,
                            at: datetime) -> bool:
        """Stores PreJobCertified once, the moment every programme course is passed."""
        if self.certified_at is not None or not programme:
            return False
        if not set(programme) <= self.passed_courses():
            return False
        self._certified(course_ids=sorted(programme), programme_version=programme_version, at=at)
        return True

    @event("PreJobCertified")
    def _certified(self, course_ids: list[str], programme_version: int, at: datetime) -> None:
        self.certified_at = at
        self.certified_courses = course_ids


# Release 0.1.0 stored Learner's status events under this topic (the embedded release log in
# tests/upgrade holds some): they replay into the renamed class, whose fields are the same.
register_topic("services.training.domain.model:Learner.RiderStatusNoted", Learner.StatusNoted)


class PreJobProgramme(Aggregate):
    """The configured set of pre-job courses (岗前培训); one per Qiji installation."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Configured: ClassVar[type[Any]]
        Changed: ClassVar[type[Any]]

    ID = uuid.uuid5(_NS, "pre-job-programme")

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return PreJobProgramme.ID

    @event("Configured")
    def __init__(self, course_ids: list[str]):
        self.course_ids = sorted(set(course_ids))

    @event("Changed")
    def change(self, course_ids: list[str]) -> None:
        # Certifications already made stand: they record which courses they were made on.
        self.course_ids = sorted(set(course_ids))

