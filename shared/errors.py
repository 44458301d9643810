"""Domain errors every service raises; the gRPC layer maps each to one status code.

These are plain Python so that a service's domain can raise them without knowing about gRPC.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class FieldViolation:
    """One thing wrong with one field. `reason` is a stable UPPER_SNAKE code a caller's program
    can branch on (`PARENT_KIND_NOT_ALLOWED`, `STATION_OF_ANOTHER_PLATFORM`); it reaches the
    caller as `google.rpc.BadRequest.FieldViolation.reason`. `description` is for people and
    names enum values as the wire does (`ORGANISATION_KIND_STREET`)."""

    field: str
    description: str
    reason: str = "FIELD_INVALID"


class QijiError(Exception):
    """Base of every error that may reach a caller. `reason` is a stable UPPER_SNAKE code."""

    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, **metadata: str):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = {k: str(v) for k, v in metadata.items()}


@dataclass(frozen=True)
class Missing:
    """A reference to something that does not exist (as far as the caller may know): the
    request field that names it (empty when the error is not about a field), its kind (the
    label of NotFound: "organisation", "course"…) and the id it gives."""

    field: str
    kind: str
    ident: str


def not_found_reason(kind: str) -> str:
    """The reason of a reference to nothing of `kind`: "badge_class" → BADGE_CLASS_NOT_FOUND
    (deploy/apidoc.py documents it from NotFound's `kind`)."""
    return f"{kind.upper().replace(' ', '_')}_NOT_FOUND"


class InvalidArgument(QijiError):
    """Every field violation of a request, in one answer. Its ErrorInfo reason is the
    violations' own when they share one (a program branching on a single fault needs no
    BadRequest), else INVALID_ARGUMENT: the field violations then carry each reason.
    `resources`: what the request names that does not exist, among the violations (each is
    also given to the caller as a google.rpc.ResourceInfo)."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None, *,
                 resources: Sequence[Missing] = ()):
        self.violations = list(violations)
        self.resources = tuple(resources)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text)
        reasons = {v.reason for v in self.violations}
        if len(reasons) == 1:
            self.reason = reasons.pop()


class NotFound(QijiError):
    """Something the request names does not exist (or is not the caller's to see, AIP-211):
    the first such thing is the ErrorInfo (reason `<KIND>_NOT_FOUND`, metadata `kind` and `id`);
    `resources` is it and, when the request named several things that do not exist and had no
    other fault, the others too — a google.rpc.ResourceInfo each, so that the caller fixes
    them all at once. `field`: the request field naming it, where known."""

    def __init__(self, kind: str, ident: str, message: str | None = None, *, field: str = "",
                 also: Sequence[Missing] = ()):
        first = Missing(field, kind, ident)
        self.resources = (first, *also)
        text = message or f"{kind} {ident!r} not found"
        if also and message is None:
            text += "; also not found: " + "; ".join(
                f"{m.field or m.kind}: {m.kind} {m.ident!r}" for m in also)
        super().__init__(text, reason=not_found_reason(kind))
        self.metadata = {"kind": kind, "id": ident}


class AlreadyExists(QijiError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(QijiError):
    reason = "FAILED_PRECONDITION"


class PermissionDenied(QijiError):
    reason = "PERMISSION_DENIED"


class Unauthenticated(QijiError):
    reason = "UNAUTHENTICATED"


class Aborted(QijiError):
    """A command kept colliding with concurrent writers; the caller may retry it."""

    reason = "CONCURRENT_MODIFICATION"


class Unavailable(QijiError):
    """The store cannot be reached; nothing was written and the caller may retry."""

    reason = "STORE_UNAVAILABLE"


class DataLoss(QijiError):
    """Stored data fails its integrity check (forged or altered in the database): nothing acts
    on it. Not retryable until the operators repair the store."""

    reason = "DATA_LOSS"


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# The generic reasons of field violations (BadRequest.FieldViolation.reason); a service names
# its own specific ones (PHONE_INVALID, PARENT_KIND_NOT_ALLOWED…) where a program would branch.
FIELD_REQUIRED = "FIELD_REQUIRED"  # empty, or not set
INVALID_ID = "INVALID_ID"  # not a UUID
TEXT_TOO_LONG = "TEXT_TOO_LONG"
TEXT_INVALID = "TEXT_INVALID"  # control characters and the like
VALUE_OUT_OF_RANGE = "VALUE_OUT_OF_RANGE"
ENUM_VALUE_REQUIRED = "ENUM_VALUE_REQUIRED"  # *_UNSPECIFIED where a value is required
TIME_INVALID = "TIME_INVALID"  # not a time at all
TIME_IN_THE_FUTURE = "TIME_IN_THE_FUTURE"  # a time that must have passed
TIME_IN_THE_PAST = "TIME_IN_THE_PAST"  # a time that must be still to come
TIME_TOO_LONG_AGO = "TIME_TOO_LONG_AGO"  # further back than the rule allows
END_TIME_NOT_AFTER_START_TIME = "END_TIME_NOT_AFTER_START_TIME"
DUPLICATE_VALUE = "DUPLICATE_VALUE"
LOCATION_INVALID = "LOCATION_INVALID"  # not WGS84 degrees
# A reference of the wrong kind. Both the field and what it names are organisations (a street
# asked, a district given; a community as a badge's issuer): the description names both kinds
# as the wire does (ORGANISATION_KIND_STREET).
ORGANISATION_KIND_NOT_ALLOWED = "ORGANISATION_KIND_NOT_ALLOWED"
# The field takes another kind of thing than it names (a service space asked, an organisation
# given): the description names both by their resource types (qiji.city/ServiceSpace).
REFERENCE_KIND_NOT_ALLOWED = "REFERENCE_KIND_NOT_ALLOWED"


def check_id(violations: Violations, field_name: str, value: str) -> bool:
    """`value` must be a UUID: FIELD_REQUIRED when empty, INVALID_ID when malformed. True when
    it is one (then it may be looked up)."""
    if not value:
        violations.add(field_name, "is required", FIELD_REQUIRED)
        return False
    if not is_uuid(value):
        violations.add(field_name, "is not a valid id (a UUID)", INVALID_ID)
        return False
    return True


def check_text(violations: Violations, field_name: str, value: str, limit: int, *,
               required: bool = True) -> None:
    """Free text of at most `limit` characters: FIELD_REQUIRED when `required` and blank,
    TEXT_TOO_LONG when longer."""
    if required and not value.strip():
        violations.add(field_name, "must not be empty", FIELD_REQUIRED)
    elif len(value) > limit:
        violations.add(field_name, f"at most {limit} characters", TEXT_TOO_LONG)


# Why an official acts on someone (suspends a rider, rejects a report, reverses a redemption):
# a few sentences the person affected may read, not a file. Every service's `reason` field.
MAX_REASON = 500


def check_reason(violations: Violations, reason: str, *, field_name: str = "reason",
                 limit: int = MAX_REASON) -> None:
    """The reason an official gives for acting on someone: required, at most `limit`
    characters (FIELD_REQUIRED, TEXT_TOO_LONG), as check_text says it. The one reason check
    of every service; a reason that may run longer (a badge's citation) says its limit."""
    check_text(violations, field_name, reason, limit)


def require_ids(**ids: str) -> None:
    """Every named argument must be a UUID: one violation per malformed id."""
    violations = Violations()
    for name, value in ids.items():
        if not is_uuid(value):
            violations.add(name, "is not a valid id (a UUID)", INVALID_ID)
    violations.raise_if_any()


@dataclass
class Violations:
    """Collects everything wrong with a request before raising, so a caller learns it all in
    one answer: formats, rules, references of the wrong kind, and references to nothing.

    A request whose only fault is naming things that do not exist is NOT_FOUND, as AIP-193
    asks (the first of them in its ErrorInfo, every one of them as a ResourceInfo); any other
    fault makes it INVALID_ARGUMENT, listing the missing references among the field violations
    (reason `<KIND>_NOT_FOUND`), so a request with five problems gets five violations, not a
    NOT_FOUND first and the rest on the next try.

    Riders are the exception: whether one exists is not every caller's to know, so a command
    looks the riders it names up only once nothing else is wrong with the request
    (QijiApplication.require_riders), never among its other faults."""

    items: list[FieldViolation] = field(default_factory=list)
    missing_refs: list[Missing] = field(default_factory=list)

    def add(self, field_name: str, description: str, reason: str = "FIELD_INVALID") -> None:
        self.items.append(FieldViolation(field_name, description, reason))

    def require(self, condition: bool, field_name: str, description: str,
                reason: str = "FIELD_INVALID") -> None:
        if not condition:
            self.add(field_name, description, reason)

    def about(self, field_name: str) -> bool:
        """Whether something is already said about `field_name` (a timestamp the entry point
        could not read need not also be reported as not set)."""
        return any(v.field == field_name for v in self.items) or any(
            m.field == field_name for m in self.missing_refs)

    def require_given(self, value: object, field_name: str, description: str,
                      reason: str) -> None:
        """A field that must be given (a time, an enum value): a violation when `value` is
        None, unless the entry point already said what is wrong with that field (a timestamp
        it could not read, an enum number it does not know), which is said once, not twice."""
        if value is None and not self.about(field_name):
            self.add(field_name, description, reason)

    def collect(self, check: Callable[[], T]) -> T | None:
        """Runs a check that raises InvalidArgument (a cursor's decoder, say): its violations
        join these, and None is returned, so that the request's other checks still run."""
        try:
            return check()
        except InvalidArgument as error:
            self.items.extend(error.violations)
            return None

    def missing(self, field_name: str, kind: str, ident: str) -> None:
        """`field_name` names a `kind` that does not exist."""
        self.missing_refs.append(Missing(field_name, kind, ident))

    def __bool__(self) -> bool:
        return bool(self.items or self.missing_refs)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items + [
                FieldViolation(m.field, f"names no {m.kind} ({m.ident})",
                               not_found_reason(m.kind))
                for m in self.missing_refs], resources=self.missing_refs)
        if self.missing_refs:
            first, *others = self.missing_refs
            raise NotFound(first.kind, first.ident, field=first.field, also=others)
