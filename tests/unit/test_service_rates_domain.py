"""The three rates on their own (domain/rates.py): which assignments and reports count, and how,
from reports as they stood at a moment. No store, no gRPC.

Reports here are real Report aggregates moved by their own commands; what other parts of the
model keep and this copy may not (a transfer's TRANSFERRED status, the rider's rating, an
assignment replaced when a department is given the report again) is set on them as those
parts store it."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.governance.domain.calendar import AROUND_THE_CLOCK
from services.governance.domain.model import Report
from services.governance.domain.rates import (
    RULES,
    RULES_VERSION,
    TRANSFERRED,
    Rate,
    Unit,
    responded_at,
    service_rates,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)  # the period: March 2026
T1 = datetime(2026, 4, 1, tzinfo=UTC)
APRIL_1 = T1
# Acknowledge within 2 hours, resolve within 3 days, around the clock, no at-risk share.
CLOCKS = {"acknowledge": 2 * 3600, "resolve": 3 * 86400, "around_the_clock": True,
          "at_risk_percent": 0}
HOUR = timedelta(hours=1)
POLICE, SOCIAL = "police", "social"
STREET, OTHER_STREET = "street-1", "street-2"


def routed(at: datetime, departments=(POLICE,), street=STREET) -> Report:
    report = Report(rider_id="rider-1", kind="ANOMALY_WARNING", category="ROAD_HAZARD",
                    street_id=street, latitude=31.77, longitude=119.94, text="井盖缺失",
                    attachment_refs=[], observed_at=at, submitted_at=at)
    report.route(departments=[(d, "PUBLIC_SECURITY") for d in departments], rules_version=1,
                 rule_name="all", unresolved_functions=[], clocks=CLOCKS,
                 clock=AROUND_THE_CLOCK, escalation_chain={}, at=at)
    return report


def resolved(report: Report, department=POLICE, after=HOUR) -> Report:
    at = report.assignments[department]["routed_at"] + after
    report.acknowledge(department, at)
    report.start_work(department, "", at)
    report.resolve(department, "已修复", at)
    return report


def rated(report: Report, rating: str, at=T1) -> Report:
    # As the rating's part of the model keeps the latest one.
    report.satisfaction = {"rating": rating, "at": at}
    return report


def transferred(report: Report, department: str, at: datetime) -> Report:
    # As the transfer's part of the model leaves the assignment it hands on.
    report.assignments[department].update(status=TRANSFERRED, transferred_at=at)
    return report


THE_POLICE = Unit(department_id=POLICE)


def of(reports, unit=THE_POLICE, as_of=APRIL_1):
    return service_rates(reports, unit, T0, T1, as_of)


# ---------------------------------------------------------------------------- response


def test_an_assignment_acknowledged_by_its_due_time_is_a_response_in_time():
    on_time = routed(T0 + HOUR)
    on_time.acknowledge(POLICE, T0 + 3 * HOUR)  # due at T0 + 3 h: exactly on time
    late = routed(T0 + HOUR)
    late.acknowledge(POLICE, T0 + 3 * HOUR + timedelta(seconds=1))
    rates = of([on_time, late])
    assert rates.response == Rate(1, 2)
    assert rates.response.percent == Decimal("50.00")


def test_one_never_acknowledged_counts_once_its_due_time_has_passed_and_not_before():
    waiting = routed(T1 - HOUR)  # due an hour after the period ends
    before_due = of([waiting], as_of=T1 - timedelta(minutes=1))
    assert (before_due.response, before_due.awaiting_response) == (Rate(0, 0), 1)
    assert before_due.response.percent is None  # nothing to judge: no rate, not 0%
    after_due = of([waiting], as_of=T1 + HOUR)
    assert (after_due.response, after_due.awaiting_response) == (Rate(0, 1), 0)


def test_a_department_that_rejects_within_the_clock_has_responded():
    """Acting on an assignment ends the wait as acknowledging does: a duplicate rejected in
    ten minutes is a response, as it is no missed acknowledgement for escalation."""
    report = routed(T0)
    report.reject(POLICE, "DUPLICATE", "", T0 + timedelta(minutes=10))
    assert of([report]).response == Rate(1, 1)


def test_a_transfer_before_acknowledging_is_the_transferring_departments_response():
    report = transferred(routed(T0), POLICE, T0 + HOUR)
    assert responded_at(report.assignments[POLICE]) == T0 + HOUR
    assert of([report]).response == Rate(1, 1)


def test_the_due_time_is_the_assignments_own_as_it_stands_moved_on_by_a_pause():
    report = routed(T0)
    report.acknowledge(POLICE, T0 + 5 * HOUR)
    assert of([report]).response == Rate(0, 1)
    # A pause of four hours moved the due time on (the clocks' part keeps it current).
    report.assignments[POLICE]["due"]["ACKNOWLEDGE"] = T0 + 6 * HOUR
    assert of([report]).response == Rate(1, 1)


def test_a_due_time_not_known_while_a_clock_is_paused_cannot_be_missed():
    report = routed(T0)
    report.assignments[POLICE]["due"]["ACKNOWLEDGE"] = None
    rates = of([report], as_of=T1 + 30 * 24 * HOUR)
    assert (rates.response, rates.awaiting_response) == (Rate(0, 0), 1)


# ---------------------------------------------------------------------------- resolution


def test_resolution_is_resolved_out_of_resolved_and_rejected_open_ones_wait():
    done = resolved(routed(T0))
    rejected = routed(T0)
    rejected.reject(POLICE, "NOT_ACTIONABLE", "", T0 + HOUR)
    still_open = routed(T0)
    still_open.acknowledge(POLICE, T0 + HOUR)
    rates = of([done, rejected, still_open])
    assert (rates.assignments, rates.resolution, rates.open) == (3, Rate(1, 2), 1)


def test_an_assignment_transferred_away_is_in_neither_count_of_the_resolution_rate():
    """The receiving department's new assignment answers for the report: the transferring
    department is neither credited nor blamed for its outcome."""
    away = transferred(routed(T0), POLICE, T0 + HOUR)
    mine = resolved(routed(T0))
    rates = of([away, mine])
    assert (rates.assignments, rates.resolution, rates.transferred, rates.open) == (
        2, Rate(1, 1), 1, 0)


# ---------------------------------------------------------------------------- units, period


def test_the_period_holds_its_start_and_not_its_end():
    at_start, at_end, before = routed(T0), routed(T1), routed(T0 - timedelta(seconds=1))
    assert of([at_start, at_end, before]).assignments == 1


def test_a_department_counts_only_its_own_assignments_a_street_every_departments():
    both = resolved(routed(T0, departments=(POLICE, SOCIAL)), SOCIAL)
    elsewhere = resolved(routed(T0, street=OTHER_STREET))
    police = of([both, elsewhere])
    social = of([both, elsewhere], Unit(department_id=SOCIAL))
    street = of([both, elsewhere], Unit(street_ids=frozenset({STREET})))
    district = of([both, elsewhere], Unit(street_ids=frozenset({STREET, OTHER_STREET})))
    assert (police.assignments, social.assignments, street.assignments,
            district.assignments) == (2, 1, 2, 3)
    assert (police.resolution, social.resolution, street.resolution) == (
        Rate(1, 1), Rate(1, 1), Rate(1, 1))
    assert (police.open, street.open) == (1, 1)


def test_a_streets_counts_are_the_sum_of_its_departments_over_its_reports():
    reports = [resolved(routed(T0 + i * HOUR, departments=(POLICE, SOCIAL)), SOCIAL)
               for i in range(3)]
    reports[0].acknowledge(POLICE, T0 + 5 * HOUR)  # late
    street = of(reports, Unit(street_ids=frozenset({STREET})))
    parts = [of(reports, Unit(department_id=d)) for d in (POLICE, SOCIAL)]
    for rate in ("response", "resolution"):
        got = getattr(street, rate)
        assert got.numerator == sum(getattr(p, rate).numerator for p in parts)
        assert got.denominator == sum(getattr(p, rate).denominator for p in parts)


def test_an_assignment_a_department_was_given_again_counts_beside_the_one_it_replaced():
    """After a reopening a department may be given the report again: the assignment it had
    is kept as it stood (past_assignments), the new one is current; both were routed."""
    report = resolved(routed(T0))
    report.past_assignments = [{**report.assignments[POLICE], "department_id": POLICE}]
    report.assignments[POLICE] = {**report.assignments[POLICE], "status": "ROUTED",
                                  "routed_at": T0 + 48 * HOUR, "acknowledged_at": None,
                                  "resolved_at": None,
                                  "due": {"ACKNOWLEDGE": T0 + 50 * HOUR,
                                          "RESOLVE": T0 + 120 * HOUR}}
    rates = of([report])
    assert (rates.assignments, rates.resolution, rates.open, rates.response) == (
        2, Rate(1, 1), 1, Rate(1, 2))


def test_a_duplicate_never_routed_counts_nothing():
    report = Report(rider_id="r", kind="ANOMALY_WARNING", category="ROAD_HAZARD",
                    street_id=STREET, latitude=0, longitude=0, text="x", attachment_refs=[],
                    observed_at=T0, submitted_at=T0)
    report.link_as_duplicate("original", 20.0)
    rates = of([report], Unit(street_ids=frozenset({STREET})))
    assert (rates.assignments, rates.reports) == (0, 0)


# ---------------------------------------------------------------------------- satisfaction


def test_satisfaction_is_satisfied_and_basically_satisfied_out_of_the_rated():
    reports = [rated(resolved(routed(T0)), "SATISFIED"),
               rated(resolved(routed(T0)), "BASICALLY_SATISFIED"),
               rated(resolved(routed(T0)), "UNSATISFIED"),
               resolved(routed(T0))]  # not rated: no `satisfaction` kept at all
    rates = of(reports)
    assert rates.satisfaction == Rate(2, 3)
    assert rates.satisfaction.percent == Decimal("66.67")
    assert (rates.reports, rates.satisfied, rates.basically_satisfied, rates.unsatisfied) == (
        4, 1, 1, 1)


def test_a_reopened_report_counts_by_its_latest_rating():
    report = rated(resolved(routed(T0)), "UNSATISFIED")
    assert of([report]).satisfaction == Rate(0, 1)
    rated(report, "BASICALLY_SATISFIED", at=T1 + 24 * HOUR)
    assert of([report]).satisfaction == Rate(1, 1)


def test_a_department_is_not_rated_on_a_report_it_transferred_away():
    report = rated(transferred(routed(T0, departments=(POLICE,)), POLICE, T0 + HOUR),
                   "UNSATISFIED")
    report.assignments[SOCIAL] = {**report.assignments[POLICE], "status": "RESOLVED",
                                  "routed_at": T0 + HOUR, "transferred_at": None}
    assert of([report]).reports == 0
    assert of([report], Unit(department_id=SOCIAL)).satisfaction == Rate(0, 1)


def test_a_street_counts_a_report_in_the_period_of_its_first_routing_only():
    """Routed on 31 March, transferred on 2 April: March's report, not April's too."""
    report = rated(transferred(routed(T1 - HOUR), POLICE, T1 + 24 * HOUR), "SATISFIED")
    report.assignments[SOCIAL] = {**report.assignments[POLICE], "status": "RESOLVED",
                                  "routed_at": T1 + 24 * HOUR, "transferred_at": None}
    street = Unit(street_ids=frozenset({STREET}))
    march = service_rates([report], street, T0, T1, T1 + 48 * HOUR)
    april = service_rates([report], street, T1, T1 + 30 * 24 * HOUR, T1 + 48 * HOUR)
    assert (march.reports, march.satisfaction, march.assignments) == (1, Rate(1, 1), 1)
    assert (april.reports, april.satisfaction, april.assignments) == (0, Rate(0, 0), 1)


# ---------------------------------------------------------------------------- the figures


@pytest.mark.parametrize(("numerator", "denominator", "percent"), [
    (965, 1000, "96.50"), (2, 3, "66.67"), (1, 6, "16.67"), (0, 5, "0.00"), (5, 5, "100.00"),
    # 0.125 per cent: half up to 0.13 (half even would say 0.12).
    (1, 800, "0.13")])
def test_a_rate_is_a_percentage_with_two_decimals_rounded_half_up(numerator, denominator,
                                                                 percent):
    assert Rate(numerator, denominator).percent == Decimal(percent)
    assert str(Rate(numerator, denominator).percent) == percent


def test_the_rules_are_versioned_and_say_each_rate():
    assert RULES_VERSION == 1
    said = " ".join(RULES)
    for term in ("period", "response", "resolution", "satisfaction", "TRANSFERRED",
                 "as_of_time", "half up"):
        assert term in said
