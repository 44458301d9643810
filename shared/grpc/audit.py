"""The audit API every service exposes over its own log (qiji.audit.v1.AuditService)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC

import grpc
from qiji.audit.v1 import audit_service_pb2 as pb
from qiji.audit.v1 import audit_service_pb2_grpc as pb_grpc

from shared import audit, auth
from shared.application import QijiApplication
from shared.checkpoints import CheckpointVerifier
from shared.errors import (
    FIELD_REQUIRED,
    TEXT_TOO_LONG,
    VALUE_OUT_OF_RANGE,
    NotFound,
    Violations,
    check_id,
)
from shared.grpc.convert import optional_time, timestamp
from shared.tenancy import Access, city_wide

AUDIT_ROLES = frozenset({auth.AUDITOR})


def audit_access() -> dict[str, Access]:
    name = pb.DESCRIPTOR.services_by_name["AuditService"].full_name
    return {f"/{name}/{rpc}": city_wide(AUDIT_ROLES)
            for rpc in ("GetHistory", "GetStateAsOf", "VerifyLog")}


def _aggregate_id(text: str) -> uuid.UUID:
    violations = Violations()
    check_id(violations, "aggregate_id", text)
    violations.raise_if_any()
    return uuid.UUID(text)


MAX_CHECKPOINTS = 100_000
MAX_NOTE_LENGTH = 4096


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, app: QijiApplication, verifier: CheckpointVerifier | None):
        self._app = app
        self._verifier = verifier

    def GetHistory(self, request: pb.GetHistoryRequest, context: grpc.ServicerContext
                   ) -> pb.GetHistoryResponse:
        ident = _aggregate_id(request.aggregate_id)
        entries = audit.history(self._app, ident)
        if not entries:
            raise NotFound("aggregate", request.aggregate_id)
        return pb.GetHistoryResponse(entries=[pb.HistoryEntry(
            version=e.position_version, event_type=e.topic, time=timestamp(e.time),
            principal=e.principal, roles=e.roles, request_id=e.request_id,
            correlation_id=e.correlation_id, summary=e.summary) for e in entries])

    def GetStateAsOf(self, request: pb.GetStateAsOfRequest, context: grpc.ServicerContext
                     ) -> pb.GetStateAsOfResponse:
        violations = Violations()  # both fields' faults in one answer
        check_id(violations, "aggregate_id", request.aggregate_id)
        when = optional_time(request, "as_of_time", violations)
        violations.require_given(when, "as_of_time",
                                 "must be set", FIELD_REQUIRED)
        violations.raise_if_any()
        assert when is not None
        ident = uuid.UUID(request.aggregate_id)
        if not self._app.exists(ident):
            raise NotFound("aggregate", request.aggregate_id)
        state = audit.state_as_of(self._app, ident, when.astimezone(UTC))
        return pb.GetStateAsOfResponse(existed=bool(state), version=state.get("version", 0),
                                       state_json=json.dumps(state, default=str,
                                                             ensure_ascii=False, indent=2))

    def VerifyLog(self, request: pb.VerifyLogRequest, context: grpc.ServicerContext
                  ) -> Iterator[pb.VerifyLogResponse]:
        violations = Violations()
        for name in ("checkpoints", "pinned_checkpoints"):
            notes = getattr(request, name)
            violations.require(len(notes) <= MAX_CHECKPOINTS, name,
                               f"at most {MAX_CHECKPOINTS} per call", VALUE_OUT_OF_RANGE)
            violations.require(all(len(n) <= MAX_NOTE_LENGTH for n in notes), name,
                               f"a signed note is at most {MAX_NOTE_LENGTH} characters",
                               TEXT_TOO_LONG)
        violations.raise_if_any()
        last = None
        for verdict in audit.verify(self._app, checkpoints=list(request.checkpoints),
                                    verifier=self._verifier,
                                    pinned=list(request.pinned_checkpoints)):
            # Every verdict but the last is progress; the last is the answer.
            if last is not None and context.is_active():
                yield self._reply(last, done=False)
            last = verdict
        if last is not None:
            yield self._reply(last, done=True)

    def _reply(self, v: audit.Verdict, *, done: bool) -> pb.VerifyLogResponse:
        return pb.VerifyLogResponse(checked=v.checked, sealed_through=v.sealed_through,
                                    head_seal=v.head_seal, done=done, intact=v.intact,
                                    first_broken_position=v.first_broken, problem=v.problem,
                                    checkpoints_checked=v.checkpoints_checked,
                                    newest_checkpoint=v.newest_checkpoint,
                                    rejected_checkpoints=v.rejected,
                                    snapshots_checked=v.snapshots_checked,
                                    snapshot_problems=v.snapshot_problems,
                                    verifier_key=self._verifier.key_text if self._verifier
                                    else "")


def register(server: grpc.Server, app: QijiApplication,
             verifier: CheckpointVerifier | None = None) -> str:
    """`verifier`: this log's checkpoint key (build_server always gives it); without one, every
    checkpoint a caller brings is listed as rejected, none is used."""
    pb_grpc.add_AuditServiceServicer_to_server(AuditServicer(app, verifier), server)
    return pb.DESCRIPTOR.services_by_name["AuditService"].full_name
