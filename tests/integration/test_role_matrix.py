"""Who may call what, on every RPC every service serves behind its guard (its own, and the
kernel's feed, public feed and audit): a caller without a token, with an unknown or a
malformed one, or with a role the RPC does not allow is refused (saying who was refused, never
what the token was); an allowed role reaches the RPC and an empty request writes nothing.
Built from the descriptors and the access tables, so a new RPC is covered the day it is added.
In one process through the real guards (tests/inprocess.py); the few things only the wire can
show — health, reflection, the bytes of a refusal — are in tests/e2e/test_auth_matrix.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from qiji.identity.v1 import identity_service_pb2 as ipb

from shared.auth import ROLES, add_caller
from shared.tenancy import TENANT_ROLES
from tests.conftest import badges_key_env
from tests.inprocess import API_NAMES, SPECS, Answer, InProcessQiji

KERNEL = ("qiji.feed.v1.FeedService", "qiji.feed.v1.PublicFeedService",
          "qiji.audit.v1.AuditService")
UNKNOWN_TOKEN = "qiji_not-a-token-anyone-was-given"
FORBIDDEN_FOR_ALLOWED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                         grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def methods() -> list[tuple[str, str]]:
    pool = descriptor_pool.Default()
    return [(service, f"/{name}/{m.name}") for service in SPECS
            for name in (API_NAMES[service], *KERNEL)
            for m in pool.FindServiceByName(name).methods]


def access_of(service: str, path: str) -> Any:
    from shared.grpc.server import service_access
    return service_access(SPECS[service])[path]


def rpc_cases() -> list[Any]:
    return [pytest.param(service, path, id=f"{service}{path}") for service, path in methods()]


def role_cases(allowed: bool) -> list[Any]:
    return [pytest.param(service, path, role, id=f"{service}{path}-{role}")
            for service, path in methods() for role in sorted(ROLES)
            if (role in access_of(service, path).roles) == allowed]


@pytest.fixture(scope="module")
def qiji(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessQiji]:
    """The five on SQLite, one caller per role (those acting for one organisation act for
    one), with events in every log, so that a stream has something to send at once."""
    tmp = tmp_path_factory.mktemp("roles")
    q = InProcessQiji({"QIJI_DATA_DIR": str(tmp / "data"), **badges_key_env()},
                      Path(tmp / "tokens.json"))
    q.tokens = {role: q.token(f"roles-{role}", role, organisation_id=str(uuid.uuid4())
                              if role in TENANT_ROLES else "") for role in sorted(ROLES)}
    admin = q.tokens["city_admin"]
    city = q.ok("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
        request_id="roles-city", kind=ipb.ORGANISATION_KIND_CITY, name="常州市"),
        admin).organisation.organisation_id
    district = q.ok("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
        request_id="roles-district", kind=ipb.ORGANISATION_KIND_DISTRICT, name="钟楼区",
        parent_id=city), admin).organisation.organisation_id
    q.ok("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
        request_id="roles-street", kind=ipb.ORGANISATION_KIND_STREET, name="荷花池街道",
        parent_id=district), admin)
    q.sync()
    assert all(app.last_position() for app in q.apps.values()), q.positions()
    yield q
    q.close()


def _empty(path: str) -> Any:
    from tests.inprocess import Service
    return Service.request_of(path)


def call(q: InProcessQiji, service: str, path: str, token: str | None) -> Answer:
    answer = q.call(service, path, _empty(path), token)
    assert "Traceback" not in answer.message
    return answer


@pytest.mark.parametrize(("service", "path"), rpc_cases())
def test_a_caller_without_a_token_is_unauthenticated(qiji: InProcessQiji, service: str,
                                                     path: str) -> None:
    assert call(qiji, service, path, None).code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("service", "path"), rpc_cases())
def test_a_caller_with_an_unknown_token_is_unauthenticated(qiji: InProcessQiji, service: str,
                                                           path: str) -> None:
    refused = call(qiji, service, path, UNKNOWN_TOKEN)
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    assert UNKNOWN_TOKEN not in refused.message


@pytest.mark.parametrize(("service", "path", "role"), role_cases(allowed=False))
def test_a_role_the_rpc_does_not_allow_is_permission_denied(
        qiji: InProcessQiji, service: str, path: str, role: str) -> None:
    """... and the refusal says who was refused, never what the token was."""
    before = qiji.positions()
    refused = call(qiji, service, path, qiji.tokens[role])
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert (refused.reason, refused.domain) == ("ROLE_NOT_ALLOWED", f"{service}.qiji")
    assert refused.metadata.get("principal") == f"roles-{role}"
    assert qiji.tokens[role] not in refused.message
    assert qiji.positions() == before


@pytest.mark.parametrize(("service", "path", "role"), role_cases(allowed=True))
def test_an_allowed_role_reaches_the_rpc_and_an_empty_request_writes_nothing(
        qiji: InProcessQiji, service: str, path: str, role: str) -> None:
    before = qiji.positions()
    answer = call(qiji, service, path, qiji.tokens[role])
    assert answer.code not in FORBIDDEN_FOR_ALLOWED, (service, path, role, answer)
    assert qiji.positions() == before


@pytest.mark.parametrize("service", list(SPECS))
def test_a_malformed_authorization_header_is_unauthenticated(qiji: InProcessQiji,
                                                             service: str) -> None:
    from tests.inprocess import Aborted, CallContext, decode
    token = qiji.tokens["auditor"]
    path = next(p for s, p in methods() if s == service)
    handler = qiji.services[service].methods[path]
    for header in (f"Basic {token}", token, "Bearer", "Bearer   "):
        context = CallContext(None, header=header)
        with pytest.raises(Aborted) as refused:
            handler.unary_unary(_empty(path), context)
        assert decode(refused.value.status).code == grpc.StatusCode.UNAUTHENTICATED, header


def test_a_token_added_or_rotated_takes_effect_at_once_in_every_service(
        qiji: InProcessQiji) -> None:
    """The five share one tokens file: a rotation there refuses the old token everywhere."""
    principal = "roles-rotating"
    first = add_caller(qiji.tokens_file, principal, ["auditor"])
    readers = {s: f"/{API_NAMES[s]}/{rpc}" for s, rpc in {
        "identity": "ListOrganisations", "training": "ListCourses", "merchants": "ListMerchants",
        "badges": "ListBadgeClasses", "governance": "ListReports"}.items()}
    assert all(call(qiji, s, p, first).ok for s, p in readers.items())
    second = add_caller(qiji.tokens_file, principal, ["auditor"])
    for service, path in readers.items():
        assert call(qiji, service, path, first).code == grpc.StatusCode.UNAUTHENTICATED
        assert call(qiji, service, path, second).ok
    demoted = add_caller(qiji.tokens_file, principal, ["merchant"], str(uuid.uuid4()))
    refused = call(qiji, "governance", f"/{API_NAMES['governance']}/SubmitReport", demoted)
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                              "ROLE_NOT_ALLOWED")


# ---------------------------------------------------------------------------- the figures
# The statistics process (services/statistics): its own guard and access table over a read
# model of the five services' logs, on the same tokens file.

def figures_paths() -> list[str]:
    from services.statistics.grpc_api import SERVICE_NAME
    return [f"/{SERVICE_NAME}/{m.name}"
            for m in descriptor_pool.Default().FindServiceByName(SERVICE_NAME).methods]


def figures_role_cases(allowed: bool) -> list[Any]:
    from services.statistics.grpc_api import ACCESS
    return [pytest.param(path, role, id=f"statistics{path}-{role}")
            for path in figures_paths() for role in sorted(ROLES)
            if (role in ACCESS[path].roles) == allowed]


@pytest.fixture(scope="module")
def figures(qiji: InProcessQiji, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.inprocess import Figures
    served = Figures.over(qiji, {"QIJI_DATA_DIR": str(tmp_path_factory.mktemp("figures"))})
    yield served
    served.close()


@pytest.mark.parametrize("path", figures_paths())
def test_the_figures_refuse_a_caller_without_a_known_token(qiji: InProcessQiji, figures: Any,
                                                           path: str) -> None:
    for token in (None, UNKNOWN_TOKEN):
        refused = figures.call(path, _empty(path), token)
        assert refused.code == grpc.StatusCode.UNAUTHENTICATED
        assert UNKNOWN_TOKEN not in refused.message


@pytest.mark.parametrize(("path", "role"), figures_role_cases(allowed=False))
def test_a_role_the_figures_do_not_allow_is_permission_denied(
        qiji: InProcessQiji, figures: Any, path: str, role: str) -> None:
    refused = figures.call(path, _empty(path), qiji.tokens[role])
    assert (refused.code, refused.reason, refused.domain) == (
        grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED", "statistics.qiji")
    assert refused.metadata.get("principal") == f"roles-{role}"
    assert qiji.tokens[role] not in refused.message


@pytest.mark.parametrize(("path", "role"), figures_role_cases(allowed=True))
def test_an_allowed_role_reaches_the_figures_and_writes_nothing(
        qiji: InProcessQiji, figures: Any, path: str, role: str) -> None:
    """A department is admitted by the table and then asked which it is: the figures are the
    social-work department's, and this one acts for an organisation that is none."""
    before = qiji.positions()
    answer = figures.call(path, _empty(path), qiji.tokens[role])
    if role == "department":
        assert (answer.code, answer.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                "OUT_OF_SCOPE")
    else:
        assert answer.code not in FORBIDDEN_FOR_ALLOWED, (path, role, answer)
    assert "Traceback" not in answer.message
    assert qiji.positions() == before
