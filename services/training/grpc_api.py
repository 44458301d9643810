"""training's gRPC entry point: translate, call one application method, render."""

from __future__ import annotations

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
from services.training.domain.values import (
    CompletionResult,
    CourseFormat,
    CourseStatus,
    InstructorKind,
    Track,
)
from shared.auth import (
    AUDITOR,
    CITY_ADMIN,
    DEPARTMENT,
    OPERATOR,
    PLATFORM,
    SERVICE,
    STREET_OFFICE,
)
from shared.grpc.convert import enum_in, enum_out, optional_time, request_fingerprint, timestamp

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrainingService"].full_name

_READERS = frozenset({CITY_ADMIN, STREET_OFFICE, DEPARTMENT, PLATFORM, OPERATOR, AUDITOR,
                      SERVICE})
_CURRICULUM = frozenset({CITY_ADMIN, STREET_OFFICE})
# Enrolment is done for the rider by the platform's app or at a street office's counter;
# attendance and results by the station master (through the platform) or the street office.
_CLASSROOM = frozenset({PLATFORM, STREET_OFFICE, CITY_ADMIN})

PERMISSIONS: dict[str, frozenset[str]] = {f"/{SERVICE_NAME}/{rpc}": roles for rpc, roles in {
    "DraftCourse": _CURRICULUM,
    "PublishCourse": _CURRICULUM,
    "RetireCourse": _CURRICULUM,
    "GetCourse": _READERS,
    "ListCourses": _READERS,
    "ScheduleSession": _CURRICULUM | {PLATFORM},
    "GetSession": _READERS,
    "ListSessions": _READERS,
    "EnrolRider": _CLASSROOM,
    "WithdrawEnrolment": _CLASSROOM,
    "CheckInRider": _CLASSROOM,
    "RecordNoShow": _CLASSROOM,
    "RecordCompletion": _CLASSROOM,
    "SetPreJobCourses": frozenset({CITY_ADMIN}),
    "GetPreJobCourses": _READERS,
    "GetTranscript": _READERS,
}.items()}


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    def __init__(self, app: TrainingApplication):
        self.app = app

    # ------------------------------------------------------------------ courses

    def DraftCourse(self, request: Any, context: Any) -> Any:
        result = self.app.draft_course(
            track=enum_in(request.track, pb.Track, Track), title=request.title,
            description=request.description, hours=request.hours,
            formats=[enum_in(f, pb.CourseFormat, CourseFormat) for f in request.formats],
            provider_id=request.provider_id, instructor_name=request.instructor.name,
            instructor_kind=enum_in(request.instructor.kind, pb.InstructorKind, InstructorKind),
            fingerprint=request_fingerprint(request))
        return pb.DraftCourseResponse(course=self._course_at(result))

    def PublishCourse(self, request: Any, context: Any) -> Any:
        result = self.app.publish_course(course_id=request.course_id,
                                         fingerprint=request_fingerprint(request))
        return pb.PublishCourseResponse(course=self._course_at(result))

    def RetireCourse(self, request: Any, context: Any) -> Any:
        result = self.app.retire_course(course_id=request.course_id,
                                        fingerprint=request_fingerprint(request))
        return pb.RetireCourseResponse(course=self._course_at(result))

    def GetCourse(self, request: Any, context: Any) -> Any:
        return pb.GetCourseResponse(course=self._course(self.app.course(request.course_id)))

    def ListCourses(self, request: Any, context: Any) -> Any:
        found, token = self.app.list_courses(
            track=enum_in(request.track, pb.Track, Track),
            status=enum_in(request.status, pb.CourseStatus, CourseStatus),
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListCoursesResponse(courses=[self._course(c) for c in found],
                                      next_page_token=token)

    # ------------------------------------------------------------------ sessions

    def ScheduleSession(self, request: Any, context: Any) -> Any:
        result = self.app.schedule_session(
            course_id=request.course_id, service_space_id=request.service_space_id,
            starts_at=optional_time(request, "start_time"),
            ends_at=optional_time(request, "end_time"), capacity=request.capacity,
            fingerprint=request_fingerprint(request))
        return pb.ScheduleSessionResponse(session=self._session_at(result))

    def GetSession(self, request: Any, context: Any) -> Any:
        return pb.GetSessionResponse(session=self._session(self.app.session(request.session_id)))

    def ListSessions(self, request: Any, context: Any) -> Any:
        found, token = self.app.list_sessions(
            course_id=request.course_id, service_space_id=request.service_space_id,
            start_after=optional_time(request, "start_after_time"),
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListSessionsResponse(sessions=[self._session(s) for s in found],
                                       next_page_token=token)

    def EnrolRider(self, request: Any, context: Any) -> Any:
        result = self.app.enrol_rider(session_id=request.session_id, rider_id=request.rider_id,
                                      fingerprint=request_fingerprint(request))
        return pb.EnrolRiderResponse(session=self._session_at(result))

    def WithdrawEnrolment(self, request: Any, context: Any) -> Any:
        result = self.app.withdraw_enrolment(session_id=request.session_id,
                                             rider_id=request.rider_id,
                                             fingerprint=request_fingerprint(request))
        return pb.WithdrawEnrolmentResponse(session=self._session_at(result))

    def CheckInRider(self, request: Any, context: Any) -> Any:
        result = self.app.check_in_rider(session_id=request.session_id,
                                         rider_id=request.rider_id,
                                         fingerprint=request_fingerprint(request))
        return pb.CheckInRiderResponse(session=self._session_at(result))

    def RecordNoShow(self, request: Any, context: Any) -> Any:
        result = self.app.record_no_show(session_id=request.session_id,
                                         rider_id=request.rider_id,
                                         fingerprint=request_fingerprint(request))
        return pb.RecordNoShowResponse(session=self._session_at(result))

    def RecordCompletion(self, request: Any, context: Any) -> Any:
        result = self.app.record_completion(
            session_id=request.session_id, rider_id=request.rider_id,
            result=enum_in(request.result, pb.CompletionResult, CompletionResult),
            score=request.score if request.HasField("score") else None,
            fingerprint=request_fingerprint(request))
        return pb.RecordCompletionResponse(session=self._session_at(result),
                                           pre_job_certified=result["pre_job_certified"])

    # ------------------------------------------------------------------ pre-job, transcript

    def SetPreJobCourses(self, request: Any, context: Any) -> Any:
        result = self.app.set_pre_job_courses(course_ids=list(request.course_ids),
                                              fingerprint=request_fingerprint(request))
        course_ids, version = self.app.pre_job_courses(result["version"])
        return pb.SetPreJobCoursesResponse(course_ids=course_ids, version=version)

    def GetPreJobCourses(self, request: Any, context: Any) -> Any:
        course_ids, version = self.app.pre_job_courses()
        return pb.GetPreJobCoursesResponse(course_ids=course_ids, version=version)

    def GetTranscript(self, request: Any, context: Any) -> Any:
        t = self.app.transcript(rider_id=request.rider_id,
                                as_of=optional_time(request, "as_of_time"))
        return self._transcript(t)

    # ------------------------------------------------------------------ rendering

    def _course_at(self, result: dict[str, Any]) -> Any:
        return self._course(self.app.course(result["course_id"], result["version"]))

    def _session_at(self, result: dict[str, Any]) -> Any:
        return self._session(self.app.session(result["session_id"], result["version"]))

    @staticmethod
    def _course(c: CourseView) -> Any:
        return pb.Course(
            course_id=c.course_id, track=enum_out(c.track, pb.Track), title=c.title,
            description=c.description, hours=hours_text(c.hours),
            formats=[enum_out(f, pb.CourseFormat) for f in c.formats],
            provider_id=c.provider_id,
            instructor=pb.Instructor(name=c.instructor_name,
                                     kind=enum_out(c.instructor_kind, pb.InstructorKind)),
            status=enum_out(c.status, pb.CourseStatus), version=c.version)

    @staticmethod
    def _session(s: SessionView) -> Any:
        enrolments = []
        for rider_id, e in sorted(s.enrolments.items(), key=lambda kv: kv[1]["enrolled_at"]):
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
            enrolments=enrolments, version=s.version)

    @staticmethod
    def _transcript(t: TranscriptView) -> Any:
        completions = []
        for c in t.completions:
            completion = pb.CompletedCourse(
                course_id=c["course_id"], session_id=c["session_id"],
                track=enum_out(c["track"], pb.Track), hours=hours_text(c["hours"]),
                result=enum_out(c["result"], pb.CompletionResult),
                complete_time=timestamp(c["at"]))
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


def add_servicers(server: grpc.Server, app: Any) -> list[str]:
    pb_grpc.add_TrainingServiceServicer_to_server(TrainingServicer(app), server)
    return [SERVICE_NAME]
