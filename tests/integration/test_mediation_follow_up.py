"""After a mediation agreement (调处): the street office follows it up — kept, partly kept or
broken — on the day the city's rule makes it due, a broken agreement reopens the case, and the
statistics per street and period count what happened; on SQLite and PostgreSQL, and over the
wire with the other tenant's token."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest
from qiji.governance.v1 import governance_service_pb2 as gpb

from services.governance.application import Party, SessionInput
from services.governance.domain.values import FollowUpResult, MediationStatus, PartyRole
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.values import city_day
from tests.conftest import actor, as_actor

# governance's world (a city, two streets, riders) and its clock, under names of this module's
# own: the imported fixtures provide them.
from tests.integration.test_governance_app import clock, new_rider, world  # noqa: F401
from tests.integration.test_tenancy import a_world
from tests.tenancy_world import World, rid, ts

ADMIN = actor("city", "city_admin")


@pytest.fixture
def city(world):  # noqa: F811
    return world


@pytest.fixture
def city_clock(clock):  # noqa: F811
    return clock

KEPT, PARTLY, BROKEN = (FollowUpResult.KEPT, FollowUpResult.PARTLY_KEPT,
                        FollowUpResult.BROKEN)


def office(w, street: str = "street"):
    return actor(f"office-{street}", "street_office", organisation_id=w[street])


def agreed_case(w, city_clock, street: str = "street") -> str:
    g = w["governance"]
    with as_actor(office(w, street)):
        case_id = g.open_mediation_case(
            street_id=w[street], report_id="", subject="小区禁止骑手进入", mediator_name="李调解员",
            parties=[Party(PartyRole.RIDER, rider_id=new_rider(w)),
                     Party(PartyRole.PROPERTY_MANAGER, name="张经理")])["case_id"]
        city_clock.now += timedelta(days=2)
        g.record_mediation_session(case_id=case_id, session=SessionInput(
            held_at=city_clock.now, place="荷花池驿站"))
        city_clock.now += timedelta(days=1)
        g.record_mediation_agreement(case_id=case_id, outcome="物业开放骑手通道")
    return case_id


def follow_up(w, case_id: str, result, *, day: str = "", note: str = "", reopen: bool = False,
              request_id: str = "", street: str = "street"):
    with as_actor(office(w, street), rpc="RecordMediationFollowUp", request_id=request_id,
                  request=f"{case_id}{day}{result}{note}{reopen}".encode()):
        return w["governance"].record_mediation_follow_up(
            case_id=case_id, day=day, result=result, note=note, reopen=reopen)


def statistics(w, street: str = "", **period):
    with as_actor(ADMIN):
        return {r.street_id: r for r in w["governance"].mediation_statistics(
            street_id=street, start=period.get("start"), end=period.get("end"))}


# ---------------------------------------------------------------------------- follow-ups


def test_an_agreement_is_due_a_follow_up_by_the_citys_rule_when_it_is_made(city, city_clock):
    g = city["governance"]
    first = agreed_case(city, city_clock)
    assert g.mediation_case(first).follow_up_due == city_day(city_clock.now) + timedelta(days=30)
    assert g.mediation_policy().version == 0  # the default, never set
    with as_actor(ADMIN):
        assert g.set_mediation_policy(follow_up_days=14)["version"] == 1
        with pytest.raises(InvalidArgument) as error:
            g.set_mediation_policy(follow_up_days=0)
    assert error.value.violations[0].field == "follow_up_days"
    second = agreed_case(city, city_clock)
    assert g.mediation_case(second).follow_up_due == city_day(city_clock.now) + timedelta(days=14)
    # The first keeps the day it was given.
    assert g.mediation_case(first).follow_up_due == city_day(city_clock.now) + timedelta(days=27)
    assert (g.mediation_policy(1).follow_up_days, g.mediation_policy().version) == (14, 1)
    with pytest.raises(NotFound):
        g.mediation_policy(2)


def test_a_partly_kept_agreement_is_due_again_and_a_kept_one_is_done(city, city_clock):
    g = city["governance"]
    case_id = agreed_case(city, city_clock)
    city_clock.now += timedelta(days=30)
    follow_up(city, case_id, PARTLY, note="白天开放，夜间仍锁门")
    case = g.mediation_case(case_id)
    assert case.follow_up_due == city_day(city_clock.now) + timedelta(days=30)
    city_clock.now += timedelta(days=30)
    follow_up(city, case_id, KEPT)
    with as_actor(office(city)):
        case = g.mediation_case(case_id)
    assert [f["result"] for f in case.follow_ups] == [PARTLY, KEPT]
    assert case.follow_ups[0]["note"] == "白天开放，夜间仍锁门"
    # Free text, as the case's other notes: withheld from whoever is not an official.
    assert g.mediation_case(case_id).follow_ups[0]["note"].startswith("[withheld:")
    assert (case.follow_up_due, case.status) == (None, MediationStatus.AGREED)


def test_a_broken_agreement_reopens_the_case_for_another_round(city, city_clock):
    g = city["governance"]
    case_id = agreed_case(city, city_clock)
    follow_up(city, case_id, BROKEN, note="物业又锁了门", reopen=True)
    case = g.mediation_case(case_id)
    assert (case.status, case.reopen_count, case.follow_up_due) == (
        MediationStatus.OPEN, 1, None)
    with as_actor(office(city)):
        g.record_mediation_session(case_id=case_id, session=SessionInput(
            held_at=city_clock.now, place="荷花池驿站"))
        g.record_mediation_agreement(case_id=case_id, outcome="物业全天开放")
        case = g.mediation_case(case_id)
    assert (case.status, case.outcome) == (MediationStatus.AGREED, "物业全天开放")
    assert case.follow_up_due == city_day(city_clock.now) + timedelta(days=30)


def test_bad_follow_ups_are_refused_in_one_answer_and_write_nothing(city, city_clock):
    g = city["governance"]
    case_id = agreed_case(city, city_clock)
    before = g.last_position()
    with pytest.raises(InvalidArgument) as error:
        tomorrow = city_day(city_clock.now) + timedelta(days=1)
        follow_up(city, case_id, None, day=tomorrow.isoformat(), note="x" * 2001)
    assert {v.field for v in error.value.violations} == {"result", "day", "note"}
    with pytest.raises(InvalidArgument) as error:
        follow_up(city, case_id, KEPT, reopen=True,
                  day=(city_day(city_clock.now) - timedelta(days=1)).isoformat())
    assert {(v.field, v.reason) for v in error.value.violations} == {
        ("reopen", "REOPEN_NEEDS_BROKEN"), ("day", "DAY_BEFORE_AGREEMENT")}
    with pytest.raises(InvalidArgument) as error:
        follow_up(city, case_id, KEPT, day="5 June")
    assert error.value.violations[0].field == "day"
    with pytest.raises(NotFound):
        follow_up(city, str(uuid.uuid4()), KEPT)
    assert g.last_position() == before
    with as_actor(office(city)):
        open_case = g.open_mediation_case(
            street_id=city["street"], report_id="", subject="餐损赔偿", mediator_name="李",
            parties=[Party(PartyRole.RIDER, rider_id=new_rider(city)),
                     Party(PartyRole.MERCHANT, name="王老板")])["case_id"]
    before = g.last_position()
    with pytest.raises(FailedPrecondition) as refused:
        follow_up(city, open_case, KEPT)
    assert refused.value.reason == "CASE_NOT_AGREED"
    assert g.last_position() == before


def test_a_retried_follow_up_counts_once(city, city_clock):
    case_id = agreed_case(city, city_clock)
    request_id = str(uuid.uuid4())
    first = follow_up(city, case_id, PARTLY, request_id=request_id)
    position = city["governance"].last_position()
    assert follow_up(city, case_id, PARTLY, request_id=request_id) == first
    assert city["governance"].last_position() == position
    assert statistics(city)[city["street"]].partly_kept == 1


# ---------------------------------------------------------------------------- statistics


def test_statistics_count_each_streets_cases_over_the_period(city, city_clock):
    start = city_clock.now
    kept = agreed_case(city, city_clock)  # opened, agreed 3 days later
    broken = agreed_case(city, city_clock)
    follow_up(city, kept, KEPT)
    follow_up(city, broken, BROKEN, reopen=True)
    agreed_case(city, city_clock, "other_street")
    middle = city_clock.now
    city_clock.now += timedelta(days=40)  # the other street's follow-up is overdue now
    agreed_case(city, city_clock)  # after the period below

    street, other = city["street"], city["other_street"]
    rows = statistics(city, start=start, end=middle + timedelta(seconds=1))
    assert set(rows) == {street, other}
    s = rows[street]
    assert (s.opened, s.agreed, s.failed, s.kept, s.partly_kept, s.broken, s.reopened) == (
        2, 2, 0, 1, 0, 1, 1)
    assert s.average_days_to_agreement == pytest.approx(3.0)
    assert (rows[other].opened, rows[other].agreed, rows[other].follow_ups_overdue) == (1, 1, 1)
    # The kept one is followed up, the reopened one is open again, the newest is not due yet.
    assert s.follow_ups_overdue == 0
    everything = statistics(city, street)
    assert list(everything) == [street] and everything[street].opened == 3
    nothing = statistics(city, str(uuid.uuid4()))
    assert [r.opened for r in nothing.values()] == [0]
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as error:
        city["governance"].mediation_statistics(street_id="x", start=middle, end=start)
    assert {v.field for v in error.value.violations} == {"street_id", "end_time"}


# ---------------------------------------------------------------------------- on the wire


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def tenants(store: str, request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from a_world(store, request, tmp_path_factory)


@pytest.mark.postgres
def test_each_street_office_follows_up_and_counts_its_own_cases_only(tenants: World) -> None:
    q, a, b = tenants.qiji, tenants.tenants["a"], tenants.tenants["b"]
    office_a, office_b = tenants.token("a", "street_office"), tenants.token("b", "street_office")
    q.ok("governance", "RecordMediationSession", gpb.RecordMediationSessionRequest(
        request_id=rid(), case_id=a.case, session=gpb.MediationSession(
            hold_time=ts(tenants_now(q)), place="荷花池驿站")), office_a)
    q.ok("governance", "RecordMediationAgreement", gpb.RecordMediationAgreementRequest(
        case_id=a.case, outcome="物业开放骑手通道"), office_a)

    def record(token: str) -> object:
        return q.call("governance", "RecordMediationFollowUp", gpb.RecordMediationFollowUpRequest(
            request_id=rid(), case_id=a.case, result=gpb.FOLLOW_UP_RESULT_BROKEN,
            note="又锁门了", reopen=True), token)

    before = q.positions()
    theirs = record(office_b)
    assert (theirs.code, theirs.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE")
    assert q.positions() == before
    case = record(office_a).response.mediation_case
    assert (case.status, case.reopen_count, [f.result for f in case.follow_ups]) == (
        gpb.MEDIATION_STATUS_OPEN, 1, [gpb.FOLLOW_UP_RESULT_BROKEN])
    no_id = q.call("governance", "RecordMediationFollowUp", gpb.RecordMediationFollowUpRequest(
        case_id=a.case, result=gpb.FOLLOW_UP_RESULT_KEPT), office_a)
    assert (no_id.code, no_id.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                          "REQUEST_ID_REQUIRED")

    def stats(street: str, token: str) -> object:
        return q.call("governance", "GetMediationStatistics",
                      gpb.GetMediationStatisticsRequest(street_id=street), token)

    assert stats(a.street, office_b).code == grpc.StatusCode.PERMISSION_DENIED
    [own] = stats(a.street, office_a).response.statistics
    assert (own.street_id, own.opened, own.agreed, own.broken, own.reopened) == (
        a.street, 1, 1, 1, 1)
    assert own.average_days_to_agreement != ""
    city = {r.street_id for r in q.ok("governance", "GetMediationStatistics",
                                      gpb.GetMediationStatisticsRequest(),
                                      tenants.admin).statistics}
    assert city >= {a.street, b.street}
    policy = q.ok("governance", "GetMediationPolicy", gpb.GetMediationPolicyRequest(),
                  office_b).mediation_policy
    assert (policy.follow_up_days, policy.version) == (30, 0)
    refused = q.call("governance", "SetMediationPolicy", gpb.SetMediationPolicyRequest(
        follow_up_days=7), office_a)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED


def tenants_now(q) -> object:
    return q.apps["governance"].clock()


def test_follow_ups_recorded_at_once_are_all_kept_and_counted(city, city_clock):
    """Four clerks record follow-ups of one case at the same moment (threads; on PostgreSQL the
    losers of the version race decide again): none is lost, none counted twice."""
    case_id = agreed_case(city, city_clock)
    barrier = threading.Barrier(4, timeout=10)
    errors: list[BaseException] = []

    def record() -> None:
        try:
            barrier.wait()
            follow_up(city, case_id, PARTLY, request_id=str(uuid.uuid4()))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=record) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(city["governance"].mediation_case(case_id).follow_ups) == 4
    assert statistics(city)[city["street"]].partly_kept == 4
