"""Value rules of the training domain."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from shared.errors import Violations
from shared.values import parse_hours


class Track(StrEnum):
    CIVIC_EDUCATION = "CIVIC_EDUCATION"  # 红色思政
    SKILLS = "SKILLS"  # 技能培训
    PERSONAL_DEVELOPMENT = "PERSONAL_DEVELOPMENT"  # 个性优化
    GRASSROOTS_GOVERNANCE = "GRASSROOTS_GOVERNANCE"  # 基层治理


class CourseFormat(StrEnum):
    MORNING_MEETING = "MORNING_MEETING"  # 晨会
    NOON_MEETING = "NOON_MEETING"  # 午会
    CLASSROOM = "CLASSROOM"
    HANDS_ON_PRACTICE = "HANDS_ON_PRACTICE"  # 实操
    # Taught by a station master with a teacher (站长+校长): each session names both.
    PAIRED_TEACHING = "PAIRED_TEACHING"


class InstructorKind(StrEnum):
    STATION_MASTER = "STATION_MASTER"  # 站长
    TEACHER = "TEACHER"  # 校长 / teacher
    SOCIAL_WORKER = "SOCIAL_WORKER"
    OFFICIAL = "OFFICIAL"


class CourseStatus(StrEnum):
    DRAFT = "DRAFT"
    PUBLISHED = "PUBLISHED"
    RETIRED = "RETIRED"


class EnrolmentStatus(StrEnum):
    ENROLLED = "ENROLLED"
    WITHDRAWN = "WITHDRAWN"
    CANCELLED = "CANCELLED"
    CHECKED_IN = "CHECKED_IN"
    NO_SHOW = "NO_SHOW"
    PASSED = "PASSED"
    FAILED = "FAILED"


class CompletionResult(StrEnum):
    PASSED = "PASSED"
    FAILED = "FAILED"


# A place is held from enrolment on; only withdrawal or cancellation gives it back.
HOLDS_A_PLACE = frozenset({EnrolmentStatus.ENROLLED, EnrolmentStatus.CHECKED_IN,
                           EnrolmentStatus.NO_SHOW, EnrolmentStatus.PASSED,
                           EnrolmentStatus.FAILED})

@dataclass(frozen=True)
class PairMember:
    """One of a session's teaching pair: the organisation they teach for (the station a station
    master runs; the education provider a teacher is from) and the name a timetable shows
    ("刘站长", "陈老师"). No rider id, phone or other personal data: a station master who is
    also a rider is not linked to their rider record."""

    organisation_id: str
    name: str


@dataclass(frozen=True)
class TeachingPair:
    """The station master and the teacher of a session (站长+校长); either may be absent."""

    station_master: PairMember | None = None
    teacher: PairMember | None = None

    @property
    def complete(self) -> bool:
        return self.station_master is not None and self.teacher is not None

    def stripped(self) -> TeachingPair:
        """Names as stored: without surrounding whitespace."""
        def strip(m: PairMember | None) -> PairMember | None:
            return PairMember(m.organisation_id, m.name.strip()) if m else None
        return TeachingPair(strip(self.station_master), strip(self.teacher))

    def as_event(self) -> dict[str, dict[str, str]]:
        pair: dict[str, dict[str, str]] = {}
        if self.station_master is not None:
            pair["station_master"] = {"station_id": self.station_master.organisation_id,
                                      "name": self.station_master.name}
        if self.teacher is not None:
            pair["teacher"] = {"provider_id": self.teacher.organisation_id,
                               "name": self.teacher.name}
        return pair

    @staticmethod
    def from_event(pair: dict[str, dict[str, str]]) -> TeachingPair:
        master, teacher = pair.get("station_master"), pair.get("teacher")
        return TeachingPair(
            PairMember(master["station_id"], master["name"]) if master else None,
            PairMember(teacher["provider_id"], teacher["name"]) if teacher else None)


# Reasons of the training domain's field violations (BadRequest.FieldViolation.reason).
SESSION_TOO_LONG = "SESSION_TOO_LONG"
# A session of a course taught 站长+校长 that does not name both of its pair.
TEACHING_PAIR_INCOMPLETE = "TEACHING_PAIR_INCOMPLETE"
START_TIME_NOT_IN_FUTURE = "START_TIME_NOT_IN_FUTURE"

MAX_CAPACITY = 500
MAX_COURSE_HOURS = Decimal(200)
MAX_SESSION_HOURS = 12


def parse_course_hours(violations: Violations, field: str, text: str) -> Decimal | None:
    """Course hours as a decimal ("1.5"), in quarter hours."""
    return parse_hours(violations, field, text, maximum=MAX_COURSE_HOURS)
