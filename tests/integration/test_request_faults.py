"""Field violations name their fields by their path from the request's root (AIP-193): a
field of a message the request holds is `session.hold_time`, not `hold_time`. The servicers
and applications are called as the guard calls them (tests/inprocess.py), on one store: what is
checked here happens before anything is read from or written to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qiji.governance.v1 import governance_service_pb2 as gpb

from shared.errors import InvalidArgument, NotFound, QijiError
from tests.conftest import actor, as_actor, badges_key_env
from tests.inprocess import CallContext, InProcessQiji

ADMIN = actor("faults-admin", "city_admin")


def faults(qiji: InProcessQiji, service: str, path: str, request: Any
           ) -> set[tuple[str, str]] | None:
    """The (field, reason) pairs the RPC refuses `request` with, as the guard would call it;
    None when it is answered (or refused NOT_FOUND: only names of nothing)."""
    handler = qiji.services[service].raw[path].unary_unary
    with as_actor(ADMIN, rpc=path, request=request):
        try:
            handler(request, CallContext(None))
        except InvalidArgument as error:
            return {(v.field, v.reason) for v in error.violations}
        except NotFound:
            return None
        except QijiError as error:
            raise AssertionError(f"{path}: {error.reason} {error.message}") from None
    return None


@pytest.fixture(scope="module")
def qiji(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessQiji]:
    tmp = tmp_path_factory.mktemp("request-faults")
    q = InProcessQiji({"QIJI_DATA_DIR": str(tmp / "data"), **badges_key_env()},
                      Path(tmp / "tokens.json"))
    yield q
    q.close()


def test_a_sessions_faults_are_named_by_their_paths_from_the_request(
        qiji: InProcessQiji) -> None:
    """AIP-193: `session.hold_time`, not `hold_time`; no session at all is `session`, not a
    missing `hold_time`."""
    path = "/qiji.governance.v1.GovernanceService/RecordMediationSession"
    case_id = str(uuid.uuid4())
    assert faults(qiji, "governance", path, gpb.RecordMediationSessionRequest(
        case_id=case_id)) == {("session", "FIELD_REQUIRED")}
    assert faults(qiji, "governance", path, gpb.RecordMediationSessionRequest(
        case_id=case_id, session=gpb.MediationSession(notes="x" * 2001))) == {
        ("session.hold_time", "FIELD_REQUIRED"), ("session.place", "FIELD_REQUIRED"),
        ("session.notes", "TEXT_TOO_LONG")}
