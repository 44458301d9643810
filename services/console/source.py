"""Where the console gets everything it shows: Qiji's gRPC APIs, called with the signed-in
caller's own token — the statistics model (figures, exports, freshness), identity (the
organisation tree, a rider as the caller may see them, a rider's audit history), governance
(the three rates, a report's history). Scopes and masking are the services' answers: the
console adds none and removes none, and has no database of its own.

Every call blocks (grpcio): the pages call these off the event loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from qiji.audit.v1 import audit_service_pb2 as apb
from qiji.audit.v1 import audit_service_pb2_grpc as apb_grpc
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.governance.v1 import governance_service_pb2_grpc as gpb_grpc
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from qiji.statistics.v1 import statistics_service_pb2 as spb
from qiji.statistics.v1 import statistics_service_pb2_grpc as spb_grpc

from shared.config import TlsSettings
from shared.grpc.channels import open_channel

CALL_TIMEOUT = 15.0
# An export streams for as long as it takes; a stalled one is given up after this long.
EXPORT_TIMEOUT = 600.0
# The most figures one page asks for in one QueryFigures call (the API's own limit), and the
# most the console puts on one page (a year by day for 10 keys, with room).
PAGE_SIZE = 5000
MAX_FIGURES = 20_000


# ---------------------------------------------------------------------------- errors


class Upstream(Exception):
    """A service said no. `reason` is the ErrorInfo reason when the answer carried one."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.message = message
        self.reason = reason


class NotSignedIn(Upstream):
    """UNAUTHENTICATED: the token is unknown, rotated or refused."""


class Denied(Upstream):
    """PERMISSION_DENIED: the caller's role or scope does not reach this."""


class Missing(Upstream):
    """NOT_FOUND."""


@dataclass(frozen=True)
class Violation:
    field: str
    description: str
    reason: str


class Refused(Upstream):
    """INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE: what was wrong, field by field."""

    def __init__(self, message: str, reason: str = "", violations: tuple[Violation, ...] = ()):
        super().__init__(message, reason)
        self.violations = violations


class Unreachable(Upstream):
    """The service cannot answer just now (down, overloaded, or it failed)."""


def _translated(error: grpc.RpcError) -> Upstream:
    code = error.code() if isinstance(error, grpc.Call) else None
    details = (error.details() or "") if isinstance(error, grpc.Call) else ""
    reason = ""
    violations: list[Violation] = []
    status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    packed: Sequence[any_pb2.Any] = status.details if status is not None else ()
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    for detail in packed:
        # Unpack is False (and reads nothing) for a detail of another type.
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            violations = [Violation(v.field, v.description, v.reason)
                          for v in bad.field_violations]
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return NotSignedIn(details, reason)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return Denied(details, reason)
    if code is grpc.StatusCode.NOT_FOUND:
        return Missing(details, reason)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.OUT_OF_RANGE):
        return Refused(details, reason, tuple(violations))
    return Unreachable(code.name if code else type(error).__name__, reason)


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True)
class MeasureInfo:
    name: str
    label: str
    unit: str
    service: str
    kind: str  # FLOW or STOCK
    dimensions: tuple[str, ...]  # CITY, DISTRICT, ... (the proto's names without the prefix)
    description: str  # the developers' definition, in English
    explanation: str  # the same as the officials read it (口径说明): what the pages show


@dataclass(frozen=True)
class FigureAsk:
    """One QueryFigures (or ExportFigures) question, as the console asks it."""

    measure: str
    dimension: str
    granularity: str  # DAY, WEEK, MONTH, WHOLE_RANGE
    start: datetime
    end: datetime
    as_of: datetime | None = None
    within: str = ""


@dataclass(frozen=True)
class Figure:
    period_start: datetime
    period_end: datetime
    period_label: str
    key: str
    key_label: str
    value: Decimal
    current_value: Decimal | None


@dataclass(frozen=True)
class FeedPositionInfo:
    service: str
    position: int
    last_position: int
    read_time: datetime | None


@dataclass(frozen=True)
class FigureAnswer:
    ask: FigureAsk
    measure: MeasureInfo
    figures: list[Figure]
    as_of: datetime | None
    positions: list[FeedPositionInfo] = field(default_factory=list)
    # More figures than a page shows were left out.
    truncated: bool = False


@dataclass(frozen=True)
class OrganisationInfo:
    organisation_id: str
    kind: str  # CITY, DISTRICT, STREET, COMMUNITY, ...
    name: str
    parent_id: str


@dataclass(frozen=True)
class ExportFile:
    file_name: str
    media_type: str
    rows_total: int
    chunks: Iterator[bytes]


def _time(ts: Timestamp) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _stamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at.astimezone(UTC))
    return ts


def _measure(m: Any) -> MeasureInfo:
    return MeasureInfo(
        name=m.name, label=m.label, unit=m.unit, service=m.service,
        kind=spb.MeasureKind.Name(m.kind).removeprefix("MEASURE_KIND_"),
        dimensions=tuple(spb.Dimension.Name(d).removeprefix("DIMENSION_")
                         for d in m.dimensions),
        description=m.description, explanation=m.explanation)


def _decimal(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def _organisation(o: Any) -> OrganisationInfo:
    return OrganisationInfo(o.organisation_id,
                            ipb.OrganisationKind.Name(o.kind).removeprefix("ORGANISATION_KIND_"),
                            o.name, o.parent_id)


# ---------------------------------------------------------------------------- the source


class QijiSource:
    """The console's one way into Qiji. `addresses`: service name -> host:port for
    "statistics", "identity" and "governance"."""

    def __init__(self, addresses: dict[str, str], tls: TlsSettings | None = None):
        self._channels = {name: open_channel(address, tls)
                          for name, address in addresses.items()}
        self.statistics = spb_grpc.StatisticsServiceStub(self._channels["statistics"])
        self.identity = ipb_grpc.IdentityServiceStub(self._channels["identity"])
        self.identity_audit = apb_grpc.AuditServiceStub(self._channels["identity"])
        self.governance = gpb_grpc.GovernanceServiceStub(self._channels["governance"])

    def ping(self) -> None:
        """Raises Unreachable unless the statistics service reports SERVING (grpc.health.v1,
        no token: the console holds none of its own)."""
        try:
            reply = health_pb2_grpc.HealthStub(self._channels["statistics"]).Check(  # type: ignore[attr-defined]  # stub lacks Check
                health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as error:
            raise _translated(error) from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unreachable("statistics is not serving")

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    @staticmethod
    def _call(method: Any, request: Any, token: str, timeout: float = CALL_TIMEOUT) -> Any:
        try:
            return method(request, metadata=(("authorization", f"Bearer {token}"),),
                          timeout=timeout)
        except grpc.RpcError as error:
            raise _translated(error) from None

    # --------------------------------------------------------------- statistics

    def measures(self, token: str) -> list[MeasureInfo]:
        reply = self._call(self.statistics.ListMeasures, spb.ListMeasuresRequest(), token)
        return [_measure(m) for m in reply.measures]

    def _request(self, ask: FigureAsk, **extra: Any) -> dict[str, Any]:
        return {"dimension": spb.Dimension.Value(f"DIMENSION_{ask.dimension}"),
                "granularity": spb.Granularity.Value(f"GRANULARITY_{ask.granularity}"),
                "start_time": _stamp(ask.start), "end_time": _stamp(ask.end),
                **({"as_of_time": _stamp(ask.as_of)} if ask.as_of else {}),
                "within_organisation_id": ask.within, **extra}

    def figures(self, token: str, ask: FigureAsk) -> FigureAnswer:
        """Every figure of `ask` (at most MAX_FIGURES), paging through the answers."""
        found: list[Figure] = []
        page_token, reply = "", None
        while True:
            reply = self._call(self.statistics.QueryFigures, spb.QueryFiguresRequest(
                measure=ask.measure, page_size=PAGE_SIZE, page_token=page_token,
                **self._request(ask)), token)
            found.extend(Figure(
                period_start=_time(f.period_start) or ask.start,
                period_end=_time(f.period_end) or ask.end,
                period_label=f.period_label, key=f.key, key_label=f.key_label,
                value=Decimal(f.value or "0"), current_value=_decimal(f.current_value))
                for f in reply.figures)
            page_token = reply.next_page_token
            if not page_token or len(found) >= MAX_FIGURES:
                break
        return FigureAnswer(
            ask=ask, measure=_measure(reply.measure), figures=found[:MAX_FIGURES],
            as_of=_time(reply.as_of_time),
            positions=[FeedPositionInfo(p.service, p.position, p.last_position,
                                        _time(p.read_time)) for p in reply.positions],
            truncated=bool(page_token))

    def export(self, token: str, measures: list[str], ask: FigureAsk, file_format: str
               ) -> ExportFile:
        """Opens ExportFigures and reads its first message (so that a refusal is an error
        here, before anything is sent to the browser); the file's bytes follow in `chunks`."""
        request = spb.ExportFiguresRequest(
            measures=measures, format=f"EXPORT_FORMAT_{file_format}",
            **self._request(ask))
        stream = self._call(self.statistics.ExportFigures, request, token, EXPORT_TIMEOUT)
        try:
            first = next(stream)
        except StopIteration:
            raise Unreachable("the export ended before it began") from None
        except grpc.RpcError as error:
            raise _translated(error) from None
        if first.WhichOneof("part") != "started":
            stream.cancel()
            raise Unreachable("the export did not begin with its file's name")

        def chunks() -> Iterator[bytes]:
            try:
                for part in stream:
                    if part.WhichOneof("part") == "chunk":
                        yield part.chunk
            except grpc.RpcError as error:
                raise _translated(error) from None
            finally:
                stream.cancel()  # the browser went away: stop the export too

        started = first.started
        return ExportFile(started.file_name, started.media_type, started.rows_total, chunks())

    def freshness(self, token: str) -> list[FeedPositionInfo]:
        reply = self._call(self.statistics.GetFreshness, spb.GetFreshnessRequest(), token)
        return [FeedPositionInfo(p.service, p.position, p.last_position, _time(p.read_time))
                for p in reply.positions]

    # --------------------------------------------------------------- identity

    def organisation(self, token: str, organisation_id: str) -> OrganisationInfo:
        reply = self._call(self.identity.GetOrganisation, ipb.GetOrganisationRequest(
            organisation_id=organisation_id), token)
        return _organisation(reply.organisation)

    def organisations(self, token: str, kind: str, parent_id: str = "") -> list[OrganisationInfo]:
        found: list[OrganisationInfo] = []
        page_token = ""
        while True:
            reply = self._call(self.identity.ListOrganisations, ipb.ListOrganisationsRequest(
                kind=f"ORGANISATION_KIND_{kind}",
                parent_id=parent_id, page_size=500, page_token=page_token), token)
            found.extend(_organisation(o) for o in reply.organisations)
            page_token = reply.next_page_token
            if not page_token or len(found) >= 5000:
                return found

    def rider(self, token: str, rider_id: str) -> Any:
        """The rider as identity shows them to this caller (personal data masked as its
        masking table says for the caller's role)."""
        return self._call(self.identity.GetRider, ipb.GetRiderRequest(rider_id=rider_id),
                          token).rider

    def rider_history(self, token: str, rider_id: str) -> list[Any]:
        """identity's audit history of the rider (auditors only; personal data [sealed])."""
        return list(self._call(self.identity_audit.GetHistory, apb.GetHistoryRequest(
            aggregate_id=rider_id), token).entries)

    # --------------------------------------------------------------- governance

    def report_history(self, token: str, report_id: str) -> list[Any]:
        return list(self._call(self.governance.GetReportHistory, gpb.GetReportHistoryRequest(
            report_id=report_id), token).entries)

    def service_rates(self, token: str, unit: str, unit_id: str, start: datetime,
                      end: datetime, as_of: datetime | None) -> Any:
        """The three rates (接诉即办) of a district or street: `unit` "district" or "street"."""
        request = gpb.GetServiceRatesRequest(
            start_time=_stamp(start), end_time=_stamp(end),
            as_of_time=_stamp(as_of) if as_of else None)
        setattr(request, f"{unit}_id", unit_id)  # district_id or street_id
        return self._call(self.governance.GetServiceRates, request, token).service_rates
