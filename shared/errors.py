"""Domain errors every service raises; the gRPC layer maps each to one status code.

These are plain Python so that a service's domain can raise them without knowing about gRPC.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class QijiError(Exception):
    """Base of every error that may reach a caller. `reason` is a stable UPPER_SNAKE code."""

    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, **metadata: str):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = {k: str(v) for k, v in metadata.items()}


class InvalidArgument(QijiError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None):
        self.violations = list(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text)


class NotFound(QijiError):
    def __init__(self, kind: str, ident: str, message: str | None = None):
        super().__init__(message or f"{kind} {ident!r} not found",
                         reason=f"{kind.upper()}_NOT_FOUND")
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


def require_ids(**ids: str) -> None:
    """Every named argument must be a UUID: one violation per malformed id."""
    violations = Violations()
    for name, value in ids.items():
        if not is_uuid(value):
            violations.add(name, "is not a valid id")
    violations.raise_if_any()


@dataclass
class Violations:
    """Collects every field violation of a request before raising, so a caller learns them all."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_name: str, description: str) -> None:
        self.items.append(FieldViolation(field_name, description))

    def require(self, condition: bool, field_name: str, description: str) -> None:
        if not condition:
            self.add(field_name, description)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
