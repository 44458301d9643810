"""A plain grpcio client for the end-to-end tests: stubs, bearer metadata, error details."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.feed.v1 import feed_service_pb2_grpc as feed_grpc
from qiji.identity.v1 import identity_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2_grpc as pb_grpc
from qiji.training.v1 import training_service_pb2 as training_pb
from qiji.training.v1 import training_service_pb2_grpc as training_grpc

RPC_TIMEOUT = 10.0
IDENTITY_SERVICE = pb.DESCRIPTOR.services_by_name["IdentityService"]
TRAINING_SERVICE = training_pb.DESCRIPTOR.services_by_name["TrainingService"]
FEED_SERVICE = feed_pb.DESCRIPTOR.services_by_name["FeedService"]
RIDER_REGISTERED_TOPIC = "services.identity.domain.model:Rider.Registered"

# Valid resident identity card numbers (GB 11643-1999 check character verified).
NATIONAL_ID = "320402199003071235"
OTHER_NATIONAL_ID = "320402198805124568"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass
class ErrorDetails:
    """What a failed call told the caller: its code and message, and the google.rpc details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)


def details_of(error: grpc.RpcError) -> ErrorDetails:
    assert isinstance(error, grpc.Call), f"not a call error: {error!r}"
    found = ErrorDetails(code=error.code(), message=error.details() or "")
    status = rpc_status.from_call(error)
    if status is None:
        return found
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            found.reason, found.domain = info.reason, info.domain
            found.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.fields.extend(v.field for v in bad.field_violations)
    return found


def call_error(call: Callable[[], Any]) -> ErrorDetails:
    """Runs a call that must fail and returns what it said."""
    try:
        response = call()
    except grpc.RpcError as error:
        return details_of(error)
    raise AssertionError(f"the call succeeded but should have failed: {response}")


class Client:
    """One caller (one token, or none) of one running server."""

    # The stub whose RPCs `client.SomeRpc(request)` calls: the server's own service.
    stub = "identity"

    def __init__(self, channel: grpc.Channel, token: str | None):
        self.channel = channel
        self.metadata = bearer(token) if token is not None else []
        self.identity = pb_grpc.IdentityServiceStub(channel)
        self.training = training_grpc.TrainingServiceStub(channel)
        self.feed = feed_grpc.FeedServiceStub(channel)

    def __getattr__(self, rpc: str) -> Callable[..., Any]:
        """client.RegisterRider(request) calls the server's RPC with this caller's token."""
        stub = self.__dict__.get(self.stub)
        if stub is None or rpc.startswith("_"):
            raise AttributeError(rpc)
        method = getattr(stub, rpc)

        def invoke(request: Any, *, timeout: float = RPC_TIMEOUT,
                   metadata: list[tuple[str, str]] | None = None) -> Any:
            return method(request, metadata=[*self.metadata, *(metadata or [])],
                          timeout=timeout)
        return invoke

    def read_events(self, **fields: Any) -> feed_pb.ReadEventsResponse:
        return self.feed.ReadEvents(feed_pb.ReadEventsRequest(**fields), metadata=self.metadata,
                                    timeout=RPC_TIMEOUT)

    def last_position(self) -> int:
        return self.read_events(from_position=0, limit=1).last_position

    def all_events(self, topics: list[str] | None = None) -> list[feed_pb.StoredEvent]:
        events: list[feed_pb.StoredEvent] = []
        position = 1
        while True:
            page = self.read_events(from_position=position, limit=1000, topics=topics or [])
            events.extend(page.events)
            if not page.events or page.next_position > page.last_position:
                return events
            position = page.next_position

    def stream_events(self, *, timeout: float = RPC_TIMEOUT, **fields: Any) -> Any:
        return self.feed.StreamEvents(feed_pb.StreamEventsRequest(**fields),
                                      metadata=self.metadata, timeout=timeout)


class TrainingClient(Client):
    """A caller of a training server: client.EnrolRider(request) and so on."""

    stub = "training"


# Which client a ServiceProcess hands out for each service.
CLIENT_CLASSES: dict[str, type[Client]] = {"identity": Client, "training": TrainingClient}


class BadgesClient(Client):
    """A caller of a badges server: client.GrantBadge(request) calls BadgesService with this
    caller's token; the feed helpers (last_position, all_events) read badges' feed."""

    stub = "badges"

    def __init__(self, channel: grpc.Channel, token: str | None):
        super().__init__(channel, token)
        from qiji.badges.v1 import badges_service_pb2_grpc as badges_grpc
        self.badges = badges_grpc.BadgesServiceStub(channel)


CLIENT_CLASSES["badges"] = BadgesClient
