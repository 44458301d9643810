"""The city's figures as a city system, an operator and a second tenant meet them: a real
`python -m services.statistics` on PostgreSQL beside the five services (one each, sharing one
tokens file), following their feeds; figures queried and exported over gRPC and by the `qiji
stats` command, "as of" a moment beside today's, the read model rebuilt by the operator while
the process runs; bad input refused with its field violations and nothing else; and each RPC,
tried with another tenant's token, showing that tenant nothing of this city's."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import openpyxl
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.statistics.v1 import statistics_service_pb2 as pb
from qiji.statistics.v1 import statistics_service_pb2_grpc as pb_grpc

from services.statistics.domain.periods import city_day, day_start
from tests.e2e.client import (
    RPC_TIMEOUT,
    bearer,
    call_error,
    create_city,
    create_organisation,
)
from tests.e2e.conftest import (
    REPO,
    ServiceProcess,
    eventually,
    new_rider,
    serving,
    start_beside,
)

pytestmark = pytest.mark.e2e

RPCS = ("ListMeasures", "QueryFigures", "ExportFigures", "GetFreshness")


@pytest.fixture(scope="module")
def statistics(identity: ServiceProcess, training: ServiceProcess, merchants: ServiceProcess,
               badges: ServiceProcess, governance: ServiceProcess,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The figures beside the five, reading each one's feed with the service token."""
    yield from serving(start_beside(
        "statistics", identity, tmp_path_factory.mktemp("statistics-e2e"),
        **{f"STATISTICS_{s.service.upper()}_ADDRESS": s.address
           for s in (training, merchants, badges, governance)}))


class Figures:
    """A caller of the figures' gRPC API with one token."""

    def __init__(self, server: ServiceProcess, token: str):
        assert server.channel is not None
        self.stub = pb_grpc.StatisticsServiceStub(server.channel)
        self.metadata = bearer(token)

    def __getattr__(self, rpc: str) -> Any:
        method = getattr(self.stub, rpc)
        return lambda request: method(request, metadata=self.metadata, timeout=RPC_TIMEOUT)


def ts(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def today_range() -> dict[str, Any]:
    """Today and tomorrow in the city, as one period."""
    today = city_day(datetime.now(UTC))
    return {"granularity": pb.GRANULARITY_WHOLE_RANGE, "start_time": ts(day_start(today)),
            "end_time": ts(day_start(today + timedelta(days=2)))}


def by_street(figures: Figures, measure: str = "riders_registered", **fields: Any
              ) -> dict[str, str]:
    """street id -> value, of riders registered today (every page)."""
    found, token = {}, ""
    while True:
        page = figures.QueryFigures(pb.QueryFiguresRequest(
            measure=measure, dimension=pb.DIMENSION_STREET, page_token=token,
            **{**today_range(), **fields}))
        found.update({f.key: f.value for f in page.figures})
        token = page.next_page_token
        if not token:
            return found


@pytest.fixture(scope="module")
def city(identity: ServiceProcess, statistics: ServiceProcess) -> dict[str, Any]:
    """A city with two riders of its street (its platform's), the social-work department and
    the petitions office, counted by the figures."""
    admin = identity.client("city_admin")
    city = create_city(admin)
    for name, function in (("市委社会工作部", ipb.DEPARTMENT_FUNCTION_SOCIAL_WORK),
                           ("市信访局", ipb.DEPARTMENT_FUNCTION_PETITIONS)):
        city[name] = create_organisation(admin, ipb.ORGANISATION_KIND_DEPARTMENT, name,
                                         city["city"], department_function=function
                                         ).organisation_id
    ns = type("City", (), city)
    city["riders"] = [new_rider(identity, ns), new_rider(identity, ns)]
    figures = Figures(statistics, statistics.tokens["auditor"])
    eventually(lambda: by_street(figures).get(city["street"]) == "2",
               "the figures count the city's two riders")
    return city


# ---------------------------------------------------------------------------- answers


def test_the_figures_serve_health_and_reflection_like_every_service(statistics):
    health = health_pb2_grpc.HealthStub(statistics.channel)
    for name in ("", "qiji.liveness", "qiji.integrity", "qiji.statistics.v1.StatisticsService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=RPC_TIMEOUT
                            ).status == health_pb2.HealthCheckResponse.SERVING, name
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
    services = ProtoReflectionDescriptorDatabase(statistics.channel).get_services()
    assert "qiji.statistics.v1.StatisticsService" in services


def test_figures_follow_the_services_and_stand_as_of_a_moment(identity, statistics, city):
    figures = Figures(statistics, statistics.tokens["auditor"])
    assert by_street(figures)[city["street"]] == "2"
    before = datetime.now(UTC)
    new_rider(identity, type("City", (), city))
    eventually(lambda: by_street(figures).get(city["street"]) == "3", "a third rider counted")
    then = figures.QueryFigures(pb.QueryFiguresRequest(
        measure="riders_registered", dimension=pb.DIMENSION_STREET, as_of_time=ts(before),
        within_organisation_id=city["street"], **today_range()))
    [figure] = then.figures
    assert (figure.value, figure.current_value) == ("2", "3")
    assert figure.key_label == "荷花池街道"
    assert then.as_of_time.ToDatetime(tzinfo=UTC) == before
    fresh = figures.GetFreshness(pb.GetFreshnessRequest()).positions
    assert {p.service for p in fresh} == {"identity", "training", "merchants", "badges",
                                          "governance"}

    def identity_followed_to_its_end() -> bool:
        # The third rider is counted once their registration is followed; their verification,
        # a moment later in identity's log, may still be on its way to the figures.
        [position] = [p for p in figures.GetFreshness(pb.GetFreshnessRequest()).positions
                      if p.service == "identity"]
        return position.position == identity.last_position()
    eventually(identity_followed_to_its_end,
               "the figures' freshness names the end of identity's log")


def exported(figures: Figures, **fields: Any) -> tuple[Any, bytes, list[int]]:
    started, chunks, progress = None, [], []
    for message in figures.stub.ExportFigures(pb.ExportFiguresRequest(**fields),
                                              metadata=figures.metadata, timeout=RPC_TIMEOUT):
        part = message.WhichOneof("part")
        if part == "started":
            assert started is None and not chunks, "ExportStarted comes first, once"
            started = message.started
        elif part == "chunk":
            chunks.append(message.chunk)
        else:
            progress.append(message.progress.rows_written)
    return started, b"".join(chunks), progress


def test_an_export_streams_the_same_figures_as_csv_and_xlsx(statistics, city):
    figures = Figures(statistics, statistics.tokens["auditor"])
    queried = by_street(figures)
    request = dict(measures=["riders_registered"], dimension=pb.DIMENSION_STREET,
                   **today_range())
    started, data, progress = exported(figures, format=pb.EXPORT_FORMAT_CSV, **request)
    assert started.media_type == "text/csv; charset=utf-8"
    assert started.rows_total == len(queried) and progress[-1] == len(queried)
    assert data.startswith(b"\xef\xbb\xbf")
    header, *rows = csv.reader(io.StringIO(data.decode("utf-8-sig")))
    assert header == ["指标", "单位", "期间", "期间开始", "期间结束", "街道", "数值"]
    assert sorted(r[6] for r in rows) == sorted(queried.values())
    started, data, _ = exported(figures, format=pb.EXPORT_FORMAT_XLSX, **request)
    assert started.file_name.endswith(".xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    header, *rows = sheet.iter_rows(values_only=True)
    assert header[-2:] == ("街道", "数值")
    assert sorted(str(r[6]) for r in rows) == sorted(queried.values())


def qiji(statistics: ServiceProcess, *args: str, token: str) -> subprocess.CompletedProcess:
    """The `qiji` command against this module's processes, as an operator runs it."""
    env = {k: v for k, v in statistics.env.items() if not k.startswith("QIJI_TOKEN")}
    env["QIJI_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "shared.tools.cli", "stats", *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=120, check=False)


def addresses(statistics: ServiceProcess, *others: ServiceProcess) -> list[str]:
    return [word for s in (statistics, *others)
            for word in ("--address", f"{s.service}={s.address}")]


def test_the_stats_command_exports_and_shows_what_grpc_answers(statistics, city, tmp_path):
    figures = Figures(statistics, statistics.tokens["auditor"])
    queried = by_street(figures, within_organisation_id=city["street"])
    today = city_day(datetime.now(UTC))
    days = ["--from", today.isoformat(), "--to", (today + timedelta(days=1)).isoformat()]
    for suffix in ("csv", "xlsx"):
        out = tmp_path / f"figures.{suffix}"
        done = qiji(statistics, "export", *addresses(statistics), "--measure",
                    "riders_registered", "--dimension", "street", "--granularity", "range",
                    *days, "--within", city["street"], "-o", str(out),
                    token=statistics.tokens["auditor"])
        assert done.returncode == 0, done.stderr
        assert f"wrote {out}" in done.stderr and "rows (100%)" in done.stderr
        assert not out.with_name(out.name + ".part").exists()
        if suffix == "csv":
            rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))[1:]
            assert [r[6] for r in rows] == list(queried.values())
        else:
            sheet = openpyxl.load_workbook(out, read_only=True).worksheets[0]
            assert [str(r[6]) for r in list(sheet.iter_rows(values_only=True))[1:]] == \
                list(queried.values())
    shown = qiji(statistics, "show", *addresses(statistics), "--measure", "riders_registered",
                 "--dimension", "street", "--granularity", "range", *days,
                 "--within", city["street"], token=statistics.tokens["auditor"])
    assert shown.returncode == 0, shown.stderr
    assert "注册骑手" in shown.stdout and "荷花池街道" in shown.stdout
    assert shown.stdout.rstrip().endswith(next(iter(queried.values())))


def test_the_operator_rebuilds_the_figures_beside_the_running_process(
        identity, training, merchants, badges, governance, statistics, city):
    """`qiji stats rebuild` drops the read model and replays the five logs, with progress,
    while the figures process goes on: the figures come back the same."""
    figures = Figures(statistics, statistics.tokens["auditor"])
    before = by_street(figures)
    done = qiji(statistics, "rebuild", "--yes",
                *addresses(statistics, identity, training, merchants, badges, governance),
                token=statistics.tokens["city_admin"])
    assert done.returncode == 0, done.stderr
    assert "statistics.rebuild.done" in done.stderr and "rebuilt from" in done.stdout
    assert by_street(figures) == before
    assert "Traceback" not in statistics.log_tail()


# ---------------------------------------------------------------------------- bad input


def test_bad_input_is_every_field_violation_and_nothing_else(statistics, city, tmp_path):
    figures = Figures(statistics, statistics.tokens["auditor"])
    refused = call_error(lambda: figures.QueryFigures(pb.QueryFiguresRequest(
        measure="no_such_measure", dimension=42, start_time=Timestamp(seconds=-62_200_000_000),
        end_time=ts(datetime.now(UTC) - timedelta(days=1)), within_organisation_id="x",
        page_size=-5)))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {(f, r) for f, r, _ in refused.violations} == {
        ("measure", "MEASURE_UNKNOWN"), ("dimension", "ENUM_VALUE_UNKNOWN"),
        ("granularity", "ENUM_VALUE_REQUIRED"), ("start_time", "TIME_INVALID"),
        ("within_organisation_id", "INVALID_ID"), ("page_size", "PAGE_SIZE_NEGATIVE")}
    assert refused.domain == "statistics.qiji" and "Traceback" not in refused.message
    export_refused = call_error(lambda: list(figures.stub.ExportFigures(
        pb.ExportFiguresRequest(measures=["riders_registered", "riders_registered"],
                                dimension=pb.DIMENSION_TRACK, **today_range()),
        metadata=figures.metadata, timeout=RPC_TIMEOUT)))
    assert export_refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {(f, r) for f, r, _ in export_refused.violations} == {
        ("measures[1]", "DUPLICATE_VALUE"), ("format", "ENUM_VALUE_REQUIRED"),
        ("dimension", "DIMENSION_NOT_APPLICABLE")}
    out = tmp_path / "refused.csv"
    done = qiji(statistics, "export", *addresses(statistics), "--measure", "nope",
                "--from", "2026-03-31", "--to", "2026-03-01", "-o", str(out),
                token=statistics.tokens["auditor"])
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--measure #1" in done.stderr and "--to" in done.stderr
    assert list(tmp_path.iterdir()) == []  # a refused export leaves no file, not even a part
    assert "Traceback" not in statistics.log_tail()


# ---------------------------------------------------------------------------- tenancy


def request_of(rpc: str, **fields: Any) -> Any:
    if rpc == "QueryFigures":
        return pb.QueryFiguresRequest(measure="riders_registered",
                                      dimension=pb.DIMENSION_STREET,
                                      **{**today_range(), **fields})
    if rpc == "ExportFigures":
        return pb.ExportFiguresRequest(measures=["riders_registered"],
                                       dimension=pb.DIMENSION_STREET,
                                       format=pb.EXPORT_FORMAT_CSV,
                                       **{**today_range(), **fields})
    return getattr(pb, f"{rpc}Request")()


def call(figures: Figures, rpc: str, request: Any) -> Any:
    if rpc == "ExportFigures":
        return list(figures.stub.ExportFigures(request, metadata=figures.metadata,
                                               timeout=RPC_TIMEOUT))
    return getattr(figures, rpc)(request)


@pytest.fixture(scope="module")
def other_city(identity: ServiceProcess, statistics: ServiceProcess, city: dict[str, Any]
               ) -> dict[str, Any]:
    """A second city of the same Qiji, with a street, a platform and a rider of its own."""
    other = create_city(identity.client("city_admin"))
    rider = new_rider(identity, type("City", (), other))
    figures = Figures(statistics, statistics.tokens["auditor"])
    eventually(lambda: by_street(figures).get(other["street"]) == "1",
               "the other city's rider counted")
    return {**other, "rider": rider}


def test_another_streets_office_sees_nothing_of_this_street(statistics, city, other_city):
    theirs = Figures(statistics, statistics.act_for(street_office=other_city["street"])[
        "street_office"])
    assert by_street(theirs) == {other_city["street"]: "1"}
    for rpc in ("QueryFigures", "ExportFigures"):
        refused = call_error(lambda rpc=rpc: call(theirs, rpc, request_of(
            rpc, within_organisation_id=city["street"])))
        assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                  "OUT_OF_SCOPE"), rpc
    _, data, _ = exported(theirs, **{f: v for f, v in [
        ("measures", ["riders_registered"]), ("dimension", pb.DIMENSION_STREET),
        ("format", pb.EXPORT_FORMAT_CSV)]}, **today_range())
    assert "荷花池" in data.decode("utf-8-sig")  # its own street shares the name...
    assert data.decode("utf-8-sig").count("\n") == 2  # ...and only its one row is there


def test_another_platform_sees_none_of_these_riders_figures(statistics, city, other_city):
    theirs = Figures(statistics, statistics.act_for(platform=other_city["platform"])[
        "platform"])
    by_platform = theirs.QueryFigures(pb.QueryFiguresRequest(
        measure="riders_registered", dimension=pb.DIMENSION_PLATFORM, **today_range()))
    assert {f.key: f.value for f in by_platform.figures} == {other_city["platform"]: "1"}
    assert city["street"] not in by_street(theirs)
    refused = call_error(lambda: theirs.QueryFigures(request_of(
        "QueryFigures", within_organisation_id=city["platform"])))
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE")


@pytest.mark.parametrize("rpc", RPCS)
def test_a_department_that_is_not_social_work_is_refused_over_the_wire(statistics, city, rpc):
    petitions = Figures(statistics, statistics.act_for(department=city["市信访局"])[
        "department"])
    refused = call_error(lambda: call(petitions, rpc, request_of(rpc)))
    assert (refused.code, refused.reason, refused.domain) == (
        grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE", "statistics.qiji")
    social_work = Figures(statistics, statistics.act_for(department=city["市委社会工作部"])[
        "department"])
    assert call(social_work, rpc, request_of(rpc)) is not None
    provider = Figures(statistics, statistics.act_for(education_provider=city["city"])[
        "education_provider"])
    assert call_error(lambda: call(provider, rpc, request_of(rpc))).reason == "ROLE_NOT_ALLOWED"


def test_the_process_stops_cleanly_on_sigterm_and_serves_the_same_figures_again(
        statistics, city):
    """The figures are in the store, not the process: a restart answers the same at once."""
    before = by_street(Figures(statistics, statistics.tokens["auditor"]))
    statistics.restart()  # asserts exit 0 within the stop timeout
    assert by_street(Figures(statistics, statistics.tokens["auditor"])) == before


@pytest.mark.parametrize("rpc", RPCS)
def test_no_token_and_an_unknown_token_are_unauthenticated_and_never_echoed(statistics, rpc):
    unknown = "qiji_not-a-token-anyone-was-given"
    for token in ("", unknown):
        caller = Figures(statistics, token)
        if not token:
            caller.metadata = []
        refused = call_error(lambda c=caller: call(c, rpc, request_of(rpc)))
        assert refused.code == grpc.StatusCode.UNAUTHENTICATED, rpc
        assert unknown not in refused.message
