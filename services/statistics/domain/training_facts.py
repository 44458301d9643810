"""What training's events count as in the city's figures: sessions held, enrolments, attendance
(签到), courses completed, training hours per track (四时课程) and riders certified for the job
(岗前培训)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from services.statistics.domain.facts import (
    Dimension,
    Directory,
    Event,
    Fact,
    Mapper,
    Measure,
    Memory,
    Where,
    rider_where,
)

SERVICE = "training"
_MODEL = "services.training.domain.model"
COURSE_DRAFTED = f"{_MODEL}:Course.Drafted"
SESSION_SCHEDULED = f"{_MODEL}:TrainingSession.Scheduled"
RIDER_ENROLLED = f"{_MODEL}:TrainingSession.RiderEnrolled"
RIDER_CHECKED_IN = f"{_MODEL}:TrainingSession.RiderCheckedIn"
LEARNER_NOTED = f"{_MODEL}:Learner.Noted"
COURSE_COMPLETED = f"{_MODEL}:Learner.CourseCompleted"
PRE_JOB_CERTIFIED = f"{_MODEL}:Learner.PreJobCertified"
PASSED = "PASSED"

_D = Dimension
SESSION_DIMENSIONS = frozenset({_D.CITY, _D.DISTRICT, _D.STREET, _D.TRACK})
# What riders did at a session: where the session was, and whose riders they are.
RIDER_AT_SESSION_DIMENSIONS = SESSION_DIMENSIONS | {_D.STATION, _D.PLATFORM}
RIDER_DIMENSIONS = frozenset({_D.CITY, _D.DISTRICT, _D.STREET, _D.STATION, _D.PLATFORM})

# Hours are stored in minutes: sums stay exact whatever the order (quarter hours at least).
MINUTES = 60

# The four tracks of the curriculum (training's Track) as the city names them.
KEY_LABELS = {_D.TRACK: {
    "CIVIC_EDUCATION": "红色思政",
    "SKILLS": "技能培训",
    "PERSONAL_DEVELOPMENT": "个性优化",
    "GRASSROOTS_GOVERNANCE": "基层治理",
}}

MEASURES: tuple[Measure, ...] = (
    Measure("training_sessions", "培训场次", "场", SERVICE, SESSION_DIMENSIONS,
            "Training sessions scheduled to start in the period, at the service space's "
            "street; by the course's track.",
            "计划在统计期内开始的培训场次，以场次开始时间计入当期；按培训所在服务空间的街道"
            "和课程方向统计。"),
    Measure("training_enrolments", "培训报名", "人次", SERVICE, RIDER_AT_SESSION_DIMENSIONS,
            "Enrolments of riders in sessions, at the moment they enrolled (withdrawn ones "
            "included); at the session's street.",
            "骑手报名参加培训场次的人次，以报名时间计入当期（报名后退出的也计入）；按场次所在"
            "街道统计。"),
    Measure("training_attendance", "培训签到", "人次", SERVICE, RIDER_AT_SESSION_DIMENSIONS,
            "Riders who checked in at a session, counted at the session's start; at the "
            "session's street.",
            "在培训场次签到的骑手人次，以场次开始时间计入当期；按场次所在街道统计。"),
    Measure("training_completions", "课程结业", "人次", SERVICE, RIDER_AT_SESSION_DIMENSIONS,
            "Courses passed, counted at the start of the session they were passed at (a result "
            "recorded later joins that period); at the session's street.",
            "考核通过、课程结业的人次，以结业所在场次的开始时间计入当期（成绩事后录入的，"
            "也补入该场次所在期间）；按场次所在街道统计。"),
    Measure("training_hours", "培训学时", "学时", SERVICE, RIDER_AT_SESSION_DIMENSIONS,
            "The course hours of every course passed (a rider's transcript hours), counted at "
            "the session's start; by track (四时课程).",
            "骑手每通过一门课程所得的课程学时（即成绩单上的学时）之和，以该课程所在场次的开始"
            "时间计入当期；可按课程方向（四时课程）统计。", scale=MINUTES),
    Measure("riders_certified", "岗前培训合格骑手", "人", SERVICE, RIDER_DIMENSIONS,
            "Riders certified for the job (岗前培训: every pre-job course passed), at the moment "
            "of certification; by home street, station and platform.",
            "岗前培训课程全部考核合格、取得上岗资格的骑手人数，以认定合格的时间计入当期；按骑手"
            "常住街道、所属站点和平台统计。"),
)

_COURSE, _SESSION, _LEARNER = "course", "session", "learner"


def course_drafted(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    memory.put(_COURSE, event.originator_id, {"track": str(event.state["track"])})
    return []


def session_scheduled(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    s = event.state
    course = memory.get(_COURSE, s["course_id"]) or {}
    street = directory.service_space_street(s["service_space_id"]) or ""
    starts_at: datetime = s["starts_at"]
    memory.put(_SESSION, event.originator_id, {"track": course.get("track", ""),
                                               "street": street,
                                               "starts_at": starts_at.isoformat()})
    return [Fact("training_sessions", 1, starts_at, event.recorded_at, Where(street_id=street),
                 track=course.get("track", ""))]


def _session(memory: Memory, session_id: str) -> dict[str, Any]:
    found = memory.get(_SESSION, session_id)
    return dict(found) if found is not None else {"track": "", "street": "", "starts_at": ""}


def _at_session(measure: str, value: int, event: Event, directory: Directory, memory: Memory,
                session_id: str, rider_id: str, effective_at: datetime | None) -> Fact:
    session = _session(memory, session_id)
    starts_at = (datetime.fromisoformat(session["starts_at"]) if session["starts_at"]
                 else event.recorded_at)
    return Fact(measure, value, effective_at or starts_at, event.recorded_at,
                rider_where(directory, rider_id, street_id=session["street"]),
                track=session["track"])


def enrolled(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    s = event.state
    return [_at_session("training_enrolments", 1, event, directory, memory,
                        event.originator_id, s["rider_id"], s.get("at") or event.recorded_at)]


def checked_in(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    return [_at_session("training_attendance", 1, event, directory, memory,
                        event.originator_id, event.state["rider_id"], None)]


def learner_noted(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    memory.put(_LEARNER, event.originator_id, {"rider": event.state["rider_id"]})
    return []


def _rider_of(memory: Memory, learner_id: str) -> str:
    found = memory.get(_LEARNER, learner_id)
    return str(found["rider"]) if found is not None else ""


def completed(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    s = event.state
    if s["result"] != PASSED:
        return []  # a failed course counts nothing (training's transcript rule)
    rider = _rider_of(memory, event.originator_id)
    minutes = int(Decimal(str(s["hours"])) * MINUTES)
    found = [_at_session("training_completions", 1, event, directory, memory,
                         s["session_id"], rider, None)]
    if minutes:
        found.append(_at_session("training_hours", minutes, event, directory, memory,
                                 s["session_id"], rider, None))
    return found


def certified(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    rider = _rider_of(memory, event.originator_id)
    return [Fact("riders_certified", 1, event.state.get("at") or event.recorded_at,
                 event.recorded_at, rider_where(directory, rider))]


# topic -> mapper
MAPPERS: dict[str, Mapper] = {
    COURSE_DRAFTED: course_drafted,
    SESSION_SCHEDULED: session_scheduled,
    RIDER_ENROLLED: enrolled,
    RIDER_CHECKED_IN: checked_in,
    LEARNER_NOTED: learner_noted,
    COURSE_COMPLETED: completed,
    PRE_JOB_CERTIFIED: certified,
}
