"""A rider's own record (identity's GetRiderRecord) as their platform's app reads it: the whole
of what five services did with the rider in one answer, kept current from the services' feeds,
for the rider's platform and nobody else's — on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from qiji.badges.v1 import badges_service_pb2 as bpb
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.training.v1 import training_service_pb2 as tpb

from services.identity.rider_record import RiderRecords
from services.merchants.events import CLAIM_ISSUED
from services.training.domain.model import TrainingSession
from shared.followers import LocalFeed
from shared.integrity import ALARM
from tests.fakes import FailedCall
from tests.integration.test_tenancy import a_world
from tests.tenancy_world import World, rid


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def world(store: str, request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from a_world(store, request, tmp_path_factory)


def record_of(w: World, rider_id: str, token: str) -> Any:
    return w.qiji.ok("identity", "GetRiderRecord",
                     ipb.GetRiderRecordRequest(rider_id=rider_id), token).record


class TestWhatAPlatformReadsOfItsOwnRider:
    def test_the_whole_record_comes_in_one_answer(self, world: World) -> None:
        a = world.tenants["a"]
        record = record_of(world, a.rider, a.tokens["platform"])

        assert record.rider.rider_id == a.rider
        assert record.rider.status == ipb.RIDER_STATUS_ACTIVE
        # training: both sessions the platform enrolled the rider in, with the course's title
        sessions = {s.session_id: s for s in record.sessions}
        assert set(sessions) == {a.session, a.session_by_platform}
        assert sessions[a.session].course_title == "安全骑行a"
        assert sessions[a.session].status == tpb.ENROLMENT_STATUS_ENROLLED
        assert sessions[a.session].track == tpb.TRACK_SKILLS
        assert sessions[a.session].service_space_id == a.space
        # perks: the open claim shows the very code ClaimPerk gave; the redeemed one none
        claims = {c.claim_id: c for c in record.claims}
        assert claims[a.claim].status == mpb.CLAIM_STATUS_ISSUED
        assert claims[a.claim].code == a.code
        assert claims[a.claim].perk_title == "免费饮水a"
        assert claims[a.claim].merchant_name == "面馆a"
        assert claims[a.claim_redeemed].status == mpb.CLAIM_STATUS_REDEEMED
        assert claims[a.claim_redeemed].code == ""
        assert claims[a.claim_redeemed].HasField("redeem_time")
        # care package, volunteer service, badge
        [package] = record.care_packages
        assert (package.campaign_id, package.campaign_name) == (a.campaign, "关爱礼包a")
        assert not package.HasField("hand_over_time")
        [shift] = record.volunteer_shifts
        assert (shift.shift_id, shift.hours, shift.status) == (a.shift, "2",
                                                              bpb.SHIFT_STATUS_LOGGED)
        assert record.confirmed_volunteer_hours == "0"
        [award] = record.awards
        assert (award.award_id, award.badge_name, award.status) == (
            a.award, "金蜂骑士", bpb.AWARD_STATUS_ACTIVE)
        # the report: where it went, and never its text
        [report] = record.reports
        assert report.report_id == a.report
        assert report.kind == gpb.REPORT_KIND_ANOMALY_WARNING
        assert report.status == gpb.REPORT_STATUS_OPEN
        [assignment] = report.assignments
        assert (assignment.department_id, assignment.department_name, assignment.status) == (
            a.department, "社会工作部A", gpb.ASSIGNMENT_STATUS_ROUTED)
        assert "井盖" not in str(record)
        # every part is current
        assert {(s.service, s.current) for s in record.sources} == {
            ("training", True), ("merchants", True), ("badges", True), ("governance", True)}

    def test_nothing_of_the_other_tenants_rider_is_in_it(self, world: World) -> None:
        a, b = world.tenants["a"], world.tenants["b"]
        text = str(record_of(world, a.rider, a.tokens["platform"]))
        for secret in b.secrets:
            assert secret not in text

    def test_another_platform_learns_nothing_not_even_that_the_rider_exists(
            self, world: World) -> None:
        a, b = world.tenants["a"], world.tenants["b"]
        theirs = world.qiji.call("identity", "GetRiderRecord",
                                 ipb.GetRiderRecordRequest(rider_id=a.rider), b.tokens["platform"])
        nobody = world.qiji.call("identity", "GetRiderRecord",
                                 ipb.GetRiderRecordRequest(rider_id=str(uuid.uuid4())),
                                 b.tokens["platform"])
        assert theirs.code is nobody.code is grpc.StatusCode.PERMISSION_DENIED
        assert theirs.reason == nobody.reason == "OUT_OF_SCOPE"
        assert theirs.message.replace(a.rider, "ID") == nobody.message.replace(
            nobody.message.split()[-1], "ID") or theirs.message == nobody.message

    def test_the_street_office_and_the_city_read_it_a_merchant_does_not(
            self, world: World) -> None:
        a = world.tenants["a"]
        assert record_of(world, a.rider, a.tokens["street_office"]).rider.rider_id == a.rider
        assert record_of(world, a.rider, world.admin).rider.rider_id == a.rider
        # The auditor reads it too, without the rider's codes (a bearer secret)
        audited = record_of(world, a.rider, world.auditor)
        assert a.claim in {c.claim_id for c in audited.claims}
        assert {c.code for c in audited.claims} == {""}
        refused = world.qiji.call("identity", "GetRiderRecord",
                                  ipb.GetRiderRecordRequest(rider_id=a.rider),
                                  a.tokens["merchant"])
        assert refused.code is grpc.StatusCode.PERMISSION_DENIED

    def test_a_malformed_rider_id_is_a_field_violation(self, world: World) -> None:
        a = world.tenants["a"]
        answer = world.qiji.call("identity", "GetRiderRecord",
                                 ipb.GetRiderRecordRequest(rider_id="not-a-uuid"), world.admin)
        assert answer.code is grpc.StatusCode.INVALID_ARGUMENT
        assert answer.fields == ["rider_id"]
        missing = world.qiji.call("identity", "GetRiderRecord",
                                  ipb.GetRiderRecordRequest(rider_id=""), a.tokens["platform"])
        assert missing.code is grpc.StatusCode.INVALID_ARGUMENT


class TestTheRecordFollowsWhatHappens:
    """Each step is taken by its own caller in its own service; the next read shows it, with no
    waiting: the record catches up before it answers."""

    def test_a_report_resolved_and_verified_shows_its_outcome(self, world: World) -> None:
        b = world.tenants["b"]
        ok = world.qiji.ok
        dept = b.tokens["department"]
        for method, request in (
                ("AcknowledgeAssignment", gpb.AcknowledgeAssignmentRequest),
                ("StartAssignmentWork", gpb.StartAssignmentWorkRequest)):
            ok("governance", method, request(request_id=rid(), report_id=b.report,
                                              department_id=b.department), dept)
        mid = record_of(world, b.rider, b.tokens["platform"])
        assert mid.reports[0].assignments[0].status == gpb.ASSIGNMENT_STATUS_IN_PROGRESS
        ok("governance", "ResolveAssignment", gpb.ResolveAssignmentRequest(
            request_id=rid(), report_id=b.report, department_id=b.department,
            resolution="井盖已补"), dept)
        ok("governance", "VerifyReport", gpb.VerifyReportRequest(
            request_id=rid(), report_id=b.report, note="核实"), b.tokens["street_office"])
        [report] = record_of(world, b.rider, b.tokens["platform"]).reports
        assert report.status == gpb.REPORT_STATUS_VERIFIED
        assert report.HasField("close_time") and report.HasField("verify_time")
        assert report.assignments[0].status == gpb.ASSIGNMENT_STATUS_RESOLVED
        assert "井盖已补" not in str(report)  # the resolution's words are governance's

    def test_a_redeemed_code_leaves_the_record_and_a_confirmed_shift_counts(
            self, world: World) -> None:
        b = world.tenants["b"]
        ok = world.qiji.ok
        ok("merchants", "RedeemCode", mpb.RedeemCodeRequest(
            request_id=rid(), merchant_id=b.merchant, code=b.code), b.tokens["merchant"])
        ok("badges", "ConfirmVolunteerService", bpb.ConfirmVolunteerServiceRequest(
            request_id=rid(), shift_id=b.shift), b.tokens["community"])
        ok("merchants", "RecordHandOver", mpb.RecordHandOverRequest(
            request_id=rid(), campaign_id=b.campaign, rider_id=b.rider,
            handed_over_by="社工小王"), b.tokens["street_office"])
        record = record_of(world, b.rider, b.tokens["platform"])
        claim = next(c for c in record.claims if c.claim_id == b.claim)
        assert (claim.status, claim.code) == (mpb.CLAIM_STATUS_REDEEMED, "")
        assert record.volunteer_shifts[0].status == bpb.SHIFT_STATUS_CONFIRMED
        assert record.confirmed_volunteer_hours == "2"
        assert record.care_packages[0].HasField("hand_over_time")
        assert "社工小王" not in str(record)

    def test_a_session_taught_by_a_station_master_and_a_teacher_names_both(
            self, world: World) -> None:
        """站长+校长: the pair training scheduled the session with is on the rider's record."""
        b = world.tenants["b"]
        starts = datetime.now(UTC) + timedelta(days=5)
        pair = tpb.TeachingPair(
            station_master=tpb.StationMaster(station_id=b.station, name="刘站长"),
            teacher=tpb.Teacher(provider_id=b.provider, name="陈老师"))
        start, end = Timestamp(), Timestamp()
        start.FromDatetime(starts)
        end.FromDatetime(starts + timedelta(hours=1))
        session = world.qiji.ok("training", "ScheduleSession", tpb.ScheduleSessionRequest(
            request_id=rid(), course_id=b.course, service_space_id=b.space, start_time=start,
            end_time=end, capacity=5, pair=pair), b.tokens["education_provider"]).session
        world.qiji.ok("training", "EnrolRider", tpb.EnrolRiderRequest(
            request_id=rid(), session_id=session.session_id, rider_id=b.rider),
            b.tokens["platform"])
        sessions = {s.session_id: s for s in record_of(world, b.rider,
                                                         b.tokens["platform"]).sessions}
        assert sessions[session.session_id].pair == pair
        assert not sessions[b.session].HasField("pair")  # a session naming nobody

    def test_a_completed_course_is_on_the_transcript_with_its_hours(self, world: World) -> None:
        b = world.tenants["b"]
        qiji = world.qiji
        training = qiji.apps["training"]
        # The session is tomorrow: the completion is recorded as training's clock would see
        # it then (the world's sessions lie in the future).
        session = training.get(b.session, TrainingSession, "session")
        then = session.starts_at + timedelta(minutes=5)
        real_clock = training.clock  # type: ignore[attr-defined]
        training.clock = lambda: then  # type: ignore[attr-defined]
        try:
            qiji.ok("training", "CheckInRider", tpb.CheckInRiderRequest(
                request_id=rid(), session_id=b.session, rider_id=b.rider),
                b.tokens["education_provider"])
            qiji.ok("training", "RecordCompletion", tpb.RecordCompletionRequest(
                request_id=rid(), session_id=b.session, rider_id=b.rider,
                result=tpb.COMPLETION_RESULT_PASSED, score=90), b.tokens["education_provider"])
        finally:
            training.clock = real_clock  # type: ignore[attr-defined]
        qiji.sync()  # the learner's CourseCompleted is training's reaction to the session's
        record = record_of(world, b.rider, b.tokens["platform"])
        [completion] = record.completions
        assert (completion.course_title, completion.hours, completion.score) == (
            "安全骑行b", "2", 90)
        assert [(h.track, h.hours) for h in record.hours_by_track] == [(tpb.TRACK_SKILLS, "2")]
        session_entry = next(s for s in record.sessions if s.session_id == b.session)
        assert session_entry.status == tpb.ENROLMENT_STATUS_PASSED


class Down:
    """A feed whose service cannot be reached."""

    name = "governance"
    failure = None
    last_position = 0

    def read(self, *_: Any) -> list[Any]:
        raise FailedCall(grpc.StatusCode.UNAVAILABLE, "down")

    def wait(self, timeout: float) -> None:
        pass


class TestWhenAServiceIsAway:
    def test_the_rest_of_the_record_is_answered_and_the_missing_part_said(
            self, world: World) -> None:
        a = world.tenants["a"]
        qiji = world.qiji
        identity = qiji.apps["identity"]
        kept = identity.records  # type: ignore[attr-defined]
        feeds: dict[str, Any] = {name: LocalFeed(qiji.apps[name])
                                 for name in ("training", "merchants", "badges")}
        feeds["governance"] = Down()
        identity.records = RiderRecords(  # type: ignore[attr-defined]
            feeds, check_mac=identity.event_mac.check, master_key=identity.master_key,
            clock=identity.clock)  # type: ignore[attr-defined]
        try:
            record = record_of(world, a.rider, a.tokens["platform"])
        finally:
            identity.records = kept  # type: ignore[attr-defined]
        sources = {s.service: s for s in record.sources}
        assert not sources["governance"].current
        assert sources["governance"].problem == "UNAVAILABLE"
        assert sources["merchants"].current and len(record.claims) == 2
        assert list(record.reports) == []


class TestATamperedEvent:
    def test_stops_that_services_part_of_the_record_and_raises_the_alarm(
            self, world: World, store: str) -> None:
        """An administrator edits a claim's stored event (the merchant moved to theirs): the
        record does not show it, nor anything after it, and says why."""
        a = world.tenants["a"]
        qiji = world.qiji
        merchants = qiji.apps["merchants"]
        identity = qiji.apps["identity"]
        issued = next(e for e in LocalFeed(merchants).read(1, 10_000, [CLAIM_ISSUED])
                      if str(e.originator_id) == a.claim)
        schema = merchants.settings.postgres_schema  # type: ignore[attr-defined]
        table = f'"{schema}".merchants_events' if store == "postgres" else "stored_events"
        mark = "%s" if store == "postgres" else "?"
        position = "notification_id" if store == "postgres" else "rowid"
        datastore = merchants.recorder.datastore  # type: ignore[attr-defined]

        def store_state(state: bytes) -> None:
            with datastore.transaction(commit=True) as curs:
                curs.execute(f"UPDATE {table} SET state = {mark} WHERE {position} = {mark}",
                             (state, issued.position))
        genuine = issued.stored_state
        store_state(genuine[:20] + bytes([genuine[20] ^ 1]) + genuine[21:])
        fresh = RiderRecords({n: LocalFeed(qiji.apps[n]) for n in
                              ("training", "merchants", "badges", "governance")},
                             check_mac=identity.event_mac.check,
                             master_key=identity.master_key,
                             clock=identity.clock)  # type: ignore[attr-defined]
        kept = identity.records  # type: ignore[attr-defined]
        identity.records = fresh  # type: ignore[attr-defined]
        try:
            record = record_of(world, a.rider, a.tokens["platform"])
        finally:
            identity.records = kept  # type: ignore[attr-defined]
            store_state(genuine)
            ALARM.intact("merchants", "identity.rider-records")
        merchants_part = next(s for s in record.sources if s.service == "merchants")
        assert not merchants_part.current
        assert merchants_part.stopped_at > 0
        assert "integrity" in merchants_part.problem or "MAC" in merchants_part.problem
        assert a.claim not in {c.claim_id for c in record.claims}
        # the other services' parts are still there
        assert record.awards and record.reports

