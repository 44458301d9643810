"""Value rules of the training domain."""

from __future__ import annotations

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

# Reasons of the training domain's field violations (BadRequest.FieldViolation.reason).
SESSION_TOO_LONG = "SESSION_TOO_LONG"
START_TIME_NOT_IN_FUTURE = "START_TIME_NOT_IN_FUTURE"

MAX_CAPACITY = 500
MAX_COURSE_HOURS = Decimal(200)
MAX_SESSION_HOURS = 12


def parse_course_hours(violations: Violations, field: str, text: str) -> Decimal | None:
    """Course hours as a decimal ("1.5"), in quarter hours."""
    return parse_hours(violations, field, text, maximum=MAX_COURSE_HOURS)
