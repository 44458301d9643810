"""Translation helpers between protobuf messages and domain values, used by every entry point."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from shared.errors import TIME_INVALID, FieldViolation, InvalidArgument, Violations

E = TypeVar("E", bound=StrEnum)


def _prefix(enum_type: Any) -> str:
    zero = enum_type.DESCRIPTOR.values[0].name  # buf style: <ENUM>_UNSPECIFIED
    return zero[: -len("UNSPECIFIED")]


def enum_in(value: int, enum_type: Any, domain: type[E]) -> E | None:
    """The domain value, or None for UNSPECIFIED and for numbers this server does not know."""
    if value == 0 or value not in enum_type.values():
        return None
    return domain(enum_type.Name(value)[len(_prefix(enum_type)):])


def enum_out(value: StrEnum | str | None, enum_type: Any) -> int:
    if not value:
        return 0
    return enum_type.Value(_prefix(enum_type) + str(value))


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def optional_time(message: Message, field: str, violations: Violations | None = None, *,
                  path: str = "") -> datetime | None:
    """The timestamp `message.field`, None when not set. One out of range is INVALID_ARGUMENT
    on `path` (its path from the request's root, AIP-193; `field` when the message is the
    request); given `violations`, it is added there instead (and None returned), so that the
    command reports it with the request's other faults."""
    if not message.HasField(field):
        return None
    try:
        return getattr(message, field).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        fault = FieldViolation(path or field, "not a valid timestamp (0001-01-01 to 9999-12-31)",
                               TIME_INVALID)
        if violations is None:
            raise InvalidArgument([fault]) from None
        violations.add(fault.field, fault.description, fault.reason)
        return None
