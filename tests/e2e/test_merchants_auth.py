"""Who may call what on the merchants server, over the wire: every RPC of MerchantsService and of
merchants' feed refuses a caller without a token, with an unknown token, or with a role it does
not allow, and lets an allowed role through to the RPC itself without writing anything for an
empty request. The matrix is built from the service descriptors, so a new RPC is covered the day
it is added. merchants runs beside an identity process sharing its tokens file, as deployed;
which merchant or street a scoped token acts for is the bad-input table's business
(test_merchants_grpc.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as pb

from services.merchants.grpc_api import PERMISSIONS
from shared.auth import ROLES, add_caller
from shared.grpc.feed import feed_permissions
from tests.e2e.client import RPC_TIMEOUT, call_error, details_of, new_request_id
from tests.e2e.conftest import ServiceProcess
from tests.e2e.test_merchants_grpc import (
    MerchantsClient,
    caught_up,
    create_organisation,
    last_position,
    launch_pair,
    mc,
    shut_down,
)

pytestmark = pytest.mark.e2e

MERCHANTS_SERVICE = pb.DESCRIPTOR.services_by_name["MerchantsService"]
FEED_SERVICE = feed_pb.DESCRIPTOR.services_by_name["FeedService"]
ALL_PERMISSIONS = {**PERMISSIONS, **feed_permissions()}
METHODS = [*MERCHANTS_SERVICE.methods, *FEED_SERVICE.methods]
FORBIDDEN_FOR_ALLOWED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                         grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def full_name(method: Any) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def allowed_roles(method: Any) -> frozenset[str]:
    return ALL_PERMISSIONS.get(full_name(method), frozenset())


def rpc_id(method: Any) -> str:
    return f"{method.containing_service.name}.{method.name}"


def cases(pick: Any) -> list[Any]:
    return [pytest.param(m, role, id=f"{rpc_id(m)}-{role}")
            for m in METHODS for role in sorted(pick(m))]


def call(client: MerchantsClient, method: Any, request: Any | None = None) -> grpc.StatusCode:
    """Calls an RPC by its descriptor with an empty (or given) request; returns the status code.
    A streaming RPC counts as OK once its first message arrives."""
    if request is None:
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
        return details.code
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def pair(postgres_db: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    identity, merchants = launch_pair(postgres_db, tmp_path_factory)
    try:
        yield identity, merchants
    finally:
        shut_down(merchants, identity)


@pytest.fixture(scope="module")
def identity_server(pair: tuple[ServiceProcess, ServiceProcess]) -> ServiceProcess:
    return pair[0]


@pytest.fixture(scope="module")
def server(pair: tuple[ServiceProcess, ServiceProcess]) -> ServiceProcess:
    """The merchants server, with events in its log (what it learned of a street created on
    identity), so that a stream has something to send at once, and nothing of identity's left
    to apply in the background while the matrix compares log positions."""
    identity, merchants = pair
    admin = identity.client("city_admin")
    city = create_organisation(admin, ipb.ORGANISATION_KIND_CITY, "常州市")
    district = create_organisation(admin, ipb.ORGANISATION_KIND_DISTRICT, "钟楼区", city)
    create_organisation(admin, ipb.ORGANISATION_KIND_STREET, "荷花池街道", district)
    caught_up(merchants)
    assert last_position(merchants) > 0
    return merchants


def test_every_rpc_of_the_service_has_an_entry_in_the_permissions_table() -> None:
    assert set(PERMISSIONS) == {full_name(m) for m in MERCHANTS_SERVICE.methods}
    assert set(feed_permissions()) == {full_name(m) for m in FEED_SERVICE.methods}
    for path, roles in ALL_PERMISSIONS.items():
        assert roles, f"{path} allows no role at all"
        assert roles <= ROLES, f"{path} names unknown roles {sorted(roles - ROLES)}"


@pytest.mark.parametrize("method", METHODS, ids=rpc_id)
def test_a_caller_without_a_token_is_unauthenticated(server: ServiceProcess,
                                                     method: Any) -> None:
    assert call(mc(server), method) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", METHODS, ids=rpc_id)
def test_a_caller_with_an_unknown_token_is_unauthenticated(server: ServiceProcess,
                                                           method: Any) -> None:
    assert call(mc(server, token="qiji_not-a-token-anyone-was-given"),
                method) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("method", "role"), cases(lambda m: ROLES - allowed_roles(m)))
def test_a_role_the_rpc_does_not_allow_is_permission_denied(server: ServiceProcess,
                                                            method: Any, role: str) -> None:
    assert call(mc(server, role), method) == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(("method", "role"), cases(allowed_roles))
def test_an_allowed_role_reaches_the_rpc_and_an_empty_request_writes_nothing(
        server: ServiceProcess, method: Any, role: str) -> None:
    before = last_position(server)
    code = call(mc(server, role), method)
    assert code not in FORBIDDEN_FOR_ALLOWED, f"{rpc_id(method)} as {role}: {code}"
    assert last_position(server) == before


def test_a_refusal_says_who_was_refused_and_never_what_the_token_was(
        server: ServiceProcess) -> None:
    details = call_error(lambda: mc(server, "merchant").ClaimPerk(pb.ClaimPerkRequest(
        request_id=new_request_id(), perk_id=str(uuid.uuid4()), rider_id=str(uuid.uuid4()))))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "ROLE_NOT_ALLOWED"
    assert details.domain == "merchants.qiji"
    assert details.metadata.get("principal") == "e2e-merchant"
    assert server.tokens["merchant"] not in details.message


def test_a_token_rotated_in_the_shared_tokens_file_changes_both_services_at_once(
        identity_server: ServiceProcess, server: ServiceProcess) -> None:
    assert identity_server.tokens_file == server.tokens_file
    on_merchants = MERCHANTS_SERVICE.methods_by_name["ListMerchants"]
    first = add_caller(server.tokens_file, "e2e-rotating", ["auditor"])
    assert call(mc(server, token=first), on_merchants) == grpc.StatusCode.OK

    second = add_caller(server.tokens_file, "e2e-rotating", ["auditor"])
    assert call(mc(server, token=first), on_merchants) == grpc.StatusCode.UNAUTHENTICATED
    assert call(mc(server, token=second), on_merchants) == grpc.StatusCode.OK
    listed = identity_server.client(token=second).ListOrganisations(
        ipb.ListOrganisationsRequest())
    assert listed.organisations
    refused = call_error(lambda: identity_server.client(token=first).ListOrganisations(
        ipb.ListOrganisationsRequest()))
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
