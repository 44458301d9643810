"""The figures' gRPC face in one process, behind its real guard and tokens file, over the read
model of real in-process services (tests/integration/test_statistics_app.py's city), on both
stores: what QueryFigures answers is the read model's figures, exact; an export is the same
figures as a file; a request with faults is refused with every fault at once and nothing else;
and every RPC, tried with a second tenant's token, shows that tenant nothing of the first's —
another street's office, another platform, a department that is not social work, a caller with
no figures at all. The wire itself (the process, its health, the CLI) is
tests/e2e/test_statistics_grpc.py's."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import openpyxl
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from qiji.statistics.v1 import statistics_service_pb2 as pb

from services.statistics.domain.catalogue import measures as measures_by_name
from services.statistics.domain.periods import city_day, day_start
from services.training.domain.values import Track
from shared.auth import add_caller
from tests.inprocess import Answer, Figures
from tests.integration.test_statistics_app import (  # noqa: F401 - the city is a fixture
    city,
    course,
    held_session,
    rider,
)

RPCS = ("ListMeasures", "QueryFigures", "ExportFigures", "GetFreshness")


class Face(Figures):
    """The figures' servicer behind its guard, on a tokens file of the test's own."""

    def token(self, role: str, organisation_id: str = "") -> str:
        return add_caller(self.tokens_file, f"stats-{role}-{organisation_id[:8]}", [role],
                          organisation_id)


def ts(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def around_today(**fields: Any) -> dict[str, Any]:
    """Yesterday to two days on, in the city's days, as one period."""
    today = city_day(datetime.now(UTC))
    return {"granularity": pb.GRANULARITY_WHOLE_RANGE,
            "start_time": ts(day_start(today - timedelta(days=1))),
            "end_time": ts(day_start(today + timedelta(days=2))), **fields}


def by_label(answer: Answer) -> dict[str, str]:
    assert answer.ok, answer
    return {f.key_label: f.value for f in answer.response.figures}


@pytest.fixture
def world(city: dict[str, Any], tmp_path: Path  # noqa: F811 - the imported fixture
          ) -> Iterator[dict[str, Any]]:
    """The city with three riders of 荷花池街道 (骑迹外卖's; two verified) and one of 红梅街道
    (别家外卖's), a civic session of 1.5 hours at 荷花池街道's space that the two verified
    passed, the figures caught up, and the face over them."""
    w = city
    a, b = rider(w), rider(w)
    rider(w, verify=False)
    rider(w, street="红梅街道", platform="别家外卖", station="红梅站")
    held_session(w, course(w, Track.CIVIC_EDUCATION, "1.5"), "荷花池街道", [a, b],
                 passed=[a, b])
    w["stats"].catch_up()
    w["face"] = Face(w["stats"], tmp_path / "face-tokens.json")
    w["admin"] = w["face"].token("city_admin")
    yield w


def exported(answer: Answer) -> tuple[Any, bytes, list[Any]]:
    """(ExportStarted, the file, the progress messages) of an export's messages."""
    assert answer.ok, answer
    messages = answer.response
    assert messages[0].WhichOneof("part") == "started"
    data = b"".join(m.chunk for m in messages if m.WhichOneof("part") == "chunk")
    progress = [m.progress for m in messages if m.WhichOneof("part") == "progress"]
    return messages[0].started, data, progress


# ---------------------------------------------------------------------------- answers


def test_figures_over_the_face_are_the_read_models_exact(world):
    face, admin = world["face"], world["admin"]
    measures = face.call("ListMeasures", pb.ListMeasuresRequest(), admin).response.measures
    hours = next(m for m in measures if m.name == "training_hours")
    assert (hours.unit, hours.service) == ("学时", "training")
    assert pb.DIMENSION_CITY in hours.dimensions and hours.label
    # The developers' definition and the officials' (口径说明), each as the catalogue says it.
    assert hours.description == measures_by_name()["training_hours"].description
    assert hours.explanation == measures_by_name()["training_hours"].explanation
    answer = face.call("QueryFigures", pb.QueryFiguresRequest(
        measure="training_hours", dimension=pb.DIMENSION_STREET, **around_today()), admin)
    assert by_label(answer) == {"荷花池街道": "3"}  # two riders, 1.5 hours each
    assert answer.response.measure.name == "training_hours"
    assert {p.service for p in answer.response.positions} >= {"identity", "training"}
    [figure] = answer.response.figures
    assert figure.key == world["荷花池街道"] and figure.current_value == ""
    assert figure.period_start.ToDatetime(tzinfo=UTC) < figure.period_end.ToDatetime(tzinfo=UTC)
    registered = face.call("QueryFigures", pb.QueryFiguresRequest(
        measure="riders_registered", dimension=pb.DIMENSION_PLATFORM, **around_today()), admin)
    assert by_label(registered) == {"骑迹外卖": "3", "别家外卖": "1"}
    fresh = face.call("GetFreshness", pb.GetFreshnessRequest(), admin).response.positions
    assert {p.service for p in fresh} >= {"identity", "training"}
    assert all(p.position <= p.last_position or not p.last_position for p in fresh)


def test_figures_as_of_a_moment_carry_todays_value_beside_them(world):
    face, admin = world["face"], world["admin"]
    before = datetime.now(UTC)
    rider(world)
    world["stats"].catch_up()
    answer = face.call("QueryFigures", pb.QueryFiguresRequest(
        measure="riders_registered", dimension=pb.DIMENSION_STREET,
        as_of_time=ts(before), **around_today()), admin)
    assert answer.ok, answer
    rows = {f.key_label: (f.value, f.current_value) for f in answer.response.figures}
    assert rows["荷花池街道"] == ("3", "4")
    assert answer.response.as_of_time.ToDatetime(tzinfo=UTC) == before


def test_an_export_is_the_same_figures_as_a_csv_and_as_an_xlsx(world):
    face, admin = world["face"], world["admin"]
    request = dict(measures=["riders_registered", "training_hours"],
                   dimension=pb.DIMENSION_STREET, **around_today())
    started, data, progress = exported(face.call("ExportFigures", pb.ExportFiguresRequest(
        format=pb.EXPORT_FORMAT_CSV, **request), admin))
    assert started.file_name.endswith(".csv") and started.media_type.startswith("text/csv")
    assert started.rows_total == 3 and progress[-1].rows_written == 3
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == ["指标", "单位", "期间", "期间开始", "期间结束", "街道", "数值"]
    assert {(r[0], r[5], r[6]) for r in rows[1:]} == {("注册骑手", "荷花池街道", "3"),
                                                      ("注册骑手", "红梅街道", "1"),
                                                      ("培训学时", "荷花池街道", "3")}
    started, data, _ = exported(face.call("ExportFigures", pb.ExportFiguresRequest(
        format=pb.EXPORT_FORMAT_XLSX, **request), admin))
    assert started.file_name.endswith(".xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][-1] == "数值" and len(values) == 4
    assert {(r[0], r[5], r[6]) for r in values[1:]} == {
        ("注册骑手", "荷花池街道", 3), ("注册骑手", "红梅街道", 1), ("培训学时", "荷花池街道", 3)}


def test_an_export_as_of_a_moment_shows_then_now_and_the_correction(world):
    face, admin = world["face"], world["admin"]
    before = datetime.now(UTC)
    rider(world)
    world["stats"].catch_up()
    started, data, _ = exported(face.call("ExportFigures", pb.ExportFiguresRequest(
        measures=["riders_registered"], dimension=pb.DIMENSION_STREET,
        format=pb.EXPORT_FORMAT_CSV, as_of_time=ts(before), **around_today()), admin))
    assert "-asof-" in started.file_name
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0][-3:] == ["当时数值", "现值", "更正"]
    assert ["荷花池街道", "3", "4", "1"] in [r[5:] for r in rows[1:]]


# ---------------------------------------------------------------------------- bad input


def test_a_query_with_faults_is_refused_with_every_fault_and_nothing_else(world):
    face, admin = world["face"], world["admin"]
    bad_time = Timestamp(seconds=-62_200_000_000)  # before the year 1
    answer = face.call("QueryFigures", pb.QueryFiguresRequest(
        measure="no_such_measure", dimension=99, granularity=pb.GRANULARITY_UNSPECIFIED,
        start_time=bad_time, within_organisation_id="not-an-id", page_size=-1), admin)
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(answer.fields) == {"measure", "dimension", "granularity", "start_time",
                                  "end_time", "within_organisation_id", "page_size"}
    assert len(answer.fields) == len(set(answer.fields))  # each field spoken of once
    assert "Traceback" not in answer.message
    range_wrong = face.call("QueryFigures", pb.QueryFiguresRequest(
        measure="riders_registered", dimension=pb.DIMENSION_TRACK, **around_today(
            granularity=pb.GRANULARITY_DAY, start_time=ts(datetime(2020, 1, 1, tzinfo=UTC)))),
        admin)
    assert range_wrong.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(range_wrong.fields) == {"dimension", "end_time"}


def test_an_export_with_faults_is_refused_before_its_first_message(world):
    face, admin = world["face"], world["admin"]
    answer = face.call("ExportFigures", pb.ExportFiguresRequest(
        measures=["riders_registered", "", "no_such_measure", "riders_registered"],
        dimension=pb.DIMENSION_STREET, **around_today()), admin)
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(answer.fields) == {"measures[1]", "measures[2]", "measures[3]", "format"}
    nothing = face.call("ExportFigures", pb.ExportFiguresRequest(
        format=pb.EXPORT_FORMAT_CSV, dimension=pb.DIMENSION_STREET), admin)
    assert set(nothing.fields) == {"measures", "granularity", "start_time", "end_time"}
    unknown_place = face.call("ExportFigures", pb.ExportFiguresRequest(
        measures=["riders_registered"], dimension=pb.DIMENSION_STREET,
        format=pb.EXPORT_FORMAT_XLSX,
        within_organisation_id="00000000-0000-4000-8000-000000000000", **around_today()), admin)
    assert (unknown_place.code, unknown_place.reason) == (grpc.StatusCode.NOT_FOUND,
                                                          "ORGANISATION_NOT_FOUND")


# ---------------------------------------------------------------------------- tenancy


def request_of(rpc: str, **fields: Any) -> Any:
    """A valid request of each RPC over the whole city, by street (plus `fields`)."""
    if rpc == "QueryFigures":
        return pb.QueryFiguresRequest(measure="riders_registered",
                                      dimension=pb.DIMENSION_STREET, **around_today(**fields))
    if rpc == "ExportFigures":
        return pb.ExportFiguresRequest(measures=["riders_registered"],
                                       dimension=pb.DIMENSION_STREET,
                                       format=pb.EXPORT_FORMAT_CSV, **around_today(**fields))
    return getattr(pb, f"{rpc}Request")()


def streets_seen(face: Any, token: str) -> dict[str, str]:
    """What a caller's query and export of riders by street show: street -> value."""
    queried = by_label(face.call("QueryFigures", request_of("QueryFigures"), token))
    _, data, _ = exported(face.call("ExportFigures", request_of("ExportFigures"), token))
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))[1:]
    assert {r[5]: r[6] for r in rows} == queried
    return queried


def test_another_streets_office_sees_nothing_of_this_street(world):
    face = world["face"]
    theirs = face.token("street_office", world["红梅街道"])
    ours = face.token("street_office", world["荷花池街道"])
    assert streets_seen(face, ours) == {"荷花池街道": "3"}
    assert streets_seen(face, theirs) == {"红梅街道": "1"}
    for rpc in ("QueryFigures", "ExportFigures"):
        into_ours = face.call(rpc, request_of(rpc, within_organisation_id=world["荷花池街道"]),
                              theirs)
        assert (into_ours.code, into_ours.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                      "OUT_OF_SCOPE"), rpc
        assert "荷花池" not in into_ours.message


def test_another_platform_sees_none_of_these_riders_figures(world):
    face = world["face"]
    other = face.token("platform", world["别家外卖"])
    mine = face.token("platform", world["骑迹外卖"])
    assert streets_seen(face, mine) == {"荷花池街道": "3"}
    assert streets_seen(face, other) == {"红梅街道": "1"}
    hours = face.call("QueryFigures", pb.QueryFiguresRequest(
        measure="training_hours", dimension=pb.DIMENSION_CITY, **around_today()), other)
    assert [f.value for f in hours.response.figures] in ([], ["0"])
    for rpc in ("QueryFigures", "ExportFigures"):
        into_mine = face.call(rpc, request_of(rpc, within_organisation_id=world["骑迹外卖"]),
                              other)
        assert (into_mine.code, into_mine.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                      "OUT_OF_SCOPE"), rpc


@pytest.mark.parametrize("rpc", RPCS)
def test_a_department_that_is_not_social_work_is_refused_every_rpc(world, rpc):
    face = world["face"]
    petitions = face.token("department", world["市信访局"])
    refused = face.call(rpc, request_of(rpc), petitions)
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE")
    social_work = face.token("department", world["市委社会工作部"])
    assert face.call(rpc, request_of(rpc), social_work).ok


@pytest.mark.parametrize("rpc", RPCS)
def test_callers_with_no_figures_are_refused_every_rpc(world, rpc):
    face = world["face"]
    provider = face.token("education_provider", world["江苏理工学院"])
    refused = face.call(rpc, request_of(rpc), provider)
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                              "ROLE_NOT_ALLOWED")
    reader = face.token("public_reader")
    assert face.call(rpc, request_of(rpc), reader).reason == "ROLE_NOT_ALLOWED"
    assert face.call(rpc, request_of(rpc), "").code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("rpc", RPCS)
def test_a_community_and_a_merchant_are_admitted_to_their_own_part_alone(world, rpc):
    """Riders are registered by their home street, in no community and at no merchant: a
    community and a merchant are admitted, and see none of those figures."""
    face = world["face"]
    for role, organisation in (("community", world["北大街社区"]),
                               ("merchant", "0d6c2f3e-6a51-4a8e-9a0e-5b3c0f2d7e11")):
        answer = face.call(rpc, request_of(rpc), face.token(role, organisation))
        assert answer.ok, (role, answer)
        if rpc == "QueryFigures":
            assert by_label(answer) == {}, role


def test_concurrent_exports_each_get_their_own_whole_file(world):
    face, admin = world["face"], world["admin"]
    files: list[bytes] = []

    def one() -> None:
        files.append(exported(face.call("ExportFigures", request_of("ExportFigures"),
                                        admin))[1])

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(files) == 4 and len(set(files)) == 1
