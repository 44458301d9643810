"""站长+校长 over the wire: a session scheduled with its station master and teacher, shown in
GetSession, ListSessions and the transcript, and every fault of a pair in one answer. Through
the real guards, in one process (tests/inprocess.py), on both stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from qiji.training.v1 import training_service_pb2 as tpb

from services.identity.domain.values import Amenity
from tests.city import build_city, in_application
from tests.conftest import actor, as_actor, badges_key_env
from tests.inprocess import InProcessQiji

ADMIN = actor("city", "city_admin")


def ts(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def rid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def world(store_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    q = InProcessQiji({**store_env, **badges_key_env()}, tmp_path / "tokens.json")
    identity = q.apps["identity"]
    city = build_city(in_application(identity), also=("provider",))
    street, platform = city.street, city.platform
    other = city.add("other", "PLATFORM", "别家外卖")
    with as_actor(ADMIN):
        w = {"q": q, "street": street, "platform": platform, "station": city.station,
             "university": city.provider,
             "space": identity.create_service_space(  # type: ignore[attr-defined]
                 street_id=street, name="荷花池驿站", address="北大街 1 号",
                 amenities=[Amenity.REST], opening_hours=[])["service_space_id"]}
    q.sync()
    w["tokens"] = {"platform": q.token("pair-platform", "platform", organisation_id=platform),
                   "other": q.token("pair-other", "platform", organisation_id=other),
                   "auditor": q.token("pair-auditor", "auditor")}
    # The platform's station course, taught 站长+校长.
    course = q.ok("training", "DraftCourse", tpb.DraftCourseRequest(
        request_id=rid(), track=tpb.TRACK_SKILLS, title="站长+校长：配送实操", hours="2",
        formats=[tpb.COURSE_FORMAT_PAIRED_TEACHING, tpb.COURSE_FORMAT_HANDS_ON_PRACTICE],
        provider_id=w["station"], instructor=tpb.Instructor(
            name="刘站长", kind=tpb.INSTRUCTOR_KIND_STATION_MASTER)),
        w["tokens"]["platform"]).course
    assert list(course.formats) == [tpb.COURSE_FORMAT_HANDS_ON_PRACTICE,
                                    tpb.COURSE_FORMAT_PAIRED_TEACHING]
    q.ok("training", "PublishCourse", tpb.PublishCourseRequest(
        request_id=rid(), course_id=course.course_id), w["tokens"]["platform"])
    w["course"] = course.course_id
    yield w
    q.close()


def schedule(w: dict[str, Any], pair: tpb.TeachingPair | None, **fields: Any
             ) -> tpb.ScheduleSessionRequest:
    starts = datetime.now(UTC) + timedelta(days=1)
    request = tpb.ScheduleSessionRequest(
        request_id=rid(), course_id=w["course"], service_space_id=w["space"],
        start_time=ts(starts), end_time=ts(starts + timedelta(hours=2)),
        **{"capacity": 10, **fields})
    if pair is not None:
        request.pair.CopyFrom(pair)
    return request


def the_pair(w: dict[str, Any]) -> tpb.TeachingPair:
    return tpb.TeachingPair(
        station_master=tpb.StationMaster(station_id=w["station"], name="刘站长"),
        teacher=tpb.Teacher(provider_id=w["university"], name="陈老师"))


def test_a_session_taught_by_a_station_master_and_a_teacher_shows_both(world):
    q, tokens = world["q"], world["tokens"]
    session = q.ok("training", "ScheduleSession", schedule(world, the_pair(world)),
                   tokens["platform"]).session
    assert session.pair == the_pair(world)
    # The schedule is public: any reader sees who teaches.
    got = q.ok("training", "GetSession", tpb.GetSessionRequest(
        session_id=session.session_id), tokens["other"]).session
    assert got.pair == the_pair(world)
    listed = q.ok("training", "ListSessions", tpb.ListSessionsRequest(
        course_id=world["course"]), tokens["auditor"]).sessions
    assert [s.pair for s in listed] == [the_pair(world)]


def test_a_pair_with_faults_is_refused_with_every_fault_and_nothing_written(world):
    q, tokens = world["q"], world["tokens"]
    before = q.positions()["training"]
    lone = tpb.TeachingPair(station_master=tpb.StationMaster(station_id="x", name=" "))
    answer = q.call("training", "ScheduleSession", schedule(world, lone, capacity=0),
                    tokens["platform"])
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(answer.fields) == {"pair.teacher", "pair.station_master.station_id",
                                  "pair.station_master.name", "capacity"}
    missing = q.call("training", "ScheduleSession", schedule(world, None), tokens["platform"])
    assert (missing.code, missing.reason, set(missing.fields)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "TEACHING_PAIR_INCOMPLETE",
        {"pair.station_master", "pair.teacher"})
    assert q.positions()["training"] == before


def test_only_who_may_schedule_the_session_names_its_pair(world):
    """The pair is part of the schedule: another platform may not schedule this platform's
    course, pair or not."""
    q, tokens = world["q"], world["tokens"]
    answer = q.call("training", "ScheduleSession", schedule(world, the_pair(world)),
                    tokens["other"])
    assert (answer.code, answer.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE")


def test_a_new_rider_passes_a_paired_pre_job_course_and_the_transcript_names_the_pair(world):
    """Before the platform verifies them: pre-job training comes first."""
    q, tokens = world["q"], world["tokens"]
    admin = q.token("pair-admin", "city_admin")
    q.ok("training", "SetPreJobCourses", tpb.SetPreJobCoursesRequest(
        request_id=rid(), course_ids=[world["course"]]), admin)
    with as_actor(actor("pair-platform", "platform", organisation_id=world["platform"])):
        rider = q.apps["identity"].register_rider(  # type: ignore[attr-defined]
            platform_id=world["platform"], platform_rider_id="N1", name="新骑手",
            phone="13812345678", national_id="", home_street_id=world["street"],
            station_id=world["station"])["rider_id"]
    session = q.ok("training", "ScheduleSession", schedule(world, the_pair(world)),
                   tokens["platform"]).session
    q.ok("training", "EnrolRider", tpb.EnrolRiderRequest(
        request_id=rid(), session_id=session.session_id, rider_id=rider), tokens["platform"])
    training = q.apps["training"]
    real_clock = training.clock  # type: ignore[attr-defined]
    # The session is tomorrow: check-in and the result as training's clock would see them then.
    training.clock = lambda: session.start_time.ToDatetime(UTC)  # type: ignore[attr-defined]
    try:
        for request in (tpb.CheckInRiderRequest(request_id=rid(), rider_id=rider,
                                                session_id=session.session_id),
                        tpb.RecordCompletionRequest(request_id=rid(), rider_id=rider,
                                                    session_id=session.session_id,
                                                    result=tpb.COMPLETION_RESULT_PASSED)):
            q.ok("training", type(request).__name__.removesuffix("Request"), request,
                 tokens["platform"])
    finally:
        training.clock = real_clock  # type: ignore[attr-defined]
    transcript = q.ok("training", "GetTranscript", tpb.GetTranscriptRequest(rider_id=rider),
                      tokens["platform"])
    assert transcript.pre_job_certified
    assert [c.pair for c in transcript.completions] == [the_pair(world)]
