"""Reflection v1 beside v1alpha (shared/grpc/reflection.py): one servicer answers both, which is
only right while v1's messages are v1alpha's under another package. Checked here on the
descriptors, and over a real (in-process) gRPC server in both versions; against a running
service's process, tests/e2e/test_reflection.py."""

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc
from qiji.identity.v1 import identity_service_pb2 as ipb

from shared.grpc import reflection

v1_pb2 = reflection.v1_messages()
IDENTITY = ipb.DESCRIPTOR.services_by_name["IdentityService"].full_name


def shape(file: descriptor_pb2.FileDescriptorProto, package: str) -> list[str]:
    """Every message's fields as the wire sees them: name, number, type, label, oneof, and the
    message type named (relative to the package)."""
    def fields(message: descriptor_pb2.DescriptorProto) -> list[str]:
        return [f"{message.name}.{f.name}={f.number}:{f.type}:{f.label}:"
                f"{f.oneof_index if f.HasField('oneof_index') else '-'}:"
                f"{f.type_name.replace(f'.{package}.', '')}" for f in message.field]
    return [line for message in file.message_type for line in fields(message)]


def file_proto(module: object) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)  # type: ignore[attr-defined]
    return proto


def test_v1_messages_are_v1alpha_s_on_the_wire() -> None:
    v1, v1alpha = file_proto(v1_pb2), file_proto(v1alpha_pb2)
    assert (v1.name, v1.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    assert shape(v1, "grpc.reflection.v1") == shape(v1alpha, "grpc.reflection.v1alpha")
    def methods(file: descriptor_pb2.FileDescriptorProto, package: str) -> list[tuple]:
        return [(s.name, m.name, m.input_type.replace(f".{package}.", ""),
                 m.output_type.replace(f".{package}.", ""), m.client_streaming,
                 m.server_streaming) for s in file.service for m in s.method]
    assert methods(v1, "grpc.reflection.v1") == methods(v1alpha, "grpc.reflection.v1alpha")


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    listed = reflection.enable(server, [IDENTITY])
    assert set(listed) >= {reflection.V1_SERVICE, reflection.V1ALPHA_SERVICE, IDENTITY}
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as open_channel:
        yield open_channel
    server.stop(None)


def ask(channel: grpc.Channel, version: str, **request: str) -> object:
    if version == "v1alpha":
        stub = v1alpha_grpc.ServerReflectionStub(channel)
        message = v1alpha_pb2.ServerReflectionRequest(**request)
        return next(iter(stub.ServerReflectionInfo(iter([message]), timeout=10)))
    call = channel.stream_stream(
        f"/{reflection.V1_SERVICE}/ServerReflectionInfo",
        request_serializer=v1_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=v1_pb2.ServerReflectionResponse.FromString)
    return next(iter(call(iter([v1_pb2.ServerReflectionRequest(**request)]), timeout=10)))


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_each_version_lists_the_services_and_resolves_files(channel: grpc.Channel,
                                                            version: str) -> None:
    listed = ask(channel, version, list_services="")
    names = {s.name for s in listed.list_services_response.service}  # type: ignore[attr-defined]
    assert {IDENTITY, reflection.V1_SERVICE, reflection.V1ALPHA_SERVICE} <= names
    for symbol, file in [(IDENTITY, "qiji/identity/v1/identity_service.proto"),
                         (reflection.V1_SERVICE, "grpc/reflection/v1/reflection.proto")]:
        found = ask(channel, version, file_containing_symbol=symbol)
        files = {descriptor_pb2.FileDescriptorProto.FromString(raw).name
                 for raw in found.file_descriptor_response.file_descriptor_proto}  # type: ignore
        assert file in files, (symbol, files)
    # The error types ship with every service file (protos/google/README.md).
    found = ask(channel, version, file_by_filename="google/rpc/error_details.proto")
    assert found.file_descriptor_response.file_descriptor_proto  # type: ignore[attr-defined]
    missing = ask(channel, version, file_containing_symbol="no.such.Service")
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]  # type: ignore
