"""Reflection as the tools of other languages use it, against a real identity process: both
versions (grpc.reflection.v1, which buf curl, newer grpcurl and Postman ask for first, and
v1alpha) list the services and resolve files, the Google error types included; `buf curl`
calls an RPC through each, and shows an error's details decoded, not as base64."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

from shared.grpc import reflection
from tests.e2e.callers import REPO, buf
from tests.e2e.client import API, RPC_TIMEOUT, new_request_id
from tests.e2e.conftest import ServiceProcess

pytestmark = pytest.mark.e2e

v1_pb2 = reflection.v1_messages()
IDENTITY = API["identity"].full_name
BUF_TIMEOUT = 60.0


def reflect(identity: ServiceProcess, version: str, **request: str) -> Any:
    """One reflection request and its answer, over `version`, with the messages of that
    version (v1's from protos/grpc/reflection/v1, v1alpha's from grpcio-reflection)."""
    assert identity.channel is not None
    if version == "v1alpha":
        replies: Iterator[Any] = v1alpha_grpc.ServerReflectionStub(
            identity.channel).ServerReflectionInfo(
                iter([v1alpha_pb2.ServerReflectionRequest(**request)]), timeout=RPC_TIMEOUT)
    else:
        method = identity.channel.stream_stream(
            f"/{reflection.V1_SERVICE}/ServerReflectionInfo",
            request_serializer=v1_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=v1_pb2.ServerReflectionResponse.FromString)
        replies = method(iter([v1_pb2.ServerReflectionRequest(**request)]), timeout=RPC_TIMEOUT)
    return next(iter(replies))


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_lists_services_and_resolves_files_in_both_versions(
        identity: ServiceProcess, version: str) -> None:
    listed = reflect(identity, version, list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert {IDENTITY, "grpc.health.v1.Health", reflection.V1_SERVICE,
            reflection.V1ALPHA_SERVICE} <= names, names
    found = reflect(identity, version, file_containing_symbol=IDENTITY)
    files = {descriptor_pb2.FileDescriptorProto.FromString(raw).name
             for raw in found.file_descriptor_response.file_descriptor_proto}
    # The service's file with its imports: the error types come with it.
    assert {"qiji/identity/v1/identity_service.proto", "google/rpc/status.proto",
            "google/rpc/error_details.proto"} <= files, files
    by_name = reflect(identity, version, file_by_filename="grpc/reflection/v1/reflection.proto")
    [raw] = by_name.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(raw).package == "grpc.reflection.v1"


def buf_curl(identity: ServiceProcess, method: str, data: dict[str, Any], *flags: str
             ) -> subprocess.CompletedProcess[str]:
    """`buf curl` as the README shows it: plaintext gRPC needs HTTP/2 prior knowledge; the
    schema comes from reflection; the token in the authorization header."""
    return subprocess.run(
        [buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect", *flags,
         "-H", f"authorization: Bearer {identity.tokens['city_admin']}",
         "--data", json.dumps(data, ensure_ascii=False),
         f"http://{identity.address}/{IDENTITY}/{method}"],
        cwd=REPO, capture_output=True, text=True, timeout=BUF_TIMEOUT, check=False)


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
def test_buf_curl_calls_an_rpc_through_each_reflection_version(identity: ServiceProcess,
                                                                protocol: str) -> None:
    created = buf_curl(identity, "CreateOrganisation",
                       {"request_id": new_request_id(), "kind": "ORGANISATION_KIND_PLATFORM",
                        "name": f"buf curl {protocol}"}, "--reflect-protocol", protocol)
    assert created.returncode == 0, created.stderr
    organisation = json.loads(created.stdout)["organisation"]
    # The JSON forms a caller writes and reads: enums by their wire names, int64 as a string,
    # a Timestamp as an RFC 3339 string.
    assert organisation["kind"] == "ORGANISATION_KIND_PLATFORM"
    assert organisation["version"] == "1"
    assert organisation["createTime"].endswith("Z") and "T" in organisation["createTime"]
    read = buf_curl(identity, "GetOrganisation",
                    {"organisation_id": organisation["organisationId"]},
                    "--reflect-protocol", protocol)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["organisation"] == organisation


def test_buf_curl_lists_the_methods_as_the_readme_shows(identity: ServiceProcess) -> None:
    listed = subprocess.run(
        [buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods",
         f"http://{identity.address}"],
        cwd=REPO, capture_output=True, text=True, timeout=BUF_TIMEOUT, check=False)
    assert listed.returncode == 0, listed.stderr
    assert f"{IDENTITY}/RegisterRider" in listed.stdout.split(), listed.stdout


def buf_convert(type_name: str, value: str) -> dict[str, Any]:
    """An error detail as `buf curl` prints it (its type, its bytes in unpadded base64),
    decoded to JSON by `buf convert` against protos/ (protos/google holds the types)."""
    raw = base64.b64decode(value + "=" * (-len(value) % 4))
    converted = subprocess.run(
        [buf(), "convert", ".", "--type", type_name, "--from", "-#format=binpb",
         "--to", "-#format=json"], cwd=REPO, input=raw, capture_output=True, timeout=BUF_TIMEOUT,
        check=False)
    assert converted.returncode == 0, converted.stderr.decode()
    return json.loads(converted.stdout)


def test_buf_curl_names_the_error_details_and_buf_convert_decodes_them(
        identity: ServiceProcess) -> None:
    """buf curl (1.75) prints an error as JSON with each detail's type and its bytes in base64:
    it decodes details only with the types compiled into it, not those reflection serves. The
    types are on the include root, so `buf convert` turns the bytes into JSON, as the README
    shows: the reason and every field violation."""
    refused = buf_curl(identity, "CreateOrganisation",
                       {"request_id": new_request_id(), "kind": "ORGANISATION_KIND_STATION",
                        "name": ""})
    assert refused.returncode != 0
    error = json.loads(refused.stderr)
    assert error["code"] == "invalid_argument" and error["message"]
    details = {d["type"]: d for d in error["details"]}
    assert set(details) >= {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}, details
    info = buf_convert("google.rpc.ErrorInfo", details["google.rpc.ErrorInfo"]["value"])
    assert info["domain"] == "identity.qiji" and info["reason"], info
    bad = buf_convert("google.rpc.BadRequest", details["google.rpc.BadRequest"]["value"])
    fields = {v["field"] for v in bad["fieldViolations"]}
    assert {"name", "parent_id"} <= fields, bad
    assert all(v["description"] for v in bad["fieldViolations"]), bad
