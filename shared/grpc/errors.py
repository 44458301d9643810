"""The one table from domain errors to gRPC status codes, with google.rpc.Status details
(ErrorInfo always, BadRequest field violations for invalid arguments)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from shared import errors

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


def to_status(error: errors.QijiError, domain: str) -> grpc.Status:
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
    return rpc_status.to_status(status_pb2.Status(code=code, message=error.message,
                                                  details=details))


def internal_status(correlation_id: str) -> grpc.Status:
    # No traceback, no exception text: those stay in the server's log under this id.
    return rpc_status.to_status(status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; the operators can find it by correlation id {correlation_id}",
    ))


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
