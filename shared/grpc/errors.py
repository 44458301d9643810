"""The one table from domain errors to gRPC status codes, with google.rpc.Status details
(ErrorInfo always, BadRequest field violations for invalid arguments, a ResourceInfo for each
thing the request names that does not exist)."""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.api import resource_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from shared import errors
from shared.wire import resource_type

STATUS_TABLE: list[tuple[type[errors.QijiError], int]] = [
    (errors.InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (errors.NotFound, code_pb2.NOT_FOUND),
    (errors.AlreadyExists, code_pb2.ALREADY_EXISTS),
    (errors.FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (errors.PermissionDenied, code_pb2.PERMISSION_DENIED),
    (errors.Unauthenticated, code_pb2.UNAUTHENTICATED),
    (errors.Aborted, code_pb2.ABORTED),
    (errors.Unavailable, code_pb2.UNAVAILABLE),
    (errors.DataLoss, code_pb2.DATA_LOSS),
]


def to_status(error: errors.QijiError, domain: str, request: Any = None) -> grpc.Status:
    """`request`: the request answered, when there is one: a ResourceInfo's type is then what
    the contract says its field refers to (AIP-122's resource_reference), else the kind's."""
    code = next((c for kind, c in STATUS_TABLE if isinstance(error, kind)), None)
    if code is None:  # a QijiError subclass missing from the table is a bug: fail loudly
        raise TypeError(f"no status mapped for {type(error).__name__}")
    details = []
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain,
                                       metadata=error.metadata)
    details.append(_pack(info))
    if isinstance(error, errors.InvalidArgument):
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description,
                                                       reason=v.reason)
            for v in error.violations
        ])
        details.append(_pack(bad))
    # A ResourceInfo for each thing named that does not exist: every one of them when they are
    # the request's only faults (NOT_FOUND), so that the caller fixes them all at once.
    for missing in getattr(error, "resources", ()):
        details.append(_pack(error_details_pb2.ResourceInfo(
            resource_type=_type_of(missing, request), resource_name=missing.ident,
            description=missing.field)))
    return rpc_status.to_status(status_pb2.Status(code=code, message=error.message,
                                                  details=details))


_INDEX = re.compile(r"\[\d*\]")


def _type_of(missing: errors.Missing, request: Any) -> str:
    """The resource type the request's field refers to, as its contract annotates it
    ("location.street_id", "parties[1].rider_id" followed through the messages); the kind's
    (shared/wire.py) for a field without an annotation, or no field or request at all."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    path = _INDEX.sub("", missing.field).split(".") if missing.field else []
    for i, name in enumerate(path):
        field = descriptor.fields_by_name.get(name) if descriptor is not None else None
        if field is None:
            break
        if i == len(path) - 1:
            annotated = field.GetOptions().Extensions[resource_pb2.resource_reference]
            if annotated.type:
                return annotated.type
            break
        descriptor = field.message_type
    return resource_type(missing.kind)


def internal_status(correlation_id: str) -> grpc.Status:
    # No traceback, no exception text: those stay in the server's log under this id.
    return rpc_status.to_status(status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; the operators can find it by correlation id {correlation_id}",
    ))


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
