"""The figures' gRPC entry point (qiji.statistics.v1.StatisticsService): translate the request,
ask the read model (services/statistics/application.py) within the caller's scope, render
figures, or stream them as a file (services/statistics/export.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
from qiji.statistics.v1 import statistics_service_pb2 as pb
from qiji.statistics.v1 import statistics_service_pb2_grpc as pb_grpc

from services.statistics import export
from services.statistics.application import (
    FeedPosition,
    FigureQuery,
    FigureRow,
    Statistics,
    Viewer,
)
from services.statistics.domain.facts import Dimension, Measure
from shared import auth, context
from shared.errors import (
    DUPLICATE_VALUE,
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    VALUE_OUT_OF_RANGE,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violations,
)
from shared.grpc.convert import enum_in, enum_out, optional_time, timestamp
from shared.tenancy import CITY_READERS, OWN, access_table, each, scoped

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StatisticsService"].full_name
# At most this many measures in one export (the contract's limit).
MAX_EXPORT_MEASURES = 50
# The roles that act for one organisation and may hold figures: which figures is the read
# model's to say (Viewer: a street office its street, a platform its riders'...), from the
# caller's own organisation, never from the request. A department other than social work, a
# caller of these roles with no figures, is refused by the read model (PERMISSION_DENIED);
# an education provider is not admitted at all.
FIGURE_HOLDERS = (auth.STREET_OFFICE, auth.COMMUNITY, auth.PLATFORM, auth.MERCHANT,
                  auth.DEPARTMENT)
_FIGURES = scoped(CITY_READERS, tenants=each(OWN, *FIGURE_HOLDERS))

ACCESS = access_table(SERVICE_NAME, {
    "ListMeasures": _FIGURES,
    "QueryFigures": _FIGURES,
    "ExportFigures": _FIGURES,
    "GetFreshness": _FIGURES,
})

EXPORT_FORMATS = {pb.EXPORT_FORMAT_CSV: export.CSV, pb.EXPORT_FORMAT_XLSX: export.XLSX}


class StatisticsServicer(pb_grpc.StatisticsServiceServicer):
    def __init__(self, statistics: Statistics):
        self.statistics = statistics

    # ------------------------------------------------------------------ RPCs

    def ListMeasures(self, request: pb.ListMeasuresRequest, context_: grpc.ServicerContext
                     ) -> pb.ListMeasuresResponse:
        self._viewer()
        return pb.ListMeasuresResponse(measures=[measure_out(m)
                                                 for m in self.statistics.measures()])

    def QueryFigures(self, request: pb.QueryFiguresRequest, context_: grpc.ServicerContext
                     ) -> pb.QueryFiguresResponse:
        viewer = self._viewer()
        violations = Violations()
        query = replace(query_in(request, request.measure, violations),
                        page_size=request.page_size, page_token=request.page_token)
        if violations:
            self._read_model_faults(violations, query, viewer)
            violations.raise_if_any()
        page = self.statistics.query(query, viewer)
        as_of = query.as_of is not None
        return pb.QueryFiguresResponse(
            figures=[figure_out(row, as_of) for row in page.rows],
            next_page_token=page.next_page_token, measure=measure_out(page.measure),
            as_of_time=timestamp(page.as_of),
            positions=[position_out(p) for p in page.positions])

    def ExportFigures(self, request: pb.ExportFiguresRequest, context_: grpc.ServicerContext
                      ) -> Iterator[pb.ExportFiguresResponse]:
        viewer = self._viewer()
        violations = Violations()
        names = list(request.measures)
        if not names:
            violations.add("measures", "name at least one measure", FIELD_REQUIRED)
        elif len(names) > MAX_EXPORT_MEASURES:
            violations.add("measures", f"at most {MAX_EXPORT_MEASURES} measures in one export",
                           VALUE_OUT_OF_RANGE)
        for i, name in enumerate(names):
            if not name:
                violations.add(f"measures[{i}]", "must not be empty", FIELD_REQUIRED)
            elif name in names[:i]:
                violations.add(f"measures[{i}]", f"{name} is named twice", DUPLICATE_VALUE)
        fmt = enum_in(request.format, pb.ExportFormat, str, violations, "format")
        violations.require_given(fmt, "format", "choose EXPORT_FORMAT_CSV or "
                                 "EXPORT_FORMAT_XLSX", ENUM_VALUE_REQUIRED)
        base = query_in(request, "", violations)
        queries = [replace(base, measure=name) for name in dict.fromkeys(names) if name]
        # Every measure's own faults (unknown, not broken down by this dimension) and the
        # range's, found by counting each measure's rows: all in one answer, before the file.
        totals: list[int] = []
        for query in queries:
            field = f"measures[{names.index(query.measure)}]"
            if violations.items:
                self._read_model_faults(violations, query, viewer, field)
            else:
                totals.append(_collect_as(violations, field, lambda q=query: self.statistics
                                          .count(q, viewer)) or 0)
        if not queries:  # no measure to count: the other fields are still checked
            self._read_model_faults(violations, base, viewer, "measures")
        violations.raise_if_any()
        assert fmt is not None
        rows_total = sum(totals)
        as_of = base.as_of
        measures = {m.name: m for m in self.statistics.measures()}
        yield pb.ExportFiguresResponse(started=pb.ExportStarted(
            file_name=export.file_name(names, base.start, base.end, as_of,
                                       EXPORT_FORMATS[request.format]),
            media_type=export.MEDIA_TYPES[EXPORT_FORMATS[request.format]],
            rows_total=rows_total,
            as_of_time=timestamp(as_of or datetime.now(UTC))))
        sections = (export.Section(measures[q.measure], self.statistics.figures(q, viewer))
                    for q in queries)
        notes = export.notes([measures[q.measure] for q in queries], as_of, datetime.now(UTC))
        for part in export.write(EXPORT_FORMATS[request.format], sections, base.dimension,
                                 as_of is not None, notes=notes):
            if not context_.is_active():
                return  # the caller went away: stop reading figures for nobody
            if isinstance(part, export.Chunk):
                yield pb.ExportFiguresResponse(chunk=part.data)
            else:
                yield pb.ExportFiguresResponse(progress=pb.ExportProgress(
                    rows_written=part.rows_written, rows_total=max(rows_total,
                                                                   part.rows_written)))

    def GetFreshness(self, request: pb.GetFreshnessRequest, context_: grpc.ServicerContext
                     ) -> pb.GetFreshnessResponse:
        self._viewer()
        return pb.GetFreshnessResponse(positions=[position_out(p)
                                                  for p in self.statistics.freshness()])

    # ------------------------------------------------------------------ helpers

    def _viewer(self) -> Viewer:
        """What the caller may see; the read model refuses a caller that holds no figures."""
        return self.statistics.viewer(context.current().actor)

    def _read_model_faults(self, violations: Violations, query: FigureQuery, viewer: Viewer,
                           measure_field: str = "measure") -> None:
        """The read model's own checks of a request in which the entry point found faults
        already (a time it could not read, an enum number the contract does not define): an
        unknown measure, a dimension it does not have, a range too long, an organisation that
        does not exist... so that the caller hears of every fault at once. A field the entry
        point spoke of is not spoken of twice. Nothing is answered: the request is refused."""
        spoken = {v.field for v in violations.items} | {m.field for m in violations.missing_refs}
        if not query.measure:
            # No measure named (an export's): ask with any, and hear nothing of it, nor
            # whether the dimension applies to it.
            query = replace(query, measure=next(iter(m.name for m in self.statistics.measures()),
                                                ""))
            spoken |= {"measure", "dimension"}
        found = Violations()
        try:
            _collect_as(found, measure_field, lambda: self.statistics.count(query, viewer))
        except PermissionDenied:
            return  # an organisation outside the caller's scope: refused once the rest is right
        violations.items.extend(v for v in found.items
                                if v.field not in spoken and not (
                                    v.field == measure_field and "measure" in spoken))
        violations.missing_refs.extend(m for m in found.missing_refs if m.field not in spoken
                                       and m not in violations.missing_refs)


def query_in(request: Any, measure: str, violations: Violations) -> FigureQuery:
    """The query a QueryFigures or ExportFigures request asks. What only the wire can get wrong
    (a time out of range, an enum number the contract does not define) is added to
    `violations` and left out (None); the read model checks the rest, the required fields
    among it, in one pass."""
    dimension = enum_in(request.dimension, pb.Dimension, Dimension, violations, "dimension")
    granularity = enum_in(request.granularity, pb.Granularity, str, violations, "granularity")
    return FigureQuery(
        measure=measure, dimension=dimension,  # type: ignore[arg-type]
        granularity=granularity or "",
        start=optional_time(request, "start_time", violations),  # type: ignore[arg-type]
        end=optional_time(request, "end_time", violations),  # type: ignore[arg-type]
        as_of=optional_time(request, "as_of_time", violations),
        within=request.within_organisation_id)


def _collect_as(violations: Violations, field: str, check: Any) -> Any:
    """Runs a read-model call that may refuse the request (InvalidArgument, or NotFound for an
    organisation that does not exist): its faults join `violations` (one about the measure
    under `field`, the request's name for it) and None is returned."""
    try:
        return check()
    except InvalidArgument as error:
        violations.items.extend(replace(v, field=field) if v.field == "measure" else v
                                for v in error.violations
                                if v not in violations.items)
        violations.missing_refs.extend(m for m in error.resources
                                       if m not in violations.missing_refs)
    except NotFound as error:
        violations.missing_refs.extend(m for m in error.resources
                                       if m not in violations.missing_refs)
    return None


# ---------------------------------------------------------------------------- rendering


def measure_out(m: Measure) -> pb.Measure:
    return pb.Measure(name=m.name, label=m.label, unit=m.unit, service=m.service,
                      kind=enum_out(m.kind, pb.MeasureKind),
                      dimensions=sorted(enum_out(d, pb.Dimension) for d in m.dimensions),
                      description=m.description, explanation=m.explanation)


def figure_out(row: FigureRow, as_of: bool) -> pb.Figure:
    current = row.current_value if row.current_value is not None else row.value
    return pb.Figure(period_start=timestamp(row.period_start),
                     period_end=timestamp(row.period_end), period_label=row.period_label,
                     key=row.key, key_label=row.key_label, value=export.decimal_text(row.value),
                     current_value=export.decimal_text(current) if as_of else "")


def position_out(p: FeedPosition) -> pb.FeedPosition:
    return pb.FeedPosition(service=p.service, position=p.position,
                           last_position=p.last_position, read_time=timestamp(p.read_at))


def add_servicers(server: grpc.Server, statistics: Statistics) -> list[str]:
    pb_grpc.add_StatisticsServiceServicer_to_server(StatisticsServicer(statistics), server)
    return [SERVICE_NAME]

