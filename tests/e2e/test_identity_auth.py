"""Who may call what, over the wire: every RPC of the identity service and of its feed refuses a
caller without a token, with an unknown token, or with a role it does not allow, and lets an
allowed role through to the RPC itself. The matrix is built from the service descriptors, so a
new RPC is covered the day it is added."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from qiji.identity.v1 import identity_service_pb2 as pb

from services.identity.grpc_api import PERMISSIONS
from shared.auth import ROLES, add_caller
from shared.grpc.feed import feed_permissions
from tests.e2e.client import FEED_SERVICE, IDENTITY_SERVICE, Client, details_of, new_request_id
from tests.e2e.conftest import ServiceProcess

pytestmark = pytest.mark.e2e

ALL_PERMISSIONS = {**PERMISSIONS, **feed_permissions()}
METHODS = [*IDENTITY_SERVICE.methods, *FEED_SERVICE.methods]
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
                request, metadata=client.metadata, timeout=10)
            try:
                next(stream)
            finally:
                stream.cancel()
        else:
            client.channel.unary_unary(
                path, request_serializer=serialize, response_deserializer=deserialize)(
                request, metadata=client.metadata, timeout=10)
    except grpc.RpcError as error:
        details = details_of(error)
        assert "Traceback" not in details.message
        return details.code
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def server(identity_server: ServiceProcess) -> Iterator[ServiceProcess]:
    """The server, with one event in its log so that a stream has something to send at once."""
    identity_server.client("city_admin").CreateOrganisation(pb.CreateOrganisationRequest(
        request_id=new_request_id(), kind=pb.ORGANISATION_KIND_CITY, name="常州市"))
    yield identity_server


def test_every_rpc_of_the_service_has_an_entry_in_the_permissions_table() -> None:
    assert set(PERMISSIONS) == {full_name(m) for m in IDENTITY_SERVICE.methods}
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


def test_a_malformed_authorization_header_is_unauthenticated(server: ServiceProcess) -> None:
    token = server.tokens["auditor"]
    method = IDENTITY_SERVICE.methods_by_name["ListOrganisations"]
    for header in (f"Basic {token}", token, "Bearer", "Bearer   "):
        client = server.client()
        client.metadata = [("authorization", header)]
        assert call(client, method) == grpc.StatusCode.UNAUTHENTICATED, header


def test_a_refusal_says_who_was_refused_and_never_what_the_token_was(
        server: ServiceProcess) -> None:
    merchant = server.client("merchant")
    try:
        merchant.ListRiders(pb.ListRidersRequest())
    except grpc.RpcError as error:
        details = details_of(error)
    else:
        raise AssertionError("a merchant listed riders")
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "ROLE_NOT_ALLOWED"
    assert details.domain == "identity.qiji"
    assert details.metadata.get("principal") == "e2e-merchant"
    assert server.tokens["merchant"] not in details.message


def test_a_token_added_or_rotated_in_the_tokens_file_takes_effect_without_a_restart(
        server: ServiceProcess) -> None:
    method = IDENTITY_SERVICE.methods_by_name["ListOrganisations"]
    first = add_caller(server.tokens_file, "e2e-rotating", ["auditor"])
    assert call(server.client(token=first), method) == grpc.StatusCode.OK

    second = add_caller(server.tokens_file, "e2e-rotating", ["auditor"])
    assert call(server.client(token=first), method) == grpc.StatusCode.UNAUTHENTICATED
    assert call(server.client(token=second), method) == grpc.StatusCode.OK

    demoted = add_caller(server.tokens_file, "e2e-rotating", ["merchant"])
    assert call(server.client(token=demoted), IDENTITY_SERVICE.methods_by_name["ListRiders"]
                ) == grpc.StatusCode.PERMISSION_DENIED
