"""The training service layer: courses, sessions and enrolment, results and certification, and
the policy that follows identity's feed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.application import ProcessingEvent

from services.identity import events as identity_events
from services.training.domain.model import (
    Course,
    Learner,
    PreJobProgramme,
    TrainingSession,
)
from services.training.domain.values import (
    MAX_CAPACITY,
    MAX_SESSION_HOURS,
    SESSION_TOO_LONG,
    START_TIME_NOT_IN_FUTURE,
    CompletionResult,
    CourseFormat,
    CourseStatus,
    EnrolmentStatus,
    InstructorKind,
    PairMember,
    TeachingPair,
    Track,
    parse_course_hours,
)
from services.training.events import passed_hours_by_track
from services.training.growth import GrowthPlans
from services.training.views import TrainingViews
from shared.application import CommandResult, Outcome, QijiApplication
from shared.config import Settings
from shared.errors import (
    DUPLICATE_VALUE,
    END_TIME_NOT_AFTER_START_TIME,
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    VALUE_OUT_OF_RANGE,
    NotFound,
    Violations,
    check_id,
    check_text,
    require_ids,
)
from shared.followers import FeedSource, Follower, UpstreamEvent, follower_of
from shared.paging import listed
from shared.references import Reference, note_reference, organisation_kind_not_allowed
from shared.tenancy import Owners
from shared.wire import must_be_specified

MAX_TITLE = 200
MAX_DESCRIPTION = 2000
MAX_INSTRUCTOR_NAME = 100
NO_PAIR = TeachingPair()  # a session that names nobody


@dataclass(frozen=True)
class CourseView:
    course_id: str
    track: Track
    title: str
    description: str
    hours: Decimal
    formats: list[CourseFormat]
    provider_id: str
    instructor_name: str
    instructor_kind: InstructorKind | None
    status: CourseStatus
    version: int


@dataclass(frozen=True)
class SessionView:
    session_id: str
    course_id: str
    service_space_id: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    places_taken: int
    enrolments: dict[str, dict[str, Any]]
    version: int
    pair: TeachingPair = NO_PAIR


@dataclass(frozen=True)
class TranscriptView:
    rider_id: str
    hours_by_track: dict[Track, Decimal]
    passed_by_track: dict[Track, int]
    completions: list[dict[str, Any]] = field(default_factory=list)
    certified_at: datetime | None = None


class TrainingApplication(GrowthPlans, QijiApplication):
    name = "training"

    def __init__(self, settings: Settings, master_key: bytes,
                 clock: Callable[[], datetime] | None = None, *,
                 feeds: FeedSource | None = None):
        super().__init__(settings, master_key)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.views = TrainingViews(self)
        self.views.catch_up()
        # The follower of identity's feed, which a request naming a rider or an organisation
        # not known here yet catches up through (the directory reads the same feed).
        self.identity_follower: Follower | None = follower_of(
            self, feeds, "identity", self.follow_identity, self.IDENTITY_TOPICS,
            looks_up=self.identity_learners)

    # ------------------------------------------------------------------ courses

    def draft_course(self, *, track: Track | None, title: str, description: str, hours: str,
                     formats: list[CourseFormat | None], provider_id: str,
                     instructor_name: str, instructor_kind: InstructorKind | None,
                     violations: Violations | None = None) -> CommandResult:
        """`violations`, here and in every command and list that takes them: what the entry
        point already found wrong in the request (an enum number the contract does not define,
        a timestamp it could not read), reported with the rest in one answer."""
        # Every fault at once, the provider it names included.
        violations = violations if violations is not None else Violations()
        violations.require_given(track, "track",
                                 must_be_specified(Track), ENUM_VALUE_REQUIRED)
        check_text(violations, "title", title, MAX_TITLE, required=True)
        check_text(violations, "description", description, MAX_DESCRIPTION, required=False)
        parsed_hours = parse_course_hours(violations, "hours", hours)
        violations.require(bool(formats), "formats", "name at least one format",
                           FIELD_REQUIRED)
        for i, f in enumerate(formats):
            violations.require_given(f, f"formats[{i}]", must_be_specified(CourseFormat),
                                     ENUM_VALUE_REQUIRED)
        check_text(violations, "instructor.name", instructor_name, MAX_INSTRUCTOR_NAME,
                    required=True)
        violations.require_given(instructor_kind, "instructor.kind",
                                 must_be_specified(InstructorKind), ENUM_VALUE_REQUIRED)
        note_reference(self, violations, provider_id, "provider_id", "organisation",
                       self.catch_up_upstream)
        violations.raise_if_any()
        assert track is not None and instructor_kind is not None and parsed_hours is not None

        def decide() -> Outcome:
            course = Course(track=track.value, title=title.strip(),
                            description=description.strip(), hours=parsed_hours,
                            formats=sorted({f.value for f in formats if f}),
                            provider_id=provider_id, instructor_name=instructor_name.strip(),
                            instructor_kind=instructor_kind.value)
            return Outcome([course], {"course_id": str(course.id), "version": course.version})
        return self.execute(decide, id_key="course_id")

    def publish_course(self, *, course_id: str) -> CommandResult:
        return self._change_course(course_id, Course.publish)

    def retire_course(self, *, course_id: str) -> CommandResult:
        return self._change_course(course_id, Course.retire)

    def _change_course(self, course_id: str, change: Callable[[Course], None]) -> CommandResult:
        def decide() -> Outcome:
            course = self.get(course_id, Course, "course")
            change(course)
            return Outcome([course], {"course_id": str(course.id), "version": course.version})
        return self.execute(decide, id_key="course_id")

    def course(self, course_id: str, version: int | None = None) -> CourseView:
        c = self.view(course_id, Course, "course", version)  # only rendered
        return CourseView(
            course_id=str(c.id), track=Track(c.track), title=c.title, description=c.description,
            hours=c.hours, formats=[CourseFormat(f) for f in c.formats],
            provider_id=c.provider_id, instructor_name=c.instructor_name,
            instructor_kind=InstructorKind(c.instructor_kind), status=c.status,
            version=c.version)

    def list_courses(self, *, track: Track | None, status: CourseStatus | None, page_size: int,
                     page_token: str, violations: Violations | None = None
                     ) -> tuple[list[CourseView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.courses.select(
            {"track": track.value if track else "", "status": status.value if status else ""},
            page_size=page_size, page_token=page_token))
        return [self.course(i) for i in ids], token

    # ------------------------------------------------------------------ sessions

    def schedule_session(self, *, course_id: str, service_space_id: str,
                         starts_at: datetime | None, ends_at: datetime | None, capacity: int,
                         pair: TeachingPair = NO_PAIR,
                         violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        course = self.note(violations, course_id, Course, "course", "course_id")
        if course is not None:
            # A course's formats never change: its rule on the pair is read here, with the
            # request's other faults, for one answer.
            course.check_pair(violations, pair)
        self._check_pair_member(violations, pair.station_master, "pair.station_master",
                                "station_id", "STATION")
        self._check_pair_member(violations, pair.teacher, "pair.teacher", "provider_id",
                                "EDUCATION_PROVIDER")
        note_reference(self, violations, service_space_id, "service_space_id", "service_space",
                       self.catch_up_upstream)
        for name, value in (("start_time", starts_at), ("end_time", ends_at)):
            violations.require_given(value, name,
                                     "must be set", FIELD_REQUIRED)
        if starts_at and ends_at:
            violations.require(ends_at > starts_at, "end_time", "must be after start_time",
                               END_TIME_NOT_AFTER_START_TIME)
            violations.require(ends_at - starts_at <= timedelta(hours=MAX_SESSION_HOURS),
                               "end_time", f"a session lasts at most {MAX_SESSION_HOURS} hours",
                               SESSION_TOO_LONG)
            violations.require(starts_at > self.clock(), "start_time", "must be in the future",
                               START_TIME_NOT_IN_FUTURE)
        violations.require(1 <= capacity <= MAX_CAPACITY, "capacity",
                           f"must be 1 to {MAX_CAPACITY}", VALUE_OUT_OF_RANGE)
        violations.raise_if_any()
        assert starts_at is not None and ends_at is not None

        def decide() -> Outcome:
            course = self.get(course_id, Course, "course", field="course_id")
            session = TrainingSession.schedule(course, course_id=course_id,
                                               service_space_id=service_space_id,
                                               starts_at=starts_at, ends_at=ends_at,
                                               capacity=capacity, pair=pair.stripped())
            return Outcome([session], {"session_id": str(session.id),
                                       "version": session.version})
        return self.execute(decide, id_key="session_id")

    def session(self, session_id: str, version: int | None = None) -> SessionView:
        # Only read, to render it: the cached session, not a copy of its whole roll (a copy
        # grows with the roll: about 11 µs at 6 riders, 120 µs at 100).
        s = self.view(session_id, TrainingSession, "session", version)
        whole_roll = self.caller_owns("session", session_id)
        return SessionView(
            session_id=str(s.id), course_id=s.course_id, service_space_id=s.service_space_id,
            starts_at=s.starts_at, ends_at=s.ends_at, capacity=s.capacity,
            places_taken=s.places_taken,
            # Each rider's enrolment is their platform's business: the others are counted in
            # places_taken, not shown. Whoever runs the session sees its whole roll.
            enrolments={k: dict(v) for k, v in s.enrolments.items()
                        if whole_roll or self.sees_rider(k)},
            version=s.version, pair=TeachingPair.from_event(s.pair))

    def _check_pair_member(self, violations: Violations, member: PairMember | None,
                           path: str, id_field: str, kind: str) -> None:
        """A station master is named with the station they run, a teacher with the education
        provider they teach for: an organisation identity created, of that kind."""
        if member is None:
            return
        check_text(violations, f"{path}.name", member.name, MAX_INSTRUCTOR_NAME, required=True)
        field_name = f"{path}.{id_field}"
        if note_reference(self, violations, member.organisation_id, field_name, "organisation",
                          self.catch_up_upstream) is None:
            return
        entry = self.directory.organisation(member.organisation_id) if self.directory else None
        if entry is not None and entry.kind != kind:
            organisation_kind_not_allowed(violations, field_name, entry.kind, kind)

    def list_sessions(self, *, course_id: str, service_space_id: str,
                      start_after: datetime | None, page_size: int, page_token: str,
                      violations: Violations | None = None) -> tuple[list[SessionView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.sessions.page(
            course_id=course_id, service_space_id=service_space_id, start_after=start_after,
            page_size=page_size, page_token=page_token))
        return [self.session(i) for i in ids], token

    # ------------------------------------------------------------------ enrolment

    def enrol_rider(self, *, session_id: str, rider_id: str
                    ) -> CommandResult:
        violations = Violations()
        check_id(violations, "session_id", session_id)
        check_id(violations, "rider_id", rider_id)
        violations.raise_if_any()

        def decide() -> Outcome:
            session = self.get(session_id, TrainingSession, "session", field="session_id")
            course = self.view(session.course_id, Course, "course")  # only read
            # What the session and its course refuse (retired, started, full) before the
            # rider is looked up: a street office is admitted on a session in its street
            # alone, and must not learn from a refusal whether a rider it names exists
            # (require_riders). Here, not before execute: a retry must find its first answer.
            course.require_published()
            now = self.clock()
            session.check_enrolment(rider_id, now)
            # A pre-job course is open to a rider not verified yet (岗前培训 comes first).
            programme = self._programme(read_only=True)
            pre_job = programme is not None and session.course_id in programme.course_ids
            self.require_riders(Violations(), [("rider_id", rider_id)], Learner.create_id,
                                self.catch_up_upstream,
                                refresh_unless=lambda learner: learner.may_enrol(pre_job))
            learner = self._learner(rider_id)
            learner.require_may_enrol(pre_job)
            session.enrol(rider_id, now)
            learner.book(session_id, session.starts_at, session.ends_at)
            return Outcome([session, learner], {"session_id": session_id,
                                                "version": session.version})
        # Everyone enrols in the same few sessions: queue on the session in this process.
        return self.execute(decide, id_key="session_id", serialise_on=session_id)

    def withdraw_enrolment(self, *, session_id: str, rider_id: str
                           ) -> CommandResult:
        require_ids(session_id=session_id, rider_id=rider_id)

        def decide() -> Outcome:
            session = self.get(session_id, TrainingSession, "session")
            # The session first: a rider not enrolled in it is answered so whether or not they
            # exist (the street office hosting it names whom it likes); one enrolled is known.
            session.withdraw(rider_id, self.clock())
            learner = self._learner(rider_id)
            learner.release(session_id)
            return Outcome([session, learner], {"session_id": session_id,
                                                "version": session.version})
        return self.execute(decide, id_key="session_id", serialise_on=session_id)

    def check_in_rider(self, *, session_id: str, rider_id: str
                       ) -> CommandResult:
        return self._change_session(session_id, rider_id,
                                    lambda s: s.check_in(rider_id, self.clock()))

    def record_no_show(self, *, session_id: str, rider_id: str
                       ) -> CommandResult:
        return self._change_session(session_id, rider_id,
                                    lambda s: s.record_no_show(rider_id, self.clock()))

    def _change_session(self, session_id: str, rider_id: str,
                        change: Callable[[TrainingSession], None]) -> CommandResult:
        require_ids(session_id=session_id, rider_id=rider_id)

        def decide() -> Outcome:
            session = self.get(session_id, TrainingSession, "session")
            change(session)
            return Outcome([session], {"session_id": session_id, "version": session.version})
        return self.execute(decide, id_key="session_id", serialise_on=session_id)

    def record_completion(self, *, session_id: str, rider_id: str,
                          result: CompletionResult | None, score: int | None,
                          violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        check_id(violations, "session_id", session_id)
        check_id(violations, "rider_id", rider_id)
        violations.require_given(result, "result",
                                 must_be_specified(CompletionResult),
                                 ENUM_VALUE_REQUIRED)
        violations.require(score is None or 0 <= score <= 100, "score", "must be 0 to 100",
                           VALUE_OUT_OF_RANGE)
        violations.raise_if_any()
        assert result is not None

        def decide() -> Outcome:
            session = self.get(session_id, TrainingSession, "session")
            course = self.get(session.course_id, Course, "course")
            # The session first, as in withdraw_enrolment: only a rider who checked in (who is
            # known) gets past it.
            now = self.clock()
            session.record_completion(rider_id, result, score, now)
            learner = self._learner(rider_id)
            learner.record_completion(course_id=session.course_id, session_id=session_id,
                                      track=course.track, hours=course.hours,
                                      result=result.value, score=score, at=now)
            programme = self._programme()
            certified = learner.certify_if_complete(
                programme.course_ids if programme else [],
                programme.version if programme else 0, now)
            # The rider's growth plans reach their steps in the same save as the completion.
            plans = self.advance_growth_plans(learner, now)
            return Outcome([session, learner, *plans], {"session_id": session_id,
                                                "version": session.version,
                                                "pre_job_certified": certified})
        return self.execute(decide, id_key="session_id", serialise_on=session_id)

    # ------------------------------------------------------------------ pre-job programme

    def set_pre_job_courses(self, *, course_ids: list[str]
                            ) -> CommandResult:
        violations = Violations()
        violations.require(bool(course_ids), "course_ids", "name at least one course",
                           FIELD_REQUIRED)
        violations.require(len(set(course_ids)) == len(course_ids), "course_ids",
                           "lists a course twice", DUPLICATE_VALUE)
        for i, course_id in enumerate(course_ids):
            self.note(violations, course_id, Course, "course", f"course_ids[{i}]")
        violations.raise_if_any()

        def decide() -> Outcome:
            for i, course_id in enumerate(course_ids):
                self.get(course_id, Course, "course", field=f"course_ids[{i}]"
                         ).require_published()
            programme = self._programme()
            if programme is None:
                programme = PreJobProgramme(course_ids=course_ids)
            else:
                programme.change(course_ids=course_ids)
            return Outcome([programme], {"version": programme.version})
        return self.execute(decide)

    def pre_job_courses(self, version: int | None = None) -> tuple[list[str], int]:
        programme = self._programme(version)
        return (list(programme.course_ids), programme.version) if programme else ([], 0)

    def _programme(self, version: int | None = None, *, read_only: bool = False
                   ) -> PreJobProgramme | None:
        """The programme; `read_only`: the cached one, for a command that only reads it."""
        if not self.exists(PreJobProgramme.ID):
            return None
        if read_only:
            return self.view(PreJobProgramme.ID, PreJobProgramme, "pre_job_programme", version)
        return self.get(PreJobProgramme.ID, PreJobProgramme, "pre_job_programme", version)

    # ------------------------------------------------------------------ transcript

    def transcript(self, *, rider_id: str, as_of: datetime | None = None,
                   violations: Violations | None = None) -> TranscriptView:
        violations = violations if violations is not None else Violations()
        check_id(violations, "rider_id", rider_id)
        violations.raise_if_any()
        learner_id = Learner.create_id(rider_id)
        if not self.exists(learner_id):
            self.catch_up_upstream()
        # Named by the rider_id the caller sent: the learner's own id is training's business.
        if not self.exists(learner_id):
            raise NotFound("rider", rider_id)
        version = None
        if as_of is not None:
            version = self.version_at(learner_id, as_of)
            if version is None:  # before the rider was known: an empty transcript, no error
                return TranscriptView(rider_id, {}, {})
        learner = self.get(learner_id, Learner, "rider", version)
        # The hours rule is training's published one: a rider's record counts with it too.
        hours = {Track(t): h for t, h in passed_hours_by_track(learner.completions).items()}
        passed: dict[Track, int] = {}
        for c in learner.completions:
            if c["result"] == CompletionResult.PASSED.value:
                passed[Track(c["track"])] = passed.get(Track(c["track"]), 0) + 1
        # Who taught each (站长+校长), from its session: a session's pair never changes.
        completions = [{**c, "pair": TeachingPair.from_event(
            self.get(c["session_id"], TrainingSession, "session").pair)}
            for c in learner.completions]
        return TranscriptView(rider_id, hours, passed, completions, learner.certified_at)

    # ------------------------------------------------------------------ tenancy

    def owner_resolvers(self) -> dict[str, Callable[[str], Owners | None]]:
        return {**super().owner_resolvers(), "course": self._course_owners,
                "session": self._session_owners, "growth_plan": self._growth_plan_owners}

    def _course_owners(self, course_id: str) -> Owners | None:
        """A course is its provider's; anyone may read it once it is published."""
        course = self.found(course_id, Course)
        if course is None:
            return None
        owners = self.organisation_owners(course.provider_id)
        return Owners(owners.by_role, public=course.status is not CourseStatus.DRAFT)

    def _session_owners(self, session_id: str) -> Owners | None:
        """A session is its course's provider's and the street office's of the service space
        it is held at; its schedule is public."""
        session = self.found(session_id, TrainingSession)
        if session is None:
            return None
        owners = self._course_owners(session.course_id) or Owners()
        if self.directory is not None:
            owners = owners | (self.directory.service_space_owners(session.service_space_id)
                               or Owners())
        return Owners(owners.by_role, public=True)

    # ------------------------------------------------------------------ identity's feed

    IDENTITY_TOPICS = (*identity_events.RIDER_STATUS_TOPICS,
                       identity_events.SERVICE_SPACE_OPENED,
                       identity_events.ORGANISATION_CREATED)

    @staticmethod
    def identity_learners(events: Sequence[UpstreamEvent]) -> list[uuid.UUID]:
        """The learners `follow_identity` asks the existence of for these events (one per
        rider registered): asked of the store in one statement for the follower's batch."""
        return [Learner.create_id(str(e.originator_id)) for e in events
                if e.topic == identity_events.RIDER_REGISTERED]

    def follow_identity(self, upstream: UpstreamEvent, processing: ProcessingEvent) -> None:
        """What training does with identity's events. Suspension and leaving cancel the
        rider's enrolments in sessions that have not started yet."""
        topic, state = upstream.topic, upstream.state
        if topic == identity_events.SERVICE_SPACE_OPENED:
            processing.collect_events(Reference(upstream_id=str(upstream.originator_id),
                                                kind="service_space", name=state["name"]))
            return
        if topic == identity_events.ORGANISATION_CREATED:
            processing.collect_events(Reference(upstream_id=str(upstream.originator_id),
                                                kind="organisation", name=state["name"]))
            return
        rider_id = str(upstream.originator_id)
        learner_id = Learner.create_id(rider_id)
        if topic == identity_events.RIDER_REGISTERED:
            if not self.exists(learner_id):
                processing.collect_events(Learner(rider_id=rider_id))
            return
        learner = self.current_or_new(learner_id, Learner, lambda: Learner(rider_id=rider_id))
        verified, suspended, left = identity_events.rider_flags_after(
            topic, learner.verified, learner.suspended, learner.left)
        learner.note_status(verified=verified, suspended=suspended, left=left)
        touched: list[Any] = [learner]
        if suspended or left:
            reason = "rider left the programme" if left else (
                f"rider suspended: {state.get('reason', '')}")
            for session_id in learner.future_bookings(after=upstream.timestamp):
                session = self.get(session_id, TrainingSession, "session")
                # A rider already checked in keeps their place, and so their booking.
                if session.cancel_enrolment(rider_id, reason):
                    learner.release(session_id)
                    touched.append(session)
        processing.collect_events(*touched)

    def catch_up_upstream(self) -> None:
        """Applies what identity has stored so far: a reference or a rider made a moment ago
        is then known here too (read-your-writes across services)."""
        if self.identity_follower is not None:
            self.identity_follower.catch_up()

    # ------------------------------------------------------------------ helpers

    def _learner(self, rider_id: str,
                 refresh_unless: Callable[[Learner], bool] | None = None) -> Learner:
        return self.followed(Learner.create_id(rider_id), Learner, "rider", rider_id,
                             self.catch_up_upstream, refresh_unless)



def hours_text(hours: Decimal) -> str:
    return format(hours.normalize(), "f")


__all__ = ["EnrolmentStatus", "TrainingApplication", "hours_text"]
