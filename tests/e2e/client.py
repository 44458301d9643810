"""A plain grpcio client for the end-to-end tests: stubs, bearer metadata, error details, and
the small request builders every service's tests use."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from qiji.audit.v1 import audit_service_pb2 as audit_pb
from qiji.badges.v1 import badges_service_pb2 as badges_pb
from qiji.badges.v1 import badges_service_pb2_grpc as badges_grpc
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.feed.v1 import feed_service_pb2_grpc as feed_grpc
from qiji.governance.v1 import governance_service_pb2 as governance_pb
from qiji.governance.v1 import governance_service_pb2_grpc as governance_grpc
from qiji.identity.v1 import identity_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2_grpc as pb_grpc
from qiji.merchants.v1 import merchants_service_pb2 as merchants_pb
from qiji.merchants.v1 import merchants_service_pb2_grpc as merchants_grpc
from qiji.training.v1 import training_service_pb2 as training_pb
from qiji.training.v1 import training_service_pb2_grpc as training_grpc

RPC_TIMEOUT = 10.0
# Each service's own API (its descriptor and stub), by the service's name.
API = {
    "identity": pb.DESCRIPTOR.services_by_name["IdentityService"],
    "training": training_pb.DESCRIPTOR.services_by_name["TrainingService"],
    "merchants": merchants_pb.DESCRIPTOR.services_by_name["MerchantsService"],
    "badges": badges_pb.DESCRIPTOR.services_by_name["BadgesService"],
    "governance": governance_pb.DESCRIPTOR.services_by_name["GovernanceService"],
}
STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "identity": pb_grpc.IdentityServiceStub,
    "training": training_grpc.TrainingServiceStub,
    "merchants": merchants_grpc.MerchantsServiceStub,
    "badges": badges_grpc.BadgesServiceStub,
    "governance": governance_grpc.GovernanceServiceStub,
}
# The kernel's services, which every service serves beside its own.
FEED_SERVICE = feed_pb.DESCRIPTOR.services_by_name["FeedService"]
AUDIT_SERVICE = audit_pb.DESCRIPTOR.services_by_name["AuditService"]
RIDER_REGISTERED_TOPIC = "services.identity.domain.model:Rider.Registered"
# The codes the bad-input tables expect.
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
DENIED = grpc.StatusCode.PERMISSION_DENIED

# Valid resident identity card numbers (GB 11643-1999 check character verified).
NATIONAL_ID = "320402199003071235"
OTHER_NATIONAL_ID = "320402198805124568"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def new_request_id() -> str:
    return str(uuid.uuid4())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def phone_number() -> str:
    return "139" + str(uuid.uuid4().int)[:8]


def at(delta: timedelta) -> Timestamp:
    """A timestamp `delta` from now."""
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + delta)
    return stamp


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


# How far ahead a session is scheduled when a test records its results: training records a
# result only once the session has started, so the test enrols and checks in meanwhile, then
# waits for the start (`started`).
SOON = timedelta(seconds=4)


def started(start_time: Timestamp) -> None:
    """Sleeps until a session's start_time has passed (the e2e services run on this machine's
    clock)."""
    delay = (start_time.ToDatetime(UTC) - datetime.now(UTC)).total_seconds()
    time.sleep(max(0.0, delay) + 0.05)


def state(event: feed_pb.StoredEvent) -> dict[str, Any]:
    return json.loads(event.state)


@dataclass
class ErrorDetails:
    """What a failed call told the caller: its code and message, and the google.rpc details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    # Each BadRequest field violation: (field, reason, description).
    violations: list[tuple[str, str, str]] = field(default_factory=list)
    # Each ResourceInfo: (resource_type, resource_name, description).
    resources: list[tuple[str, str, str]] = field(default_factory=list)


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
            found.violations.extend((v.field, v.reason, v.description)
                                    for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
            found.resources.append((resource.resource_type, resource.resource_name,
                                    resource.description))
    return found


def call_error(call: Callable[[], Any]) -> ErrorDetails:
    """Runs a call that must fail and returns what it said."""
    try:
        response = call()
    except grpc.RpcError as error:
        return details_of(error)
    raise AssertionError(f"the call succeeded but should have failed: {response}")


class Client:
    """One caller (one token, or none) of one running server of `service`."""

    def __init__(self, channel: grpc.Channel, token: str | None, service: str = "identity",
                 acts_for: Callable[..., None] | None = None):
        self.channel = channel
        # How the module's tokens come to act for organisations the test creates (a city
        # admin's client only; see ServiceProcess.act_for).
        self.acts_for = acts_for
        self.metadata = bearer(token) if token is not None else []
        # The server's own service, and its feed.
        self.stub = STUBS[service](channel) if service in STUBS else None
        self.feed = feed_grpc.FeedServiceStub(channel)

    def __getattr__(self, rpc: str) -> Callable[..., Any]:
        """client.RegisterRider(request) calls the server's RPC (of its own service, or of its
        feed) with this caller's token."""
        stub = self.__dict__.get("feed" if rpc in FEED_SERVICE.methods_by_name else "stub")
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


# ---------------------------------------------------------------------------- requests


def create_organisation(admin: Client, kind: int, name: str, parent_id: str = "",
                        **fields: Any) -> pb.Organisation:
    """city_admin creates an organisation on identity."""
    return admin.CreateOrganisation(pb.CreateOrganisationRequest(
        request_id=new_request_id(), kind=kind, name=name, parent_id=parent_id, **fields)
    ).organisation


def create_city(admin: Client) -> dict[str, str]:
    """The city's tree (tests/city.py) made over gRPC by `admin`: 常州市, its district 钟楼区
    and street 荷花池街道, and the platform 骑迹外卖 with its station 荷花池站."""
    from tests.city import build_city, over_grpc
    city = build_city(over_grpc(admin)).as_dict()
    if admin.acts_for is not None:
        # From here on, the module's platform and street-office callers act for this city's.
        admin.acts_for(platform=city["platform"], street_office=city["street"])
    return city


def create_service_space(admin: Client, street_id: str, name: str = "荷花池骑手驿站") -> str:
    """A rest space (驿站) in a street, open every day from 08:00 to 20:00."""
    return admin.CreateServiceSpace(pb.CreateServiceSpaceRequest(
        request_id=new_request_id(), street_id=street_id, name=name,
        address="钟楼区北大街1号", amenities=[pb.AMENITY_REST],
        opening_hours=[pb.OpeningHours(weekday=d, opens="08:00", closes="20:00")
                       for d in range(1, 8)])).service_space.service_space_id


def on(message: Any, **fields: Any) -> Callable[..., Any]:
    """A request of `message` whose callable fields are read from the module's scene (the first
    argument the builder is given); a new request id where the message has one."""
    def make(scene: Any, *_: Any) -> Any:
        values = {k: (v(scene) if callable(v) else v) for k, v in fields.items()}
        if "request_id" in message.DESCRIPTOR.fields_by_name:
            values.setdefault("request_id", new_request_id())
        return message(**values)
    return make


@dataclass(frozen=True)
class Bad:
    """A request that must be refused: `rpc`, called by `who` (a role, or a name the module
    gives a scoped token) with what `request` builds from the module's scene, fails with `code`,
    its BadRequest naming `field` and its ErrorInfo giving `reason` (where given)."""

    rpc: str
    who: str
    request: Callable[..., Any]
    code: grpc.StatusCode
    field: str = ""
    reason: str = ""

    def refused(self, caller: Client, request: Any, domain: str) -> ErrorDetails:
        """Calls the RPC and checks the refusal, which must come from the error `domain`."""
        details = call_error(lambda: getattr(caller, self.rpc)(request))
        assert details.code == self.code, details
        assert "Traceback" not in details.message
        assert details.domain == domain, details
        if self.field:
            assert self.field in details.fields, details
        if self.reason:
            assert details.reason == self.reason, details
        return details
