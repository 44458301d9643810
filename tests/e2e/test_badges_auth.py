"""Who may call what on the badges server, over the wire: every RPC of BadgesService and of
badges' feed refuses a caller without a token, with an unknown token, or with a role it does not
allow, and lets an allowed role through to the RPC itself without writing anything for an empty
request. The matrix is built from the service descriptors, so a new RPC is covered the day it is
added. badges runs beside identity and training processes sharing their tokens file, following
both feeds, as deployed (governance is not deployed: its follower backs off)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from qiji.badges.v1 import badges_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2 as ipb

from services.badges.grpc_api import PERMISSIONS
from shared.auth import ROLES
from shared.grpc.feed import feed_permissions
from tests.e2e.client import (
    FEED_SERVICE,
    RPC_TIMEOUT,
    Client,
    call_error,
    details_of,
    new_request_id,
)
from tests.e2e.conftest import ServiceProcess

pytestmark = pytest.mark.e2e

BADGES_SERVICE = pb.DESCRIPTOR.services_by_name["BadgesService"]
ALL_PERMISSIONS = {**PERMISSIONS, **feed_permissions()}
METHODS = [*BADGES_SERVICE.methods, *FEED_SERVICE.methods]
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


def call(client: Client, method: Any, request: Any | None = None) -> grpc.StatusCode:
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


def caught_up(badges: ServiceProcess) -> None:
    """Makes badges apply what identity has stored so far (asked for an unknown rider's
    awards, badges reads identity's feed before it answers NOT_FOUND)."""
    details = call_error(lambda: badges.client("auditor").ListRiderAwards(
        pb.ListRiderAwardsRequest(rider_id=str(uuid.uuid4()))))
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "RIDER_NOT_FOUND")


@pytest.fixture(scope="module")
def server(identity_server: ServiceProcess, badges_server: ServiceProcess
           ) -> Iterator[ServiceProcess]:
    """The badges server, with events in its log (what it noted of a city created on identity),
    so that a stream has something to send at once, and nothing of identity's left to apply in
    the background while the matrix compares log positions. No rider exists: training has
    nothing for badges to follow."""
    identity_server.client("city_admin").CreateOrganisation(ipb.CreateOrganisationRequest(
        request_id=new_request_id(), kind=ipb.ORGANISATION_KIND_CITY, name="常州市"))
    caught_up(badges_server)
    assert badges_server.client("service").last_position() > 0
    yield badges_server


def test_every_rpc_of_the_service_has_an_entry_in_the_permissions_table() -> None:
    assert set(PERMISSIONS) == {full_name(m) for m in BADGES_SERVICE.methods}
    assert set(feed_permissions()) == {full_name(m) for m in FEED_SERVICE.methods}
    for path, roles in ALL_PERMISSIONS.items():
        assert roles, f"{path} allows no role at all"
        assert roles <= ROLES, f"{path} names unknown roles {sorted(roles - ROLES)}"


@pytest.mark.parametrize("method", METHODS, ids=rpc_id)
def test_a_caller_without_a_token_is_unauthenticated(server: ServiceProcess,
                                                     method: Any) -> None:
    assert call(server.client(), method) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", METHODS, ids=rpc_id)
def test_a_caller_with_an_unknown_token_is_unauthenticated(server: ServiceProcess,
                                                           method: Any) -> None:
    assert call(server.client(token="qiji_not-a-token-anyone-was-given"),
                method) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("method", "role"), cases(lambda m: ROLES - allowed_roles(m)))
def test_a_role_the_rpc_does_not_allow_is_permission_denied(server: ServiceProcess,
                                                            method: Any, role: str) -> None:
    assert call(server.client(role), method) == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(("method", "role"), cases(allowed_roles))
def test_an_allowed_role_reaches_the_rpc_and_an_empty_request_writes_nothing(
        server: ServiceProcess, method: Any, role: str) -> None:
    feed = server.client("service")
    before = feed.last_position()
    code = call(server.client(role), method)
    assert code not in FORBIDDEN_FOR_ALLOWED, f"{rpc_id(method)} as {role}: {code}"
    assert feed.last_position() == before


def test_a_refusal_says_who_was_refused_and_never_what_the_token_was(
        server: ServiceProcess) -> None:
    merchant = server.client("merchant")
    details = call_error(lambda: merchant.GrantBadge(pb.GrantBadgeRequest(
        request_id=new_request_id(), rider_id=str(uuid.uuid4()),
        badge_class_id=str(uuid.uuid4()), reason="见义勇为")))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "ROLE_NOT_ALLOWED"
    assert details.domain == "badges.qiji"
    assert details.metadata.get("principal") == "e2e-merchant"
    assert server.tokens["merchant"] not in details.message
