"""The governance service as its callers meet it: real identity and governance processes on
PostgreSQL, governance following identity over gRPC with a `service` token, and governance's
clock read from a file the test moves (GOVERNANCE_CLOCK_FILE).

Callers acting for one organisation reach only what it owns: a department its own queue and the
reports assigned to it, a street office its street's reports and cases, a platform its own
riders. Anything else — also what does not exist — is PERMISSION_DENIED OUT_OF_SCOPE (AIP-211);
city-wide roles still get NOT_FOUND.

Tests that assert "nothing written" come first in this module; the story and the escalation
come last, because they write."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from eventsourcing.utils import get_topic
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.governance.v1 import governance_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2 as ipb

from services.governance import events
from services.governance.domain.model import Organisation, Participant
from shared.auth import add_caller, hash_token, new_token
from tests.e2e.client import (
    DENIED,
    EXISTS,
    INVALID,
    NOT_FOUND,
    PRECONDITION,
    Bad,
    Client,
    call_error,
    create_city,
    create_organisation,
    new_request_id,
    on,
    state,
)
from tests.e2e.conftest import (
    ClockFile,
    ServiceProcess,
    eventually,
    new_rider,
    start_governance,
)

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 20.0
# The events governance stores for identity's: one for each upstream event it follows.
NOTED_TOPICS = [get_topic(Participant.Noted), get_topic(Participant.StatusNoted),
                get_topic(Organisation.Noted)]
FOLLOWED_TOPICS = [
    "services.identity.domain.model:Rider.Registered",
    "services.identity.domain.model:Rider.Verified",
    "services.identity.domain.model:Rider.Suspended",
    "services.identity.domain.model:Rider.Reinstated",
    "services.identity.domain.model:Rider.Left",
    "services.identity.domain.model:Organisation.Created",
]
RANDOM_ID = "5b0b276e-3dca-4072-bc38-1c35fa3f20b2"
# Hehuachi street, Changzhou; one degree of latitude is about 111.2 km.
LAT, LON = 31.7790, 119.9460


# ---------------------------------------------------------------------------- helpers


def ts(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def minutes(n: float) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(minutes=n))
    return duration


# ---------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class World:
    """Organisations, riders, tokens, and reports, cases and a pledge in every state the
    bad-input table needs."""

    city: str
    district: str
    street: str
    other_street: str
    police: str
    social: str
    active: str
    unverified: str
    suspended: str
    tokens: dict[str, str]  # role or department/office/platform name -> token
    open_report: str
    acknowledged_report: str
    open_case: str
    reports_page_token: str


def caller(server: ServiceProcess, world: World, who: str) -> Client:
    return server.client(token=world.tokens[who])


def add_unbound_caller(tokens_file: Path, principal: str, role: str) -> str:
    """A caller of `role` written as a tokens file had them before a token had to name its
    organisation (`qiji token` no longer writes one): its token."""
    token = new_token()
    data = json.loads(tokens_file.read_text())
    data["callers"].append({"principal": principal, "roles": [role],
                            "token_sha256": hash_token(token)})
    tmp = tokens_file.with_suffix(".unbound.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(tokens_file)
    return token


@pytest.fixture(scope="module")
def world(identity: ServiceProcess, governance: ServiceProcess, clock: ClockFile) -> World:
    admin = identity.client("city_admin")
    tree = create_city(admin)
    city, district, street = tree["city"], tree["district"], tree["street"]
    other_street = create_organisation(admin, ipb.ORGANISATION_KIND_STREET, "南大街街道",
                                       district).organisation_id
    police = create_organisation(
        admin, ipb.ORGANISATION_KIND_DEPARTMENT, "钟楼公安分局", district,
        department_function=ipb.DEPARTMENT_FUNCTION_PUBLIC_SECURITY).organisation_id
    social = create_organisation(
        admin, ipb.ORGANISATION_KIND_DEPARTMENT, "荷花池社工站", street,
        department_function=ipb.DEPARTMENT_FUNCTION_SOCIAL_WORK).organisation_id

    home = SimpleNamespace(**tree)
    active, unverified, suspended = (new_rider(identity, home),
                                     new_rider(identity, home, verify=False),
                                     new_rider(identity, home))
    identity.client("platform").SuspendRider(ipb.SuspendRiderRequest(
        request_id=new_request_id(), rider_id=suspended, reason="投诉核查中"))
    other_platform = create_organisation(admin, ipb.ORGANISATION_KIND_PLATFORM,
                                         "飞毛腿外卖").organisation_id
    tokens = dict(identity.tokens)
    # Platforms, departments and street offices act for one organisation each: their tokens
    # say which.
    for name, roles, organisation in [("platform", ["platform"], tree["platform"]),
                                      ("other_platform", ["platform"], other_platform),
                                      ("police", ["department"], police),
                                      ("social", ["department"], social),
                                      ("office", ["street_office"], street),
                                      ("other_office", ["street_office"], other_street)]:
        tokens[name] = add_caller(identity.tokens_file, f"e2e-{name}", roles, organisation)
    tokens["unbound_department"] = add_unbound_caller(identity.tokens_file,
                                                      "e2e-unbound-department", "department")

    admin, platform = governance.client("city_admin"), governance.client(token=tokens["platform"])
    admin.SetRoutingRules(pb.SetRoutingRulesRequest(request_id=new_request_id(), rules=[
        pb.RoutingRule(name="emergencies", kind=pb.REPORT_KIND_EMERGENCY,
                       department_functions=[pb.DEPARTMENT_FUNCTION_PUBLIC_SECURITY]),
        pb.RoutingRule(name="everything else",
                       department_functions=[pb.DEPARTMENT_FUNCTION_SOCIAL_WORK])]))
    admin.PublishPledge(pb.PublishPledgeRequest(request_id=new_request_id(),
                                                text="我承诺参与基层治理"))
    platform.SignPledge(pb.SignPledgeRequest(request_id=new_request_id(), rider_id=active,
                                             pledge_version=1))

    def report(lat: float) -> str:
        return platform.SubmitReport(submit_request(
            active, street, clock, lat=lat)).report.report_id

    open_report, acknowledged_report = report(LAT), report(LAT + 0.02)
    governance.client(token=tokens["police"]).AcknowledgeAssignment(
        pb.AcknowledgeAssignmentRequest(request_id=new_request_id(),
                                        report_id=acknowledged_report, department_id=police))
    open_case = governance.client(token=tokens["office"]).OpenMediationCase(
        pb.OpenMediationCaseRequest(
            request_id=new_request_id(), street_id=street, subject="小区禁止骑手进入",
            mediator_name="李调解员",
            parties=[pb.MediationParty(role=pb.PARTY_ROLE_RIDER, rider_id=active),
                     pb.MediationParty(role=pb.PARTY_ROLE_PROPERTY_MANAGER, name="张经理")])
    ).mediation_case.case_id
    page_token = admin.ListReports(pb.ListReportsRequest(page_size=1)).next_page_token

    # Every identity event governance follows has been noted: from here on governance writes
    # only what a test asks it to.
    upstream = len(identity.events(*FOLLOWED_TOPICS))
    eventually(lambda: len(governance.events(*NOTED_TOPICS)) == upstream,
               "governance noted identity's events", timeout=WAIT_SECONDS)
    return World(city=city, district=district, street=street, other_street=other_street,
                  police=police, social=social, active=active,
                  unverified=unverified, suspended=suspended, tokens=tokens,
                  open_report=open_report, acknowledged_report=acknowledged_report,
                  open_case=open_case, reports_page_token=page_token)


def submit_request(rider_id: str, street: str, clock: ClockFile, **fields: Any
                   ) -> pb.SubmitReportRequest:
    values: dict[str, Any] = {
        "request_id": new_request_id(), "rider_id": rider_id, "kind": pb.REPORT_KIND_EMERGENCY,
        "category": pb.CATEGORY_FIRE, "text": "电动车在楼道起火", "attachment_refs": ["oss://a/1.jpg"],
        "observe_time": ts(clock.now - timedelta(minutes=5))}
    lat = fields.pop("lat", LAT)
    values["location"] = pb.Location(street_id=street, latitude=lat, longitude=LON)
    values.update(fields)
    return pb.SubmitReportRequest(**values)


def rates_request(clock: ClockFile, **fields: Any) -> pb.GetServiceRatesRequest:
    """GetServiceRates over the thirty days around the clock's now, for `fields`' unit."""
    return pb.GetServiceRatesRequest(start_time=ts(clock.now - timedelta(days=30)),
                                     end_time=ts(clock.now + timedelta(days=1)), **fields)


# ---------------------------------------------------------------------------- bad input


def report_from(**fields: Any) -> Callable[[World, ClockFile], Any]:
    """A valid report of the active rider, but for `fields` (callables get the world)."""
    def build(w: World, clock: ClockFile) -> Any:
        given = {k: (v(w) if callable(v) else v) for k, v in fields.items()}
        rider = given.pop("rider_id", w.active)
        street = given.pop("street_id", w.street)
        return submit_request(rider, street, clock, **given)
    return build


BAD_INPUT: dict[str, Bad] = {
    "SubmitReport-latitude-out-of-range": Bad(
        "SubmitReport", "platform", report_from(lat=91.0), INVALID, field="location.latitude",
        reason="LOCATION_INVALID"),
    "SubmitReport-longitude-out-of-range": Bad(
        "SubmitReport", "platform",
        lambda w, c: submit_request(w.active, w.street, c, location=pb.Location(
            street_id=w.street, latitude=LAT, longitude=-180.5)),
        INVALID, field="location.longitude"),
    "SubmitReport-empty-text": Bad(
        "SubmitReport", "platform", report_from(text="   "), INVALID, field="text",
        reason="FIELD_REQUIRED"),
    # A number the contract does not define is its own fault, not CATEGORY_UNSPECIFIED.
    "SubmitReport-unknown-category": Bad(
        "SubmitReport", "platform", report_from(category=99), INVALID, field="category",
        reason="ENUM_VALUE_UNKNOWN"),
    "SubmitReport-unspecified-category": Bad(
        "SubmitReport", "platform", report_from(category=0), INVALID, field="category",
        reason="ENUM_VALUE_REQUIRED"),
    "SubmitReport-without-kind": Bad(
        "SubmitReport", "street_office", report_from(kind=0), INVALID, field="kind",
        reason="ENUM_VALUE_REQUIRED"),
    "SubmitReport-without-location": Bad(
        "SubmitReport", "platform",
        lambda w, c: pb.SubmitReportRequest(request_id=new_request_id(), rider_id=w.active,
                                            kind=pb.REPORT_KIND_EMERGENCY,
                                            category=pb.CATEGORY_FIRE, text="起火"),
        INVALID, field="location"),
    "SubmitReport-observed-tomorrow": Bad(
        "SubmitReport", "platform",
        lambda w, c: submit_request(w.active, w.street, c,
                                    observe_time=ts(c.now + timedelta(days=1))),
        INVALID, field="observe_time", reason="TIME_IN_THE_FUTURE"),
    "SubmitReport-blank-attachment": Bad(
        "SubmitReport", "platform", report_from(attachment_refs=[""]), INVALID,
        field="attachment_refs[0]"),
    "SubmitReport-rider-id-not-an-id": Bad(
        "SubmitReport", "platform", report_from(rider_id="R-123"), INVALID, field="rider_id"),
    # A platform reports for its own riders only; one nobody registered is not its own.
    "SubmitReport-unknown-rider": Bad(
        "SubmitReport", "platform", report_from(rider_id=RANDOM_ID), DENIED,
        reason="OUT_OF_SCOPE"),
    "SubmitReport-in-another-platforms-riders-name": Bad(
        "SubmitReport", "other_platform", report_from(), DENIED, reason="OUT_OF_SCOPE"),
    "SubmitReport-suspended-rider": Bad(
        "SubmitReport", "platform", report_from(rider_id=lambda w: w.suspended), PRECONDITION,
        reason="RIDER_NOT_ACTIVE"),
    "SubmitReport-unverified-rider": Bad(
        "SubmitReport", "street_office", report_from(rider_id=lambda w: w.unverified),
        PRECONDITION, reason="RIDER_NOT_ACTIVE"),
    "SubmitReport-unknown-street": Bad(
        "SubmitReport", "platform", report_from(street_id=RANDOM_ID), NOT_FOUND,
        reason="STREET_NOT_FOUND"),
    "SubmitReport-street-that-is-a-district": Bad(
        "SubmitReport", "platform", report_from(street_id=lambda w: w.district), INVALID,
        field="location.street_id"),
    "GetReport-not-an-id": Bad(
        "GetReport", "auditor", on(pb.GetReportRequest, report_id="../etc"), INVALID,
        field="report_id"),
    "GetReport-unknown": Bad(
        "GetReport", "auditor", on(pb.GetReportRequest, report_id=RANDOM_ID), NOT_FOUND,
        reason="REPORT_NOT_FOUND"),
    # A department reads the reports assigned to it, not another department's.
    "GetReport-assigned-to-another-department": Bad(
        "GetReport", "social", on(pb.GetReportRequest, report_id=lambda w: w.open_report),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetReportHistory-assigned-to-another-department": Bad(
        "GetReportHistory", "social",
        on(pb.GetReportHistoryRequest, report_id=lambda w: w.open_report),
        DENIED, reason="OUT_OF_SCOPE"),
    # A platform follows its own riders' reports only: another's, and one that does not exist,
    # are refused alike (AIP-211).
    "GetReport-of-another-platforms-rider": Bad(
        "GetReport", "other_platform", on(pb.GetReportRequest, report_id=lambda w: w.open_report),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetReport-unknown-to-a-platform": Bad(
        "GetReport", "platform", on(pb.GetReportRequest, report_id=RANDOM_ID), DENIED,
        reason="OUT_OF_SCOPE"),
    "GetReportHistory-of-another-platforms-rider": Bad(
        "GetReportHistory", "other_platform",
        on(pb.GetReportHistoryRequest, report_id=lambda w: w.open_report),
        DENIED, reason="OUT_OF_SCOPE"),
    "ListReports-by-a-platform-naming-no-rider": Bad(
        "ListReports", "platform", on(pb.ListReportsRequest), INVALID, field="rider_id"),
    "ListReports-of-another-platforms-rider": Bad(
        "ListReports", "other_platform", on(pb.ListReportsRequest, rider_id=lambda w: w.active),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetReportHistory-unknown": Bad(
        "GetReportHistory", "operator", on(pb.GetReportHistoryRequest, report_id=RANDOM_ID),
        NOT_FOUND, reason="REPORT_NOT_FOUND"),
    # Not a filter for "any status": refused.
    "ListReports-unknown-status": Bad(
        "ListReports", "city_admin", on(pb.ListReportsRequest, status=99), INVALID,
        field="status", reason="ENUM_VALUE_UNKNOWN"),
    "ListReports-garbage-page-token": Bad(
        "ListReports", "city_admin", on(pb.ListReportsRequest, page_token="%%%"), INVALID,
        field="page_token"),
    "ListReports-page-token-of-other-filters": Bad(
        "ListReports", "city_admin",
        on(pb.ListReportsRequest, kind=pb.REPORT_KIND_EMERGENCY,
             page_token=lambda w: w.reports_page_token), INVALID, field="page_token"),
    "AcknowledgeAssignment-unknown-report": Bad(
        "AcknowledgeAssignment", "police",
        on(pb.AcknowledgeAssignmentRequest, report_id=RANDOM_ID,
           department_id=lambda w: w.police), DENIED, reason="OUT_OF_SCOPE"),
    "AcknowledgeAssignment-of-another-department": Bad(
        "AcknowledgeAssignment", "social",
        on(pb.AcknowledgeAssignmentRequest, report_id=lambda w: w.open_report,
           department_id=lambda w: w.police), DENIED, reason="OUT_OF_SCOPE"),
    # A department token of an old tokens file, naming no organisation, acts for none.
    "AcknowledgeAssignment-by-a-department-token-naming-no-organisation": Bad(
        "AcknowledgeAssignment", "unbound_department",
        on(pb.AcknowledgeAssignmentRequest, report_id=lambda w: w.open_report,
           department_id=lambda w: w.police), grpc.StatusCode.UNAUTHENTICATED,
        reason="TOKEN_ENTRY_REFUSED"),
    "AcknowledgeAssignment-not-assigned-to-the-caller": Bad(
        "AcknowledgeAssignment", "social",
        on(pb.AcknowledgeAssignmentRequest, report_id=lambda w: w.open_report,
           department_id=lambda w: w.social), DENIED, reason="OUT_OF_SCOPE"),
    "AcknowledgeAssignment-twice": Bad(
        "AcknowledgeAssignment", "police",
        on(pb.AcknowledgeAssignmentRequest, report_id=lambda w: w.acknowledged_report,
           department_id=lambda w: w.police), PRECONDITION, reason="ASSIGNMENT_ACKNOWLEDGED"),
    "StartAssignmentWork-before-acknowledging": Bad(
        "StartAssignmentWork", "police",
        on(pb.StartAssignmentWorkRequest, report_id=lambda w: w.open_report,
           department_id=lambda w: w.police), PRECONDITION, reason="ASSIGNMENT_ROUTED"),
    "ResolveAssignment-before-work-started": Bad(
        "ResolveAssignment", "police",
        on(pb.ResolveAssignmentRequest, report_id=lambda w: w.acknowledged_report,
           department_id=lambda w: w.police, resolution="done"),
        PRECONDITION, reason="ASSIGNMENT_ACKNOWLEDGED"),
    "ResolveAssignment-without-resolution": Bad(
        "ResolveAssignment", "police",
        on(pb.ResolveAssignmentRequest, report_id=lambda w: w.acknowledged_report,
           department_id=lambda w: w.police), INVALID, field="resolution"),
    "RejectAssignment-without-reason": Bad(
        "RejectAssignment", "police",
        on(pb.RejectAssignmentRequest, report_id=lambda w: w.open_report,
           department_id=lambda w: w.police), INVALID, field="reason"),
    "PauseAssignmentClock-before-acknowledging": Bad(
        "PauseAssignmentClock", "police",
        on(pb.PauseAssignmentClockRequest, report_id=lambda w: w.open_report,
           department_id=lambda w: w.police, reason=pb.PAUSE_REASON_WAITING_FOR_RIDER),
        PRECONDITION, reason="ASSIGNMENT_ROUTED"),
    "PauseAssignmentClock-without-reason": Bad(
        "PauseAssignmentClock", "police",
        on(pb.PauseAssignmentClockRequest, report_id=lambda w: w.acknowledged_report,
           department_id=lambda w: w.police), INVALID, field="reason",
        reason="ENUM_VALUE_REQUIRED"),
    "PauseAssignmentClock-other-without-note": Bad(
        "PauseAssignmentClock", "police",
        on(pb.PauseAssignmentClockRequest, report_id=lambda w: w.acknowledged_report,
           department_id=lambda w: w.police, reason=pb.PAUSE_REASON_OTHER), INVALID,
        field="note", reason="FIELD_REQUIRED"),
    "PauseAssignmentClock-of-another-department": Bad(
        "PauseAssignmentClock", "social",
        on(pb.PauseAssignmentClockRequest, report_id=lambda w: w.acknowledged_report,
           department_id=lambda w: w.social, reason=pb.PAUSE_REASON_WAITING_FOR_RIDER),
        DENIED, reason="OUT_OF_SCOPE"),
    "ResumeAssignmentClock-not-paused": Bad(
        "ResumeAssignmentClock", "police",
        on(pb.ResumeAssignmentClockRequest, report_id=lambda w: w.acknowledged_report,
           department_id=lambda w: w.police), PRECONDITION, reason="CLOCK_NOT_PAUSED"),
    "SetWorkingCalendar-a-working-day-of-0-hours": Bad(
        "SetWorkingCalendar", "city_admin",
        on(pb.SetWorkingCalendarRequest, working_weekdays=[1, 2, 3, 4, 5]), INVALID,
        field="working_hours", reason="NO_WORKING_HOURS"),
    "SetWorkingCalendar-a-holiday-worked": Bad(
        "SetWorkingCalendar", "city_admin",
        on(pb.SetWorkingCalendarRequest, working_weekdays=[1, 2, 3, 4, 5],
           working_hours=[pb.WorkingHours(start="09:00", end="17:00")],
           holidays=["2026-10-10"], adjusted_working_days=["2026-10-10"]), INVALID,
        field="adjusted_working_days[0]", reason="HOLIDAY_AND_WORKING_DAY"),
    "SetWorkingCalendar-a-bad-date": Bad(
        "SetWorkingCalendar", "city_admin",
        on(pb.SetWorkingCalendarRequest, working_weekdays=[1, 2, 3, 4, 5],
           working_hours=[pb.WorkingHours(start="09:00", end="17:00")],
           holidays=["2026-02-30"]), INVALID, field="holidays[0]", reason="DAY_INVALID"),
    "GetWorkingCalendar-unknown-version": Bad(
        "GetWorkingCalendar", "auditor", on(pb.GetWorkingCalendarRequest, version=99),
        NOT_FOUND, reason="WORKING_CALENDAR_VERSION_NOT_FOUND"),
    "SetRoutingRules-a-category-twice": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(
            name="x", department_functions=[pb.DEPARTMENT_FUNCTION_SOCIAL_WORK])],
           category_deadlines=[pb.CategoryDeadline(category=pb.CATEGORY_UTILITIES,
                                                   acknowledge_within=minutes(30),
                                                   resolve_within=minutes(60))] * 2),
        INVALID, field="category_deadlines[1].category", reason="DUPLICATE_VALUE"),
    "SetRoutingRules-at-risk-at-100-per-cent": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(
            name="x", department_functions=[pb.DEPARTMENT_FUNCTION_SOCIAL_WORK])],
           at_risk_percent=100),
        INVALID, field="at_risk_percent", reason="VALUE_OUT_OF_RANGE"),
    "VerifyReport-open-report": Bad(
        "VerifyReport", "office", on(pb.VerifyReportRequest, report_id=lambda w: w.open_report),
        PRECONDITION, reason="REPORT_OPEN"),
    "VerifyReport-by-another-streets-office": Bad(
        "VerifyReport", "other_office",
        on(pb.VerifyReportRequest, report_id=lambda w: w.open_report),
        DENIED, reason="OUT_OF_SCOPE"),
    "ListDepartmentQueue-unknown-department": Bad(
        "ListDepartmentQueue", "auditor",
        on(pb.ListDepartmentQueueRequest, department_id=RANDOM_ID), NOT_FOUND,
        reason="DEPARTMENT_NOT_FOUND"),
    "ListDepartmentQueue-unknown-department-by-a-department": Bad(
        "ListDepartmentQueue", "police",
        on(pb.ListDepartmentQueueRequest, department_id=RANDOM_ID), DENIED,
        reason="OUT_OF_SCOPE"),
    "ListDepartmentQueue-of-another-department": Bad(
        "ListDepartmentQueue", "social",
        on(pb.ListDepartmentQueueRequest, department_id=lambda w: w.police), DENIED,
        reason="OUT_OF_SCOPE"),
    "ListDepartmentQueue-of-a-street": Bad(
        "ListDepartmentQueue", "auditor",
        on(pb.ListDepartmentQueueRequest, department_id=lambda w: w.street), INVALID,
        field="department_id", reason="ORGANISATION_KIND_NOT_ALLOWED"),
    # AIP-158: a page size above the maximum is coerced to it; only a negative one is refused.
    "ListDepartmentQueue-page-size-negative": Bad(
        "ListDepartmentQueue", "police",
        on(pb.ListDepartmentQueueRequest, department_id=lambda w: w.police, page_size=-1),
        INVALID, field="page_size"),
    "GetReportStatistics-end-before-start": Bad(
        "GetReportStatistics", "auditor",
        lambda w, c: pb.GetReportStatisticsRequest(start_time=ts(c.now),
                                                   end_time=ts(c.now - timedelta(days=1))),
        INVALID, field="end_time"),
    "GetServiceRates-as-of-tomorrow": Bad(
        "GetServiceRates", "auditor",
        lambda w, c: rates_request(c, department_id=w.police,
                                   as_of_time=ts(c.now + timedelta(days=1))),
        INVALID, field="as_of_time", reason="TIME_IN_THE_FUTURE"),
    "GetServiceRates-as-of-before-the-period": Bad(
        "GetServiceRates", "police",
        lambda w, c: rates_request(c, department_id=w.police,
                                   as_of_time=ts(c.now - timedelta(days=40))),
        INVALID, field="as_of_time", reason="AS_OF_BEFORE_START"),
    "GetServiceRates-of-no-unit": Bad(
        "GetServiceRates", "auditor", lambda w, c: rates_request(c), INVALID,
        field="department_id", reason="UNIT_REQUIRED"),
    "GetServiceRates-of-two-units": Bad(
        "GetServiceRates", "city_admin",
        lambda w, c: rates_request(c, department_id=w.police, street_id=w.street), INVALID,
        field="street_id", reason="MORE_THAN_ONE_UNIT"),
    "GetServiceRates-of-a-street-named-as-a-district": Bad(
        "GetServiceRates", "auditor", lambda w, c: rates_request(c, district_id=w.street),
        INVALID, field="district_id", reason="ORGANISATION_KIND_NOT_ALLOWED"),
    "GetServiceRates-unknown-district": Bad(
        "GetServiceRates", "auditor", lambda w, c: rates_request(c, district_id=RANDOM_ID),
        NOT_FOUND, reason="DISTRICT_NOT_FOUND"),
    "GetServiceRates-of-another-department": Bad(
        "GetServiceRates", "social", lambda w, c: rates_request(c, department_id=w.police),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetServiceRates-of-another-street": Bad(
        "GetServiceRates", "other_office", lambda w, c: rates_request(c, street_id=w.street),
        DENIED, reason="OUT_OF_SCOPE"),
    # No role acts for a district: its figures are the city-wide readers'. A street office
    # names its own street.
    "GetServiceRates-of-the-district-by-its-street-office": Bad(
        "GetServiceRates", "office", lambda w, c: rates_request(c, district_id=w.district),
        INVALID, field="street_id", reason="FIELD_REQUIRED"),
    "SetRoutingRules-no-rules": Bad(
        "SetRoutingRules", "city_admin", on(pb.SetRoutingRulesRequest), INVALID, field="rules"),
    "SetRoutingRules-rule-without-departments": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(name="nowhere")]),
        INVALID, field="rules[0]"),
    "SetRoutingRules-unknown-department": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(name="x",
                                                            department_ids=[RANDOM_ID])]),
        NOT_FOUND, reason="DEPARTMENT_NOT_FOUND"),
    "SetRoutingRules-resolution-sooner-than-acknowledgement": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(
            name="x", department_functions=[pb.DEPARTMENT_FUNCTION_SOCIAL_WORK])],
           deadlines=[pb.DeadlinePolicy(kind=pb.REPORT_KIND_EMERGENCY,
                                        acknowledge_within=minutes(30),
                                        resolve_within=minutes(10))]),
        INVALID, field="deadlines[0].resolve_within"),
    # Before, a rule of kind 99 was stored as a rule for every kind (UNSPECIFIED matches any).
    "SetRoutingRules-unknown-kind": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(
            name="x", kind=99, department_functions=[pb.DEPARTMENT_FUNCTION_SOCIAL_WORK])]),
        INVALID, field="rules[0].kind", reason="ENUM_VALUE_UNKNOWN"),
    "SetRoutingRules-unknown-category": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(
            name="x", category=99, department_functions=[pb.DEPARTMENT_FUNCTION_SOCIAL_WORK])]),
        INVALID, field="rules[0].category", reason="ENUM_VALUE_UNKNOWN"),
    "SetRoutingRules-unknown-department-function": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(
            name="x", department_functions=[99])]),
        INVALID, field="rules[0].department_functions[0]", reason="ENUM_VALUE_UNKNOWN"),
    # Stored and shown in whole seconds: half a second would be stored as 0.
    "SetRoutingRules-half-a-second-to-acknowledge": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(
            name="x", department_functions=[pb.DEPARTMENT_FUNCTION_SOCIAL_WORK])],
           deadlines=[pb.DeadlinePolicy(kind=pb.REPORT_KIND_EMERGENCY,
                                        acknowledge_within=Duration(nanos=500_000_000),
                                        resolve_within=minutes(60))]),
        INVALID, field="deadlines[0].acknowledge_within", reason="DURATION_NOT_WHOLE_SECONDS"),
    "SetRoutingRules-a-fraction-of-a-second-beyond-an-hour": Bad(
        "SetRoutingRules", "city_admin",
        on(pb.SetRoutingRulesRequest, rules=[pb.RoutingRule(
            name="x", department_functions=[pb.DEPARTMENT_FUNCTION_SOCIAL_WORK])],
           deadlines=[pb.DeadlinePolicy(kind=pb.REPORT_KIND_EMERGENCY,
                                        acknowledge_within=minutes(10),
                                        resolve_within=Duration(seconds=3600, nanos=1))]),
        INVALID, field="deadlines[0].resolve_within", reason="DURATION_NOT_WHOLE_SECONDS"),
    "GetRoutingRules-unknown-version": Bad(
        "GetRoutingRules", "auditor", on(pb.GetRoutingRulesRequest, version=99), NOT_FOUND,
        reason="ROUTING_RULES_VERSION_NOT_FOUND"),
    "OpenMediationCase-one-party": Bad(
        "OpenMediationCase", "office",
        on(pb.OpenMediationCaseRequest, street_id=lambda w: w.street, subject="纠纷",
           mediator_name="李", parties=[pb.MediationParty(role=pb.PARTY_ROLE_CUSTOMER,
                                                          name="顾客")]),
        INVALID, field="parties"),
    "OpenMediationCase-unknown-rider": Bad(
        "OpenMediationCase", "office",
        on(pb.OpenMediationCaseRequest, street_id=lambda w: w.street, subject="纠纷",
           mediator_name="李", parties=[
               pb.MediationParty(role=pb.PARTY_ROLE_RIDER, rider_id=RANDOM_ID),
               pb.MediationParty(role=pb.PARTY_ROLE_CUSTOMER, name="顾客")]),
        NOT_FOUND, reason="RIDER_NOT_FOUND"),
    "OpenMediationCase-for-another-street": Bad(
        "OpenMediationCase", "office",
        on(pb.OpenMediationCaseRequest, street_id=lambda w: w.other_street, subject="纠纷",
           mediator_name="李", parties=[
               pb.MediationParty(role=pb.PARTY_ROLE_MERCHANT, name="商户"),
               pb.MediationParty(role=pb.PARTY_ROLE_CUSTOMER, name="顾客")]),
        DENIED, reason="OUT_OF_SCOPE"),
    "RecordMediationAgreement-before-a-session": Bad(
        "RecordMediationAgreement", "office",
        on(pb.RecordMediationAgreementRequest, case_id=lambda w: w.open_case, outcome="和解"),
        PRECONDITION, reason="NO_SESSION_HELD"),
    "RecordMediationSession-unknown-case": Bad(
        "RecordMediationSession", "office",
        lambda w, c: pb.RecordMediationSessionRequest(
            request_id=new_request_id(), case_id=RANDOM_ID,
            session=pb.MediationSession(hold_time=ts(c.now), place="驿站")),
        DENIED, reason="OUT_OF_SCOPE"),
    "RecordMediationSession-another-streets-case": Bad(
        "RecordMediationSession", "other_office",
        lambda w, c: pb.RecordMediationSessionRequest(
            request_id=new_request_id(), case_id=w.open_case,
            session=pb.MediationSession(hold_time=ts(c.now), place="驿站")),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetMediationCase-unknown": Bad(
        "GetMediationCase", "auditor", on(pb.GetMediationCaseRequest, case_id=RANDOM_ID),
        NOT_FOUND, reason="MEDIATION_CASE_NOT_FOUND"),
    # Violations name the session's fields by their path from the request (AIP-193).
    "RecordMediationSession-without-time": Bad(
        "RecordMediationSession", "office",
        on(pb.RecordMediationSessionRequest, case_id=lambda w: w.open_case,
           session=pb.MediationSession(place="驿站")), INVALID, field="session.hold_time",
        reason="FIELD_REQUIRED"),
    "RecordMediationSession-without-place": Bad(
        "RecordMediationSession", "office",
        lambda w, c: pb.RecordMediationSessionRequest(
            request_id=new_request_id(), case_id=w.open_case,
            session=pb.MediationSession(hold_time=ts(c.now))), INVALID, field="session.place",
        reason="FIELD_REQUIRED"),
    "RecordMediationSession-without-session": Bad(
        "RecordMediationSession", "office",
        on(pb.RecordMediationSessionRequest, case_id=lambda w: w.open_case), INVALID,
        field="session", reason="FIELD_REQUIRED"),
    "PublishPledge-empty": Bad(
        "PublishPledge", "city_admin", on(pb.PublishPledgeRequest), INVALID, field="text"),
    "GetPledge-unknown-version": Bad(
        "GetPledge", "platform", on(pb.GetPledgeRequest, version=7), NOT_FOUND,
        reason="PLEDGE_VERSION_NOT_FOUND"),
    "SignPledge-twice": Bad(
        "SignPledge", "platform",
        on(pb.SignPledgeRequest, rider_id=lambda w: w.active, pledge_version=1),
        EXISTS, reason="PLEDGE_ALREADY_SIGNED"),
    "SignPledge-unknown-version": Bad(
        "SignPledge", "platform",
        on(pb.SignPledgeRequest, rider_id=lambda w: w.active, pledge_version=2),
        NOT_FOUND, reason="PLEDGE_VERSION_NOT_FOUND"),
    "SignPledge-without-version": Bad(
        "SignPledge", "street_office", on(pb.SignPledgeRequest, rider_id=lambda w: w.active),
        INVALID, field="pledge_version"),
    "ReadEvents-negative-position": Bad(
        "ReadEvents", "service", on(feed_pb.ReadEventsRequest, from_position=-1), INVALID,
        field="from_position"),
}


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_a_bad_request_gets_a_precise_error_and_writes_nothing(
        governance: ServiceProcess, world: World, clock: ClockFile, case: Bad) -> None:
    before = governance.last_position()
    case.refused(caller(governance, world, case.who), case.request(world, clock),
                 "governance.qiji")
    assert governance.last_position() == before, "a refused request wrote events"


def test_an_unreadable_time_and_unknown_numbers_come_with_the_other_faults_in_one_answer(
        governance: ServiceProcess, world: World, clock: ClockFile) -> None:
    """Before, an observe_time past 9999-12-31 was refused alone (FIELD_INVALID) before the
    command looked at anything else; now it is TIME_INVALID beside the rest."""
    before = governance.last_position()
    report = call_error(lambda: caller(governance, world, "platform").SubmitReport(
        submit_request(world.active, world.street, clock, kind=99, text=" ",
                       observe_time=Timestamp(seconds=10**12))))
    assert (report.code, report.reason) == (INVALID, "INVALID_ARGUMENT"), report
    assert sorted((f, r) for f, r, _ in report.violations) == [
        ("kind", "ENUM_VALUE_UNKNOWN"), ("observe_time", "TIME_INVALID"),
        ("text", "FIELD_REQUIRED")], report
    kind = next(d for f, _, d in report.violations if f == "kind")
    assert kind.startswith("99 is not a ReportKind") and "REPORT_KIND_EMERGENCY" in kind
    session = call_error(lambda: caller(governance, world, "office").RecordMediationSession(
        pb.RecordMediationSessionRequest(
            request_id=new_request_id(), case_id=world.open_case,
            session=pb.MediationSession(hold_time=Timestamp(seconds=10**12),
                                        notes="x" * 2001))))
    assert sorted((f, r) for f, r, _ in session.violations) == [
        ("session.hold_time", "TIME_INVALID"), ("session.notes", "TEXT_TOO_LONG"),
        ("session.place", "FIELD_REQUIRED")], session
    assert governance.last_position() == before


def answered(call: Callable[[], Any]) -> tuple[Any, str, bytes]:
    """A refused call as its caller receives it: code, message, and the google.rpc.Status
    trailer byte for byte."""
    try:
        call()
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        trailer = dict(error.trailing_metadata() or ())
        return error.code(), error.details() or "", trailer.get("grpc-status-details-bin", b"")
    raise AssertionError("the call succeeded but should have failed")


def test_another_streets_office_cannot_ask_whether_a_rider_exists(
        governance: ServiceProcess, world: World, clock: ClockFile) -> None:
    """The other street's office is admitted on its own street, whoever the rider is: a
    request it made faulty on purpose answers the same, byte for byte, for a rider of another
    street and for a made-up one, and writes nothing; only a request valid in every other way
    learns RIDER_NOT_FOUND (review of issue 23, B1)."""
    office = caller(governance, world, "other_office")
    unknown = str(uuid.uuid4())

    def case(rider: str, subject: str) -> pb.OpenMediationCaseRequest:
        return pb.OpenMediationCaseRequest(
            request_id=new_request_id(), street_id=world.other_street, subject=subject,
            mediator_name="王调解员",
            parties=[pb.MediationParty(role=pb.PARTY_ROLE_RIDER, rider_id=rider),
                     pb.MediationParty(role=pb.PARTY_ROLE_MERCHANT, name="面馆")])
    before = governance.last_position()
    for faulty in (lambda r: office.OpenMediationCase(case(r, subject=" ")),
                   lambda r: office.SubmitReport(submit_request(
                       r, world.other_street, clock, text=""))):
        theirs = answered(lambda faulty=faulty: faulty(world.active))
        nobody = answered(lambda faulty=faulty: faulty(unknown))
        assert theirs[0] is INVALID and theirs == nobody, (theirs, nobody)
        assert world.active not in theirs[1] and world.active.encode() not in theirs[2]
    refused = call_error(lambda: office.OpenMediationCase(case(unknown, subject="纠纷")))
    assert (refused.code, refused.reason, refused.metadata) == (
        NOT_FOUND, "RIDER_NOT_FOUND", {"kind": "rider", "id": unknown}), refused
    assert refused.resources == [("qiji.city/Rider", unknown, "parties[0].rider_id")]
    assert governance.last_position() == before


def test_every_reference_to_nothing_is_named_in_one_not_found(
        governance: ServiceProcess, world: World) -> None:
    """Rules naming two departments that do not exist, and nothing else wrong: NOT_FOUND of the
    first (its ErrorInfo as before), and a google.rpc.ResourceInfo for each, so that the caller
    fixes both at once rather than one per try (review of issue 23, R4)."""
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    before = governance.last_position()
    refused = call_error(lambda: governance.client("city_admin").SetRoutingRules(
        pb.SetRoutingRulesRequest(request_id=new_request_id(), rules=[
            pb.RoutingRule(name="一", department_ids=[first]),
            pb.RoutingRule(name="二", department_ids=[world.police, second])])))
    assert (refused.code, refused.reason) == (NOT_FOUND, "DEPARTMENT_NOT_FOUND"), refused
    assert refused.metadata == {"kind": "department", "id": first}
    assert refused.resources == [
        ("qiji.city/Organisation", first, "rules[0].department_ids[0]"),
        ("qiji.city/Organisation", second, "rules[1].department_ids[1]")], refused
    assert governance.last_position() == before


def test_a_token_naming_no_organisation_is_told_how_it_is_brought_across(
        governance: ServiceProcess, world: World) -> None:
    """A department's token from a tokens file of before tokens named their organisation acts
    for no one, and its caller is told which command names it one."""
    refused = call_error(lambda: caller(governance, world, "unbound_department").GetReport(
        pb.GetReportRequest(report_id=world.open_report)))
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAUTHENTICATED,
                                              "TOKEN_ENTRY_REFUSED"), refused
    assert "must name the organisation" in refused.message
    assert "qiji tokens assign" in refused.message, refused.message


# ---------------------------------------------------------------------------- the story


def test_a_riders_emergency_is_routed_to_public_security_resolved_and_verified(
        governance: ServiceProcess, world: World, clock: ClockFile) -> None:
    platform, police = caller(governance, world, "platform"), caller(governance, world, "police")
    office = caller(governance, world, "office")

    def rates(who: Client, **unit: str) -> pb.ServiceRates:
        return who.GetServiceRates(rates_request(clock, **unit)).service_rates
    police_before, street_before = (rates(police, department_id=world.police),
                                    rates(office, street_id=world.street))
    report = platform.SubmitReport(submit_request(
        world.active, world.street, clock, lat=LAT + 0.05,
        category=pb.CATEGORY_PUBLIC_SECURITY, text="路口有人持械斗殴")).report
    assert report.status == pb.REPORT_STATUS_OPEN
    assert (report.routing_rule_name, report.routing_rules_version) == ("emergencies", 1)
    [assignment] = report.assignments
    assert (assignment.department_id, assignment.department_function) == (
        world.police, pb.DEPARTMENT_FUNCTION_PUBLIC_SECURITY)
    assert (assignment.acknowledge_due_time.ToDatetime(tzinfo=UTC)
            - assignment.route_time.ToDatetime(tzinfo=UTC)) == timedelta(minutes=15)
    queue = police.ListDepartmentQueue(pb.ListDepartmentQueueRequest(
        department_id=world.police)).entries
    assert report.report_id in [e.report_id for e in queue]

    def step(rpc: str, request_type: type, **fields: Any) -> pb.Report:
        return getattr(police, rpc)(request_type(
            request_id=new_request_id(), report_id=report.report_id, department_id=world.police,
            **fields)).report

    step("AcknowledgeAssignment", pb.AcknowledgeAssignmentRequest)
    step("StartAssignmentWork", pb.StartAssignmentWorkRequest, note="巡逻车已出发")
    resolved = step("ResolveAssignment", pb.ResolveAssignmentRequest,
                    resolution="已制止，两人带回调查")
    assert resolved.status == pb.REPORT_STATUS_RESOLVED
    verify = pb.VerifyReportRequest(request_id=new_request_id(), report_id=report.report_id,
                                    note="街道回访确认")
    verified = office.VerifyReport(verify).report
    assert verified.status == pb.REPORT_STATUS_VERIFIED
    # A retried verification answers the first answer and stores nothing.
    position = governance.last_position()
    assert office.VerifyReport(verify).report == verified
    assert governance.last_position() == position

    history = caller(governance, world, "auditor").GetReportHistory(
        pb.GetReportHistoryRequest(report_id=report.report_id)).entries
    assert [(e.event_type, e.principal) for e in history] == [
        ("Report.Submitted", "e2e-platform"), ("Report.Routed", "e2e-platform"),
        ("Report.Acknowledged", "e2e-police"), ("Report.WorkStarted", "e2e-police"),
        ("Report.AssignmentResolved", "e2e-police"), ("Report.Closed", "e2e-police"),
        ("Report.Verified", "e2e-office")]
    assert history[-1].request_id == verify.request_id
    # What badges will follow: one event naming the rider.
    published = [e for e in governance.events(events.REPORT_VERIFIED)
                 if e.originator_id == report.report_id]
    assert [state(e)["rider_id"] for e in published] == [world.active]
    assert report.report_id not in [e.report_id for e in police.ListDepartmentQueue(
        pb.ListDepartmentQueueRequest(department_id=world.police)).entries]

    # Who reads it: the department it was assigned to and the street office where it happened
    # read what the rider wrote; the auditor is told only how long it is; the social-work
    # station, to which it was never assigned, does not find it among the reports it lists.
    def text_for(who: str) -> str:
        return caller(governance, world, who).GetReport(pb.GetReportRequest(
            report_id=report.report_id)).report.text
    assert text_for("police") == text_for("office") == "路口有人持械斗殴"
    assert text_for("auditor") == "[withheld: 8 characters]"

    # The rider follows it in the platform's app: their words, who took it and how it ended;
    # not the officials' notes.
    followed = platform.GetReport(pb.GetReportRequest(report_id=report.report_id)).report
    [taken] = followed.assignments
    assert (followed.text, followed.status) == ("路口有人持械斗殴", pb.REPORT_STATUS_VERIFIED)
    assert (taken.department_id, taken.status, taken.resolution) == (
        world.police, pb.ASSIGNMENT_STATUS_RESOLVED, "已制止，两人带回调查")
    assert (taken.work_note, followed.verification_note) == (
        "[withheld: 6 characters]", "[withheld: 6 characters]")
    assert [r.report_id for r in platform.ListReports(pb.ListReportsRequest(
        rider_id=world.active, page_size=500)).reports].count(report.report_id) == 1

    def listed_by(who: str) -> list[str]:
        return [r.report_id for r in caller(governance, world, who).ListReports(
            pb.ListReportsRequest(page_size=500)).reports]
    assert report.report_id in listed_by("police")
    assert report.report_id in listed_by("office")
    assert report.report_id not in listed_by("social")
    assert report.report_id not in listed_by("other_office")

    # The three rates: the police's and the street's each count it once more — acknowledged
    # in time, resolved; the district's (read by the city-wide readers) hold the street's.
    for before, after in ((police_before, rates(police, department_id=world.police)),
                          (street_before, rates(office, street_id=world.street))):
        assert after.assignments == before.assignments + 1
        for rate in ("response_rate", "resolution_rate"):
            was, now = getattr(before, rate), getattr(after, rate)
            assert (now.numerator, now.denominator) == (was.numerator + 1,
                                                        was.denominator + 1), rate
        assert after.rules_version == 1 and len(after.rules) == 6
    district = rates(caller(governance, world, "auditor"), district_id=world.district)
    assert district.district_id == world.district
    assert district.assignments >= after.assignments


def test_a_department_pauses_its_clock_while_it_waits_for_the_rider(
        governance: ServiceProcess, world: World, clock: ClockFile) -> None:
    """Over the wire: the clocks a report was routed with, a pause with its reason shown to
    the rider's platform (its note withheld) and in the department's queue, and a resumption
    that moves the due time on by the time paused."""
    platform, police = caller(governance, world, "platform"), caller(governance, world, "police")
    report = platform.SubmitReport(submit_request(
        world.active, world.street, clock, lat=LAT + 0.07, category=pb.CATEGORY_UTILITIES,
        text="小区停水")).report
    # An emergency takes the emergency clock whatever its category: 2 hours around the clock.
    policy = report.clock_policy
    assert (policy.resolve_within.ToTimedelta(), policy.around_the_clock,
            policy.at_risk_percent) == (timedelta(hours=2), True, 80)

    def step(rpc: str, request_type: type, **fields: Any) -> pb.Report:
        return getattr(police, rpc)(request_type(
            request_id=new_request_id(), report_id=report.report_id, department_id=world.police,
            **fields)).report

    step("AcknowledgeAssignment", pb.AcknowledgeAssignmentRequest)
    [before] = step("PauseAssignmentClock", pb.PauseAssignmentClockRequest,
                    reason=pb.PAUSE_REASON_WAITING_FOR_RIDER, note="等骑手补充照片").assignments
    assert before.pause.reason == pb.PAUSE_REASON_WAITING_FOR_RIDER
    [seen] = platform.GetReport(pb.GetReportRequest(report_id=report.report_id)
                                ).report.assignments
    assert (seen.pause.reason, seen.pause.note) == (pb.PAUSE_REASON_WAITING_FOR_RIDER,
                                                    "[withheld: 7 characters]")
    [entry] = [e for e in police.ListDepartmentQueue(pb.ListDepartmentQueueRequest(
        department_id=world.police)).entries if e.report_id == report.report_id]
    assert (entry.paused, entry.pause_reason) == (True, pb.PAUSE_REASON_WAITING_FOR_RIDER)

    clock.set(clock.now + timedelta(minutes=5))
    [after] = step("ResumeAssignmentClock", pb.ResumeAssignmentClockRequest).assignments
    assert not after.HasField("pause")
    assert (after.resolve_due_time.ToDatetime(tzinfo=UTC)
            - before.resolve_due_time.ToDatetime(tzinfo=UTC)) == timedelta(minutes=5)
    [ended] = after.past_pauses
    assert ended.paused_duration.ToTimedelta() == timedelta(minutes=5)


# ---------------------------------------------------------------------------- deadlines


def escalations_of(server: ServiceProcess, report_id: str) -> list[str]:
    """The deadlines escalated for a report, from the feed (what the log holds)."""
    return [state(e)["deadline"] for e in server.events(events.REPORT_ESCALATED)
            if e.originator_id == report_id]


def test_a_missed_emergency_acknowledgement_escalates_exactly_once_across_restarts(
        identity: ServiceProcess, world: World, tmp_path: Path) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    clock = ClockFile(tmp_path / "now", t0)
    server = start_governance(identity, tmp_path, clock)
    try:
        server.client("city_admin").SetRoutingRules(pb.SetRoutingRulesRequest(
            request_id=new_request_id(), rules=[pb.RoutingRule(
                name="emergencies", kind=pb.REPORT_KIND_EMERGENCY,
                department_functions=[pb.DEPARTMENT_FUNCTION_PUBLIC_SECURITY])]))
        report_id = server.client("platform").SubmitReport(
            submit_request(world.active, world.street, clock)).report.report_id

        # Stopped before the deadline, started after it: the deadline passed while no
        # process ran. Killed at once after the start, perhaps mid-escalation.
        server.stop()
        clock.set(t0 + timedelta(minutes=16))
        server.start()
        server.kill()
        server.start()
        eventually(lambda: escalations_of(server, report_id),
                   "the missed acknowledgement is escalated", timeout=WAIT_SECONDS)
        # Stopped cleanly and killed again after the escalation was stored.
        server.restart()
        server.kill()
        # The resolution deadline passes too: its escalation shows a scheduler pass ran after
        # the last start, and that pass left the acknowledgement's escalation alone.
        clock.set(t0 + timedelta(hours=24, minutes=1))
        server.start()
        eventually(lambda: "RESOLVE" in escalations_of(server, report_id),
                   "the missed resolution is escalated", timeout=WAIT_SECONDS)
        assert sorted(escalations_of(server, report_id)) == ["ACKNOWLEDGE", "RESOLVE"]

        report = server.client("auditor").GetReport(
            pb.GetReportRequest(report_id=report_id)).report
        [assignment] = report.assignments
        assert assignment.status == pb.ASSIGNMENT_STATUS_ROUTED
        assert assignment.escalation_level == pb.ESCALATION_LEVEL_CITY
        assert [(e.deadline, e.level, e.escalated_to_id) for e in assignment.escalations] == [
            (pb.DEADLINE_KIND_ACKNOWLEDGE, pb.ESCALATION_LEVEL_DISTRICT, world.district),
            (pb.DEADLINE_KIND_RESOLVE, pb.ESCALATION_LEVEL_CITY, world.city)]
        history = server.client("auditor").GetReportHistory(
            pb.GetReportHistoryRequest(report_id=report_id)).entries
        assert [e.request_id for e in history if e.event_type == "Report.Escalated"] == [
            f"{report_id}:{world.police}:ACKNOWLEDGE", f"{report_id}:{world.police}:RESOLVE"]
    finally:
        if server.running:
            server.stop()
