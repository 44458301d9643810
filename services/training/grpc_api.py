"""training's gRPC entry point: translate, call one application method, render."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import grpc
from qiji.training.v1 import training_service_pb2 as pb
from qiji.training.v1 import training_service_pb2_grpc as pb_grpc

from services.training.application import (
    CourseView,
    SessionView,
    TrainingApplication,
    TranscriptView,
    hours_text,
)
from services.training.domain.growth import GrowthRole, StepProgress
from services.training.domain.values import (
    CompletionResult,
    CourseFormat,
    CourseStatus,
    InstructorKind,
    PairMember,
    TeachingPair,
    Track,
)
from services.training.growth import GrowthPathView, GrowthPlanView, StepInput
from shared import masking
from shared.application import CommandResult
from shared.auth import (
    CITY_ADMIN,
    COMMUNITY,
    DEPARTMENT,
    EDUCATION_PROVIDER,
    PLATFORM,
    ROLES,
    STREET_OFFICE,
)
from shared.errors import Violations
from shared.grpc.convert import enum_in, enum_out, optional_time, timestamp
from shared.tenancy import (
    CITY_READERS,
    RIDER,
    Ref,
    Rows,
    access_table,
    city_wide,
    each,
    once,
    public,
    scoped,
)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrainingService"].full_name

_TENANT_READERS = (PLATFORM, STREET_OFFICE, DEPARTMENT, COMMUNITY, EDUCATION_PROVIDER)
# A course belongs to its provider (a university, an enterprise, a street office, the platform
# itself), which drafts, publishes and retires it; once published, anyone may read it.
PROVIDER = Ref("provider_id", "organisation")
COURSE = Ref("course_id", "course")
COURSE_READ = Ref("course_id", "course", read=True)
# A session belongs to its course's provider and to the street office of the service space
# it is held at; its schedule is public, its enrolments each rider's platform's.
SESSION = Ref("session_id", "session")
SESSION_READ = Ref("session_id", "session", read=True)
SPACE = Ref("service_space_id", "service_space")
# A growth plan is its rider's: their platform's and their home street office's.
PLAN = Ref("growth_plan_id", "growth_plan")


# Who may call each RPC, and for each role that acts for one organisation, what that
# organisation must own (shared/tenancy.py). An RPC missing here is refused to everyone.
ACCESS = access_table(SERVICE_NAME, {
    "DraftCourse": once(scoped(CITY_ADMIN, street_office=PROVIDER, education_provider=PROVIDER,
                          platform=PROVIDER)),
    "PublishCourse": scoped(CITY_ADMIN, street_office=COURSE, education_provider=COURSE,
                            platform=COURSE),
    "RetireCourse": scoped(CITY_ADMIN, street_office=COURSE, education_provider=COURSE,
                           platform=COURSE),
    "GetCourse": scoped(CITY_READERS, tenants=each(COURSE_READ, *_TENANT_READERS)),
    "ListCourses": scoped(CITY_READERS, tenants=each(Rows("course", "id"), *_TENANT_READERS)),
    # The station master with the teacher (站长+校长): a platform or a provider schedules its
    # own course anywhere; a street office anything at its own service spaces.
    "ScheduleSession": once(scoped(CITY_ADMIN, street_office=SPACE, education_provider=COURSE,
                              platform=COURSE)),
    "GetSession": scoped(CITY_READERS, tenants=each(SESSION_READ, *_TENANT_READERS)),
    "ListSessions": scoped(CITY_READERS, tenants=each(Rows("session", "id"), *_TENANT_READERS)),
    # Enrolment is done for the rider by their platform's app, or at a street office's counter
    # (its own residents, or anyone at a session in its street).
    "EnrolRider": scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER | SESSION),
    "WithdrawEnrolment": scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER | SESSION),
    # Attendance and results are recorded by whoever runs the session: its provider (a
    # platform for its stations' own courses, for its own riders only), or the street office
    # that hosts it. Nobody certifies riders on a course someone else gives: a platform would
    # otherwise pass its own riders through the city's civic lesson.
    "CheckInRider": scoped(CITY_ADMIN, platform=RIDER & SESSION, street_office=SESSION,
                           education_provider=SESSION),
    "RecordNoShow": scoped(CITY_ADMIN, platform=RIDER & SESSION, street_office=SESSION,
                           education_provider=SESSION),
    "RecordCompletion": scoped(CITY_ADMIN, platform=RIDER & SESSION, street_office=SESSION,
                               education_provider=SESSION),
    "SetPreJobCourses": city_wide(CITY_ADMIN),
    "GetPreJobCourses": public(ROLES),
    "GetTranscript": scoped(CITY_READERS, platform=RIDER, street_office=RIDER),
    # Growth paths are the city's to configure and version (as routing rules and badge
    # criteria are), and reference data every role reads.
    "DefineGrowthPath": once(city_wide(CITY_ADMIN)),
    "ReviseGrowthPath": city_wide(CITY_ADMIN),
    "ListGrowthPaths": public(ROLES),
    # A rider's plan is opened and kept by the rider's platform (for its own rider, through
    # its app) or the rider's home street office (its resident, at its counter). A community
    # owns no riders in Qiji's tenancy: it asks its street office.
    "OpenGrowthPlan": once(scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER)),
    "ReviseGrowthPlan": scoped(CITY_ADMIN, platform=PLAN, street_office=PLAN),
    "CloseGrowthPlan": scoped(CITY_ADMIN, platform=PLAN, street_office=PLAN),
    "GetGrowthPlan": scoped(CITY_READERS, platform=PLAN, street_office=PLAN),
    "ListGrowthPlans": scoped(CITY_READERS, platform=RIDER, street_office=RIDER),
})


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    def __init__(self, app: TrainingApplication):
        self.app = app

    # ------------------------------------------------------------------ courses

    def DraftCourse(self, request: pb.DraftCourseRequest, context: grpc.ServicerContext
                    ) -> pb.DraftCourseResponse:
        violations = Violations()  # reported with the application's findings, in one answer
        result = self.app.draft_course(
            track=enum_in(request.track, pb.Track, Track, violations, "track"),
            title=request.title, description=request.description, hours=request.hours,
            formats=[enum_in(f, pb.CourseFormat, CourseFormat, violations, f"formats[{i}]")
                     for i, f in enumerate(request.formats)],
            provider_id=request.provider_id, instructor_name=request.instructor.name,
            instructor_kind=enum_in(request.instructor.kind, pb.InstructorKind, InstructorKind,
                                    violations, "instructor.kind"),
            violations=violations)
        return pb.DraftCourseResponse(course=self._course_at(result))

    def PublishCourse(self, request: pb.PublishCourseRequest, context: grpc.ServicerContext
                      ) -> pb.PublishCourseResponse:
        result = self.app.publish_course(course_id=request.course_id)
        return pb.PublishCourseResponse(course=self._course_at(result))

    def RetireCourse(self, request: pb.RetireCourseRequest, context: grpc.ServicerContext
                     ) -> pb.RetireCourseResponse:
        result = self.app.retire_course(course_id=request.course_id)
        return pb.RetireCourseResponse(course=self._course_at(result))

    def GetCourse(self, request: pb.GetCourseRequest, context: grpc.ServicerContext
                  ) -> pb.GetCourseResponse:
        return pb.GetCourseResponse(course=self._course(self.app.course(request.course_id)))

    def ListCourses(self, request: pb.ListCoursesRequest, context: grpc.ServicerContext
                    ) -> pb.ListCoursesResponse:
        violations = Violations()
        found, token = self.app.list_courses(
            track=enum_in(request.track, pb.Track, Track, violations, "track"),
            status=enum_in(request.status, pb.CourseStatus, CourseStatus, violations, "status"),
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListCoursesResponse(courses=[self._course(c) for c in found],
                                      next_page_token=token)

    # ------------------------------------------------------------------ sessions

    def ScheduleSession(self, request: pb.ScheduleSessionRequest, context: grpc.ServicerContext
                        ) -> pb.ScheduleSessionResponse:
        violations = Violations()  # reported with the application's findings, in one answer
        result = self.app.schedule_session(
            course_id=request.course_id, service_space_id=request.service_space_id,
            starts_at=optional_time(request, "start_time", violations),
            ends_at=optional_time(request, "end_time", violations), capacity=request.capacity,
            pair=_pair_in(request), violations=violations)
        return pb.ScheduleSessionResponse(session=self._session_at(result))

    def GetSession(self, request: pb.GetSessionRequest, context: grpc.ServicerContext
                   ) -> pb.GetSessionResponse:
        return pb.GetSessionResponse(session=self._session(self.app.session(request.session_id)))

    def ListSessions(self, request: pb.ListSessionsRequest, context: grpc.ServicerContext
                     ) -> pb.ListSessionsResponse:
        violations = Violations()
        found, token = self.app.list_sessions(
            course_id=request.course_id, service_space_id=request.service_space_id,
            start_after=optional_time(request, "start_after_time", violations),
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListSessionsResponse(sessions=[self._session(s) for s in found],
                                       next_page_token=token)

    def EnrolRider(self, request: pb.EnrolRiderRequest, context: grpc.ServicerContext
                   ) -> pb.EnrolRiderResponse:
        result = self.app.enrol_rider(session_id=request.session_id, rider_id=request.rider_id)
        return pb.EnrolRiderResponse(session=self._session_at(result))

    def WithdrawEnrolment(self, request: pb.WithdrawEnrolmentRequest, context: grpc.ServicerContext
                          ) -> pb.WithdrawEnrolmentResponse:
        result = self.app.withdraw_enrolment(session_id=request.session_id,
                                             rider_id=request.rider_id)
        return pb.WithdrawEnrolmentResponse(session=self._session_at(result))

    def CheckInRider(self, request: pb.CheckInRiderRequest, context: grpc.ServicerContext
                     ) -> pb.CheckInRiderResponse:
        result = self.app.check_in_rider(session_id=request.session_id,
                                         rider_id=request.rider_id)
        return pb.CheckInRiderResponse(session=self._session_at(result))

    def RecordNoShow(self, request: pb.RecordNoShowRequest, context: grpc.ServicerContext
                     ) -> pb.RecordNoShowResponse:
        result = self.app.record_no_show(session_id=request.session_id,
                                         rider_id=request.rider_id)
        return pb.RecordNoShowResponse(session=self._session_at(result))

    def RecordCompletion(self, request: pb.RecordCompletionRequest, context: grpc.ServicerContext
                         ) -> pb.RecordCompletionResponse:
        violations = Violations()
        result = self.app.record_completion(
            session_id=request.session_id, rider_id=request.rider_id,
            result=enum_in(request.result, pb.CompletionResult, CompletionResult, violations,
                           "result"),
            score=request.score if request.HasField("score") else None, violations=violations)
        return pb.RecordCompletionResponse(session=self._session_at(result),
                                           pre_job_certified=result["pre_job_certified"])

    # ------------------------------------------------------------------ pre-job, transcript

    def SetPreJobCourses(self, request: pb.SetPreJobCoursesRequest, context: grpc.ServicerContext
                         ) -> pb.SetPreJobCoursesResponse:
        result = self.app.set_pre_job_courses(course_ids=list(request.course_ids))
        course_ids, version = self.app.pre_job_courses(result.version)
        return pb.SetPreJobCoursesResponse(course_ids=course_ids, version=version)

    def GetPreJobCourses(self, request: pb.GetPreJobCoursesRequest, context: grpc.ServicerContext
                         ) -> pb.GetPreJobCoursesResponse:
        course_ids, version = self.app.pre_job_courses()
        return pb.GetPreJobCoursesResponse(course_ids=course_ids, version=version)

    def GetTranscript(self, request: pb.GetTranscriptRequest, context: grpc.ServicerContext
                      ) -> pb.GetTranscriptResponse:
        violations = Violations()
        t = self.app.transcript(rider_id=request.rider_id,
                                as_of=optional_time(request, "as_of_time", violations),
                                violations=violations)
        return self._transcript(t)

    # ------------------------------------------------------------------ growth

    def DefineGrowthPath(self, request: pb.DefineGrowthPathRequest, context: grpc.ServicerContext
                         ) -> pb.DefineGrowthPathResponse:
        violations = Violations()
        result = self.app.define_growth_path(
            name=request.name, description=request.description,
            steps=self._steps_in(request.steps, violations), violations=violations)
        return pb.DefineGrowthPathResponse(growth_path=self._path_at(result))

    def ReviseGrowthPath(self, request: pb.ReviseGrowthPathRequest, context: grpc.ServicerContext
                         ) -> pb.ReviseGrowthPathResponse:
        violations = Violations()
        result = self.app.revise_growth_path(
            growth_path_id=request.growth_path_id, name=request.name,
            description=request.description, steps=self._steps_in(request.steps, violations),
            violations=violations)
        return pb.ReviseGrowthPathResponse(growth_path=self._path_at(result))

    def ListGrowthPaths(self, request: pb.ListGrowthPathsRequest, context: grpc.ServicerContext
                        ) -> pb.ListGrowthPathsResponse:
        found, token = self.app.list_growth_paths(page_size=request.page_size,
                                                  page_token=request.page_token,
                                                  violations=Violations())
        return pb.ListGrowthPathsResponse(growth_paths=[self._path(p) for p in found],
                                          next_page_token=token)

    def OpenGrowthPlan(self, request: pb.OpenGrowthPlanRequest, context: grpc.ServicerContext
                       ) -> pb.OpenGrowthPlanResponse:
        violations = Violations()
        result = self.app.open_growth_plan(
            rider_id=request.rider_id, growth_path_id=request.growth_path_id,
            path_version=request.path_version, goals=request.goals,
            tracks=self._tracks_in(request.tracks, violations), violations=violations)
        return pb.OpenGrowthPlanResponse(growth_plan=self._plan_at(result))

    def ReviseGrowthPlan(self, request: pb.ReviseGrowthPlanRequest, context: grpc.ServicerContext
                         ) -> pb.ReviseGrowthPlanResponse:
        violations = Violations()
        result = self.app.revise_growth_plan(
            growth_plan_id=request.growth_plan_id, goals=request.goals,
            tracks=self._tracks_in(request.tracks, violations),
            path_version=request.path_version, violations=violations)
        return pb.ReviseGrowthPlanResponse(growth_plan=self._plan_at(result))

    def CloseGrowthPlan(self, request: pb.CloseGrowthPlanRequest, context: grpc.ServicerContext
                        ) -> pb.CloseGrowthPlanResponse:
        result = self.app.close_growth_plan(growth_plan_id=request.growth_plan_id,
                                            reason=request.reason)
        return pb.CloseGrowthPlanResponse(growth_plan=self._plan_at(result))

    def GetGrowthPlan(self, request: pb.GetGrowthPlanRequest, context: grpc.ServicerContext
                      ) -> pb.GetGrowthPlanResponse:
        return pb.GetGrowthPlanResponse(
            growth_plan=self._plan(self.app.growth_plan(request.growth_plan_id)))

    def ListGrowthPlans(self, request: pb.ListGrowthPlansRequest, context: grpc.ServicerContext
                        ) -> pb.ListGrowthPlansResponse:
        plans = self.app.list_growth_plans(rider_id=request.rider_id)
        return pb.ListGrowthPlansResponse(growth_plans=[self._plan(p) for p in plans])

    @staticmethod
    def _tracks_in(tracks: Any, violations: Violations) -> list[Track | None]:
        return [enum_in(t, pb.Track, Track, violations, f"tracks[{i}]")
                for i, t in enumerate(tracks)]

    @staticmethod
    def _steps_in(steps: Any, violations: Violations) -> list[StepInput]:
        return [StepInput(
            key=s.key, title=s.title,
            role=enum_in(s.role, pb.GrowthRole, GrowthRole, violations, f"steps[{i}].role"),
            hours_by_track=[(enum_in(h.track, pb.Track, Track, violations,
                                     f"steps[{i}].track_hours[{j}].track"), h.hours)
                            for j, h in enumerate(s.track_hours)],
            course_ids=list(s.course_ids), pre_job_certified=s.pre_job_certified)
            for i, s in enumerate(steps)]

    def _path_at(self, result: CommandResult) -> pb.GrowthPath:
        return self._path(self.app.growth_path(result.id, result.version))

    def _plan_at(self, result: CommandResult) -> Any:
        return self._plan(self.app.growth_plan(result.id, result.version))

    @staticmethod
    def _path(p: GrowthPathView) -> pb.GrowthPath:
        return pb.GrowthPath(
            growth_path_id=p.growth_path_id, path_version=p.path_version, name=p.name,
            description=p.description, version=p.version,
            steps=[pb.GrowthStep(
                key=s["key"], title=s["title"], role=enum_out(s["role"], pb.GrowthRole),
                track_hours=[pb.TrackHoursRequirement(track=enum_out(t, pb.Track), hours=h)
                             for t, h in sorted(s["hours_by_track"].items())],
                course_ids=s["course_ids"], pre_job_certified=s["pre_job_certified"])
                for s in p.steps])

    @staticmethod
    def _plan(p: GrowthPlanView) -> Any:
        def step(s: StepProgress) -> pb.StepProgress:
            reached = p.reached.get(s.key)
            return pb.StepProgress(
                step_key=s.key, title=s.title, role=enum_out(s.role, pb.GrowthRole),
                met=s.met, reached=reached is not None,
                reach_time=timestamp(reached["at"]) if reached else None,
                reached_path_version=reached["path_version"] if reached else 0,
                tracks=[pb.TrackProgress(
                    track=enum_out(t, pb.Track), hours_passed=hours_text(s.hours_passed[t]),
                    hours_required=hours_text(required),
                    hours_missing=hours_text(s.hours_missing.get(t, Decimal(0))))
                    for t, required in s.hours_required.items()],
                missing_course_ids=list(s.courses_missing),
                pre_job_certification_missing=s.pre_job_missing)
        return pb.GrowthPlan(
            growth_plan_id=p.growth_plan_id, rider_id=p.rider_id,
            growth_path_id=p.growth_path_id, path_version=p.path_version,
            # The rider's own words, which the platform follows for its rider in the app;
            # an official's closing note is free text like any other.
            goals=masking.show_to_caller(masking.REPORT_TEXT, p.goals),
            tracks=[enum_out(t, pb.Track) for t in p.tracks],
            status=enum_out(p.status, pb.GrowthPlanStatus),
            close_reason=masking.show_to_caller(masking.FREE_TEXT, p.close_reason),
            opened_by_id=p.opened_by, open_time=timestamp(p.opened_at),
            steps=[step(s) for s in p.progress], version=p.version)

    # ------------------------------------------------------------------ rendering

    def _course_at(self, result: CommandResult) -> pb.Course:
        return self._course(self.app.course(result.id, result.version))

    def _session_at(self, result: CommandResult) -> pb.Session:
        return self._session(self.app.session(result.id, result.version))

    @staticmethod
    def _course(c: CourseView) -> pb.Course:
        return pb.Course(
            course_id=c.course_id, track=enum_out(c.track, pb.Track), title=c.title,
            description=c.description, hours=hours_text(c.hours),
            formats=[enum_out(f, pb.CourseFormat) for f in c.formats],
            provider_id=c.provider_id,
            instructor=pb.Instructor(name=c.instructor_name,
                                     kind=enum_out(c.instructor_kind, pb.InstructorKind)),
            status=enum_out(c.status, pb.CourseStatus), version=c.version)

    @staticmethod
    def _session(s: SessionView) -> pb.Session:
        enrolments = []
        # Ties by rider: the roll reads the same from every replica (a map has no order).
        for rider_id, e in sorted(s.enrolments.items(),
                                  key=lambda kv: (kv[1]["enrolled_at"], kv[0])):
            enrolment = pb.Enrolment(rider_id=rider_id,
                                     status=enum_out(e["status"], pb.EnrolmentStatus),
                                     enrol_time=timestamp(e["enrolled_at"]),
                                     reason=e.get("reason", ""))
            if e.get("score") is not None:
                enrolment.score = e["score"]
            enrolments.append(enrolment)
        return pb.Session(
            session_id=s.session_id, course_id=s.course_id,
            service_space_id=s.service_space_id, start_time=timestamp(s.starts_at),
            end_time=timestamp(s.ends_at), capacity=s.capacity, places_taken=s.places_taken,
            enrolments=enrolments, version=s.version, pair=_pair_out(s.pair))

    @staticmethod
    def _transcript(t: TranscriptView) -> pb.GetTranscriptResponse:
        completions = []
        for c in t.completions:
            completion = pb.CompletedCourse(
                course_id=c["course_id"], session_id=c["session_id"],
                track=enum_out(c["track"], pb.Track), hours=hours_text(c["hours"]),
                result=enum_out(c["result"], pb.CompletionResult),
                complete_time=timestamp(c["at"]), pair=_pair_out(c["pair"]))
            if c.get("score") is not None:
                completion.score = c["score"]
            completions.append(completion)
        return pb.GetTranscriptResponse(
            rider_id=t.rider_id,
            tracks=[pb.TrackHours(track=enum_out(track, pb.Track),
                                  hours=hours_text(t.hours_by_track[track]),
                                  courses_passed=t.passed_by_track[track])
                    for track in Track if track in t.hours_by_track],
            completions=completions, pre_job_certified=t.certified_at is not None,
            pre_job_certify_time=timestamp(t.certified_at))


def _pair_in(request: Any) -> TeachingPair:
    """The request's pair; a member given at all is checked whole (an empty one is its
    fields' faults, not "absent")."""
    if not request.HasField("pair"):
        return TeachingPair()
    pair = request.pair
    master = (PairMember(pair.station_master.station_id, pair.station_master.name)
              if pair.HasField("station_master") else None)
    teacher = (PairMember(pair.teacher.provider_id, pair.teacher.name)
               if pair.HasField("teacher") else None)
    return TeachingPair(master, teacher)


def _pair_out(pair: TeachingPair) -> Any:
    """None (unset) for a session that names nobody."""
    if pair.station_master is None and pair.teacher is None:
        return None
    out = pb.TeachingPair()
    if pair.station_master is not None:
        out.station_master.station_id = pair.station_master.organisation_id
        out.station_master.name = pair.station_master.name
    if pair.teacher is not None:
        out.teacher.provider_id = pair.teacher.organisation_id
        out.teacher.name = pair.teacher.name
    return out


def add_servicers(server: grpc.Server, app: Any) -> list[str]:
    pb_grpc.add_TrainingServiceServicer_to_server(TrainingServicer(app), server)
    return [SERVICE_NAME]
