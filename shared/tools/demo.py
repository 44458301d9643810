"""`qiji demo`: the city's report (DOMAIN.md) played against a running Qiji, over gRPC, by the
callers who would do each step in the city, ending with the audit trail of one perk and one
award.

The city, its organisations, courses, badge classes and merchant are set up with request ids
derived from what they are (AIP-155), so a second run against the same Qiji finds them again
instead of making a second 常州市; riders, sessions, perks, shifts and reports are new in every
run. Each step prints one line; a step that does not happen (a refused call, a reaction that
does not come within the timeout, a service that does not answer) stops the demo with a
message that says which and exits non-zero."""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from qiji.badges.v1 import badges_service_pb2 as bpb
from qiji.badges.v1 import badges_service_pb2_grpc as brpc
from qiji.feed.v1 import feed_service_pb2 as fpb
from qiji.feed.v1 import feed_service_pb2_grpc as frpc
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.governance.v1 import governance_service_pb2_grpc as grpc_gov
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as irpc
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.merchants.v1 import merchants_service_pb2_grpc as mrpc
from qiji.platform.v1 import platform_feed_service_pb2 as ppb
from qiji.platform.v1 import platform_feed_service_pb2_grpc as prpc
from qiji.statistics.v1 import statistics_service_pb2 as spb
from qiji.statistics.v1 import statistics_service_pb2_grpc as srpc
from qiji.training.v1 import training_service_pb2 as tpb
from qiji.training.v1 import training_service_pb2_grpc as trpc

from shared.auth import add_caller
from shared.config import DEFAULT_PORTS, PORT_BASE_SPAN, TlsSettings, load_tls_settings
from shared.tools import addressing, audit_cli
from shared.tools.addressing import Deployment, Dialer
from shared.values import CITY_TIME

T = TypeVar("T")
# The story's training sittings: how far ahead of now one is scheduled (its riders are enrolled
# and checked in meanwhile) and how long it lasts — seconds, not hours, so that the results,
# recorded only once a session has started, need not wait a morning.
DEMO_SESSION_LEAD = timedelta(seconds=6)
DEMO_SESSION_LENGTH = timedelta(seconds=8)
# Names, phone numbers, scores and places of demo data; not secrets.
_rng = random.SystemRandom()

# Request ids of the set-up are uuid5 in this namespace of what is being made (and its
# parent's id), so a rerun's retry returns what the first run made.
_NAMESPACE = uuid.UUID("0d6c2f3e-6a51-4a8e-9a0e-5b3c0f2d7e11")
STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "identity": irpc.IdentityServiceStub,
    "training": trpc.TrainingServiceStub,
    "merchants": mrpc.MerchantsServiceStub,
    "badges": brpc.BadgesServiceStub,
    "governance": grpc_gov.GovernanceServiceStub,
    "platform": prpc.PlatformFeedServiceStub,
    "statistics": srpc.StatisticsServiceStub,
}
RPC_TIMEOUT = 15.0
UNAVAILABLE_RETRY_SECONDS = 20.0
# Riders' names are invented (DOMAIN.md): a surname and a given name drawn per run.
SURNAMES = "王李张刘陈杨赵黄周吴徐孙朱马胡郭林何高罗宦钱汤"
GIVEN_NAMES = ["建国", "志强", "海峰", "晓东", "俊杰", "明辉", "文斌", "小龙", "国庆", "立新",
               "春雷", "家豪", "子轩", "浩然", "宇航", "振华"]
# 荷花池街道, Changzhou: reports are jittered around here, so that two runs never look like
# one incident (200 m) to governance's duplicate check.
LAT, LON = 31.7790, 119.9460
# 荷悦体育公园 as a Chinese map app shows it (GCJ-02: about 500 m from WGS-84 here).
SPACE_GCJ02 = (31.7790, 119.9510)
PLEDGE = ("我承诺：做城市治理的“移动探头”，遇到异常情况及时预警，突发事件第一时间直报，"
          "社情民意如实传达，与物业、商家和顾客和谐相处，为“荷睦”友好社区贡献力量。")

CO_BUILDING_PLEDGE = ("共建倡议：我们承诺为外卖骑手开放通行、提供歇脚点和饮水充电，"
                      "共建“荷睦”骑手友好社区，让骑手累了能歇脚、渴了能喝水、难了有帮扶。")
ATTESTATION = "小区大门对骑手开放，设骑手停车点与专用通道（荷花池街道现场核验）"


class DemoFailed(Exception):
    """A step of the story did not happen; the message says which and why."""


class CallFailed(DemoFailed):
    def __init__(self, what: str, error: grpc.RpcError):
        self.code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        self.reason = ""
        status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
        info = error_details_pb2.ErrorInfo()
        # Unpack is False (and reads nothing) for a detail of another type.
        if status is not None and any(detail.Unpack(info) for detail in status.details):
            self.reason = info.reason
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        reason = f" {self.reason}" if self.reason and self.reason != self.code.name else ""
        super().__init__(f"{what}: {self.code.name}{reason}: {details}")




def setup_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\n".join(parts)))


def new_id() -> str:
    return str(uuid.uuid4())


class MonthAsked(TypedDict):
    """The month a figures query or export asks for."""

    granularity: spb.Granularity
    start_time: Timestamp
    end_time: Timestamp


def stamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


class Stack:
    """The running Qiji: one channel per service, and who calls it."""

    def __init__(self, addresses: dict[str, str], tls: TlsSettings | None = None):
        self.addresses = addresses
        # The one place the demo opens channels: secured by the same QIJI_TLS_* settings as
        # the `qiji` command's other channels (plaintext when none are set).
        self.dial = Dialer(addresses, tls)
        self._channels: dict[str, grpc.Channel] = {}

    def stub(self, service: str) -> Any:
        if service not in self._channels:
            self._channels[service] = self.dial(service)
        return STUBS[service](self._channels[service])

    def wait_serving(self, wait_seconds: float) -> None:
        """Every service answers its health check with SERVING, within `wait_seconds` (at
        least one try each); otherwise DemoFailed naming the ones that do not."""
        deadline = time.monotonic() + wait_seconds
        missing: dict[str, str] = dict.fromkeys(self.addresses, "not asked")
        while True:
            for service in list(missing):
                if service not in self._channels:
                    self._channels[service] = self.dial(service)
                health = health_pb2_grpc.HealthStub(self._channels[service])
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)  # type: ignore[attr-defined]  # stub lacks Check
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        del missing[service]
                    else:
                        missing[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                            reply.status)
                except grpc.RpcError as error:
                    missing[service] = error.code().name
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(0.3)
        if missing:
            raise DemoFailed("Qiji is not (all) running: " + "; ".join(
                f"{s} at {self.addresses[s]} answers {why}" for s, why in missing.items())
                + " — start it (`make run`, or deploy/README.md) or say where it runs "
                "(--run-dir, --port-base, --host, --address SERVICE=HOST:PORT)")

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


@dataclass
class Caller:
    """One calling system, with its own token: the city admin, a street office, a merchant..."""

    stack: Stack
    name: str
    token: str

    def __call__(self, service: str, rpc: str, request: Any) -> Any:
        """The RPC's answer. UNAVAILABLE is retried for a while with the same request (and
        request id, so a retry never does a thing twice): a service whose upstream it has not
        reached yet (just started, say) answers UNAVAILABLE and "retry shortly"."""
        method = getattr(self.stack.stub(service), rpc)
        deadline = time.monotonic() + UNAVAILABLE_RETRY_SECONDS
        while True:
            try:
                return method(request, metadata=[("authorization", f"Bearer {self.token}")],
                              timeout=RPC_TIMEOUT)
            except grpc.RpcError as error:
                failed = CallFailed(f"{self.name} calling {service}.{rpc} at "
                                    f"{self.stack.addresses[service]}", error)
                if failed.code != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise failed from None
            time.sleep(0.5)


@dataclass
class Rider:
    rider_id: str
    name: str
    platform_rider_id: str


@dataclass
class Story:
    stack: Stack
    admin: Caller
    tokens_file: Path
    timeout: float
    out: Any = sys.stdout
    steps: int = 0
    callers: dict[str, Caller] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    # Each course of ours, and the caller that provides it (who schedules its sessions).
    providers: dict[str, Caller] = field(default_factory=dict)

    # ------------------------------------------------------------------ plumbing

    def say(self, line: str) -> None:
        self.steps += 1
        print(f"[{self.steps:02}] {line}", file=self.out, flush=True)

    def note(self, line: str) -> None:
        print(f"     {line}", file=self.out, flush=True)

    def wait_for(self, check: Callable[[], T | None], what: str) -> T:
        """Polls `check` until it returns something truthy: for a reaction of one service to
        another's events (followers poll their upstream's feed about twice a second)."""
        deadline = time.monotonic() + self.timeout
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() >= deadline:
                raise DemoFailed(f"{what}: did not happen within {self.timeout:.0f} s (is every "
                                 "service running, and do they reach each other's feeds?)")
            time.sleep(0.2)

    def until_known(self, call: Callable[[], T], what: str) -> T:
        """`call`, retried while the service refuses because it has not yet heard from identity
        that the rider is active (its follower applies identity's events a moment later)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return call()
            except CallFailed as failed:
                waiting = (failed.code, failed.reason) in {
                    (grpc.StatusCode.FAILED_PRECONDITION, "RIDER_NOT_ACTIVE"),
                    (grpc.StatusCode.NOT_FOUND, "RIDER_NOT_FOUND")}
                if not waiting or time.monotonic() >= deadline:
                    raise DemoFailed(f"{what}: {failed}") from None
            time.sleep(0.2)

    def until_started(self, call: Callable[[], T], what: str) -> T:
        """`call`, retried while training answers that the session has not started: its clock,
        not this machine's, says when a session begins."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return call()
            except CallFailed as failed:
                if failed.reason != "SESSION_NOT_STARTED" or time.monotonic() >= deadline:
                    raise DemoFailed(f"{what}: {failed}") from None
            time.sleep(0.2)

    def caller(self, key: str, principal: str, role: str, organisation_id: str,
               label: str) -> Caller:
        """A caller acting for one organisation, added to the tokens file the services read, as
        an operator would (`qiji token`); the same principal again rotates its token."""
        if key not in self.callers:
            token = add_caller(self.tokens_file, principal, [role], organisation_id)
            self.callers[key] = Caller(self.stack, label, token)
            self.note(f"operator: added caller {principal} ({role} for {label}) to "
                      f"{self.tokens_file}")
        return self.callers[key]

    def cities(self) -> set[str]:
        """The ids of every city identity knows."""
        found: set[str] = set()
        token = ""
        while True:
            page = self.admin("identity", "ListOrganisations", ipb.ListOrganisationsRequest(
                kind=ipb.ORGANISATION_KIND_CITY, page_size=500, page_token=token))
            found.update(o.organisation_id for o in page.organisations)
            token = page.next_page_token
            if not token:
                return found

    # ------------------------------------------------------------------ the story

    def play(self) -> None:
        city = self.city()
        self.service_space(city)
        riders = self.riders(city)
        self.pre_job_training(city, riders)
        badges = self.badge_classes(city)
        perks = self.merchant_offers(city, badges)
        self.volunteers(city, riders, badges)
        self.volunteer_activity(city, riders)
        claim_id = self.perk_claimed_and_redeemed(city, riders[0], perks)
        self.green_grows_golden(city, riders[2], badges)
        self.pledge(riders)
        self.routing_rules(city)
        self.working_calendar()
        self.emergency(city, riders[1])
        self.help_request(city, riders[3])
        self.service_rates(city)
        self.care_packages(city, riders)
        self.sponsored_care_packages(city, riders)
        self.growth_plan(city, riders[2])
        self.social_worker(city, riders[2])
        self.nearby(riders[1], perks)
        self.visits(city)
        self.friendly_community(city)
        self.own_record(riders[1])
        self.figures(city)
        self.audit(perks["golden"], claim_id, riders[0], badges["golden"])

    def org(self, kind: ipb.OrganisationKind, name: str, parent: str = "",
            function: ipb.DepartmentFunction = ipb.DEPARTMENT_FUNCTION_UNSPECIFIED) -> str:
        reply = self.admin("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
            request_id=setup_id("organisation", str(kind), name, parent, str(function)),
            kind=kind, name=name, parent_id=parent, department_function=function))
        self.names[reply.organisation.organisation_id] = name
        return reply.organisation.organisation_id

    def city(self) -> dict[str, str]:
        c: dict[str, str] = {}
        # Known before the (idempotent) create: then this run found it rather than made it.
        earlier = self.cities()
        first = self.admin("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
            request_id=setup_id("organisation", str(ipb.ORGANISATION_KIND_CITY), "常州市", "",
                                "0"), kind=ipb.ORGANISATION_KIND_CITY, name="常州市"))
        c["city"] = first.organisation.organisation_id
        self.names[c["city"]] = "常州市"
        c["district"] = self.org(ipb.ORGANISATION_KIND_DISTRICT, "钟楼区", c["city"])
        c["street"] = self.org(ipb.ORGANISATION_KIND_STREET, "荷花池街道", c["district"])
        c["community"] = self.org(ipb.ORGANISATION_KIND_COMMUNITY, "北大街社区", c["street"])
        self.say("常州市 › 钟楼区 › 荷花池街道 › 北大街社区 — the city admin (市委社会工作部) "
                 "sets up city, district, street and community (市—区—街三级联动)"
                 + (" (already there from an earlier run)" if c["city"] in earlier else ""))
        departments = [
            ("social_work", "钟楼区委社会工作部", c["district"],
             ipb.DEPARTMENT_FUNCTION_SOCIAL_WORK),
            ("political_legal", "钟楼区委政法委", c["district"],
             ipb.DEPARTMENT_FUNCTION_POLITICAL_LEGAL),
            ("public_security", "荷花池派出所", c["street"],
             ipb.DEPARTMENT_FUNCTION_PUBLIC_SECURITY),
            ("petitions", "钟楼区信访局", c["district"], ipb.DEPARTMENT_FUNCTION_PETITIONS),
            ("legal_aid", "钟楼区法律援助中心", c["district"],
             ipb.DEPARTMENT_FUNCTION_LEGAL_AID)]
        for key, name, parent, function in departments:
            c[key] = self.org(ipb.ORGANISATION_KIND_DEPARTMENT, name, parent, function)
        self.say("departments 社会工作 / 政法 / 公安 / 信访 / 法律援助: " + ", ".join(
            name for _, name, _, _ in departments) + " (the district's information mechanism)")
        c["platform"] = self.org(ipb.ORGANISATION_KIND_PLATFORM, "骑迹外卖")
        c["station"] = self.org(ipb.ORGANISATION_KIND_STATION, "荷花池站", c["platform"])
        c["university"] = self.org(ipb.ORGANISATION_KIND_EDUCATION_PROVIDER, "江苏理工学院",
                                   c["city"])
        c["merchant"] = self.org(ipb.ORGANISATION_KIND_MERCHANT, "荷花池面馆", c["street"])
        self.say("partners: the platform company 骑迹外卖 and its station 荷花池站, the education "
                 "provider 江苏理工学院, the merchant 荷花池面馆")
        return c

    def service_space(self, c: dict[str, str]) -> None:
        reply = self.admin("identity", "CreateServiceSpace", ipb.CreateServiceSpaceRequest(
            request_id=setup_id("service-space", c["street"], "常州市外卖人才联合服务空间"),
            street_id=c["street"], name="常州市外卖人才联合服务空间",
            address="钟楼区荷悦体育公园",
            amenities=[ipb.AMENITY_REST, ipb.AMENITY_CHARGING, ipb.AMENITY_DRINKING_WATER,
                       ipb.AMENITY_MICROWAVE, ipb.AMENITY_FIRST_AID],
            opening_hours=[ipb.OpeningHours(weekday=d, opens="07:00", closes="22:00")
                           for d in range(1, 8)]))
        c["space"] = reply.service_space.service_space_id
        # On the map: where 荷悦体育公园 is in a Chinese map app (GCJ-02); Qiji keeps WGS-84.
        # (An update, not the create: a data folder from before places had locations keeps
        # its create request, and a second run says the same.)
        self.admin("identity", "UpdateServiceSpace", ipb.UpdateServiceSpaceRequest(
            request_id=new_id(), service_space_id=c["space"],
            amenities=list(reply.service_space.amenities),
            opening_hours=list(reply.service_space.opening_hours),
            location=ipb.Location(latitude=SPACE_GCJ02[0], longitude=SPACE_GCJ02[1],
                                  coordinate_system=ipb.COORDINATE_SYSTEM_GCJ02)))
        self.say("常州市外卖人才联合服务空间 opens in 荷花池街道 at 荷悦体育公园 "
                 "(the service space): 歇脚 rest, 充电 charging, 饮水 drinking water, "
                 "microwave, first aid, 07:00–22:00")
        # The callers that act for one organisation each; the departments come when a report
        # is routed to them.
        self.caller("office", f"qiji-demo-street-office-{c['street'][:8]}", "street_office",
                    c["street"], "荷花池街道")
        self.caller("platform", f"qiji-demo-platform-{c['platform'][:8]}", "platform",
                    c["platform"], "骑迹外卖")
        self.caller("merchant", f"qiji-demo-merchant-{c['merchant'][:8]}", "merchant",
                    c["merchant"], "荷花池面馆")
        self.caller("community", f"qiji-demo-community-{c['community'][:8]}", "community",
                    c["community"], "北大街社区")
        self.caller("university", f"qiji-demo-university-{c['university'][:8]}",
                    "education_provider", c["university"], "江苏理工学院")
        self.caller("auditor", "qiji-demo-auditor", "auditor", "", "the whole programme")

    def riders(self, c: dict[str, str]) -> list[Rider]:
        platform = self.callers["platform"]
        names = _rng.sample([s + g for s in SURNAMES for g in GIVEN_NAMES], 4)
        riders = []
        for name in names:
            platform_rider_id = f"QJ{uuid.uuid4().hex[:8].upper()}"
            phone = "139" + "".join(_rng.choices("0123456789", k=8))
            rider = platform("identity", "RegisterRider", ipb.RegisterRiderRequest(
                request_id=new_id(), platform_id=c["platform"],
                platform_rider_id=platform_rider_id, name=name, phone=phone,
                home_street_id=c["street"], station_id=c["station"])).rider
            platform("identity", "VerifyRider", ipb.VerifyRiderRequest(
                request_id=new_id(), rider_id=rider.rider_id))
            riders.append(Rider(rider.rider_id, name, platform_rider_id))
        self.say("骑迹外卖 registers and verifies 4 riders of 荷花池站: " + ", ".join(
            f"{r.name} ({r.platform_rider_id})" for r in riders))
        return riders

    def course(self, by: Caller, track: tpb.Track, title: str, hours: str,
               formats: list[tpb.CourseFormat],
               provider: str, instructor: tpb.Instructor) -> str:
        """A course its provider drafts and publishes (the university, or the platform for
        its station's morning meetings)."""
        reply = by("training", "DraftCourse", tpb.DraftCourseRequest(
            request_id=setup_id("course", provider, title), track=track, title=title,
            description=title, hours=hours, formats=formats, provider_id=provider,
            instructor=instructor))
        course_id = reply.course.course_id
        if reply.course.status == tpb.COURSE_STATUS_DRAFT:
            by("training", "PublishCourse", tpb.PublishCourseRequest(
                request_id=setup_id("publish", course_id), course_id=course_id))
        self.names[course_id] = title
        self.providers[course_id] = by
        return course_id

    def pre_job_training(self, c: dict[str, str], riders: list[Rider]) -> None:
        civic = self.course(
            self.callers["university"], tpb.TRACK_CIVIC_EDUCATION,
            "思政第一课：新就业群体与城市共成长", "2",
            [tpb.COURSE_FORMAT_CLASSROOM], c["university"],
            tpb.Instructor(name="陈教授", kind=tpb.INSTRUCTOR_KIND_TEACHER))
        safety = self.course(
            self.callers["platform"], tpb.TRACK_SKILLS, "岗前安全培训：电动车安全与文明配送", "1.5",
            [tpb.COURSE_FORMAT_MORNING_MEETING, tpb.COURSE_FORMAT_HANDS_ON_PRACTICE],
            c["station"], tpb.Instructor(name="刘站长", kind=tpb.INSTRUCTOR_KIND_STATION_MASTER))
        c["civic_course"] = civic
        current = list(self.admin("training", "GetPreJobCourses",
                                  tpb.GetPreJobCoursesRequest()).course_ids)
        if not current:
            current = list(self.admin("training", "SetPreJobCourses", tpb.SetPreJobCoursesRequest(
                request_id=setup_id("pre-job", civic, safety),
                course_ids=[civic, safety])).course_ids)
        # The Golden Bee needs a civic course: a city whose pre-job list lacks ours takes it too.
        courses = current + ([civic] if civic not in current else [])
        for course_id in courses:
            if course_id not in self.names:
                self.names[course_id] = self.admin("training", "GetCourse", tpb.GetCourseRequest(
                    course_id=course_id)).course.title
        self.say("四时课程: 江苏理工学院 publishes its civic lesson, 骑迹外卖 its station's safety "
                 "training; they are the "
                 "pre-job courses (岗前培训): " + " + ".join(self.names[i] for i in current))
        platform = self.callers["platform"]
        # One sitting after another (a rider never holds two overlapping sessions). A result is
        # recorded only once its session has started, and the story will not wait for a real
        # morning: its sittings are short, each scheduled a few seconds ahead (time to enrol
        # the riders, who check in at once: check-in opens an hour before the start), and the
        # results wait for each start.
        sittings: list[tuple[str, Caller, datetime]] = []
        free_from = datetime.now(UTC)
        for course_id in courses:
            begins = max(free_from, datetime.now(UTC) + DEMO_SESSION_LEAD)
            free_from = begins + DEMO_SESSION_LENGTH
            # Its provider schedules a session of its course (站长+校长); a course of the city's
            # list that is not ours, the city admin.
            organiser = self.providers.get(course_id, self.admin)
            session_id = organiser("training", "ScheduleSession", tpb.ScheduleSessionRequest(
                request_id=new_id(), course_id=course_id, service_space_id=c["space"],
                start_time=stamp(begins), end_time=stamp(free_from),
                capacity=30)).session.session_id
            for rider in riders:
                request = tpb.EnrolRiderRequest(request_id=new_id(), session_id=session_id,
                                                rider_id=rider.rider_id)
                self.until_known(partial(platform, "training", "EnrolRider", request),
                                 f"training: enrolling {rider.name}")
                # Attendance and results are the session's provider's to record.
                organiser("training", "CheckInRider", tpb.CheckInRiderRequest(
                    request_id=new_id(), session_id=session_id, rider_id=rider.rider_id))
            sittings.append((session_id, organiser, begins))
        certified: set[str] = set()
        for session_id, organiser, begins in sittings:
            time.sleep(max(0.0, (begins - datetime.now(UTC)).total_seconds()))
            for rider in riders:
                completion = tpb.RecordCompletionRequest(
                    request_id=new_id(), session_id=session_id, rider_id=rider.rider_id,
                    result=tpb.COMPLETION_RESULT_PASSED, score=_rng.randint(85, 100))
                done = self.until_started(
                    partial(organiser, "training", "RecordCompletion", completion),
                    f"training: the result of {rider.name}")
                if done.pre_job_certified:
                    certified.add(rider.rider_id)
        if len(certified) != len(riders):
            raise DemoFailed("training: not every rider was pre-job certified after passing "
                             f"every pre-job course ({len(certified)} of {len(riders)})")
        self.say(f"{len(riders)} riders enrol, check in at 常州市外卖人才联合服务空间 and pass; "
                 "training certifies them for the job (岗前培训合格)")
        # The platform company learns it from its event feed, not by asking training.
        wanted = {r.rider_id for r in riders}
        self.wait_for(lambda: wanted <= self.subjects_in_feed("qiji.training.v1.PreJobCertified"),
                      "the platform's feed carrying qiji.training.v1.PreJobCertified "
                      "for the 4 riders")
        self.say("骑迹外卖's event feed (platform gateway) carries "
                 "qiji.training.v1.PreJobCertified for all 4: they may take orders")

    def badge_classes(self, c: dict[str, str]) -> dict[str, str]:
        def badge(name: str, english: str, criteria: bpb.Criteria) -> str:
            reply = self.admin("badges", "CreateBadgeClass", bpb.CreateBadgeClassRequest(
                request_id=setup_id("badge-class", c["city"], name), name=name,
                description=f"{english}: {criteria.narrative}",
                image_url="https://qiji.example.org/badges/bee.png", issuer_id=c["city"],
                criteria=criteria, validity_days=365))
            self.names[reply.badge_class.badge_class_id] = name
            return reply.badge_class.badge_class_id
        found = {
            "golden": badge("金蜂骑士", "Golden Bee Knight", bpb.Criteria(
                min_volunteer_hours="8", track_requirements=[bpb.TrackRequirement(
                    track=bpb.TRACK_CIVIC_EDUCATION, courses_passed=1)],
                narrative="8 hours of confirmed volunteer service (爱心公益) and a civic course")),
            "green": badge("青蜂骑士", "Green Bee Knight", bpb.Criteria(
                min_volunteer_hours="4", narrative="4 hours of confirmed volunteer service")),
        }
        self.say("badges: 金蜂骑士 Golden Bee Knight (8 h volunteer service + a civic course) and "
                 "青蜂骑士 Green Bee Knight (4 h), awarded automatically when met")
        return found

    def merchant_offers(self, c: dict[str, str], badges: dict[str, str]) -> dict[str, str]:
        merchant, office = self.callers["merchant"], self.callers["office"]
        applied = merchant("merchants", "ApplyMerchant", mpb.ApplyMerchantRequest(
            request_id=setup_id("apply", c["merchant"]), merchant_id=c["merchant"],
            name="荷花池面馆", street_id=c["street"], category="restaurant",
            location=mpb.Location(latitude=LAT, longitude=LON, address="钟楼区北大街18号"),
            amenities=[mpb.MERCHANT_AMENITY_DRINKING_WATER, mpb.MERCHANT_AMENITY_CHARGING,
                       mpb.MERCHANT_AMENITY_REST])).merchant
        if applied.status == mpb.MERCHANT_STATUS_APPLIED:
            office("merchants", "ApproveMerchant", mpb.ApproveMerchantRequest(
                request_id=setup_id("approve", c["merchant"]), merchant_id=c["merchant"]))
        merchant("merchants", "UpdateMerchantPlace", mpb.UpdateMerchantPlaceRequest(
            request_id=new_id(), merchant_id=c["merchant"],
            location=mpb.Location(latitude=LAT, longitude=LON, address="钟楼区北大街18号"),
            opening_hours=[mpb.OpeningHours(weekday=d, opens="10:00", closes="21:30")
                           for d in range(1, 8)]))
        now = datetime.now(UTC)

        def offer(title: str, **fields: Any) -> str:
            perk = merchant("merchants", "CreatePerkOffer", mpb.CreatePerkOfferRequest(
                request_id=new_id(), merchant_id=c["merchant"], title=title,
                valid_from_time=stamp(now - timedelta(hours=1)),
                valid_until_time=stamp(now + timedelta(days=90)), code_ttl_minutes=120,
                **fields)).perk_offer
            merchant("merchants", "PublishPerkOffer", mpb.PublishPerkOfferRequest(
                request_id=new_id(), perk_id=perk.perk_id))
            self.names[perk.perk_id] = title
            return perk.perk_id
        perks = {
            "water": offer("骑手免费饮水", kind=mpb.PERK_KIND_FREE_ITEM, free_item="一瓶矿泉水",
                           eligibility=mpb.ELIGIBILITY_ANY_VERIFIED_RIDER, total_quota=200,
                           per_rider_limit=1, limit_period=mpb.LIMIT_PERIOD_DAY),
            "golden": offer("金蜂骑士专享：招牌面八折", kind=mpb.PERK_KIND_PERCENT_DISCOUNT,
                            percent_off=20, eligibility=mpb.ELIGIBILITY_BADGE_HOLDERS,
                            badge_class_id=badges["golden"], total_quota=50,
                            per_rider_limit=1, limit_period=mpb.LIMIT_PERIOD_WEEK),
        }
        self.say("友好商户 荷花池面馆 joins (approved by 荷花池街道) and offers perks: "
                 "骑手免费饮水 (any verified rider, 200) and 金蜂骑士专享：招牌面八折 "
                 "(Golden Bee holders only, 50)")
        return perks

    def volunteers(self, c: dict[str, str], riders: list[Rider], badges: dict[str, str]) -> None:
        platform, community = self.callers["platform"], self.callers["community"]
        activities = [("助老送餐", "8"), ("荷悦体育公园义务巡河", "8"), ("社区防汛值守", "4"),
                      ("爱心义卖", "4")]
        when = datetime.now(UTC) - timedelta(days=2)
        for rider, (activity, hours) in zip(riders, activities, strict=True):
            request = bpb.LogVolunteerServiceRequest(
                request_id=new_id(), rider_id=rider.rider_id, community_id=c["community"],
                activity=activity, start_time=stamp(when), hours=hours)
            shift = self.until_known(
                partial(platform, "badges", "LogVolunteerService", request),
                f"badges: logging {rider.name}'s volunteer service").shift
            community("badges", "ConfirmVolunteerService", bpb.ConfirmVolunteerServiceRequest(
                request_id=new_id(), shift_id=shift.shift_id))
        self.say("爱心公益: 北大街社区 confirms the volunteers' hours — " + ", ".join(
            f"{r.name} {a} {h} h" for r, (a, h) in zip(riders, activities, strict=True)))
        expected = {riders[0].rider_id: "golden", riders[1].rider_id: "golden",
                    riders[2].rider_id: "green", riders[3].rider_id: "green"}
        auditor = self.callers["auditor"]

        def holds(rider_id: str, badge_class_id: str) -> bool:
            return badge_class_id in {a.badge_class_id for a in auditor(
                "badges", "ListRiderAwards", bpb.ListRiderAwardsRequest(rider_id=rider_id)).awards}
        for rider in riders:
            wanted = badges[expected[rider.rider_id]]
            self.wait_for(partial(holds, rider.rider_id, wanted),
                          f"badges awarding {self.names[wanted]} to {rider.name}")
        self.say("4 volunteers earn their badges (as at the opening at 荷悦体育公园): "
                 f"金蜂骑士 Golden Bee → {riders[0].name}, {riders[1].name}; "
                 f"青蜂骑士 Green Bee → {riders[2].name}, {riders[3].name}")

    def volunteer_activity(self, c: dict[str, str], riders: list[Rider]) -> None:
        """爱心公益活动: the community publishes, the riders sign up in the platform's app, and
        attendance confirms their hours — no longer only logged after the fact."""
        platform, community = self.callers["platform"], self.callers["community"]
        # Starting in a few seconds, sign-up closing then, so that the story need not wait a
        # day for it; two hours of service.
        start = datetime.now(UTC) + timedelta(seconds=10)
        activity = community("badges", "PublishVolunteerActivity",
                             bpb.PublishVolunteerActivityRequest(
            request_id=new_id(), community_id=c["community"], title="社区助老送餐",
            description="为北大街独居老人送午餐、陪聊",
            kind=bpb.VOLUNTEER_ACTIVITY_KIND_ELDERLY_CARE,
            start_time=stamp(start), end_time=stamp(start + timedelta(hours=2)),
            service_space_id=c["space"], address="服务空间门口集合", places=len(riders),
            sign_up_deadline=stamp(start))).activity
        for rider in riders:
            request = bpb.SignUpForVolunteerActivityRequest(
                request_id=new_id(), activity_id=activity.activity_id, rider_id=rider.rider_id)
            activity = self.until_known(
                partial(platform, "badges", "SignUpForVolunteerActivity", request),
                f"badges: signing {rider.name} up for 社区助老送餐").activity

        def attended(rider: Rider) -> Any:
            request = bpb.RecordVolunteerAttendanceRequest(
                request_id=new_id(), activity_id=activity.activity_id, rider_id=rider.rider_id,
                hours="2")
            try:
                return community("badges", "RecordVolunteerAttendance", request)
            except CallFailed as failed:  # the activity has not started yet: wait for it
                if failed.reason == "ACTIVITY_NOT_STARTED":
                    return None
                raise
        for rider in riders:
            self.wait_for(partial(attended, rider),
                          f"badges: recording {rider.name}'s attendance once 社区助老送餐 starts")

        def confirmed(rider: Rider) -> str:
            return platform("badges", "ListVolunteerService", bpb.ListVolunteerServiceRequest(
                rider_id=rider.rider_id)).confirmed_hours
        self.say(f"爱心公益活动: 北大街社区 publishes 社区助老送餐 ({activity.places} places, "
                 "2 h, at 常州市外卖人才联合服务空间); the 4 riders sign up in 骑迹外卖's app "
                 f"({activity.places_left} places left), attend, and their hours are confirmed by "
                 "attendance — volunteer hours now: "
                 + ", ".join(f"{r.name} {confirmed(r)} h" for r in riders))

    def perk_claimed_and_redeemed(self, c: dict[str, str], rider: Rider,
                                  perks: dict[str, str]) -> str:
        platform, merchant = self.callers["platform"], self.callers["merchant"]

        def listed() -> bool:
            return perks["golden"] in {p.perk_id for p in platform(
                "merchants", "ListPerksForRider", mpb.ListPerksForRiderRequest(
                    rider_id=rider.rider_id, page_size=500)).perk_offers}
        self.wait_for(listed, f"merchants offering 金蜂骑士专享 to {rider.name} once "
                              "badges awarded the badge")
        claim = platform("merchants", "ClaimPerk", mpb.ClaimPerkRequest(
            request_id=new_id(), perk_id=perks["golden"], rider_id=rider.rider_id))
        redeemed = merchant("merchants", "RedeemCode", mpb.RedeemCodeRequest(
            request_id=new_id(), merchant_id=c["merchant"], code=claim.claim.code))
        self.say(f"{rider.name} (Golden Bee) claims 金蜂骑士专享：招牌面八折 in the app (code "
                 f"{claim.claim.code}) and 荷花池面馆 redeems it once; quota left "
                 f"{redeemed.perk_offer.remaining_quota}")
        return claim.claim.claim_id

    def green_grows_golden(self, c: dict[str, str], rider: Rider,
                           badges: dict[str, str]) -> None:
        """A 青蜂 grows into a 金蜂 at a ceremony: the city puts the two on one ladder, the
        rider serves the four more hours the Golden Bee asks, and 荷花池街道 presents it at the
        service space with the officials present. The Green Bee is grown, not revoked."""
        platform, community = self.callers["platform"], self.callers["community"]
        office, auditor = self.callers["office"], self.callers["auditor"]
        self.admin("badges", "ReviseBadgeProgression", bpb.ReviseBadgeProgressionRequest(
            request_id=setup_id("progression", badges["golden"], badges["green"]),
            badge_class_id=badges["golden"], grows_from_badge_class_id=badges["green"]))
        shift = platform("badges", "LogVolunteerService", bpb.LogVolunteerServiceRequest(
            request_id=new_id(), rider_id=rider.rider_id, community_id=c["community"],
            activity="关爱独居老人", start_time=stamp(datetime.now(UTC) - timedelta(days=1)),
            hours="4")).shift
        golden = community("badges", "ConfirmVolunteerService",
                           bpb.ConfirmVolunteerServiceRequest(
                               request_id=new_id(), shift_id=shift.shift_id)).award_ids
        if len(golden) != 1:
            raise DemoFailed(f"badges: 8 hours and a civic course did not make {rider.name} a "
                             f"金蜂骑士 (awards made: {list(golden)})")
        awards = auditor("badges", "ListRiderAwards", bpb.ListRiderAwardsRequest(
            rider_id=rider.rider_id)).awards
        statuses = ", ".join(f"{self.names[a.badge_class_id]} "
                             f"{bpb.AwardStatus.Name(a.status).removeprefix('AWARD_STATUS_')}"
                             for a in awards)
        ceremony = office("badges", "RecordAwardCeremony", bpb.RecordAwardCeremonyRequest(
            request_id=new_id(), street_id=c["street"], held_time=stamp(datetime.now(UTC)),
            service_space_id=c["space"],
            officials=[bpb.Official(name="周海燕", role="荷花池街道党工委书记"),
                       bpb.Official(name="吴建华", role="钟楼区委社会工作部部长")],
            award_ids=list(golden))).ceremony
        wanted = {"qiji.badges.v1.BadgeGrown", "qiji.badges.v1.AwardPresented"}

        def told() -> bool:
            seen, cursor = set(), ""
            while True:
                page = platform("platform", "ReadEvents", ppb.ReadEventsRequest(
                    cursor=cursor, page_size=1000, types=sorted(wanted)))
                seen |= {e.event.type for e in page.events
                         if e.event.attributes["subject"].ce_string == rider.rider_id}
                if page.caught_up or page.next_cursor == cursor:
                    return wanted <= seen
                cursor = page.next_cursor
        self.wait_for(told, f"the platform's feed telling 骑迹外卖 that {rider.name} grew "
                            "into a 金蜂骑士 and was presented with it")
        self.say(f"{rider.name} grows from 青蜂骑士 into 金蜂骑士 (4 more hours of 爱心公益; "
                 f"the ladder is the city's): {statuses} — the Green Bee grown, not revoked; "
                 f"荷花池街道 presents the Golden Bee at 常州市外卖人才联合服务空间 (ceremony "
                 f"{ceremony.ceremony_id[:8]}, officials present: "
                 + ", ".join(o.role for o in ceremony.officials)
                 + "); 骑迹外卖's feed carries qiji.badges.v1.BadgeGrown and AwardPresented")

    def pledge(self, riders: list[Rider]) -> None:
        try:
            current = self.admin("governance", "GetPledge", gpb.GetPledgeRequest()).pledge
        except CallFailed as failed:
            if failed.code != grpc.StatusCode.NOT_FOUND:
                raise
            current = self.admin("governance", "PublishPledge", gpb.PublishPledgeRequest(
                request_id=setup_id("pledge", PLEDGE), text=PLEDGE)).pledge
        platform = self.callers["platform"]
        for rider in riders:
            request = gpb.SignPledgeRequest(request_id=new_id(), rider_id=rider.rider_id,
                                            pledge_version=current.version)
            self.until_known(partial(platform, "governance", "SignPledge", request),
                             f"governance: {rider.name} signing the pledge")
        self.say(f"the riders read and sign the pledge to take part in grassroots governance "
                 f"(参与基层治理承诺倡议, version {current.version})")

    def routing_rules(self, c: dict[str, str]) -> None:
        rules = self.admin("governance", "GetRoutingRules", gpb.GetRoutingRulesRequest()
                           ).routing_rules
        if rules.version == 0:
            rules = self.admin("governance", "SetRoutingRules", gpb.SetRoutingRulesRequest(
                request_id=setup_id("routing-rules", c["city"]), rules=[
                    gpb.RoutingRule(name="突发事件直报", kind=gpb.REPORT_KIND_EMERGENCY,
                                    department_functions=[
                                        gpb.DEPARTMENT_FUNCTION_PUBLIC_SECURITY,
                                        gpb.DEPARTMENT_FUNCTION_SOCIAL_WORK]),
                    gpb.RoutingRule(name="异常情况预警", kind=gpb.REPORT_KIND_ANOMALY_WARNING,
                                    department_functions=[
                                        gpb.DEPARTMENT_FUNCTION_POLITICAL_LEGAL,
                                        gpb.DEPARTMENT_FUNCTION_SOCIAL_WORK]),
                    gpb.RoutingRule(name="社情民意传达", department_functions=[
                        gpb.DEPARTMENT_FUNCTION_PETITIONS,
                        gpb.DEPARTMENT_FUNCTION_SOCIAL_WORK])])).routing_rules
            self.say(f"the city admin sets the routing rules (version {rules.version}): "
                     "emergencies → 公安 + 社会工作, warnings → 政法 + 社会工作, "
                     "public sentiment → 信访 + 社会工作")
        else:
            self.say(f"routing rules version {rules.version} are in force; the report goes "
                     "where they send it")

    def emergency(self, c: dict[str, str], rider: Rider) -> None:
        platform = self.callers["platform"]
        # Somewhere in the street, never within 200 m of an earlier run's report.
        lat = LAT + _rng.uniform(-0.02, 0.02)
        lon = LON + _rng.uniform(-0.02, 0.02)
        request = gpb.SubmitReportRequest(
            request_id=new_id(), rider_id=rider.rider_id, kind=gpb.REPORT_KIND_EMERGENCY,
            category=gpb.CATEGORY_FIRE,
            text="北大街一小区楼道内电动车充电起火冒烟，已帮助疏散住户并拨打119",
            location=gpb.Location(street_id=c["street"], latitude=lat, longitude=lon),
            observe_time=stamp(datetime.now(UTC) - timedelta(minutes=3)))
        report = self.until_known(lambda: platform("governance", "SubmitReport", request),
                                  f"governance: {rider.name} submitting the emergency report"
                                  ).report
        if report.status == gpb.REPORT_STATUS_DUPLICATE:
            raise DemoFailed(f"governance linked the emergency report {report.report_id} to the "
                             f"open report {report.duplicate_of_report_id} instead of routing it")
        departments = [a.department_id for a in report.assignments]
        for d in departments:
            if d not in self.names:
                self.names[d] = self.admin("identity", "GetOrganisation",
                                           ipb.GetOrganisationRequest(organisation_id=d)
                                           ).organisation.name
        self.say(f"突发事件直报: {rider.name} reports a fire (电动车充电起火) in 荷花池街道; "
                 f"governance routes it by rule “{report.routing_rule_name}” to "
                 + " and ".join(self.names[d] for d in departments))
        for d in departments:
            department = self.caller(f"department-{d}", f"qiji-demo-department-{d[:8]}",
                                     "department", d, self.names[d])
            common = {"report_id": report.report_id, "department_id": d}
            department("governance", "AcknowledgeAssignment", gpb.AcknowledgeAssignmentRequest(
                request_id=new_id(), **common))
            department("governance", "StartAssignmentWork", gpb.StartAssignmentWorkRequest(
                request_id=new_id(), note="已到场处置", **common))
            resolved = department("governance", "ResolveAssignment",
                                  gpb.ResolveAssignmentRequest(
                                      request_id=new_id(), resolution="明火已扑灭，住户安全，"
                                      "楼道充电隐患已清理", **common)).report
        if resolved.status != gpb.REPORT_STATUS_RESOLVED:
            raise DemoFailed(f"governance: report {report.report_id} is "
                             f"{gpb.ReportStatus.Name(resolved.status)} after every department "
                             "resolved its assignment")
        verified = self.callers["office"]("governance", "VerifyReport", gpb.VerifyReportRequest(
            request_id=new_id(), report_id=report.report_id, note="街道回访核实")).report
        self.say("each department acknowledges, works and resolves it; 荷花池街道 verifies it "
                 f"({gpb.ReportStatus.Name(verified.status).removeprefix('REPORT_STATUS_')})")
        self.wait_for(lambda: rider.rider_id in self.subjects_in_feed(
            "qiji.governance.v1.ReportVerified"),
            "the platform's feed carrying qiji.governance.v1.ReportVerified for the rider")
        rated = platform("governance", "RateReportOutcome", gpb.RateReportOutcomeRequest(
            request_id=new_id(), report_id=report.report_id,
            rating=gpb.SATISFACTION_RATING_SATISFIED, comment="处置及时，谢谢")).report
        self.say(f"骑迹外卖's feed tells {rider.name} the outcome "
                 "(qiji.governance.v1.ReportVerified, with each department's resolution); the "
                 "rider rates it in the app: "
                 + gpb.SatisfactionRating.Name(rated.satisfaction).removeprefix(
                     "SATISFACTION_RATING_") + " (满意)")

    def working_calendar(self) -> None:
        """The city's working calendar: general requests' clocks count its working hours;
        emergencies and risks to life or property run around the clock (12345's standard)."""
        calendar = self.admin("governance", "GetWorkingCalendar",
                              gpb.GetWorkingCalendarRequest()).working_calendar
        if calendar.version == 0:
            calendar = self.admin("governance", "SetWorkingCalendar",
                                  gpb.SetWorkingCalendarRequest(
                request_id=setup_id("working-calendar"),
                working_hours=[gpb.WorkingHours(start="09:00", end="12:00"),
                               gpb.WorkingHours(start="13:30", end="17:30")],
                working_weekdays=[1, 2, 3, 4, 5], holidays=["2027-01-01"])).working_calendar
        rules = self.admin("governance", "GetRoutingRules", gpb.GetRoutingRulesRequest()
                           ).routing_rules
        clocks = {gpb.Category.Name(d.category).removeprefix("CATEGORY_"): d
                  for d in rules.category_deadlines}

        def told(category: str) -> str:
            d = clocks[category]
            return (f"{category} {_hours(d.acknowledge_within.seconds)} / "
                    f"{_hours(d.resolve_within.seconds)}"
                    + (" around the clock" if d.around_the_clock else " of working time"))
        self.say(f"the city admin sets the working calendar (工作日历, version "
                 f"{calendar.version}): "
                 + ", ".join(f"{h.start}–{h.end}" for h in calendar.working_hours)
                 + ", Monday to Friday, 元旦 " + ", ".join(calendar.holidays) + " off; "
                 "report clocks by category (acknowledge / answer): "
                 + "; ".join(told(c) for c in ("FIRE", "UTILITIES", "OTHER", "DISPUTE")))

    def help_request(self, c: dict[str, str], rider: Rider) -> None:
        """帮扶: a rider asks for legal aid; the legal-aid centre answers; the street office
        sees that it happened, never what was said."""
        platform = self.callers["platform"]
        asked = self.until_known(lambda: platform("governance", "RequestHelp",
                                                  gpb.RequestHelpRequest(
            request_id=new_id(), rider_id=rider.rider_id, kind=gpb.HELP_KIND_LEGAL_AID,
            text="送餐途中被一辆轿车刮倒，车主拒绝赔偿医药费和误工费，想申请法律援助",
            contact_preference=gpb.CONTACT_CHANNEL_PHONE)),
            f"governance: {rider.name} asking for legal aid").help_request
        centre = [a.department_id for a in asked.assignments]
        if centre != [c["legal_aid"]]:
            raise DemoFailed(f"governance routed the legal-aid request to {centre}, not to "
                             "钟楼区法律援助中心")
        seen = self.callers["office"]("governance", "GetHelpRequest", gpb.GetHelpRequestRequest(
            help_request_id=asked.help_request_id)).help_request
        self.say(f"帮扶: {rider.name} asks for legal aid (法律援助) in 骑迹外卖's app; governance "
                 "routes it to 钟楼区法律援助中心 (the legal aid nearest the rider's home "
                 f"street); 荷花池街道 sees that it happened, not what was said: “{seen.text}”")
        centre_caller = self.caller("legal-aid", "qiji-demo-legal-aid", "department",
                                    c["legal_aid"], "钟楼区法律援助中心")
        common = {"help_request_id": asked.help_request_id, "department_id": c["legal_aid"]}
        centre_caller("governance", "AssignCaseworker", gpb.AssignCaseworkerRequest(
            request_id=new_id(), caseworker_name="周律师", **common))
        centre_caller("governance", "RecordHelpContact", gpb.RecordHelpContactRequest(
            request_id=new_id(), channel=gpb.CONTACT_CHANNEL_PHONE,
            note="电话了解事故经过，约定到中心面谈", **common))
        centre_caller("governance", "GiveHelpOutcome", gpb.GiveHelpOutcomeRequest(
            request_id=new_id(), outcome="已受理法律援助，指派律师代理索赔；车主已同意协商赔偿",
            **common))
        self.wait_for(lambda: rider.rider_id in self.subjects_in_feed(
            "qiji.governance.v1.HelpOutcomeGiven"),
            "the platform's feed carrying qiji.governance.v1.HelpOutcomeGiven for the rider")
        rated = platform("governance", "RateHelpOutcome", gpb.RateHelpOutcomeRequest(
            request_id=new_id(), help_request_id=asked.help_request_id,
            rating=gpb.SATISFACTION_RATING_SATISFIED)).help_request
        self.say("钟楼区法律援助中心 names a caseworker, calls the rider and gives its outcome; "
                 f"骑迹外卖's feed carries qiji.governance.v1.HelpOutcomeGiven to {rider.name}, "
                 "who rates it "
                 + gpb.SatisfactionRating.Name(rated.satisfaction).removeprefix(
                     "SATISFACTION_RATING_") + " (满意)")

    def service_rates(self, c: dict[str, str]) -> None:
        """接诉即办's three rates of the street, as the log stands now."""
        now = datetime.now(UTC)
        rates = self.callers["office"]("governance", "GetServiceRates",
                                       gpb.GetServiceRatesRequest(
            street_id=c["street"], start_time=stamp(now - timedelta(days=1)),
            end_time=stamp(now + timedelta(minutes=1)))).service_rates

        def told(rate: Any) -> str:
            return (f"{rate.percent or '—'}% ({rate.numerator}/{rate.denominator})")
        self.say("荷花池街道 reads its three rates for the last day (接诉即办): response "
                 f"{told(rates.response_rate)}, resolution {told(rates.resolution_rate)}, "
                 f"satisfaction {told(rates.satisfaction_rate)}")

    def subjects_in_feed(self, event_type: str) -> set[str]:
        """The subjects (riders) of every event of `event_type` on the platform's feed."""
        seen: set[str] = set()
        cursor = ""
        platform = self.callers["platform"]
        while True:
            page = platform("platform", "ReadEvents", ppb.ReadEventsRequest(
                cursor=cursor, page_size=1000, types=[event_type]))
            seen.update(e.event.attributes["subject"].ce_string for e in page.events)
            if page.caught_up or page.next_cursor == cursor:
                return seen
            cursor = page.next_cursor

    def care_packages(self, c: dict[str, str], riders: list[Rider]) -> None:
        office = self.callers["office"]
        # One campaign per run: a rider gets one package per campaign.
        campaign = office("merchants", "CreateCareCampaign", mpb.CreateCareCampaignRequest(
            request_id=new_id(), street_id=c["street"],
            name=f"荷睦关爱礼包 {datetime.now(UTC):%Y-%m-%d %H:%M}",
            description="防暑降温用品、雨衣和充电宝", stock=50)).campaign
        for rider in riders:
            request = mpb.AllocateCarePackageRequest(request_id=new_id(),
                                                     campaign_id=campaign.campaign_id,
                                                     rider_id=rider.rider_id)
            self.until_known(partial(office, "merchants", "AllocateCarePackage", request),
                             f"merchants: allocating {rider.name} a care package")
            done = office("merchants", "RecordHandOver", mpb.RecordHandOverRequest(
                request_id=new_id(), campaign_id=campaign.campaign_id,
                rider_id=rider.rider_id, handed_over_by="荷花池街道 张社工")).campaign
        self.say(f"荷花池街道 hands out 关爱礼包 (care packages): {done.handed_over} of "
                 f"{done.stock} handed over")

    def growth_plan(self, c: dict[str, str], rider: Rider) -> None:
        """量身定制: the city's growth path (its data, versioned), and the street office opens a
        plan for its resident rider. The training the rider passed for the job already meets
        both steps, so the plan reaches them as it opens; the platform learns it from its feed.
        The milestone itself is identity's record, made in the next step."""
        path = self.admin("training", "DefineGrowthPath", tpb.DefineGrowthPathRequest(
            request_id=setup_id("growth-path", c["civic_course"]), name="从骑手到社区社工",
            description="骑手 → 志愿者 → 社区社工", steps=[
                tpb.GrowthStep(key="volunteer", title="志愿者", role=tpb.GROWTH_ROLE_VOLUNTEER,
                               pre_job_certified=True),
                tpb.GrowthStep(key="social-worker", title="社区社工",
                               role=tpb.GROWTH_ROLE_COMMUNITY_SOCIAL_WORKER,
                               track_hours=[tpb.TrackHoursRequirement(
                                   track=tpb.TRACK_CIVIC_EDUCATION, hours="2")],
                               course_ids=[c["civic_course"]])])).growth_path
        plan = self.callers["office"]("training", "OpenGrowthPlan", tpb.OpenGrowthPlanRequest(
            request_id=new_id(), rider_id=rider.rider_id, growth_path_id=path.growth_path_id,
            goals="成为社区专职社工", tracks=[tpb.TRACK_CIVIC_EDUCATION,
                                               tpb.TRACK_GRASSROOTS_GOVERNANCE])).growth_plan
        reached = [s.title for s in plan.steps if s.reached]
        if "社区社工" not in reached:
            raise DemoFailed(f"training: {rider.name}'s growth plan did not reach the "
                             f"social-worker step ({reached})")
        platform = self.callers["platform"]

        def on_feed() -> bool:
            cursor = ""
            while True:
                page = platform("platform", "ReadEvents", ppb.ReadEventsRequest(
                    cursor=cursor, page_size=1000,
                    types=["qiji.training.v1.GrowthStepReached"]))
                if any(plan.growth_plan_id in e.event.text_data for e in page.events
                       if '"social-worker"' in e.event.text_data):
                    return True
                if page.caught_up or page.next_cursor == cursor:
                    return False
                cursor = page.next_cursor
        self.wait_for(on_feed, "the platform's feed carrying qiji.training.v1.GrowthStepReached")
        self.say(f"荷花池街道 opens {rider.name}'s growth plan (量身定制) on the city's path "
                 f"从骑手到社区社工 v{plan.path_version} (骑手 → 志愿者 → 社区社工); the training "
                 "passed already meets it: steps reached " + " → ".join(reached)
                 + " — 骑迹外卖's feed carries qiji.training.v1.GrowthStepReached")
    def sponsored_care_packages(self, c: dict[str, str], riders: list[Rider]) -> None:
        """A sponsor's packages reach the riders who meet the campaign's rules, picked from the
        city's versioned set; a rider of another street is refused, with the rule's reason."""
        office, platform = self.callers["office"], self.callers["platform"]
        rules = self.admin("merchants", "SetCareEligibilityRules",
                           mpb.SetCareEligibilityRulesRequest(
                               request_id=setup_id("care-rules", "v1"), rules=[
                                   mpb.CareEligibilityRule(
                                       name="在岗骑手", kind=mpb.CARE_RULE_KIND_RIDER_ACTIVE),
                                   mpb.CareEligibilityRule(
                                       name="本街道骑手", kind=mpb.CARE_RULE_KIND_HOME_STREET),
                                   mpb.CareEligibilityRule(
                                       name="新骑手", kind=mpb.CARE_RULE_KIND_NEW_RIDER,
                                       days=30)])).rules
        campaign = office("merchants", "CreateCareCampaign", mpb.CreateCareCampaignRequest(
            request_id=new_id(), street_id=c["street"],
            name=f"荷睦·商户助力关爱礼包 {datetime.now(UTC):%Y-%m-%d %H:%M}", stock=0,
            contents=[mpb.CareItem(item="矿泉水", quantity=6),
                      mpb.CareItem(item="藿香正气水", quantity=2),
                      mpb.CareItem(item="雨衣", quantity=1)],
            eligibility_rules=["在岗骑手", "本街道骑手"])).campaign
        campaign = office("merchants", "RecordCareDonation", mpb.RecordCareDonationRequest(
            request_id=new_id(), campaign_id=campaign.campaign_id, sponsor_id=c["merchant"],
            packages=2, items=[mpb.CareItem(item="代金券", quantity=20)])).campaign
        self.say(f"荷花池面馆 sponsors 关爱礼包: {campaign.donations[0].packages} packages of "
                 + "、".join(f"{i.item}×{i.quantity}" for i in campaign.contents)
                 + f" for riders who meet the city's rules (version {rules.version}): "
                 + ", ".join(r.name for r in campaign.eligibility_rules))
        # A rider who lives in another street, registered by the same platform.
        elsewhere_street = self.org(ipb.ORGANISATION_KIND_STREET, "西林街道", c["district"])
        far = platform("identity", "RegisterRider", ipb.RegisterRiderRequest(
            request_id=new_id(), platform_id=c["platform"],
            platform_rider_id=f"QJ{uuid.uuid4().hex[:8].upper()}", name="周骑手",
            phone="139" + "".join(_rng.choices("0123456789", k=8)),
            home_street_id=elsewhere_street, station_id=c["station"])).rider
        platform("identity", "VerifyRider", ipb.VerifyRiderRequest(request_id=new_id(),
                                                                   rider_id=far.rider_id))

        def qualifies(rider_id: str) -> bool:
            listed = platform("merchants", "ListCareCampaignsForRider",
                              mpb.ListCareCampaignsForRiderRequest(rider_id=rider_id,
                                                                   page_size=500))
            return campaign.campaign_id in {k.campaign_id for k in listed.campaigns}

        def refused() -> str | None:
            try:
                office("merchants", "AllocateCarePackage", mpb.AllocateCarePackageRequest(
                    campaign_id=campaign.campaign_id, rider_id=far.rider_id))
            except CallFailed as failed:
                # Until merchants hears that identity verified the rider, the first rule
                # (在岗骑手) is the one unmet; the street is what must refuse them.
                return failed.reason if failed.reason == "RIDER_NOT_OF_STREET" else None
            raise DemoFailed("merchants: a rider of another street got a sponsored package")
        # Refused while packages are left: the rule, not the stock, is what turns them away.
        reason = self.wait_for(refused, "merchants: refusing a rider of another street")
        if qualifies(far.rider_id):
            raise DemoFailed("merchants: a rider of another street is listed as qualifying")
        given = [riders[0], riders[2]]
        for rider in given:
            self.wait_for(partial(qualifies, rider.rider_id),
                          f"merchants: {rider.name} listed for the sponsored campaign")
            request = mpb.AllocateCarePackageRequest(request_id=new_id(),
                                                     campaign_id=campaign.campaign_id,
                                                     rider_id=rider.rider_id)
            self.until_known(partial(office, "merchants", "AllocateCarePackage", request),
                             f"merchants: allocating {rider.name} a sponsored package")

        done = office("merchants", "GetCareCampaign", mpb.GetCareCampaignRequest(
            campaign_id=campaign.campaign_id)).campaign
        self.say(f"the sponsored packages reach {' and '.join(r.name for r in given)} "
                 f"({done.allocated} of {done.stock} allocated); 周骑手 of 西林街道 is refused: "
                 f"{reason} (本街道骑手), and is not listed by ListCareCampaignsForRider")

    def social_worker(self, c: dict[str, str], rider: Rider) -> None:
        office = self.callers["office"]
        office("identity", "RecordCareerMilestone", ipb.RecordCareerMilestoneRequest(
            request_id=new_id(), rider_id=rider.rider_id,
            kind=ipb.CAREER_MILESTONE_KIND_COMMUNITY_SOCIAL_WORKER,
            organisation_id=c["community"], note="从“小哥”成长为专职社工"))
        self.say(f"{rider.name} becomes a full-time community social worker (社区社工) at "
                 "北大街社区 — from 小哥 to 社工")

    def nearby(self, rider: Rider, perks: dict[str, str]) -> None:
        """累了能歇脚: the rider, out on a delivery, asks the app where to charge their phone.
        The rider holds the Golden Bee, so its perk is among those they may claim there once
        merchants has read the award from badges' feed (as it had for the first rider before
        the claim; each award reaches merchants in its own time)."""
        platform = self.callers["platform"]
        here = mpb.Location(latitude=LAT + 0.0015, longitude=LON + 0.001)

        def found() -> Any:
            reply = platform("merchants", "FindNearby", mpb.FindNearbyRequest(
                location=here, radius_metres=2000, amenities=[mpb.PLACE_AMENITY_CHARGING],
                rider_id=rider.rider_id))
            kinds = {p.kind for p in reply.places}
            both = {mpb.PLACE_KIND_SERVICE_SPACE, mpb.PLACE_KIND_MERCHANT}
            claimable = {x.perk_id for p in reply.places for x in p.claimable_perks}
            return reply if both <= kinds and perks["golden"] in claimable else None
        places = self.wait_for(found, "merchants: the service space on the map (from "
                                      f"identity's feed) and {rider.name}'s Golden Bee perk "
                                      "(from badges' feed)").places

        def described(p: Any) -> str:
            perks = "".join(f", may claim {x.title}" for x in p.claimable_perks)
            return (f"{p.name} {p.distance_metres:,.0f} m "
                    f"({'open now' if p.open_now else 'closed now'}{perks})")
        self.say(f"{rider.name}, out on a delivery, asks 骑迹外卖's app where to charge nearby "
                 "(FindNearby, 2 km, 充电): " + "; ".join(described(p) for p in places[:3]))

    def visits(self, c: dict[str, str]) -> None:
        """The staff at the space tally today's visits for the street: counts only, no one
        named; the street reads back which of its spaces serve riders."""
        office = self.callers["office"]
        tally = [(ipb.AMENITY_REST, 12), (ipb.AMENITY_CHARGING, 9),
                 (ipb.AMENITY_DRINKING_WATER, 15)]
        for amenity, count in tally:
            office("identity", "RecordSpaceUse", ipb.RecordSpaceUseRequest(
                request_id=new_id(), service_space_id=c["space"], amenity=amenity,
                count=count))
        listed = office("identity", "ListSpaceUse", ipb.ListSpaceUseRequest(
            street_id=c["street"]))

        def amenity_of(t: Any) -> str:
            return ipb.Amenity.Name(t.amenity).removeprefix("AMENITY_").lower().replace("_", " ")
        used = ", ".join(f"{s.name} " + " / ".join(f"{amenity_of(t)} {t.count}" for t in s.totals)
                         for s in listed.spaces if s.total)
        self.say("荷花池街道 records today's visits at 常州市外卖人才联合服务空间 — riders rested, "
                 "charged and drank water (RecordSpaceUse, counts only: no one named); the "
                 f"street's use {listed.from_day} to {listed.to_day}: {used or 'none'}")

    def friendly_community(self, c: dict[str, str]) -> None:
        """友好社区: 北大街社区 signs the co-building pledge (共建倡议) and 荷花池街道 applies
        for its friendly-community mark under the street's brand 荷睦; the city judges it
        against its criteria (the space, the approved 荷花池面馆, the signature, the street's
        attestation) and awards it with that evidence. A second run finds it all done."""
        community, office = self.callers["community"], self.callers["office"]
        co = gpb.PLEDGE_KIND_CO_BUILDING
        try:
            pledge = self.admin("governance", "GetPledge", gpb.GetPledgeRequest(kind=co)).pledge
        except CallFailed as failed:
            if failed.code != grpc.StatusCode.NOT_FOUND:
                raise
            pledge = self.admin("governance", "PublishPledge", gpb.PublishPledgeRequest(
                request_id=setup_id("co-building-pledge", CO_BUILDING_PLEDGE),
                text=CO_BUILDING_PLEDGE, kind=co)).pledge
        try:
            community("governance", "SignCoBuildingPledge", gpb.SignCoBuildingPledgeRequest(
                request_id=new_id(), organisation_id=c["community"],
                pledge_version=pledge.version))
        except CallFailed as failed:
            if failed.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
        try:
            criteria = self.admin("identity", "GetFriendlyMarkCriteria",
                                  ipb.GetFriendlyMarkCriteriaRequest()).criteria
        except CallFailed as failed:
            if failed.code != grpc.StatusCode.NOT_FOUND:
                raise
            criteria = self.admin("identity", "SetFriendlyMarkCriteria",
                                  ipb.SetFriendlyMarkCriteriaRequest(
                request_id=setup_id("friendly-mark-criteria", "1"),
                criteria=ipb.FriendlyMarkCriteria(
                    min_service_spaces=1, space_amenities=[
                        ipb.AMENITY_REST, ipb.AMENITY_CHARGING, ipb.AMENITY_DRINKING_WATER],
                    min_friendly_merchants=1, co_building_pledge=True,
                    street_attestation=True))).criteria
        marks = office("identity", "ListFriendlyMarks", ipb.ListFriendlyMarksRequest(
            street_id=c["street"], page_size=500)).marks
        mark = next((m for m in marks if m.area_id == c["community"]), None)
        if mark is None or mark.status == ipb.FRIENDLY_MARK_STATUS_WITHDRAWN:
            mark = office("identity", "ApplyFriendlyMark", ipb.ApplyFriendlyMarkRequest(
                request_id=new_id(), area_id=c["community"], brand_name="荷睦",
                street_attestation=ATTESTATION)).mark
        if mark.status == ipb.FRIENDLY_MARK_STATUS_APPLIED:
            mark = self.admin("identity", "AwardFriendlyMark", ipb.AwardFriendlyMarkRequest(
                request_id=new_id(), mark_id=mark.mark_id,
                criteria_version=criteria.version)).mark
        signed = self.callers["merchant"]("governance", "ListPledgeSignatures",
                                          gpb.ListPledgeSignaturesRequest(
                                              pledge_kind=co, page_size=500)).signatures
        evidence = {ipb.FriendlyMarkCriterion.Name(r.criterion).removeprefix(
            "FRIENDLY_MARK_CRITERION_").lower().replace("_", " "): ", ".join(
                e.name for e in r.evidence if e.name) or "given" for r in mark.results}
        self.say(f"北大街社区 signs the co-building pledge (共建倡议, version {pledge.version}; "
                 "signed by " + ", ".join(sorted({s.organisation_name for s in signed}))
                 + f") and earns the friendly-community mark 「{mark.brand_name}」友好社区 "
                 f"({ipb.FriendlyMarkStatus.Name(mark.status).removeprefix('FRIENDLY_MARK_STATUS_')}"
                 f", criteria version {mark.criteria_version}): "
                 + "; ".join(f"{k}: {v}" for k, v in evidence.items()))

    def own_record(self, rider: Rider) -> None:
        """The rider opens their own record in the platform's app: one call, five services."""
        record = self.callers["platform"]("identity", "GetRiderRecord",
                                          ipb.GetRiderRecordRequest(rider_id=rider.rider_id)
                                          ).record
        stale = [s.service for s in record.sources if not s.current]
        if stale:
            raise DemoFailed(f"identity: {rider.name}'s record is not current for "
                             f"{', '.join(stale)}")
        passed = [c for c in record.completions if c.result == tpb.COMPLETION_RESULT_PASSED]
        reports = [f"{gpb.ReportKind.Name(r.kind).removeprefix('REPORT_KIND_')} "
                   f"{gpb.ReportStatus.Name(r.status).removeprefix('REPORT_STATUS_')} by "
                   + " and ".join(a.department_name for a in r.assignments)
                   for r in record.reports]
        handed = sum(p.HasField("hand_over_time") for p in record.care_packages)
        self.say(f"{rider.name} opens their own record (骑手档案) in 骑迹外卖's app — one call, "
                 f"five services: {len(passed)} courses passed ("
                 + ", ".join(f"{tpb.Track.Name(h.track).removeprefix('TRACK_').lower()} "
                             f"{h.hours} h" for h in record.hours_by_track)
                 + f"); badges {', '.join(a.badge_name for a in record.awards) or 'none'}; "
                 f"{record.confirmed_volunteer_hours} volunteer hours confirmed; "
                 f"{handed} care package handed over; reports: {'; '.join(reports) or 'none'}; "
                 f"pledge signed (version "
                 f"{', '.join(str(p.pledge_version) for p in record.pledge_signatures)})")

    def figures(self, c: dict[str, str]) -> None:
        """The month's figures, as the district's social-work department reports them upward:
        read once the figures have caught up with every log as it stands now; the street
        office sees its own street only; and one export, whose rows are the answers given."""
        social_work = self.caller("social_work", f"qiji-demo-social-work-{c['social_work'][:8]}",
                                  "department", c["social_work"], "钟楼区委社会工作部")
        heads = {s: frpc.FeedServiceStub(self.stack.dial(s)).ReadEvents(
            fpb.ReadEventsRequest(from_position=0, limit=1),
            metadata=[("authorization", f"Bearer {self.admin.token}")],
            timeout=RPC_TIMEOUT).last_position
            for s in ("identity", "training", "merchants", "badges", "governance")}

        def caught_up() -> bool:
            read = {p.service: p.position for p in social_work(
                "statistics", "GetFreshness", spb.GetFreshnessRequest()).positions}
            return all(read.get(s, 0) >= head for s, head in heads.items())
        self.wait_for(caught_up, "the figures reading every service's log this far")
        now = datetime.now(UTC).astimezone(CITY_TIME)
        first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (first + timedelta(days=32)).replace(day=1)
        month = MonthAsked(granularity=spb.GRANULARITY_MONTH, start_time=stamp(first),
                           end_time=stamp(following))

        def query(caller: Caller, measure: str, dimension: spb.Dimension) -> dict[str, str]:
            found: dict[str, str] = {}
            token = ""
            while True:
                page = caller("statistics", "QueryFigures", spb.QueryFiguresRequest(
                    measure=measure, dimension=dimension, page_token=token, **month))
                found.update({f.key_label: f.value for f in page.figures})
                if not (token := page.next_page_token):
                    return found
        registered = query(social_work, "riders_registered", spb.DIMENSION_STREET)
        hours = query(social_work, "training_hours", spb.DIMENSION_TRACK)
        if "荷花池街道" not in registered or not hours:
            raise DemoFailed(f"statistics: no figures of 荷花池街道 this month ({registered}, "
                             f"{hours})")
        self.say(f"the city's figures for {first:%Y-%m}, as 钟楼区委社会工作部 reads them: "
                 "注册骑手 by street " + ", ".join(f"{k} {v}" for k, v in registered.items())
                 + "; 培训学时 by track " + ", ".join(f"{k} {v}" for k, v in hours.items()))
        own = query(self.callers["office"], "riders_registered", spb.DIMENSION_STREET)
        if set(own) != {"荷花池街道"}:
            raise DemoFailed(f"statistics: 荷花池街道's office sees more than its street: {own}")
        self.note(f"荷花池街道's office sees its own street only: 注册骑手 {own['荷花池街道']}")
        started, chunks = None, []
        for message in self.stack.stub("statistics").ExportFigures(
                spb.ExportFiguresRequest(measures=["riders_registered"],
                                         dimension=spb.DIMENSION_STREET,
                                         format=spb.EXPORT_FORMAT_CSV, **month),
                metadata=[("authorization", f"Bearer {social_work.token}")],
                timeout=RPC_TIMEOUT):
            if message.WhichOneof("part") == "started":
                started = message.started
            elif message.WhichOneof("part") == "chunk":
                chunks.append(message.chunk)
        assert started is not None
        path = Path(tempfile.gettempdir()) / started.file_name
        path.write_bytes(b"".join(chunks))
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        exported = {r[5]: r[6] for r in rows[1:]}
        if exported != registered:
            raise DemoFailed(f"statistics: the export {exported} is not what QueryFigures "
                             f"answered {registered}")
        self.say(f"钟楼区委社会工作部 exports the month's 注册骑手 as {path} ({len(rows) - 1} "
                 f"rows under {', '.join(rows[0])}): the same figures as the answers")

    def audit(self, perk_id: str, claim_id: str, rider: Rider, badge_class_id: str) -> None:
        token = self.callers["auditor"].token

        def ask(title: str, **question: str) -> None:
            print(f"\n== {title}", file=self.out, flush=True)
            code = audit_cli.answer(argparse.Namespace(**question), token, self.stack.dial)
            sys.stdout.flush()
            if code != 0:
                raise DemoFailed(f"the auditor's question `{title}` was not answered")
        self.say("the auditor asks: every redemption of the perk, the claim's history, and why "
                 f"{rider.name} holds 金蜂骑士")
        ask(f"qiji audit perk {perk_id}   (金蜂骑士专享: redemptions, quota after each)",
            question="perk", perk_id=perk_id)
        ask(f"qiji audit history merchants {claim_id}   (the claim: claimed, then redeemed)",
            question="history", service="merchants", aggregate_id=claim_id)
        ask(f"qiji audit award {rider.rider_id} {badge_class_id}   (why {rider.name} holds "
            "金蜂骑士)", question="award", rider_id=rider.rider_id,
            badge_class_id=badge_class_id)


# ---------------------------------------------------------------------------- the command


def _hours(seconds: int) -> str:
    """A clock's length as people say it: 15 min, 2 h, 56 h."""
    return f"{seconds // 60} min" if seconds < 3600 else f"{seconds / 3600:g} h"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    addressing.add_arguments(parser, tokens_file=True, whose="a city_admin")
    parser.add_argument("--timeout", type=_seconds, default=30.0,
                        help="seconds to wait for each cross-service reaction (default 30)")
    parser.add_argument("--wait", type=_seconds, default=0.0,
                        help="seconds to wait for every service to be SERVING first (default: "
                        "ask once)")
    parser.add_argument("--embedded", action="store_true",
                        help="start Qiji on the embedded default in a throwaway data dir on "
                        "free ports, play the story against it, stop it (`make demo`)")


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds (0 to 3600)")
    return value


def run(args: argparse.Namespace, deployment: Deployment) -> int:
    """Plays the story; 0 when every step happened, 1 (with the reason on stderr) otherwise."""
    admin_token = deployment.require_token()
    stack = Stack(deployment.addresses, deployment.tls)
    story = Story(stack, Caller(stack, "the city admin", admin_token), deployment.tokens_file,
                  timeout=args.timeout)
    print("骑迹 Qiji — 常州市外卖人才联合服务空间启用 (the city's report of 5 June, played against "
          f"Qiji at {stack.addresses['identity']} …)", flush=True)
    started = time.monotonic()
    try:
        stack.wait_serving(args.wait)
        story.play()
    except DemoFailed as failed:
        print(f"\nqiji demo: FAILED at step {story.steps + 1}: {failed}", file=sys.stderr)
        return 1
    finally:
        stack.close()
    print(f"\nThe story is told: {story.steps} steps in {time.monotonic() - started:.1f} s.",
          flush=True)
    return 0


def free_port_base() -> int:
    """N such that N+1..N+9 are free now (the gRPC services, the public credentials face, the
    figures and the console; a moment later someone may take one; unlikely)."""
    for _ in range(50):
        base = _rng.randrange(20000, 30000, 10)
        sockets = []
        try:
            for port in range(base + 1, base + 1 + PORT_BASE_SPAN):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise DemoFailed(f"no {PORT_BASE_SPAN} free consecutive ports found between 20000 and "
                     "30000")


@contextmanager
def embedded_qiji(data_dir: Path, port_base: int) -> Iterator[subprocess.Popen[bytes]]:
    """`qiji run --port-base N` on `data_dir`, its output in data_dir/qiji.log; stopped with
    SIGTERM (as Ctrl-C would) on the way out."""
    # The embedded default whatever this shell exports (QIJI_PERSISTENCE=postgres, a tokens
    # file, a port...): nothing of another Qiji's settings leaks in.
    prefixes = ("QIJI_", "RELAY_", *(f"{name.upper()}_" for name in DEFAULT_PORTS))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(prefixes)},
           "QIJI_DATA_DIR": str(data_dir)}
    with open(data_dir / "qiji.log", "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "shared.tools.cli", "run", "--port-base", str(port_base)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_embedded(args: argparse.Namespace) -> int:
    given = sorted(set(vars(args)) & {"run_dir", "port_base", "host", "address", "token",
                                      "tokens_file"})
    if given:
        print(f"qiji demo: --embedded starts a Qiji of its own: "
              f"{', '.join('--' + g.replace('_', '-') for g in given)} do not apply",
              file=sys.stderr)
        return 2
    data_dir = Path(tempfile.mkdtemp(prefix="qiji-demo-"))
    try:
        port_base = free_port_base()
        print(f"Starting Qiji on its embedded default (data {data_dir}, gRPC ports "
              f"{port_base + 1}–{port_base + PORT_BASE_SPAN}) …", flush=True)
        with embedded_qiji(data_dir, port_base) as proc:
            deadline = time.monotonic() + max(args.wait, 90.0)
            token_file = data_dir / "admin.token"
            while not token_file.exists() and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            args.wait = max(1.0, deadline - time.monotonic())
            code = run(args, Deployment(
                addresses=addressing.port_base_addresses(port_base),
                token=token_file.read_text().strip() if token_file.exists() else "",
                token_source=f"{token_file} was not made", tokens_file=data_dir / "tokens.json",
                tls=load_tls_settings("qiji", os.environ)))
        if code != 0:
            log = (data_dir / "qiji.log").read_text(errors="replace")
            print(f"\n--- the end of Qiji's log ({data_dir / 'qiji.log'}):\n{log[-4000:]}",
                  file=sys.stderr)
        return code
    except DemoFailed as failed:
        print(f"qiji demo: {failed}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
