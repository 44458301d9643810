"""The rules of a help request (帮扶), pure domain: where each kind goes, the order of a
department's work, referrals, closing, the rider's rating and its window, and escalation once
per missed deadline. What is said arrives sealed: the aggregate never sees it in clear."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.governance.domain.help import HelpRequest, check_help_routes, help_departments
from services.governance.domain.values import (
    DeadlineKind,
    DepartmentFunction,
    HelpChannel,
    HelpKind,
    HelpStatus,
    SatisfactionRating,
    default_help_routing,
    help_alternatives,
    help_due_times,
)
from shared.errors import AlreadyExists, FailedPrecondition, NotFound, Violations

DEFAULTS = default_help_routing()


def routes(kind: HelpKind) -> tuple[tuple[str, ...], ...]:
    return help_alternatives(DEFAULTS[kind.value]["functions"])

T0 = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
SEALED = "pd1:c2VhbGVk"


def nearest(departments: dict[tuple[str, str], str]):
    return lambda level, function: departments.get((level, function))


def test_each_kind_goes_to_the_first_alternative_the_city_has_a_department_for():
    chain = ["street", "district", "city"]
    social_only = nearest({("street", "SOCIAL_WORK"): "social"})
    for kind in HelpKind:
        assert help_departments(routes(kind), chain, social_only) == [
            ("social", "SOCIAL_WORK")], kind
    full = nearest({("street", "SOCIAL_WORK"): "social", ("district", "LEGAL_AID"): "legal",
                    ("city", "TRADE_UNION"): "union"})
    assert help_departments(routes(HelpKind.LEGAL_AID), chain, full) == [
        ("legal", "LEGAL_AID")]
    assert help_departments(routes(HelpKind.WORK_INJURY), chain, full) == [
        ("union", "TRADE_UNION"), ("legal", "LEGAL_AID")]
    assert help_departments(routes(HelpKind.PSYCHOLOGICAL), chain, full) == [
        ("social", "SOCIAL_WORK")]
    # The nearest of a function wins: the street's own before the district's.
    two = nearest({("street", "LEGAL_AID"): "street-legal", ("district", "LEGAL_AID"): "legal"})
    assert help_departments(routes(HelpKind.LEGAL_AID), chain, two) == [
        ("street-legal", "LEGAL_AID")]
    assert help_departments(routes(HelpKind.HARDSHIP), chain, nearest({})) == []


def test_clocks_are_a_day_for_a_caseworker_and_seven_or_fifteen_for_the_outcome():
    assert help_due_times(T0, DEFAULTS["HARDSHIP"]) == {
        "ACKNOWLEDGE": T0 + timedelta(hours=24), "RESOLVE": T0 + timedelta(days=7)}
    assert help_due_times(T0, DEFAULTS["LABOUR_DISPUTE"])["RESOLVE"] == T0 + timedelta(days=15)


def test_a_help_routing_table_is_checked_route_by_route():
    v = Violations()
    check_help_routes(v, [
        {"kind": HelpKind.HARDSHIP, "functions": [DepartmentFunction.SOCIAL_WORK],
         "acknowledge_within": timedelta(hours=2), "resolve_within": timedelta(days=3)},
        {"kind": HelpKind.HARDSHIP, "functions": [],
         "acknowledge_within": timedelta(0), "resolve_within": timedelta(days=3)},
        {"kind": None, "functions": [DepartmentFunction.LEGAL_AID, DepartmentFunction.LEGAL_AID],
         "acknowledge_within": timedelta(hours=2), "resolve_within": timedelta(hours=1)}])
    assert [(x.field, x.reason) for x in v.items] == [
        ("routes[1].kind", "DUPLICATE_VALUE"),
        ("routes[1].department_functions", "FIELD_REQUIRED"),
        ("routes[1].acknowledge_within", "DURATION_NOT_POSITIVE"),
        ("routes[2].kind", "ENUM_VALUE_REQUIRED"),
        ("routes[2].department_functions", "DUPLICATE_VALUE"),
        ("routes[2].resolve_within", "RESOLVE_WITHIN_NOT_AFTER_ACKNOWLEDGE_WITHIN")]


def test_an_empty_help_routing_table_is_refused_rather_than_stored_as_a_new_version():
    v = Violations()
    check_help_routes(v, [])
    assert [(x.field, x.reason) for x in v.items] == [("routes", "FIELD_REQUIRED")]


APP = HelpChannel.PLATFORM


def request(kind: HelpKind = HelpKind.HARDSHIP, *departments: str) -> HelpRequest:
    h = HelpRequest(rider_id="rider", kind=kind.value, home_street_id="street",
                    sealed_text=SEALED, contact_preference="", asked_through="PLATFORM",
                    requested_at=T0)
    h.route(departments=[(d, "SOCIAL_WORK") for d in departments or ("social",)],
            escalation_chain={"STREET": "street", "DISTRICT": "district", "CITY": "city"},
            clocks=DEFAULTS[kind.value], routing_version=0, at=T0)
    return h


def test_a_request_with_no_department_is_refused():
    h = HelpRequest(rider_id="rider", kind="HARDSHIP", home_street_id="street",
                    sealed_text=SEALED, contact_preference="", asked_through="PLATFORM",
                    requested_at=T0)
    with pytest.raises(FailedPrecondition) as refused:
        h.route(departments=[], escalation_chain={}, clocks=DEFAULTS["HARDSHIP"],
                routing_version=0, at=T0)
    assert refused.value.reason == "NO_HELP_ROUTE"


def test_a_department_works_in_order_and_only_on_its_own_assignment():
    h = request()
    with pytest.raises(NotFound) as other:
        h.assign_caseworker("police", SEALED, T0)
    assert other.value.reason == "HELP_ASSIGNMENT_NOT_FOUND"
    for step in (lambda: h.record_contact("social", "c1", "PHONE", T0, SEALED, T0),
                 lambda: h.refer("social", "r1", "legal", "LEGAL_AID", SEALED, T0),
                 lambda: h.give_outcome("social", SEALED, T0)):
        with pytest.raises(FailedPrecondition) as early:
            step()
        assert early.value.reason == "HELP_ASSIGNMENT_ROUTED"
    h.assign_caseworker("social", SEALED, T0)
    with pytest.raises(FailedPrecondition) as twice:
        h.assign_caseworker("social", SEALED, T0)
    assert twice.value.reason == "HELP_ASSIGNMENT_CASEWORKER_ASSIGNED"
    h.give_outcome("social", SEALED, T0)
    with pytest.raises(FailedPrecondition) as after:
        h.record_contact("social", "c1", "PHONE", T0, SEALED, T0)
    assert after.value.reason == "HELP_ASSIGNMENT_OUTCOME_GIVEN"


def test_a_referral_gives_the_request_to_another_department_with_fresh_clocks():
    h = request()
    h.assign_caseworker("social", SEALED, T0)
    later = T0 + timedelta(days=3)
    h.refer("social", "r1", "legal", "LEGAL_AID", SEALED, later)
    assert h.assignments["legal"]["due"]["RESOLVE"] == later + timedelta(days=7)
    assert h.assignments["legal"]["referred_by"] == "social"
    with pytest.raises(FailedPrecondition) as again:
        h.refer("social", "r2", "legal", "LEGAL_AID", SEALED, later)
    assert again.value.reason == "HELP_ALREADY_ASSIGNED"
    # It closes only when every department given it has answered.
    h.give_outcome("social", SEALED, later)
    assert h.status is HelpStatus.OPEN
    h.assign_caseworker("legal", SEALED, later)
    h.give_outcome("legal", SEALED, later)
    assert (h.status, h.closed_at) == (HelpStatus.CLOSED, later)


def test_the_rider_rates_once_within_seven_days_of_the_closing():
    h = request()
    with pytest.raises(FailedPrecondition) as open_:
        h.rate(SatisfactionRating.SATISFIED, APP, T0)
    assert open_.value.reason == "HELP_REQUEST_OPEN"
    h.assign_caseworker("social", SEALED, T0)
    h.give_outcome("social", SEALED, T0)
    with pytest.raises(FailedPrecondition) as late:
        h.rate(SatisfactionRating.SATISFIED, APP, T0 + timedelta(days=7, microseconds=1))
    assert late.value.reason == "RATING_WINDOW_CLOSED"
    h.rate(SatisfactionRating.UNSATISFIED, APP, T0 + timedelta(days=7))
    with pytest.raises(AlreadyExists) as twice:
        h.rate(SatisfactionRating.SATISFIED, APP, T0 + timedelta(days=7))
    assert (twice.value.reason, twice.value.metadata["rating"]) == (
        "HELP_ALREADY_RATED", "UNSATISFIED")


def test_the_rider_rates_where_they_asked_for_help():
    h = request()  # asked in the platform's app
    h.assign_caseworker("social", SEALED, T0)
    h.give_outcome("social", SEALED, T0)
    with pytest.raises(FailedPrecondition) as elsewhere:
        h.rate(SatisfactionRating.SATISFIED, HelpChannel.STREET_OFFICE, T0)
    assert elsewhere.value.reason == "RATE_WHERE_ASKED"
    h.rate(SatisfactionRating.SATISFIED, APP, T0)
    assert h.satisfaction == {"rating": "SATISFIED", "at": T0}


def test_a_missed_deadline_escalates_once_one_level_up():
    h = request()
    with pytest.raises(FailedPrecondition) as early:
        h.escalate("social", DeadlineKind.ACKNOWLEDGE, T0 + timedelta(hours=23))
    assert early.value.reason == "DEADLINE_NOT_MISSED"
    h.escalate("social", DeadlineKind.ACKNOWLEDGE, T0 + timedelta(hours=24))
    assert h.assignments["social"]["level"] == "DISTRICT"
    with pytest.raises(FailedPrecondition) as twice:
        h.escalate("social", DeadlineKind.ACKNOWLEDGE, T0 + timedelta(hours=25))
    assert twice.value.reason == "ALREADY_ESCALATED"
    # A caseworker named late answers the acknowledgement; the outcome's clock still runs.
    h.assign_caseworker("social", SEALED, T0 + timedelta(hours=30))
    assert not h.missed_deadline("social", DeadlineKind.RESOLVE, T0 + timedelta(days=6))
    h.escalate("social", DeadlineKind.RESOLVE, T0 + timedelta(days=7))
    assert h.assignments["social"]["escalations"]["RESOLVE"]["escalated_to"] == "city"
