"""Who may call what, over the wire, on every service. Each RPC a service serves behind its guard
(its own, and the kernel's feed and audit) refuses a caller without a token, with an unknown or
a malformed token, or with a role it does not allow (saying who was refused, never what the
token was), and lets an allowed role through to the RPC itself without writing anything for an
empty request. The matrix is built from the service descriptors and the roles tables, so a new
RPC is covered the day it is added. Health and reflection answer anyone.

The five services run as deployed: beside one identity process, sharing its tokens file, so a
token added or rotated there takes effect in every one of them at once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from qiji.identity.v1 import identity_service_pb2 as ipb

from services.badges.grpc_api import PERMISSIONS as BADGES_PERMISSIONS
from services.governance.grpc_api import PERMISSIONS as GOVERNANCE_PERMISSIONS
from services.identity.grpc_api import PERMISSIONS as IDENTITY_PERMISSIONS
from services.merchants.grpc_api import PERMISSIONS as MERCHANTS_PERMISSIONS
from services.training.grpc_api import PERMISSIONS as TRAINING_PERMISSIONS
from shared.auth import ROLES, add_caller
from shared.grpc.audit import audit_permissions
from shared.grpc.feed import feed_permissions
from tests.e2e.client import (
    API,
    AUDIT_SERVICE,
    FEED_SERVICE,
    RPC_TIMEOUT,
    Client,
    ErrorDetails,
    call_error,
    create_organisation,
    details_of,
)
from tests.e2e.conftest import ServiceProcess, caught_up

pytestmark = pytest.mark.e2e

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
FORBIDDEN_FOR_ALLOWED = {UNAUTHENTICATED, PERMISSION_DENIED, grpc.StatusCode.UNKNOWN,
                         grpc.StatusCode.INTERNAL}
UNKNOWN_TOKEN = "qiji_not-a-token-anyone-was-given"
HEALTH = "grpc.health.v1.Health"


@dataclass(frozen=True)
class Roles:
    """A service's roles table, and two of its RPCs the tests below call by name."""

    permissions: Mapping[str, frozenset[str]]
    reader: str  # an auditor gets OK for an empty request
    refused_to_merchants: str


SERVICES = {
    "identity": Roles(IDENTITY_PERMISSIONS, "ListOrganisations", "ListRiders"),
    "training": Roles(TRAINING_PERMISSIONS, "ListCourses", "EnrolRider"),
    "merchants": Roles(MERCHANTS_PERMISSIONS, "ListMerchants", "ClaimPerk"),
    "badges": Roles(BADGES_PERMISSIONS, "ListBadgeClasses", "GrantBadge"),
    "governance": Roles(GOVERNANCE_PERMISSIONS, "ListReports", "SubmitReport"),
}
KERNEL_PERMISSIONS = {**feed_permissions(), **audit_permissions()}
# Every service a process serves behind the guard: its own, and the kernel's feed and audit.
METHODS = {service: [*API[service].methods, *FEED_SERVICE.methods, *AUDIT_SERVICE.methods]
           for service in SERVICES}


def full_name(method: Any) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def rpc_id(method: Any) -> str:
    return f"{method.containing_service.name}.{method.name}"


def allowed_roles(service: str, method: Any) -> frozenset[str]:
    path = full_name(method)
    return {**SERVICES[service].permissions, **KERNEL_PERMISSIONS}.get(path, frozenset())


def denied_roles(service: str, method: Any) -> frozenset[str]:
    return ROLES - allowed_roles(service, method)


def rpc_cases() -> list[Any]:
    return [pytest.param(service, m, id=f"{service}-{rpc_id(m)}")
            for service, methods in METHODS.items() for m in methods]


def role_cases(pick: Callable[[str, Any], frozenset[str]]) -> list[Any]:
    return [pytest.param(service, m, role, id=f"{service}-{rpc_id(m)}-{role}")
            for service, methods in METHODS.items() for m in methods
            for role in sorted(pick(service, m))]


def own(service: str, rpc: str) -> Any:
    return API[service].methods_by_name[rpc]


def call(client: Client, method: Any) -> ErrorDetails:
    """Calls an RPC by its descriptor with an empty request; returns what it answered (OK when
    it succeeded: a stream once its first message arrives)."""
    request = message_factory.GetMessageClass(method.input_type)()
    path = full_name(method)
    serialize = type(request).SerializeToString
    deserialize = message_factory.GetMessageClass(method.output_type).FromString
    try:
        if method.server_streaming:
            stream = client.channel.unary_stream(
                path, request_serializer=serialize, response_deserializer=deserialize)(
                request, metadata=client.metadata, timeout=RPC_TIMEOUT)
            try:
                next(stream)
            finally:
                stream.cancel()
        else:
            client.channel.unary_unary(
                path, request_serializer=serialize, response_deserializer=deserialize)(
                request, metadata=client.metadata, timeout=RPC_TIMEOUT)
    except grpc.RpcError as error:
        details = details_of(error)
        assert "Traceback" not in details.message
        return details
    return ErrorDetails(code=OK, message="")


@pytest.fixture(scope="module")
def servers(identity: ServiceProcess, training: ServiceProcess, merchants: ServiceProcess,
            badges: ServiceProcess, governance: ServiceProcess) -> dict[str, ServiceProcess]:
    """The five, with events in every log (what each learned of a street created on identity),
    so that a stream has something to send at once, and nothing of identity's left to apply in
    the background while the matrix compares log positions."""
    admin = identity.client("city_admin")
    city = create_organisation(admin, ipb.ORGANISATION_KIND_CITY, "常州市").organisation_id
    district = create_organisation(admin, ipb.ORGANISATION_KIND_DISTRICT, "钟楼区",
                                   city).organisation_id
    create_organisation(admin, ipb.ORGANISATION_KIND_STREET, "荷花池街道", district)
    deployed = {s.service: s for s in (identity, training, merchants, badges, governance)}
    for server in deployed.values():
        if server is not identity:
            caught_up(server)
        assert server.last_position() > 0, server.service
    return deployed


@pytest.fixture
def server(servers: dict[str, ServiceProcess], service: str) -> ServiceProcess:
    return servers[service]


@pytest.mark.parametrize("service", SERVICES)
def test_every_rpc_of_the_service_has_an_entry_in_the_permissions_table(service: str) -> None:
    permissions = SERVICES[service].permissions
    assert set(permissions) == {full_name(m) for m in API[service].methods}
    assert set(feed_permissions()) == {full_name(m) for m in FEED_SERVICE.methods}
    assert set(audit_permissions()) == {full_name(m) for m in AUDIT_SERVICE.methods}
    for path, roles in {**permissions, **KERNEL_PERMISSIONS}.items():
        assert roles, f"{path} allows no role at all"
        assert roles <= ROLES, f"{path} names unknown roles {sorted(roles - ROLES)}"


@pytest.mark.parametrize(("service", "method"), rpc_cases())
def test_a_caller_without_a_token_is_unauthenticated(server: ServiceProcess, service: str,
                                                     method: Any) -> None:
    assert call(server.client(), method).code == UNAUTHENTICATED


@pytest.mark.parametrize(("service", "method"), rpc_cases())
def test_a_caller_with_an_unknown_token_is_unauthenticated(server: ServiceProcess, service: str,
                                                           method: Any) -> None:
    refused = call(server.client(token=UNKNOWN_TOKEN), method)
    assert refused.code == UNAUTHENTICATED
    assert UNKNOWN_TOKEN not in refused.message


@pytest.mark.parametrize(("service", "method", "role"), role_cases(denied_roles))
def test_a_role_the_rpc_does_not_allow_is_permission_denied(
        server: ServiceProcess, service: str, method: Any, role: str) -> None:
    """... and the refusal says who was refused, never what the token was."""
    refused = call(server.client(role), method)
    assert refused.code == PERMISSION_DENIED
    assert (refused.reason, refused.domain) == ("ROLE_NOT_ALLOWED", f"{service}.qiji")
    assert refused.metadata.get("principal") == f"e2e-{role}"
    assert server.tokens[role] not in refused.message


@pytest.mark.parametrize(("service", "method", "role"), role_cases(allowed_roles))
def test_an_allowed_role_reaches_the_rpc_and_an_empty_request_writes_nothing(
        server: ServiceProcess, service: str, method: Any, role: str) -> None:
    before = server.last_position()
    code = call(server.client(role), method).code
    assert code not in FORBIDDEN_FOR_ALLOWED, f"{service} {rpc_id(method)} as {role}: {code}"
    assert server.last_position() == before


@pytest.mark.parametrize("service", SERVICES)
def test_a_malformed_authorization_header_is_unauthenticated(server: ServiceProcess,
                                                             service: str) -> None:
    token = server.tokens["auditor"]
    method = own(service, SERVICES[service].reader)
    for header in (f"Basic {token}", token, "Bearer", "Bearer   "):
        client = server.client()
        client.metadata = [("authorization", header)]
        assert call(client, method).code == UNAUTHENTICATED, header


@pytest.mark.parametrize("service", SERVICES)
def test_a_token_added_or_rotated_in_the_shared_tokens_file_takes_effect_at_once_everywhere(
        servers: dict[str, ServiceProcess], server: ServiceProcess, service: str) -> None:
    identity = servers["identity"]
    assert server.tokens_file == identity.tokens_file
    reader = own(service, SERVICES[service].reader)
    principal = f"e2e-rotating-{service}"
    first = add_caller(server.tokens_file, principal, ["auditor"])
    assert call(server.client(token=first), reader).code == OK

    second = add_caller(server.tokens_file, principal, ["auditor"])
    assert call(server.client(token=first), reader).code == UNAUTHENTICATED
    assert call(server.client(token=second), reader).code == OK
    listed = identity.client(token=second).ListOrganisations(ipb.ListOrganisationsRequest())
    assert listed.organisations
    refused = call_error(lambda: identity.client(token=first).ListOrganisations(
        ipb.ListOrganisationsRequest()))
    assert refused.code == UNAUTHENTICATED

    demoted = add_caller(server.tokens_file, principal, ["merchant"])
    assert call(server.client(token=demoted), own(service, SERVICES[service].refused_to_merchants)
                ).code == PERMISSION_DENIED


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
