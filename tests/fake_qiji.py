"""A stand-in Qiji for the console's tests: real gRPC servers on free ports serving fake
StatisticsService, IdentityService (organisations, a rider), AuditService and
GovernanceService (the three rates, a report's history), with a few tokens of known scope.
What the console does with a service's answer — and with its refusals, as the real services
give them (google.rpc.Status details) — is tested against it in milliseconds."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from qiji.audit.v1 import audit_service_pb2 as apb
from qiji.audit.v1 import audit_service_pb2_grpc as apb_grpc
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.governance.v1 import governance_service_pb2_grpc as gpb_grpc
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from qiji.statistics.v1 import statistics_service_pb2 as spb
from qiji.statistics.v1 import statistics_service_pb2_grpc as spb_grpc

from shared.values import CITY_TIME

CITY = "00000000-0000-4000-8000-000000000001"
ZHONGLOU = "00000000-0000-4000-8000-000000000002"
TIANNING = "00000000-0000-4000-8000-000000000003"
HEHUACHI = "00000000-0000-4000-8000-000000000004"
BEIDAJIE = "00000000-0000-4000-8000-000000000005"
STATION = "00000000-0000-4000-8000-000000000006"
RIDER = "00000000-0000-4000-8000-0000000000aa"
REPORT = "00000000-0000-4000-8000-0000000000bb"

ORGS = {
    CITY: ("CITY", "常州市", ""),
    ZHONGLOU: ("DISTRICT", "钟楼区", CITY),
    TIANNING: ("DISTRICT", "天宁区", CITY),
    HEHUACHI: ("STREET", "荷花池街道", ZHONGLOU),
    BEIDAJIE: ("COMMUNITY", "北大街社区", HEHUACHI),
    STATION: ("STATION", "荷花池站", ""),
}

# token -> who: "city" sees everything, "street" its street (荷花池街道), "auditor" everything
# and the audit history; "nobody" has no figures (PERMISSION_DENIED); others are unknown.
TOKENS = {"city-token": "city", "street-token": "street", "auditor-token": "auditor",
          "nobody-token": "nobody"}

GEO = ["CITY", "DISTRICT", "STREET", "COMMUNITY"]
MEASURES = [
    ("riders_registered", "注册骑手", "人", "identity", "FLOW", [*GEO, "STATION", "PLATFORM"]),
    ("riders_active", "在岗骑手", "人", "identity", "STOCK", [*GEO, "STATION"]),
    ("training_hours", "培训学时", "小时", "training", "FLOW", [*GEO, "TRACK"]),
    ("perks_redeemed", "优惠核销", "次", "merchants", "FLOW", [*GEO, "MERCHANT"]),
    ("care_packages_handed_over", "关爱礼包发放", "份", "merchants", "FLOW", GEO),
    ("volunteer_hours_confirmed", "志愿服务时长", "小时", "badges", "FLOW", GEO),
    ("badges_awarded", "徽章授予", "枚", "badges", "FLOW", GEO),
    ("reports_submitted", "上报事项", "件", "governance", "FLOW",
     [*GEO, "REPORT_KIND", "REPORT_CATEGORY"]),
]
MEASURE_NAMES = {m[0] for m in MEASURES}


def stamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at.astimezone(UTC))
    return ts


def refuse(context: Any, code: grpc.StatusCode, message: str, reason: str,
           violations: tuple[tuple[str, str, str], ...] = ()) -> None:
    """Ends the call as Qiji's services do: a status with ErrorInfo (and BadRequest)."""
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="statistics.qiji"))
    details.append(info)
    if violations:
        bad = any_pb2.Any()
        bad.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d, reason=r)
            for f, d, r in violations]))
        details.append(bad)
    context.abort_with_status(rpc_status.to_status(status_pb2.Status(
        code=getattr(code_pb2, code.name), message=message, details=details)))


def caller(context: Any) -> str:
    metadata = dict(context.invocation_metadata())
    token = metadata.get("authorization", "").removeprefix("Bearer ")
    who = TOKENS.get(token)
    if who is None:
        refuse(context, grpc.StatusCode.UNAUTHENTICATED, "unknown token", "TOKEN_UNKNOWN")
    return who  # type: ignore[return-value]


def value_of(measure: str, dimension: str, period: str, key: str) -> str:
    """A made-up figure that each (measure, dimension, period, key) gives the same way."""
    total = sum(map(ord, f"{measure}|{dimension}|{period}|{key}"))
    value = total % 40 + 1
    return f"{value}.5" if measure.endswith("hours") else str(value)


def months(start: datetime, end: datetime) -> list[tuple[datetime, datetime, str]]:
    local = start.astimezone(CITY_TIME)
    at = datetime(local.year, local.month, 1, tzinfo=CITY_TIME)
    found = []
    while at < end:
        following = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=CITY_TIME)
        found.append((at, following, f"{at:%Y-%m}"))
        at = following
    return found


def periods(granularity: str, start: datetime, end: datetime
            ) -> list[tuple[datetime, datetime, str]]:
    if granularity == "MONTH":
        return months(start, end)
    if granularity == "WHOLE_RANGE":
        return [(start, end, f"{start.astimezone(CITY_TIME):%Y-%m-%d}/"
                             f"{end.astimezone(CITY_TIME):%Y-%m-%d}")]
    step = timedelta(days=7 if granularity == "WEEK" else 1)
    at, found = start, []
    while at < end:
        local = at.astimezone(CITY_TIME)
        label = (f"{local:%G-W%V}" if granularity == "WEEK" else f"{local:%Y-%m-%d}")
        found.append((at, at + step, label))
        at += step
    return found


KEYS = {
    "CITY": [("", "")],
    "DISTRICT": [(ZHONGLOU, "钟楼区"), (TIANNING, "天宁区")],
    "STREET": [(HEHUACHI, "荷花池街道")],
    "COMMUNITY": [(BEIDAJIE, "北大街社区")],
    "TRACK": [("RED_CIVIC", "红色思政"), ("SKILLS", "技能培训")],
    "REPORT_KIND": [("EMERGENCY_DIRECT", "突发事件直报")],
    "REPORT_CATEGORY": [("FIRE", "消防")],
    "MERCHANT": [("00000000-0000-4000-8000-0000000000cc", "荷花池面馆")],
    "STATION": [(STATION, "荷花池站")],
    "PLATFORM": [("00000000-0000-4000-8000-0000000000dd", "骑迹外卖")],
}


@dataclass
class FakeStatistics(spb_grpc.StatisticsServiceServicer):
    asked: list[Any] = field(default_factory=list)

    def _measure(self, name: str) -> Any:
        for n, label, unit, service, kind, dims in MEASURES:
            if n == name:
                return spb.Measure(name=n, label=label, unit=unit, service=service,
                                   kind=spb.MeasureKind.Value(f"MEASURE_KIND_{kind}"),
                                   dimensions=[spb.Dimension.Value(f"DIMENSION_{d}")
                                               for d in dims],
                                   description=f"{label}: for the tests",
                                   explanation=f"{label}的口径：测试用")
        return None

    def _checked(self, request: Any, context: Any, names: list[str]) -> None:
        if caller(context) == "nobody":
            refuse(context, grpc.StatusCode.PERMISSION_DENIED, "no figures for this role",
                   "ROLE_NOT_ALLOWED")
        unknown = [n for n in names if n not in MEASURE_NAMES]
        if unknown:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "unknown measure",
                   "MEASURE_UNKNOWN", (("measure", f"no measure {unknown[0]!r}",
                                        "MEASURE_UNKNOWN"),))
        start = request.start_time.ToDatetime(tzinfo=UTC)
        end = request.end_time.ToDatetime(tzinfo=UTC)
        if request.granularity == spb.GRANULARITY_DAY and end - start > timedelta(days=366):
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "range too long",
                   "RANGE_TOO_LONG", (("end_time", "at most 366 days by day",
                                       "RANGE_TOO_LONG"),))
        if request.within_organisation_id and request.within_organisation_id not in ORGS:
            refuse(context, grpc.StatusCode.NOT_FOUND, "no such organisation",
                   "ORGANISATION_NOT_FOUND")
        if caller(context) == "street" and request.within_organisation_id in (
                ZHONGLOU, TIANNING, CITY):
            refuse(context, grpc.StatusCode.PERMISSION_DENIED, "outside your scope",
                   "OUT_OF_SCOPE")

    def rows(self, request: Any, measure: str) -> list[Any]:
        dimension = spb.Dimension.Name(request.dimension).removeprefix("DIMENSION_")
        granularity = spb.Granularity.Name(request.granularity).removeprefix("GRANULARITY_")
        start = request.start_time.ToDatetime(tzinfo=UTC)
        end = request.end_time.ToDatetime(tzinfo=UTC)
        figures = []
        for p_start, p_end, label in periods(granularity, start, end):
            for key, key_label in KEYS[dimension]:
                value = value_of(measure, dimension, label, key + request.within_organisation_id)
                current = ""
                if request.HasField("as_of_time"):
                    current = str(int(float(value)) + 2) + (".5" if "." in value else "")
                figures.append(spb.Figure(period_start=stamp(p_start), period_end=stamp(p_end),
                                          period_label=label, key=key, key_label=key_label,
                                          value=value, current_value=current))
        return figures

    def ListMeasures(self, request: Any, context: Any) -> Any:
        if caller(context) == "nobody":
            refuse(context, grpc.StatusCode.PERMISSION_DENIED, "no figures for this role",
                   "ROLE_NOT_ALLOWED")
        return spb.ListMeasuresResponse(measures=[self._measure(m[0]) for m in MEASURES])

    def QueryFigures(self, request: Any, context: Any) -> Any:
        self._checked(request, context, [request.measure])
        self.asked.append(request)
        return spb.QueryFiguresResponse(
            figures=self.rows(request, request.measure), measure=self._measure(request.measure),
            as_of_time=request.as_of_time if request.HasField("as_of_time")
            else stamp(datetime.now(UTC)),
            positions=[spb.FeedPosition(service="identity", position=12, last_position=12)])

    def ExportFigures(self, request: Any, context: Any) -> Any:
        self._checked(request, context, list(request.measures))
        lines = ["指标,时段,键,名称,数值"]
        for measure in request.measures:
            for f in self.rows(request, measure):
                lines.append(f"{measure},{f.period_label},{f.key},{f.key_label},{f.value}")
        data = ("\ufeff" + "\n".join(lines) + "\n").encode()
        csv = request.format == spb.EXPORT_FORMAT_CSV
        yield spb.ExportFiguresResponse(started=spb.ExportStarted(
            file_name=f"qiji-figures-测试.{'csv' if csv else 'xlsx'}",
            media_type="text/csv; charset=utf-8" if csv else
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            rows_total=len(lines) - 1))
        yield spb.ExportFiguresResponse(progress=spb.ExportProgress(rows_written=0,
                                                                    rows_total=len(lines) - 1))
        for i in range(0, len(data), 64):
            yield spb.ExportFiguresResponse(chunk=data[i:i + 64])

    def GetFreshness(self, request: Any, context: Any) -> Any:
        caller(context)
        return spb.GetFreshnessResponse(positions=[
            spb.FeedPosition(service=s, position=10, last_position=12)
            for s in ("identity", "training", "merchants", "badges", "governance")])


def organisation(ident: str) -> Any:
    kind, name, parent = ORGS[ident]
    return ipb.Organisation(organisation_id=ident, name=name, parent_id=parent,
                            kind=ipb.OrganisationKind.Value(f"ORGANISATION_KIND_{kind}"))


class FakeIdentity(ipb_grpc.IdentityServiceServicer):
    def GetOrganisation(self, request: Any, context: Any) -> Any:
        caller(context)
        if request.organisation_id not in ORGS:
            refuse(context, grpc.StatusCode.NOT_FOUND, "no such organisation",
                   "ORGANISATION_NOT_FOUND")
        return ipb.GetOrganisationResponse(organisation=organisation(request.organisation_id))

    def ListOrganisations(self, request: Any, context: Any) -> Any:
        caller(context)
        kind = ipb.OrganisationKind.Name(request.kind).removeprefix("ORGANISATION_KIND_")
        return ipb.ListOrganisationsResponse(organisations=[
            organisation(i) for i, (k, _, parent) in ORGS.items()
            if k == kind and (not request.parent_id or parent == request.parent_id)])

    def GetRider(self, request: Any, context: Any) -> Any:
        who = caller(context)
        if request.rider_id != RIDER:
            refuse(context, grpc.StatusCode.NOT_FOUND, "no such rider", "RIDER_NOT_FOUND")
        clear = who in ("city", "street")
        return ipb.GetRiderResponse(rider=ipb.Rider(
            rider_id=RIDER, name="陈静" if clear else "陈*",
            phone="13800001234" if clear else "138****1234", home_street_id=HEHUACHI,
            station_id=STATION, status=ipb.RIDER_STATUS_ACTIVE, platform_rider_id="R-0001",
            register_time=stamp(datetime(2026, 3, 1, 2, tzinfo=UTC))))


class FakeAudit(apb_grpc.AuditServiceServicer):
    def GetHistory(self, request: Any, context: Any) -> Any:
        if caller(context) != "auditor":
            refuse(context, grpc.StatusCode.PERMISSION_DENIED, "auditors only",
                   "ROLE_NOT_ALLOWED")
        return apb.GetHistoryResponse(entries=[apb.HistoryEntry(
            version=1, event_type="Rider.Registered", principal="platform-company",
            roles="platform", time=stamp(datetime(2026, 3, 1, 2, tzinfo=UTC)),
            summary="name=[sealed] phone=[sealed] home_street_id=" + HEHUACHI)])


class FakeGovernance(gpb_grpc.GovernanceServiceServicer):
    def GetServiceRates(self, request: Any, context: Any) -> Any:
        who = caller(context)
        if who == "street" and request.street_id != HEHUACHI:
            refuse(context, grpc.StatusCode.PERMISSION_DENIED, "outside your scope",
                   "OUT_OF_SCOPE")
        rate = gpb.ServiceRate(numerator=9, denominator=10, percent="90.00")
        return gpb.GetServiceRatesResponse(service_rates=gpb.ServiceRates(
            district_id=request.district_id, street_id=request.street_id, assignments=10,
            response_rate=rate, resolution_rate=gpb.ServiceRate(numerator=1, denominator=2,
                                                                percent="50.00"),
            satisfaction_rate=gpb.ServiceRate()))

    def GetReportHistory(self, request: Any, context: Any) -> Any:
        caller(context)
        if request.report_id != REPORT:
            refuse(context, grpc.StatusCode.NOT_FOUND, "no such report", "REPORT_NOT_FOUND")
        return gpb.GetReportHistoryResponse(report_id=REPORT, entries=[gpb.HistoryEntry(
            version=1, event_type="Report.Submitted", principal="platform-company",
            rpc="SubmitReport", time=stamp(datetime(2026, 3, 2, 1, tzinfo=UTC)),
            details={"kind": "REPORT_KIND_EMERGENCY_DIRECT", "text": "[withheld: 12 characters]"})])


class FakeQiji:
    """The fake services on one free port; `addresses` for QijiSource."""

    def __init__(self) -> None:
        self.statistics = FakeStatistics()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        spb_grpc.add_StatisticsServiceServicer_to_server(self.statistics, self.server)
        ipb_grpc.add_IdentityServiceServicer_to_server(FakeIdentity(), self.server)
        apb_grpc.add_AuditServiceServicer_to_server(FakeAudit(), self.server)
        gpb_grpc.add_GovernanceServiceServicer_to_server(FakeGovernance(), self.server)
        from grpc_health.v1 import health, health_pb2_grpc
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        address = f"127.0.0.1:{self.port}"
        self.addresses = {"statistics": address, "identity": address, "governance": address}

    def stop(self) -> None:
        self.server.stop(None)
