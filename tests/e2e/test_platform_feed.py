"""The platform company's event feed as it meets it: real identity, training and gateway
processes on PostgreSQL, a platform token that acts for the platform's organisation, CloudEvents
read and streamed with an opaque cursor across restarts. merchants, badges and governance are
not deployed here: the types asked for are identity's and training's, so the gateway never
calls them."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families
from qiji.feed.v1 import public_feed_service_pb2 as public_pb
from qiji.feed.v1 import public_feed_service_pb2_grpc as public_grpc
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.platform.v1 import platform_feed_service_pb2 as pb
from qiji.platform.v1 import platform_feed_service_pb2_grpc as pb_grpc
from qiji.training.v1 import training_service_pb2 as tpb

from shared.auth import add_caller
from tests.city import build_city, over_grpc
from tests.e2e.client import RPC_TIMEOUT, SOON, bearer, call_error, new_request_id, started
from tests.e2e.conftest import ServiceProcess, free_port, start_service

pytestmark = pytest.mark.e2e

REGISTERED = "qiji.identity.v1.RiderRegistered"
VERIFIED = "qiji.identity.v1.RiderVerified"
CERTIFIED = "qiji.training.v1.PreJobCertified"
CONSENT_GRANTED = "qiji.identity.v1.RiderConsentGranted"
CONSENT_WITHDRAWN = "qiji.identity.v1.RiderConsentWithdrawn"
STORY = [REGISTERED, VERIFIED, CERTIFIED]
# Everything identity and training publish that this module's stories produce.
TYPES = [*STORY, CONSENT_GRANTED, CONSENT_WITHDRAWN]
SMALL_POOL = {"QIJI_POSTGRES_POOL_SIZE": "2"}


@dataclass
class Stack:
    identity: ServiceProcess
    training: ServiceProcess
    gateway: ServiceProcess
    platform_org: str
    street: str
    station: str
    space: str
    course: str
    consumer_token: str  # platform role, acting for platform_org
    gateway_metrics_port: int
    rival_org: str  # another platform company of the city, with its own station
    rival_station: str
    rival_token: str  # platform role, acting for rival_org

    def feed(self, token: str | None = None) -> pb_grpc.PlatformFeedServiceStub:
        assert self.gateway.channel is not None
        return pb_grpc.PlatformFeedServiceStub(self.gateway.channel)

    def read(self, cursor: str = "", types: list[str] | None = None, page_size: int = 0,
             token: str | None = None) -> pb.ReadEventsResponse:
        return self.feed().ReadEvents(
            pb.ReadEventsRequest(cursor=cursor, types=TYPES if types is None else types,
                                 page_size=page_size),
            metadata=bearer(token or self.consumer_token), timeout=RPC_TIMEOUT)

    def read_all(self, cursor: str = "", types: list[str] | None = None, page_size: int = 0,
                 token: str | None = None) -> tuple[list[pb.FeedEvent], str]:
        """Every event after `cursor` until caught up, and the cursor after them."""
        found: list[pb.FeedEvent] = []
        while True:
            page = self.read(cursor, types, page_size, token)
            found += page.events
            cursor = page.next_cursor
            if page.caught_up:
                return found, cursor


def at(delta: timedelta) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + delta)
    return stamp


def subject(e: pb.FeedEvent) -> str:
    return e.event.attributes["subject"].ce_string


def data(e: pb.FeedEvent) -> dict[str, Any]:
    return json.loads(e.event.text_data)


def story_of(events: list[pb.FeedEvent], rider: str) -> list[str]:
    return [e.event.type for e in events if subject(e) == rider]


@pytest.fixture(scope="module")
def stack(postgres_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    identity = start_service("identity", postgres_db, tmp_path_factory.mktemp("pf-identity"),
                             extra_env=SMALL_POOL)
    shared = {"tokens_file": identity.tokens_file, "tokens": identity.tokens}
    service_token = identity.tokens["service"]
    training = start_service(
        "training", postgres_db, tmp_path_factory.mktemp("pf-training"), **shared,
        extra_env={**SMALL_POOL, "TRAINING_IDENTITY_ADDRESS": identity.address,
                   "QIJI_SERVICE_TOKEN": service_token})
    nowhere = {f"PLATFORM_{s.upper()}_ADDRESS": f"127.0.0.1:{free_port()}"
               for s in ("merchants", "badges", "governance")}
    metrics_port = free_port()
    gateway = start_service(
        "platform", postgres_db, tmp_path_factory.mktemp("pf-gateway"), **shared,
        extra_env={**SMALL_POOL, **nowhere, "PLATFORM_IDENTITY_ADDRESS": identity.address,
                   "PLATFORM_METRICS_PORT": str(metrics_port),
                   "PLATFORM_TRAINING_ADDRESS": training.address,
                   "QIJI_SERVICE_TOKEN": service_token})
    try:
        admin = identity.client("city_admin")
        made = build_city(over_grpc(admin), also=("provider",))
        street, platform, station = made.street, made.platform, made.station
        rival = made.add("rival", "PLATFORM", "另一家外卖")
        rival_station = made.add("rival_station", "STATION", "另一站", "rival")
        # The module's platform caller registers and enrols the platform's riders.
        identity.act_for(platform=platform)
        provider = made.provider
        space = admin.CreateServiceSpace(ipb.CreateServiceSpaceRequest(
            request_id=new_request_id(), street_id=street, name="荷花池骑手驿站",
            address="钟楼区北大街1号", amenities=[ipb.AMENITY_REST])
        ).service_space.service_space_id
        trainer = training.client("city_admin")
        course = trainer.DraftCourse(tpb.DraftCourseRequest(
            request_id=new_request_id(), track=tpb.TRACK_SKILLS, title="安全骑行",
            hours="2", formats=[tpb.COURSE_FORMAT_CLASSROOM], provider_id=provider,
            instructor=tpb.Instructor(name="张老师", kind=tpb.INSTRUCTOR_KIND_TEACHER))
        ).course.course_id
        trainer.PublishCourse(tpb.PublishCourseRequest(request_id=new_request_id(),
                                                       course_id=course))
        trainer.SetPreJobCourses(tpb.SetPreJobCoursesRequest(request_id=new_request_id(),
                                                             course_ids=[course]))
        consumer = add_caller(identity.tokens_file, "platform-co-feed", ["platform"],
                              organisation_id=platform)
        rival_token = add_caller(identity.tokens_file, "rival-co-feed", ["platform"],
                                 organisation_id=rival)
        yield Stack(identity, training, gateway, platform, street, station, space, course,
                    consumer, metrics_port, rival, rival_station, rival_token)
    finally:
        for server in (gateway, training, identity):
            if server.running:
                server.stop()


def register(s: Stack, *, phone: str = "", verify: bool = True, rival: bool = False) -> str:
    """A rider the platform (or, `rival`, the other platform company) registered."""
    platform_org, station = (s.rival_org, s.rival_station) if rival else (s.platform_org,
                                                                          s.station)
    platform = s.identity.client_for("platform", platform_org)
    rider = platform.RegisterRider(ipb.RegisterRiderRequest(
        request_id=new_request_id(), platform_id=platform_org,
        platform_rider_id=f"r-{uuid.uuid4().hex[:10]}", name="王五",
        phone=phone or "139" + str(uuid.uuid4().int)[:8], home_street_id=s.street,
        station_id=station)).rider.rider_id
    if verify:
        platform.VerifyRider(ipb.VerifyRiderRequest(request_id=new_request_id(),
                                                    rider_id=rider))
    return rider


def certify(s: Stack, rider: str) -> None:
    trainer = s.training.client("city_admin")
    sitting = trainer.ScheduleSession(tpb.ScheduleSessionRequest(
        request_id=new_request_id(), course_id=s.course, service_space_id=s.space,
        start_time=at(SOON), end_time=at(SOON + timedelta(minutes=60)),
        capacity=5)).session
    session = sitting.session_id
    # The platform enrols its rider; whoever runs the session (here the city) records
    # attendance and, once the session has started, the result.
    s.training.client("platform").EnrolRider(tpb.EnrolRiderRequest(
        request_id=new_request_id(), session_id=session, rider_id=rider))
    trainer.CheckInRider(tpb.CheckInRiderRequest(request_id=new_request_id(),
                                                 session_id=session, rider_id=rider))
    started(sitting.start_time)
    assert trainer.RecordCompletion(tpb.RecordCompletionRequest(
        request_id=new_request_id(), session_id=session, rider_id=rider,
        result=tpb.COMPLETION_RESULT_PASSED, score=90)).pre_job_certified


def test_a_rider_story_resumes_exactly_after_the_last_event_across_a_gateway_restart(stack):
    _, start = stack.read_all()
    rider = register(stack)
    certify(stack, rider)
    first = stack.read(start, page_size=1)
    assert [e.event.type for e in first.events] == [REGISTERED]
    assert first.events[0].event.source == "/qiji/identity"
    assert first.events[0].event.spec_version == "1.0"
    stack.gateway.restart()
    rest, _ = stack.read_all(first.events[0].cursor, page_size=1)
    assert [e.event.type for e in rest] == [VERIFIED, CERTIFIED]
    assert {subject(e) for e in rest} == {rider}
    assert data(rest[1])["rider_id"] == rider
    # The same stored event always carries the same id: a consumer can drop duplicates.
    again, _ = stack.read_all(start)
    assert [e.event.id for e in again] == [first.events[0].event.id,
                                           *(e.event.id for e in rest)]


def test_the_gateway_counts_its_rpcs_by_method_and_code_on_its_metrics_port(stack):
    with pytest.raises(grpc.RpcError):
        stack.feed().ReadEvents(pb.ReadEventsRequest(), metadata=[
            ("authorization", "Bearer not-a-token")])
    stack.feed().ReadEvents(pb.ReadEventsRequest(page_size=1), metadata=[
        ("authorization", f"Bearer {stack.consumer_token}")])
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{stack.gateway_metrics_port}/metrics", timeout=5).read().decode()
    counted = {sample.labels["code"] for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "qiji_rpc_total" and sample.value >= 1
               and sample.labels["service"] == "platform"
               and sample.labels["method"] == "ReadEvents"}
    assert {"OK", "UNAUTHENTICATED"} <= counted


def test_a_cursor_from_yesterday_resumes_after_many_events_and_restarts(stack):
    _, yesterday = stack.read_all()
    riders = [register(stack) for _ in range(15)]
    stack.identity.restart()
    stack.gateway.restart()
    events, _ = stack.read_all(yesterday, page_size=7)
    assert [(subject(e), e.event.type) for e in events] == [
        (r, t) for r in riders for t in (REGISTERED, VERIFIED)]


def test_each_platform_reads_its_own_riders_events_and_none_of_anothers(stack):
    _, start = stack.read_all()
    ours, theirs = register(stack), register(stack, rival=True)
    mine, _ = stack.read_all(start)
    rivals, _ = stack.read_all(start, token=stack.rival_token)
    assert (story_of(mine, ours), story_of(mine, theirs)) == ([REGISTERED, VERIFIED], [])
    assert (story_of(rivals, theirs), story_of(rivals, ours)) == ([REGISTERED, VERIFIED], [])
    assert all(ours not in e.event.text_data for e in rivals)
    assert all(data(e)["platform_id"] == stack.rival_org
               for e in rivals if e.event.type == REGISTERED)


def test_no_phone_without_consent_and_none_after_it_is_withdrawn(stack):
    _, start = stack.read_all()
    phone = "13700" + str(uuid.uuid4().int)[:6]
    rider = register(stack, phone=phone)
    before, _ = stack.read_all(start)
    assert story_of(before, rider) == [REGISTERED, VERIFIED]
    assert all(phone not in e.event.text_data for e in before)

    consent = stack.identity.client("platform").GrantConsent(ipb.GrantConsentRequest(
        request_id=new_request_id(), rider_id=rider, scope=ipb.CONSENT_SCOPE_PHONE,
        recipient_id=stack.platform_org)).consent_id
    granted, after_grant = stack.read_all(start)
    assert story_of(granted, rider) == [REGISTERED, VERIFIED, CONSENT_GRANTED]
    assert data(granted[0])["phone"] == phone and "name" not in data(granted[0])
    assert data(granted[-1])["phone"] == phone
    # Another platform company never sees the rider: neither their phone nor any event of
    # theirs (a platform's feed carries its own riders' events only).
    rival, _ = stack.read_all(start, token=stack.rival_token)
    assert story_of(rival, rider) == []
    assert all(phone not in e.event.text_data and rider not in e.event.text_data
               for e in rival)

    stack.identity.client("platform").WithdrawConsent(ipb.WithdrawConsentRequest(
        request_id=new_request_id(), rider_id=rider, consent_id=consent))
    withdrawn, _ = stack.read_all(after_grant)
    assert [(e.event.type, data(e)["scope"]) for e in withdrawn] == [
        (CONSENT_WITHDRAWN, "PHONE")]
    replay, _ = stack.read_all()
    assert all(phone not in e.event.text_data for e in replay)


def test_the_types_filter_sends_only_the_types_asked_for(stack):
    _, start = stack.read_all()
    rider = register(stack)
    certify(stack, rider)
    events, _ = stack.read_all(start, types=[CERTIFIED])
    assert [(e.event.type, subject(e)) for e in events] == [(CERTIFIED, rider)]


def test_the_stream_delivers_a_new_event_within_seconds(stack):
    _, start = stack.read_all()
    stream = stack.feed().StreamEvents(pb.StreamEventsRequest(cursor=start, types=TYPES),
                                       metadata=bearer(stack.consumer_token), timeout=30)
    seen: list[pb.FeedEvent] = []
    arrived = threading.Event()

    def consume() -> None:
        try:
            for reply in stream:
                seen.append(reply.event)
                arrived.set()
        except grpc.RpcError:
            pass
    threading.Thread(target=consume, daemon=True).start()
    time.sleep(0.3)
    stored = time.monotonic()
    rider = register(stack, verify=False)
    assert arrived.wait(5), "no event within 5 s"
    latency = time.monotonic() - stored
    stream.cancel()
    assert [(e.event.type, subject(e)) for e in seen] == [(REGISTERED, rider)]
    assert latency < 3
    # The cursor that came with it resumes after it.
    assert stack.read_all(seen[0].cursor)[0] == []


@pytest.mark.parametrize("role", [None, "city_admin", "service", "operator", "auditor"])
def test_only_the_platform_role_reads_the_feed(stack, role):
    token = stack.identity.tokens[role] if role else None
    error = call_error(lambda: stack.feed().ReadEvents(
        pb.ReadEventsRequest(), metadata=bearer(token) if token else [], timeout=RPC_TIMEOUT))
    assert error.code == (grpc.StatusCode.PERMISSION_DENIED if role
                          else grpc.StatusCode.UNAUTHENTICATED)


def test_a_service_public_feed_is_for_the_gateway_only(stack):
    assert stack.identity.channel is not None
    stub = public_grpc.PublicFeedServiceStub(stack.identity.channel)
    error = call_error(lambda: stub.ReadPublicEvents(
        public_pb.ReadPublicEventsRequest(consumer_organisation_id=stack.platform_org),
        metadata=bearer(stack.consumer_token), timeout=RPC_TIMEOUT))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("cursor", ["garbage!", "eyJ2IjoxfQ", "eyJ2IjoxLCJwIjp7Im5vcGUiOjF9fQ",
                                    "x" * 2000])
def test_a_bad_cursor_is_an_invalid_argument(stack, cursor):
    error = call_error(lambda: stack.read(cursor))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.fields == ["cursor"]
    assert error.reason == "CURSOR_INVALID"
    stream = stack.feed().StreamEvents(pb.StreamEventsRequest(cursor=cursor),
                                       metadata=bearer(stack.consumer_token), timeout=5)
    assert call_error(lambda: next(stream)).code == grpc.StatusCode.INVALID_ARGUMENT


def test_an_unknown_type_is_an_invalid_argument(stack):
    error = call_error(lambda: stack.read(types=["qiji.badges.v1.BadgeInvented"]))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.fields == ["types"]
    assert error.reason == "EVENT_TYPE_UNKNOWN"
    assert "qiji.badges.v1.BadgeInvented" in error.violations[0][2]


def test_a_bad_cursor_a_negative_page_size_and_an_unknown_type_come_in_one_answer(stack):
    error = call_error(lambda: stack.read("garbage!", ["qiji.badges.v1.BadgeInvented"], -1))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert [(f, r) for f, r, _ in error.violations] == [
        ("cursor", "CURSOR_INVALID"), ("page_size", "PAGE_SIZE_NEGATIVE"),
        ("types", "EVENT_TYPE_UNKNOWN")]


def test_a_consumer_subscribed_to_training_receives_training_events_only(stack):
    token = add_caller(stack.identity.tokens_file, "platform-co-training", ["platform"],
                       organisation_id=stack.platform_org, subscriptions=["qiji.training.v1.*"])
    feed = stack.feed()
    rider = register(stack)
    certify(stack, rider)
    page = feed.ReadEvents(pb.ReadEventsRequest(page_size=500), metadata=bearer(token),
                           timeout=10)
    types = {e.event.type for e in page.events}
    assert CERTIFIED in types
    assert all(t.startswith("qiji.training.v1.") for t in types)
    refused = call_error(lambda: feed.ReadEvents(
        pb.ReadEventsRequest(types=["qiji.identity.v1.RiderRegistered"]),
        metadata=bearer(token), timeout=10))
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.reason == "NOT_SUBSCRIBED"
