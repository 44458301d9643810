"""Transfer (转派), the street office's own assignment, shared notes, the rider's rating and
the reopening it may bring, on the Report alone: no store, no gRPC."""

from datetime import UTC, datetime, timedelta

import pytest

from services.governance.domain.calendar import AROUND_THE_CLOCK
from services.governance.domain.model import Report
from services.governance.domain.values import (
    DONE,
    RATING_WINDOW,
    AssignmentStatus,
    DeadlineKind,
    ReportStatus,
    SatisfactionRating,
)
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument

T0 = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
CHAIN = {"STREET": "street-1", "DISTRICT": "district-1", "CITY": "city-1"}
# 2 h to acknowledge, 72 h to resolve, around the clock, at risk at 80 %.
# Plain time: these tests are about who holds the report, not about the working calendar.
PLAIN = AROUND_THE_CLOCK
POLICY = {"acknowledge": 2 * 3600, "resolve": 72 * 3600, "around_the_clock": True,
          "at_risk_percent": 80}


def a_report(*departments: str) -> Report:
    report = Report(rider_id="rider-1", kind="ANOMALY_WARNING", category="ROAD_HAZARD",
                    street_id="street-1", latitude=31.779, longitude=119.946,
                    text="井盖缺失", attachment_refs=[], observed_at=T0, submitted_at=T0)
    report.route(departments=[(d, "SOCIAL_WORK") for d in departments or ("social",)],
                 rules_version=1, rule_name="roads", unresolved_functions=[],
                 clocks=POLICY, clock=PLAIN, escalation_chain=CHAIN,
                 at=T0)
    return report


def reason_of(call, error=FailedPrecondition) -> str:
    with pytest.raises(error) as raised:
        call()
    return raised.value.reason


def resolved(report: Report, department: str = "social", at: datetime = T0) -> Report:
    report.acknowledge(department, at)
    report.start_work(department, "", at)
    report.resolve(department, "已补装井盖", at + timedelta(hours=1))
    return report


# ---------------------------------------------------------------------------- transfer


def test_a_transfer_hands_the_work_on_and_the_receivers_clocks_start_anew():
    report = a_report()
    report.acknowledge("social", T0 + timedelta(minutes=30))
    later = T0 + timedelta(hours=5)
    report.transfer("social", "roads", "PUBLIC_SECURITY", "属市政道路，转交市政", later, PLAIN)
    old, new = report.assignments["social"], report.assignments["roads"]
    assert (old["status"], old["transferred_to"], old["transfer_reason"],
            old["transferred_at"]) == ("TRANSFERRED", "roads", "属市政道路，转交市政", later)
    assert (new["status"], new["transferred_from"], new["routed_at"]) == ("ROUTED", "social",
                                                                          later)
    # The policy the report was routed with, counted from the transfer.
    assert new["due"] == {"ACKNOWLEDGE": later + timedelta(hours=2),
                          "RESOLVE": later + timedelta(hours=72)}
    assert new["level"] == "STREET" and new["escalations"] == {}
    assert report.status is ReportStatus.OPEN
    assert report.escalation_chain == CHAIN


def test_a_transferred_assignment_is_done_and_the_receivers_outcome_closes_the_report():
    report = a_report()
    report.transfer("social", "roads", "PUBLIC_SECURITY", "not ours", T0, PLAIN)
    assert reason_of(lambda: report.acknowledge("social", T0)) == "ASSIGNMENT_TRANSFERRED"
    assert not report.missed_deadline("social", DeadlineKind.RESOLVE, T0 + timedelta(days=30))
    resolved(report, "roads", T0 + timedelta(hours=1))
    assert report.status is ReportStatus.RESOLVED


def test_a_department_may_not_transfer_to_itself():
    report = a_report()
    with pytest.raises(InvalidArgument) as refused:
        report.transfer("social", "social", "SOCIAL_WORK", "x", T0, PLAIN)
    assert [(v.field, v.reason) for v in refused.value.violations] == [
        ("to_department_id", "TRANSFER_TO_ITSELF")]
    assert report.assignments["social"]["status"] == "ROUTED"


def test_a_transfer_to_a_department_already_working_the_report_already_exists():
    report = a_report("social", "police")
    assert reason_of(lambda: report.transfer("social", "police", "PUBLIC_SECURITY", "x", T0, PLAIN),
                     AlreadyExists) == "DEPARTMENT_ALREADY_ASSIGNED"


def test_a_done_assignment_is_not_transferred():
    report = a_report("social", "police")
    report.reject("social", "NOT_ACTIONABLE", "", T0)
    assert reason_of(lambda: report.transfer("social", "roads", "X", "x", T0, PLAIN)) == \
        "ASSIGNMENT_REJECTED"


def test_a_report_does_not_bounce_back_to_a_department_that_held_it():
    """A → B, then B may not send it back to A: only the street office may (AssignReport)."""
    report = a_report()
    report.transfer("social", "roads", "PUBLIC_SECURITY", "not ours", T0, PLAIN)
    assert reason_of(lambda: report.transfer("roads", "social", "SOCIAL_WORK", "not ours either",
                                             T0, PLAIN)) == "TRANSFER_WOULD_BOUNCE"
    # Nor to one that rejected it.
    two = a_report("social", "police")
    two.reject("police", "NOT_ACTIONABLE", "", T0)
    assert reason_of(lambda: two.transfer("social", "police", "X", "x", T0, PLAIN)) == \
        "TRANSFER_WOULD_BOUNCE"
    # The street office may give it back, with fresh clocks, the earlier assignment kept.
    later = T0 + timedelta(hours=3)
    report.assign("social", "SOCIAL_WORK", "确属社会工作部", later, PLAIN)
    assert report.assignments["social"]["status"] == "ROUTED"
    assert report.assignments["social"]["assignment_reason"] == "确属社会工作部"
    assert report.assignments["social"]["due"]["ACKNOWLEDGE"] == later + timedelta(hours=2)
    assert [(a["department_id"], a["status"]) for a in report.past_assignments] == [
        ("social", "TRANSFERRED")]
    assert report.departments_ever == {"social", "roads"}


def test_the_street_office_assigns_no_department_already_working_it():
    report = a_report()
    assert reason_of(lambda: report.assign("social", "SOCIAL_WORK", "x", T0, PLAIN),
                     AlreadyExists) == "DEPARTMENT_ALREADY_ASSIGNED"
    resolved(report)
    assert reason_of(lambda: report.assign("roads", "X", "x", T0, PLAIN)) == "REPORT_RESOLVED"


def test_a_report_routed_before_clocks_were_kept_takes_them_from_its_due_times():
    state = {"assignments": [{"department_id": "d", "department_function": "SOCIAL_WORK",
                              "acknowledge_due": T0 + timedelta(minutes=15),
                              "resolve_due": T0 + timedelta(hours=24)}], "at": T0}
    Report.Routed.upcast_v1_v2(state)
    # Around the clock, as every report then; never marked at risk (it had no share).
    assert state["clocks"] == {"acknowledge": 900, "resolve": 86400, "around_the_clock": True,
                               "at_risk_percent": 0}


# ---------------------------------------------------------------------------- notes


def test_notes_keep_their_author_and_time():
    report = a_report()
    report.add_note("street-1", "street_office", "请尽快处理", T0)
    report.add_note("social", "department", "已联系物业", T0 + timedelta(minutes=1))
    assert [(n["author_id"], n["note"]) for n in report.notes] == [
        ("street-1", "请尽快处理"), ("social", "已联系物业")]


# ---------------------------------------------------------------------------- rating


def test_the_rider_rates_a_closed_outcome_once_within_the_window():
    report = resolved(a_report())
    closed = report.closed_at
    assert report.rate_until == closed + RATING_WINDOW
    assert reason_of(lambda: report.rate(SatisfactionRating.SATISFIED, "",
                                         closed + RATING_WINDOW + timedelta(seconds=1))) == \
        "RATING_WINDOW_CLOSED"
    assert report.rate(SatisfactionRating.BASICALLY_SATISFIED, "还行",
                       closed + RATING_WINDOW) is False
    assert report.satisfaction == {"rating": "BASICALLY_SATISFIED",
                                   "at": closed + RATING_WINDOW}
    assert reason_of(lambda: report.rate(SatisfactionRating.SATISFIED, "", closed),
                     AlreadyExists) == "REPORT_ALREADY_RATED"
    assert report.status is ReportStatus.RESOLVED


def test_an_open_report_is_not_rated():
    assert reason_of(lambda: a_report().rate(SatisfactionRating.SATISFIED, "", T0)) == \
        "REPORT_OPEN"


def test_unsatisfied_reopens_once_and_the_office_assigns_a_new_round():
    report = resolved(a_report())
    report.verify("ok", T0 + timedelta(hours=2))
    assert report.rate(SatisfactionRating.UNSATISFIED, "井盖又松了", T0 + timedelta(days=1))
    assert report.status is ReportStatus.REOPENED and report.verified_at is None
    assert report.rate_until is None
    assert reason_of(lambda: report.verify("", T0)) == "REPORT_REOPENED"
    assert reason_of(lambda: report.rate(SatisfactionRating.SATISFIED, "", T0)) == \
        "REPORT_REOPENED"
    at = T0 + timedelta(days=2)
    report.assign("roads", "PUBLIC_SECURITY", "换市政处理", at, PLAIN)
    assert report.status is ReportStatus.OPEN and list(report.assignments) == ["roads"]
    assert [a["status"] for a in report.past_assignments] == ["RESOLVED"]
    resolved(report, "roads", at)
    assert report.status is ReportStatus.RESOLVED
    # Unsatisfied again: recorded, counted, but the report stays closed (at most once).
    assert report.rate(SatisfactionRating.UNSATISFIED, "", at + timedelta(days=1)) is False
    assert report.status is ReportStatus.RESOLVED and report.reopen_count == 1
    assert [r["rating"] for r in report.ratings] == ["UNSATISFIED", "UNSATISFIED"]


def test_upholding_closes_the_report_again_as_it_was():
    report = resolved(a_report())
    report.verify("ok", T0 + timedelta(hours=2))
    report.rate(SatisfactionRating.UNSATISFIED, "", T0 + timedelta(days=1))
    at = T0 + timedelta(days=2)
    report.uphold("已核实，处理到位", at)
    assert report.status is ReportStatus.VERIFIED and report.verified_at == at
    assert (report.closed_at, report.upheld_note) == (at, "已核实，处理到位")
    assert report.rate_until == at + RATING_WINDOW
    assert reason_of(lambda: report.uphold("again", at)) == "REPORT_VERIFIED"
    rejected = a_report()
    rejected.reject("social", "NOT_ACTIONABLE", "", T0)
    rejected.rate(SatisfactionRating.UNSATISFIED, "", T0)
    rejected.uphold("确实无法处理", T0 + timedelta(hours=1))
    assert rejected.status is ReportStatus.REJECTED


def test_assignment_statuses_include_transferred_as_done():
    assert AssignmentStatus.TRANSFERRED in DONE
