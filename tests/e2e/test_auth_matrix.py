"""Who may call what, over the wire: what only real processes can show. The whole matrix of
roles and tenancy scopes — every RPC, every role, two tenants of each kind — is tried in one
process through the same guards (tests/integration/test_role_matrix.py and
tests/integration/test_tenancy.py); here a handful of its cases go through grpcio and the
network: refusals arrive as google.rpc.Status with their details and without tokens or
tracebacks, a rotation in the shared tokens file takes effect in every process at once, and
health and reflection answer anyone.

The five services run as deployed: beside one identity process, sharing its tokens file."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb

from shared.auth import add_caller
from tests.e2e.client import (
    API,
    AUDIT_SERVICE,
    FEED_SERVICE,
    RPC_TIMEOUT,
    Client,
    ErrorDetails,
    call_error,
    create_city,
    details_of,
    new_request_id,
)
from tests.e2e.conftest import ServiceProcess, caught_up

pytestmark = pytest.mark.e2e

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
UNKNOWN_TOKEN = "qiji_not-a-token-anyone-was-given"
HEALTH = "grpc.health.v1.Health"
SERVICES = ["identity", "training", "merchants", "badges", "governance"]
# Per service: an RPC an auditor reads with an empty request, and one refused to merchants.
READER = {"identity": "ListOrganisations", "training": "ListCourses",
          "merchants": "ListMerchants", "badges": "ListBadgeClasses",
          "governance": "ListReports"}
REFUSED_TO_MERCHANTS = {"identity": "ListRiders", "training": "EnrolRider",
                        "merchants": "ClaimPerk", "badges": "GrantBadge",
                        "governance": "SubmitReport"}


def own(service: str, rpc: str) -> Any:
    return API[service].methods_by_name[rpc]


def call(client: Client, method: Any) -> ErrorDetails:
    """Calls an RPC by its descriptor with an empty request; returns what it answered."""
    request = message_factory.GetMessageClass(method.input_type)()
    path = f"/{method.containing_service.full_name}/{method.name}"
    deserialize = message_factory.GetMessageClass(method.output_type).FromString
    try:
        client.channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                   response_deserializer=deserialize)(
            request, metadata=client.metadata, timeout=RPC_TIMEOUT)
    except grpc.RpcError as error:
        details = details_of(error)
        assert "Traceback" not in details.message
        return details
    return ErrorDetails(code=OK, message="")


@pytest.fixture(scope="module")
def servers(identity: ServiceProcess, training: ServiceProcess, merchants: ServiceProcess,
            badges: ServiceProcess, governance: ServiceProcess) -> dict[str, ServiceProcess]:
    deployed = {s.service: s for s in (identity, training, merchants, badges, governance)}
    create_city(identity.client("city_admin"))
    for server in deployed.values():
        if server is not identity:
            caught_up(server)
    return deployed


@pytest.fixture
def server(servers: dict[str, ServiceProcess], service: str) -> ServiceProcess:
    return servers[service]


@pytest.mark.parametrize("service", SERVICES)
def test_no_token_and_an_unknown_token_are_unauthenticated_and_never_echoed(
        server: ServiceProcess, service: str) -> None:
    method = own(service, READER[service])
    assert call(server.client(), method).code == UNAUTHENTICATED
    refused = call(server.client(token=UNKNOWN_TOKEN), method)
    assert refused.code == UNAUTHENTICATED
    assert UNKNOWN_TOKEN not in refused.message


@pytest.mark.parametrize("service", SERVICES)
def test_a_role_the_rpc_does_not_allow_is_refused_with_who_and_why(
        servers: dict[str, ServiceProcess], server: ServiceProcess, service: str) -> None:
    merchant = servers["identity"].act_for(merchant=str(uuid.uuid4()))["merchant"]
    before = server.last_position()
    refused = call(server.client(token=merchant), own(service, REFUSED_TO_MERCHANTS[service]))
    assert refused.code == PERMISSION_DENIED
    assert (refused.reason, refused.domain) == ("ROLE_NOT_ALLOWED", f"{service}.qiji")
    assert refused.metadata.get("principal", "").startswith("e2e-merchant-")
    assert merchant not in refused.message
    assert server.last_position() == before


def test_another_platforms_rider_is_out_of_scope_over_the_wire(
        servers: dict[str, ServiceProcess]) -> None:
    """One tenancy case through grpcio: platform B asks for platform A's rider, and for one that
    does not exist; both answers are the same refusal (AIP-211), and nothing is written."""
    identity, governance = servers["identity"], servers["governance"]
    a = create_city(identity.client("city_admin"))
    rider = identity.client("platform").RegisterRider(ipb.RegisterRiderRequest(
        request_id=new_request_id(), platform_id=a["platform"], platform_rider_id="R-A",
        name="王五", phone="13912340000", home_street_id=a["street"],
        station_id=a["station"])).rider.rider_id
    create_city(identity.client("city_admin"))  # the module's platform is now B
    platform_b = identity.client("platform")
    # governance notes the new organisations in the background: let it, before counting.
    caught_up(governance)
    before = (identity.last_position(), governance.last_position())
    theirs = call_error(lambda: platform_b.GetRider(ipb.GetRiderRequest(rider_id=rider)))
    nobodys = call_error(lambda: platform_b.GetRider(ipb.GetRiderRequest(
        rider_id="00000000-0000-4000-8000-000000000000")))
    assert (theirs.code, theirs.reason, theirs.domain) == (PERMISSION_DENIED, "OUT_OF_SCOPE",
                                                            "identity.qiji")
    assert (nobodys.code, nobodys.reason) == (theirs.code, theirs.reason)
    reported = call_error(lambda: governance.client("platform").SubmitReport(
        gpb.SubmitReportRequest(request_id=new_request_id(), rider_id=rider,
                                kind=gpb.REPORT_KIND_EMERGENCY, category=gpb.CATEGORY_FIRE,
                                text="x", location=gpb.Location(street_id=a["street"],
                                                                latitude=31.7, longitude=119.9))))
    assert (reported.code, reported.reason) == (PERMISSION_DENIED, "OUT_OF_SCOPE")
    assert "王五" not in theirs.message + reported.message
    assert (identity.last_position(), governance.last_position()) == before


@pytest.mark.parametrize("service", SERVICES)
def test_a_malformed_authorization_header_is_unauthenticated(server: ServiceProcess,
                                                             service: str) -> None:
    token = server.tokens["auditor"]
    method = own(service, READER[service])
    for header in (f"Basic {token}", token, "Bearer", "Bearer   "):
        client = server.client()
        client.metadata = [("authorization", header)]
        assert call(client, method).code == UNAUTHENTICATED, header


def test_a_token_added_or_rotated_in_the_shared_tokens_file_takes_effect_at_once_everywhere(
        servers: dict[str, ServiceProcess]) -> None:
    identity = servers["identity"]
    principal = "e2e-rotating"
    first = add_caller(identity.tokens_file, principal, ["auditor"])
    for service, server in servers.items():
        assert server.tokens_file == identity.tokens_file
        assert call(server.client(token=first), own(service, READER[service])).code == OK
    second = add_caller(identity.tokens_file, principal, ["auditor"])
    for service, server in servers.items():
        reader = own(service, READER[service])
        assert call(server.client(token=first), reader).code == UNAUTHENTICATED
        assert call(server.client(token=second), reader).code == OK


@pytest.mark.parametrize("service", SERVICES)
def test_health_and_reflection_answer_without_a_token(server: ServiceProcess,
                                                      service: str) -> None:
    assert server.channel is not None
    served = [API[service].full_name, FEED_SERVICE.full_name, AUDIT_SERVICE.full_name]
    health = health_pb2_grpc.HealthStub(server.channel)
    for name in ("", *served):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=RPC_TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name

    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    replies = list(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=RPC_TIMEOUT))
    listed = {s.name for r in replies for s in r.list_services_response.service}
    assert {*served, HEALTH} <= listed
    others = {api.full_name for name, api in API.items() if name != service}
    assert not listed & others, listed & others
    described = list(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=served[0])]),
        timeout=RPC_TIMEOUT))
    assert described[0].file_descriptor_response.file_descriptor_proto
