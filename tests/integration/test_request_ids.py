"""AIP-155 where a duplicate would hurt (issue 23): a call that makes something new on every
call must carry a request_id, so that a caller's retry returns the first answer instead of
making a second city of the same name, a report counted twice, or hours logged twice.

Through the real guards, in one process (tests/inprocess.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from qiji.identity.v1 import identity_service_pb2 as ipb

from shared.grpc.server import service_access
from shared.tenancy import TENANT_ROLES
from tests.conftest import badges_key_env
from tests.inprocess import API_NAMES, SPECS, InProcessQiji, Service

# Said in README "Calling Qiji from any language" and in docs/api: keep the three in step.
MAKES_SOMETHING_NEW = {
    # RecordCareerMilestone and GrantConsent refuse a second call ALREADY_EXISTS by themselves.
    "identity": {"CreateOrganisation", "CreateServiceSpace", "RecordSpaceUse",
                 "RegisterPartner"},
    "training": {"DraftCourse", "ScheduleSession", "DefineGrowthPath", "OpenGrowthPlan"},
    "merchants": {"CreatePerkOffer", "CreateCareCampaign", "ClaimPerk", "RecordCareDonation"},
    "badges": {"CreateBadgeClass", "LogVolunteerService", "RecordAwardCeremony",
               "CreateRecognitionTitle", "PublishVolunteerActivity"},
    "governance": {"SubmitReport", "OpenMediationCase", "RecordMediationSession",
                   "RecordMediationFollowUp", "PublishPledge", "AddReportNote", "RequestHelp",
                   "RecordHelpContact", "RecordHelpReferral"},
}


def required_here(service: str) -> set[str]:
    prefix = f"/{API_NAMES[service]}/"
    return {path.removeprefix(prefix) for path, access in service_access(SPECS[service]).items()
            if access.request_id_required}


@pytest.mark.parametrize("service", list(SPECS))
def test_the_calls_that_make_something_new_are_the_ones_that_require_a_request_id(
        service: str) -> None:
    assert required_here(service) == MAKES_SOMETHING_NEW[service]


@pytest.fixture(scope="module")
def qiji(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessQiji]:
    tmp = tmp_path_factory.mktemp("request-ids")
    q = InProcessQiji({"QIJI_DATA_DIR": str(tmp / "data"), **badges_key_env()},
                      Path(tmp / "tokens.json"))
    q.tokens = {"admin": q.token("rid-admin", "city_admin")}
    yield q
    q.close()


@pytest.mark.parametrize(("service", "rpc"), [
    pytest.param(service, rpc, id=f"{service}-{rpc}")
    for service, rpcs in MAKES_SOMETHING_NEW.items() for rpc in sorted(rpcs)])
def test_without_a_request_id_it_is_refused_before_anything_is_written(
        qiji: InProcessQiji, service: str, rpc: str) -> None:
    path = f"/{API_NAMES[service]}/{rpc}"
    # A caller the RPC admits: the request_id is asked for before the scope is decided, so a
    # tenant's organisation need not own anything here.
    role = min(service_access(SPECS[service])[path].roles)
    token = qiji.token(f"rid-{service}-{rpc}", role,
                       organisation_id=str(uuid.uuid4()) if role in TENANT_ROLES else "")
    before = qiji.positions()
    refused = qiji.call(service, rpc, Service.request_of(path), token)
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT, refused
    assert (refused.reason, refused.fields) == ("REQUEST_ID_REQUIRED", ["request_id"])
    assert qiji.positions() == before


def test_a_retry_with_the_request_id_makes_one_city_and_answers_the_same(
        qiji: InProcessQiji) -> None:
    request = ipb.CreateOrganisationRequest(request_id="city-once", name="常州市",
                                            kind=ipb.ORGANISATION_KIND_CITY)
    first = qiji.ok("identity", "CreateOrganisation", request, qiji.tokens["admin"])
    again = qiji.ok("identity", "CreateOrganisation", request, qiji.tokens["admin"])
    assert again.organisation.organisation_id == first.organisation.organisation_id
    listed = qiji.ok("identity", "ListOrganisations", ipb.ListOrganisationsRequest(),
                     qiji.tokens["admin"])
    assert [o.name for o in listed.organisations].count("常州市") == 1


@pytest.mark.parametrize("service", list(SPECS))
def test_the_contract_marks_request_id_required_exactly_where_the_guard_asks_for_it(
        service: str) -> None:
    # What a caller in another language reads (field_behavior, AIP-203) is what the guard does.
    from google.api import field_behavior_pb2
    from google.protobuf import descriptor_pool
    api = descriptor_pool.Default().FindServiceByName(API_NAMES[service])
    marked = set()
    for method in api.methods:
        field = method.input_type.fields_by_name.get("request_id")
        if field is not None and field_behavior_pb2.REQUIRED in field.GetOptions().Extensions[
                field_behavior_pb2.field_behavior]:
            marked.add(method.name)
    assert marked == MAKES_SOMETHING_NEW[service]
