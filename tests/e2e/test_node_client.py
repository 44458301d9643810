"""Qiji called from Node.js, as a city system written in JavaScript calls it: tests/node/client.mjs
(@grpc/grpc-js, @grpc/proto-loader over protos/, protobufjs for the error trailer) against a
real identity process, given its address and a city admin token the way the `qiji` commands
take them (QIJI_IDENTITY_ADDRESS, QIJI_TOKEN). What an integrator would notice is asserted: the
tree is built, the rider reads back as registered, and the refusal's details decode into the
same ErrorInfo and field violations a Python caller reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from qiji.identity.v1 import identity_service_pb2 as pb

from tests.e2e.callers import REPO, node
from tests.e2e.client import RPC_TIMEOUT, bearer, new_request_id
from tests.e2e.conftest import ServiceProcess

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 60.0
INVALID_ARGUMENT = 3


@pytest.fixture(scope="module")
def result(identity: ServiceProcess) -> dict[str, Any]:
    """What tests/node/client.mjs printed, run once for the module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIJI_")}
    env.update(QIJI_IDENTITY_ADDRESS=identity.address, QIJI_TOKEN=identity.tokens["city_admin"])
    run = subprocess.run([node(), "tests/node/client.mjs"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False)
    assert run.returncode == 0, f"client.mjs exited {run.returncode}:\n{run.stderr}{run.stdout}"
    return json.loads(run.stdout)


def test_the_tree_is_built_with_wire_enum_names(result: dict[str, Any]) -> None:
    orgs = result["organisations"]
    assert {name: o["kind"] for name, o in orgs.items()} == {
        "city": "ORGANISATION_KIND_CITY", "district": "ORGANISATION_KIND_DISTRICT",
        "street": "ORGANISATION_KIND_STREET", "platform": "ORGANISATION_KIND_PLATFORM",
        "station": "ORGANISATION_KIND_STATION"}
    assert orgs["district"]["parent_id"] == orgs["city"]["organisation_id"]
    assert orgs["street"]["parent_id"] == orgs["district"]["organisation_id"]
    assert orgs["station"]["parent_id"] == orgs["platform"]["organisation_id"]
    assert orgs["city"]["parent_id"] == orgs["platform"]["parent_id"] == ""
    # int64 reaches JavaScript as a string (longs: String), never a rounded Number.
    assert all(isinstance(o["version"], str) for o in orgs.values())


def test_the_rider_reads_back_as_registered(result: dict[str, Any],
                                            identity: ServiceProcess) -> None:
    sent, registered, read = result["registration"], result["registered"], result["read"]
    assert read == registered
    for name in ("platform_id", "platform_rider_id", "name", "phone", "national_id",
                 "home_street_id", "station_id"):
        assert read[name] == sent[name], name
    assert read["status"].startswith("RIDER_STATUS_")
    # The rider is the one a Python caller reads: the same record, not a JavaScript artefact.
    assert identity.channel is not None
    stub = identity.channel.unary_unary(
        "/qiji.identity.v1.IdentityService/GetRider",
        request_serializer=pb.GetRiderRequest.SerializeToString,
        response_deserializer=pb.GetRiderResponse.FromString)
    python = stub(pb.GetRiderRequest(rider_id=read["rider_id"]),
                  metadata=bearer(identity.tokens["city_admin"]), timeout=RPC_TIMEOUT).rider
    assert (python.name, python.phone, python.national_id, str(python.version)) == (
        read["name"], read["phone"], read["national_id"], read["version"])


def violations_seen_from_python(identity: ServiceProcess, bad: dict[str, Any]
                                ) -> tuple[error_details_pb2.ErrorInfo, list[dict[str, str]]]:
    """The same bad registration (a request id of its own), its details decoded by grpcio."""
    request = pb.RegisterRiderRequest(**{**bad, "request_id": new_request_id()})
    assert identity.channel is not None
    stub = identity.channel.unary_unary(
        "/qiji.identity.v1.IdentityService/RegisterRider",
        request_serializer=pb.RegisterRiderRequest.SerializeToString,
        response_deserializer=pb.RegisterRiderResponse.FromString)
    with pytest.raises(grpc.RpcError) as refused:
        stub(request, metadata=bearer(identity.tokens["city_admin"]), timeout=RPC_TIMEOUT)
    status = rpc_status.from_call(refused.value)
    assert status is not None
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(bad_request.DESCRIPTOR):
            detail.Unpack(bad_request)
    return info, [{"field": v.field, "description": v.description, "reason": v.reason}
                  for v in bad_request.field_violations]


def test_the_error_trailer_decodes_into_status_error_info_and_bad_request(
        result: dict[str, Any], identity: ServiceProcess) -> None:
    error = result["error"]
    assert (error["grpc_code"], error["grpc_code_name"]) == (INVALID_ARGUMENT, "INVALID_ARGUMENT")
    status = error["status"]
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status["code"] == INVALID_ARGUMENT and status["message"] == error["details"]
    details = status["details"]
    assert set(details) >= {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}, set(details)
    info = details["google.rpc.ErrorInfo"]
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", info["reason"]), info
    assert info["domain"] == "identity.qiji"
    violations = details["google.rpc.BadRequest"]["field_violations"]
    assert {v["field"] for v in violations} >= {"name", "phone", "national_id"}, violations
    assert all(v["description"] for v in violations), violations
    # Every violation carries the reason key (empty where the service gives none), as decoded
    # by protobufjs from the vendored error_details.proto; and Node reads exactly what Python
    # reads from the same refusal.
    python_info, python_violations = violations_seen_from_python(identity, result["bad_request"])
    assert (info["reason"], info["domain"]) == (python_info.reason, python_info.domain)
    assert [{k: v[k] for k in ("field", "description", "reason")} for v in violations] == (
        python_violations)
