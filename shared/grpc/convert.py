"""Translation helpers between protobuf messages and domain values, used by every entry point."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar, cast

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from shared.errors import TIME_INVALID, Violations
from shared.values import CoordinateSystem, GeoPoint

E = TypeVar("E")
P = TypeVar("P", bound=int)


def _prefix(enum_type: Any) -> str:
    zero = enum_type.DESCRIPTOR.values[0].name  # buf style: <ENUM>_UNSPECIFIED
    return zero[: -len("UNSPECIFIED")]


def enum_in(value: int, enum_type: Any, domain: Callable[[str], E], violations: Violations,
            field: str) -> E | None:
    """The domain value of a request's enum field `field` (its path from the request's root).
    `domain` makes the value of its name without the enum's prefix (a StrEnum, or str).
    None for *_UNSPECIFIED (0), whose meaning is the field's own: required, or "any" where the
    contract says so. A number the contract does not define is no such thing: it is added to
    `violations` (ENUM_VALUE_UNKNOWN, naming the number) and None returned, so that the
    request's other faults are reported with it; a check that the field is set then finds it
    already spoken for (`violations.about(field)`) and says nothing more."""
    if value == 0:
        return None
    if value not in enum_type.values():
        known = ", ".join(name for name, number in enum_type.items() if number)
        violations.add(field, f"{value} is not a {enum_type.DESCRIPTOR.name} this server knows: "
                       f"one of {known}", "ENUM_VALUE_UNKNOWN")
        return None
    return domain(enum_type.Name(value)[len(_prefix(enum_type)):])


def enum_out(value: StrEnum | str | None, enum_type: type[P]) -> P:
    """The number of a domain value in the contract's enum `enum_type` (a generated pb2 enum,
    typed as its own class), 0 (*_UNSPECIFIED) for none."""
    # At run time a generated enum is an EnumTypeWrapper, not a class: its numbers are ints,
    # typed in the .pyi as instances of the enum's class.
    wrapper = cast(EnumTypeWrapper, enum_type)
    if not value:
        return cast(P, 0)
    return cast(P, wrapper.Value(_prefix(enum_type) + str(value)))


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def optional_time(message: Message, field: str, violations: Violations, *, path: str = ""
                  ) -> datetime | None:
    """The timestamp `message.field`, None when not set. One out of range (before 0001-01-01
    or after 9999-12-31) is added to `violations` as TIME_INVALID on `path` (its path from the
    request's root; `field` when the message is the request) and None returned: the entry
    point converts before the command runs, and the command reports it with the request's
    other faults, in one answer."""
    if not message.HasField(field):
        return None
    try:
        return getattr(message, field).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        violations.add(path or field, "not a valid timestamp (0001-01-01 to 9999-12-31)",
                       TIME_INVALID)
        return None


def geo_point_in(location: Any, coordinate_system_enum: Any, violations: Violations,
                 field: str) -> GeoPoint:
    """A request's Location (latitude, longitude, coordinate_system) as a GeoPoint.
    COORDINATE_SYSTEM_UNSPECIFIED means WGS-84, as every proto that has the field says (a
    caller that predates it meant WGS-84); a number the contract does not define is refused."""
    system = CoordinateSystem.WGS84
    if location.coordinate_system:
        # A number the contract does not define is in `violations` (the request is refused):
        # the point keeps WGS-84 meanwhile.
        system = enum_in(location.coordinate_system, coordinate_system_enum, CoordinateSystem,
                         violations, f"{field}.coordinate_system") or system
    return GeoPoint(location.latitude, location.longitude, system)


def geo_point_out(latitude: float, longitude: float, location_type: Any,
                  coordinate_system_enum: Any, **more: Any) -> Any:
    """A stored (WGS-84) point as a response's Location."""
    return location_type(latitude=latitude, longitude=longitude,
                         coordinate_system=enum_out(CoordinateSystem.WGS84,
                                                    coordinate_system_enum), **more)
