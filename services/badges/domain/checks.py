"""The small checks badges' commands share, each adding what is wrong to the request's
Violations with a reason (google.rpc.BadRequest.FieldViolation.reason) a caller's program may
branch on."""

from __future__ import annotations

from shared.errors import Violations, is_uuid

FIELD_REQUIRED = "FIELD_REQUIRED"
INVALID_ID = "INVALID_ID"
TEXT_TOO_LONG = "TEXT_TOO_LONG"
TEXT_INVALID = "TEXT_INVALID"
VALUE_OUT_OF_RANGE = "VALUE_OUT_OF_RANGE"
ENUM_VALUE_REQUIRED = "ENUM_VALUE_REQUIRED"
TIME_IN_THE_FUTURE = "TIME_IN_THE_FUTURE"
DUPLICATE_VALUE = "DUPLICATE_VALUE"


def check_id(violations: Violations, field: str, value: str) -> bool:
    """Whether `value` is an id (a UUID); if not, why, added to `violations`."""
    if not value:
        violations.add(field, "is required", FIELD_REQUIRED)
        return False
    if not is_uuid(value):
        violations.add(field, "is not a valid id (a UUID)", INVALID_ID)
        return False
    return True


def check_text(violations: Violations, field: str, value: str, limit: int, *,
               required: bool = True) -> None:
    if required and not value.strip():
        violations.add(field, "must not be empty", FIELD_REQUIRED)
    elif len(value) > limit:
        violations.add(field, f"at most {limit} characters", TEXT_TOO_LONG)
