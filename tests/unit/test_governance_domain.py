"""Reports, routing rules, deadlines, mediation and the pledge on their own: no store, no gRPC."""

from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.utils import get_topic

from services.governance import events
from services.governance.domain.calendar import AROUND_THE_CLOCK
from services.governance.domain.model import (
    MediationCase,
    Participant,
    Pledge,
    Report,
    RoutingRules,
    check_parties,
    check_rules,
    clock_times,
    default_clock_for,
    resolve_departments,
)
from services.governance.domain.values import (
    DUPLICATE_WITHIN,
    DeadlineKind,
    EscalationLevel,
    MediationStatus,
    ReportStatus,
    check_deadline,
    default_clocks,
    default_deadline_seconds,
    distance_metres,
    next_level,
    same_incident,
)
from shared.errors import AlreadyExists, FailedPrecondition, NotFound, Violations

T0 = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
CHAIN = {"STREET": "street-1", "DISTRICT": "district-1", "CITY": "city-1"}
# Hehuachi street, Changzhou, and a point about 150 m north of it.
LAT, LON = 31.7790, 119.9460
LAT_150M_NORTH = LAT + 150 / 111_195


def a_report(kind="EMERGENCY", category="FIRE", departments=("police", "social")) -> Report:
    report = Report(rider_id="rider-1", kind=kind, category=category, street_id="street-1",
                    latitude=LAT, longitude=LON, text="电动车起火", attachment_refs=["photo-1"],
                    observed_at=T0, submitted_at=T0)
    report.route(departments=[(d, "PUBLIC_SECURITY") for d in departments], rules_version=3,
                 rule_name="fires", unresolved_functions=[],
                 clocks=default_clock_for(kind, category), clock=AROUND_THE_CLOCK,
                 escalation_chain=CHAIN, at=T0)
    return report


def reason_of(call) -> str:
    with pytest.raises(FailedPrecondition) as error:
        call()
    return error.value.reason


# ---------------------------------------------------------------------------- lifecycle


def test_an_assignment_goes_routed_acknowledged_in_progress_resolved():
    report = a_report(departments=("police",))
    report.acknowledge("police", T0 + timedelta(minutes=5))
    report.start_work("police", "on our way", T0 + timedelta(minutes=6))
    report.resolve("police", "fire put out", T0 + timedelta(hours=1))
    assignment = report.assignments["police"]
    assert assignment["status"] == "RESOLVED"
    assert assignment["acknowledged_at"] == T0 + timedelta(minutes=5)
    assert report.status is ReportStatus.RESOLVED
    assert report.closed_at == T0 + timedelta(hours=1)


def test_transitions_out_of_order_are_refused_with_the_assignments_status():
    report = a_report(departments=("police",))
    assert reason_of(lambda: report.start_work("police", "", T0)) == "ASSIGNMENT_ROUTED"
    assert reason_of(lambda: report.resolve("police", "done", T0)) == "ASSIGNMENT_ROUTED"
    report.acknowledge("police", T0)
    assert reason_of(lambda: report.acknowledge("police", T0)) == "ASSIGNMENT_ACKNOWLEDGED"
    assert reason_of(lambda: report.resolve("police", "done", T0)) == "ASSIGNMENT_ACKNOWLEDGED"
    report.reject("police", "NOT_ACTIONABLE", "nothing there", T0)
    assert reason_of(lambda: report.start_work("police", "", T0)) == "ASSIGNMENT_REJECTED"
    with pytest.raises(NotFound):
        report.acknowledge("fire-brigade", T0)


def test_the_report_closes_only_when_every_assignment_is_done():
    report = a_report(departments=("police", "social"))
    report.reject("social", "DUPLICATE", "", T0)
    assert report.status is ReportStatus.OPEN
    report.acknowledge("police", T0)
    report.start_work("police", "", T0)
    report.resolve("police", "handled", T0 + timedelta(hours=2))
    # One rejection and one resolution: the report was resolved.
    assert report.status is ReportStatus.RESOLVED
    assert [type(e).__name__ for e in report.collect_events()].count("Closed") == 1


def test_a_report_every_department_rejects_closes_as_rejected_and_cannot_be_verified():
    report = a_report(departments=("police",))
    report.reject("police", "NOT_ACTIONABLE", "", T0)
    assert report.status is ReportStatus.REJECTED
    assert reason_of(lambda: report.verify("", T0)) == "REPORT_REJECTED"


def test_only_a_resolved_report_is_verified_and_the_event_names_the_rider():
    report = a_report(departments=("police",))
    assert reason_of(lambda: report.verify("", T0)) == "REPORT_OPEN"
    report.acknowledge("police", T0)
    report.start_work("police", "", T0)
    report.resolve("police", "handled", T0)
    report.verify("confirmed on site", T0 + timedelta(days=1))
    verified = report.collect_events()[-1]
    assert type(verified).__qualname__ == "Report.Verified"
    assert (verified.rider_id, verified.street_id, verified.kind) == (
        "rider-1", "street-1", "EMERGENCY")
    assert report.status is ReportStatus.VERIFIED
    assert reason_of(lambda: report.verify("", T0)) == "REPORT_VERIFIED"


def test_a_report_cannot_be_routed_twice_or_to_nobody():
    report = a_report()
    assert reason_of(lambda: report.route(
        departments=[("x", "")], rules_version=1, rule_name="r", unresolved_functions=[],
        clocks=default_clock_for("EMERGENCY", "FIRE"), clock=AROUND_THE_CLOCK,
        escalation_chain=CHAIN, at=T0)
    ) == "REPORT_ALREADY_ROUTED"
    fresh = Report(rider_id="r", kind="EMERGENCY", category="FIRE", street_id="s", latitude=0,
                   longitude=0, text="t", attachment_refs=[], observed_at=T0, submitted_at=T0)
    assert reason_of(lambda: fresh.route(
        departments=[], rules_version=1, rule_name="r", unresolved_functions=["PETITIONS"],
        clocks=default_clock_for("EMERGENCY", "FIRE"), clock=AROUND_THE_CLOCK,
        escalation_chain=CHAIN, at=T0)
    ) == "NO_ROUTE"


# ---------------------------------------------------------------------------- routing rules


def rule(name, kind="", category="", street_id="", functions=(), ids=()):
    return {"name": name, "kind": kind, "category": category, "street_id": street_id,
            "department_functions": list(functions), "department_ids": list(ids)}


def test_the_first_matching_rule_routes_and_empty_fields_match_anything():
    rules = RoutingRules(rules=[
        rule("fires on hehuachi", category="FIRE", street_id="hehuachi",
             functions=["PUBLIC_SECURITY", "SOCIAL_WORK"]),
        rule("emergencies", kind="EMERGENCY", functions=["PUBLIC_SECURITY"]),
        rule("everything else", functions=["SOCIAL_WORK"]),
    ], deadlines=default_deadline_seconds(), clocks=default_clocks(),
                         at_risk_percent=80)
    assert rules.match("EMERGENCY", "FIRE", "hehuachi")["name"] == "fires on hehuachi"
    assert rules.match("EMERGENCY", "FIRE", "other-street")["name"] == "emergencies"
    assert rules.match("PUBLIC_SENTIMENT", "FIRE", "other-street")["name"] == "everything else"


def test_changing_the_rules_makes_a_new_version_that_routes_differently():
    rules = RoutingRules(rules=[rule("all", functions=["SOCIAL_WORK"])],
                         deadlines=default_deadline_seconds(), clocks=default_clocks(),
                         at_risk_percent=80)
    assert rules.version == 1
    rules.change(rules=[rule("disputes", category="DISPUTE", functions=["POLITICAL_LEGAL"])],
                 deadlines=default_deadline_seconds(), clocks=default_clocks(),
                         at_risk_percent=80)
    assert rules.version == 2
    assert rules.match("ANOMALY_WARNING", "DISPUTE", "s")["name"] == "disputes"
    assert rules.match("ANOMALY_WARNING", "FIRE", "s") is None


def test_a_function_goes_to_the_nearest_department_of_that_function():
    departments = {("district-1", "PUBLIC_SECURITY"): "district-police",
                   ("city-1", "PUBLIC_SECURITY"): "city-police",
                   ("street-1", "SOCIAL_WORK"): "street-social-work"}
    found, unresolved = resolve_departments(
        rule("r", functions=["PUBLIC_SECURITY", "SOCIAL_WORK", "PETITIONS"],
             ids=["named-dept", "district-police"]),
        ["street-1", "district-1", "city-1"],
        lambda parent, function: departments.get((parent, function)),
        lambda department: "POLITICAL_LEGAL")
    assert found == [("district-police", "PUBLIC_SECURITY"),
                     ("street-social-work", "SOCIAL_WORK"),
                     ("named-dept", "POLITICAL_LEGAL")]
    assert unresolved == ["PETITIONS"]


def test_a_rule_table_with_bad_rules_names_every_problem():
    violations = Violations()
    check_rules(violations, [rule("a", functions=["SOCIAL_WORK"]), rule("a"),
                             rule("", functions=["", "SOCIAL_WORK", "SOCIAL_WORK"])])
    assert {v.field for v in violations.items} == {
        "rules[1].name", "rules[1]", "rules[2].name", "rules[2].department_functions[0]",
        "rules[2].department_functions"}
    empty = Violations()
    check_rules(empty, [])
    assert [v.field for v in empty.items] == ["rules"]


def test_a_function_the_entry_point_found_unknown_is_not_also_unspecified_or_twice():
    violations = Violations()
    violations.add("rules[0].department_functions[0]", "42 is not a DepartmentFunction",
                   "ENUM_VALUE_UNKNOWN")
    violations.add("rules[0].department_functions[1]", "43 is not a DepartmentFunction",
                   "ENUM_VALUE_UNKNOWN")
    check_rules(violations, [rule("a", functions=["", "", "SOCIAL_WORK"])])
    assert [(v.field, v.reason) for v in violations.items] == [
        ("rules[0].department_functions[0]", "ENUM_VALUE_UNKNOWN"),
        ("rules[0].department_functions[1]", "ENUM_VALUE_UNKNOWN")]


# ---------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize(("acknowledge", "resolve", "faults"), [
    # Half a second is positive, but stored in whole seconds it would be 0: refused.
    (timedelta(seconds=0.5), timedelta(hours=1),
     [("d.acknowledge_within", "DURATION_NOT_WHOLE_SECONDS")]),
    (timedelta(minutes=15), timedelta(hours=24, microseconds=1),
     [("d.resolve_within", "DURATION_NOT_WHOLE_SECONDS")]),
    (timedelta(seconds=-1.5), timedelta(hours=1),
     [("d.acknowledge_within", "DURATION_NOT_WHOLE_SECONDS"),
      ("d.acknowledge_within", "DURATION_NOT_POSITIVE")]),
    (timedelta(seconds=1), timedelta(seconds=2), []),
])
def test_a_deadline_is_whole_seconds_as_it_is_stored(acknowledge, resolve, faults):
    violations = Violations()
    check_deadline(violations, "d", acknowledge, resolve)
    assert [(v.field, v.reason) for v in violations.items] == faults



def test_emergencies_and_risks_to_life_run_two_hours_around_the_clock_whatever_the_category():
    # A report of kind EMERGENCY takes the emergency clock even in a working-time category.
    emergency = clock_times(default_clock_for("EMERGENCY", "DISPUTE"), T0, AROUND_THE_CLOCK)
    assert emergency["acknowledge_due"] == T0 + timedelta(minutes=15)
    assert emergency["resolve_due"] == T0 + timedelta(hours=2)
    assert emergency["resolve_at_risk"] == T0 + timedelta(minutes=96)  # 80 % of 2 h
    fire = default_clock_for("ANOMALY_WARNING", "FIRE")
    assert (fire["resolve"], fire["around_the_clock"]) == (2 * 3600, True)
    utilities = default_clock_for("PUBLIC_SENTIMENT", "UTILITIES")
    assert (utilities["resolve"], utilities["around_the_clock"]) == (24 * 3600, True)
    general = default_clock_for("PUBLIC_SENTIMENT", "ROAD_HAZARD")
    assert (general["resolve"], general["around_the_clock"]) == (7 * 8 * 3600, False)
    complex_ = default_clock_for("ANOMALY_WARNING", "DISPUTE")
    assert (complex_["resolve"], complex_["around_the_clock"]) == (15 * 8 * 3600, False)
    assert all(d["acknowledge"] < d["resolve"] for d in default_clocks().values())


def test_escalation_climbs_street_district_city_and_stays_at_the_city():
    assert next_level(EscalationLevel.STREET) is EscalationLevel.DISTRICT
    assert next_level(EscalationLevel.DISTRICT) is EscalationLevel.CITY
    assert next_level(EscalationLevel.CITY) is EscalationLevel.CITY


def test_a_missed_acknowledgement_escalates_once_to_the_district_then_resolution_to_the_city():
    report = a_report(departments=("police",))
    before_due = T0 + timedelta(minutes=14)
    assert reason_of(lambda: report.escalate("police", DeadlineKind.ACKNOWLEDGE, before_due)
                     ) == "DEADLINE_NOT_MISSED"
    report.escalate("police", DeadlineKind.ACKNOWLEDGE, T0 + timedelta(minutes=15))
    assert reason_of(lambda: report.escalate("police", DeadlineKind.ACKNOWLEDGE,
                                             T0 + timedelta(hours=1))) == "ALREADY_ESCALATED"
    assignment = report.assignments["police"]
    assert assignment["level"] == "DISTRICT"
    assert assignment["escalations"]["ACKNOWLEDGE"]["escalated_to"] == "district-1"
    # Acknowledged late: the resolution deadline still runs, and its miss goes to the city.
    report.acknowledge("police", T0 + timedelta(hours=1))
    assert not report.missed_deadline("police", DeadlineKind.ACKNOWLEDGE, T0 + timedelta(days=9))
    report.escalate("police", DeadlineKind.RESOLVE, T0 + timedelta(hours=24))
    assert assignment["level"] == "CITY"
    assert assignment["escalations"]["RESOLVE"]["escalated_to"] == "city-1"


def test_done_work_never_escalates():
    report = a_report(departments=("police",))
    report.acknowledge("police", T0)
    assert reason_of(lambda: report.escalate("police", DeadlineKind.ACKNOWLEDGE,
                                             T0 + timedelta(hours=1))) == "DEADLINE_NOT_MISSED"
    report.reject("police", "NOT_ACTIONABLE", "", T0)
    assert reason_of(lambda: report.escalate("police", DeadlineKind.RESOLVE,
                                             T0 + timedelta(days=2))) == "DEADLINE_NOT_MISSED"


# ---------------------------------------------------------------------------- duplicates


def incident(category="FIRE", lat=LAT, lon=LON, at=T0):
    return {"category": category, "latitude": lat, "longitude": lon, "observed_at": at}


def test_haversine_distance_matches_known_lengths():
    # One degree of latitude is about 111.2 km anywhere; one of longitude shrinks with cos(lat).
    assert distance_metres(0, 0, 1, 0) == pytest.approx(111_195, rel=1e-3)
    assert distance_metres(60, 10, 60, 11) == pytest.approx(55_597, rel=1e-3)
    assert distance_metres(LAT, LON, LAT, LON) == 0


def test_a_report_near_in_space_and_time_of_the_same_category_is_the_same_incident():
    metres = same_incident(incident(), incident(lat=LAT_150M_NORTH, at=T0 + timedelta(hours=1)))
    assert metres == pytest.approx(150, abs=1)


@pytest.mark.parametrize("other", [
    incident(category="ROAD_HAZARD"),
    incident(lat=LAT + 250 / 111_195),
    incident(at=T0 + DUPLICATE_WITHIN + timedelta(seconds=1)),
    incident(at=T0 - DUPLICATE_WITHIN - timedelta(seconds=1)),
], ids=["other-category", "250m-away", "just-over-2h-later", "just-over-2h-earlier"])
def test_reports_apart_in_category_space_or_time_are_different_incidents(other):
    assert same_incident(incident(), other) is None


def test_a_duplicate_names_its_original_and_the_original_lists_it():
    original = a_report()
    duplicate = Report(rider_id="rider-2", kind="EMERGENCY", category="FIRE",
                       street_id="street-1", latitude=LAT, longitude=LON, text="着火了",
                       attachment_refs=[], observed_at=T0, submitted_at=T0)
    duplicate.link_as_duplicate(str(original.id), 12.34)
    original.note_duplicate(str(duplicate.id))
    assert (duplicate.status, duplicate.duplicate_of) == (ReportStatus.DUPLICATE,
                                                          str(original.id))
    assert duplicate.duplicate_distance_metres == 12.3
    assert original.duplicates == [str(duplicate.id)]
    original.reject("police", "NOT_ACTIONABLE", "", T0)
    original.reject("social", "NOT_ACTIONABLE", "", T0)
    assert reason_of(lambda: original.note_duplicate("another")) == "REPORT_REJECTED"


# ---------------------------------------------------------------------------- pledge


def test_a_rider_signs_each_version_of_the_pledge_once():
    pledge = Pledge(text="我承诺参与基层治理", at=T0)
    rider = Participant(rider_id="rider-1", home_street_id="street-1")
    rider.note_status(verified=True, suspended=False, left=False)
    rider.sign_pledge(1, pledge.current_version, T0)
    with pytest.raises(AlreadyExists) as error:
        rider.sign_pledge(1, pledge.current_version, T0)
    assert error.value.reason == "PLEDGE_ALREADY_SIGNED"
    pledge.revise(text="新版承诺", at=T0 + timedelta(days=30))
    assert pledge.current_version == 2
    rider.sign_pledge(2, pledge.current_version, T0 + timedelta(days=31))
    assert sorted(rider.pledges) == ["1", "2"]


def test_a_replaced_version_cannot_be_signed_and_an_unknown_one_is_not_found():
    pledge = Pledge(text="v1", at=T0)
    pledge.revise(text="v2", at=T0)
    rider = Participant(rider_id="rider-1", home_street_id="")
    assert reason_of(lambda: rider.sign_pledge(1, pledge.current_version, T0)
                     ) == "PLEDGE_VERSION_SUPERSEDED"
    with pytest.raises(NotFound):
        pledge.text_of(3)


@pytest.mark.parametrize(("verified", "suspended", "left"), [
    (False, False, False), (True, True, False), (True, False, True)])
def test_only_an_active_rider_is_active(verified, suspended, left):
    rider = Participant(rider_id="r", home_street_id="")
    rider.note_status(verified=verified, suspended=suspended, left=left)
    assert reason_of(rider.require_active) == "RIDER_NOT_ACTIVE"


# ---------------------------------------------------------------------------- mediation


def a_case() -> MediationCase:
    return MediationCase(street_id="street-1", report_id="", subject="餐品洒漏纠纷",
                         mediator_name="李调解员",
                         parties=[{"party_id": "p1", "role": "RIDER", "rider_id": "rider-1",
                                   "sealed_name": ""},
                                  {"party_id": "p2", "role": "CUSTOMER", "rider_id": "",
                                   "sealed_name": "sealed"}], opened_at=T0)


def test_a_mediation_needs_a_session_before_an_agreement():
    case = a_case()
    assert reason_of(lambda: case.agree("赔偿一份餐", T0)) == "NO_SESSION_HELD"
    assert reason_of(lambda: case.fail("no show", T0)) == "NO_SESSION_HELD"
    case.hold_session(T0 + timedelta(days=1), "荷花池驿站", "both parties heard")
    case.agree("merchant refunds; rider apologises", T0 + timedelta(days=1))
    assert case.status is MediationStatus.AGREED
    assert reason_of(lambda: case.hold_session(T0, "x", "")) == "CASE_AGREED"
    assert reason_of(lambda: case.fail("late", T0)) == "CASE_AGREED"


def test_a_failed_mediation_is_closed_with_its_reason():
    case = a_case()
    case.hold_session(T0, "社区", "")
    case.fail("the customer refused any offer", T0)
    assert (case.status, case.failure_reason) == (MediationStatus.FAILED,
                                                  "the customer refused any offer")


def test_parties_need_two_a_role_and_riders_need_rider_ids():
    violations = Violations()
    check_parties(violations, [{"role": "RIDER", "rider_id": "", "name": ""}])
    assert {v.field for v in violations.items} == {"parties", "parties[0].rider_id"}
    violations = Violations()
    check_parties(violations, [{"role": "", "rider_id": "", "name": "x"},
                               {"role": "MERCHANT", "rider_id": "r", "name": " "}])
    assert {v.field for v in violations.items} == {
        "parties[0].role", "parties[1].rider_id", "parties[1].name"}


# ---------------------------------------------------------------------------- contract


def test_governance_topics_name_the_classes_that_store_those_events():
    assert events.REPORT_SUBMITTED == get_topic(Report.Submitted)
    assert events.REPORT_ROUTED == get_topic(Report.Routed)
    assert events.REPORT_LINKED_AS_DUPLICATE == get_topic(Report.LinkedAsDuplicate)
    assert events.REPORT_CLOSED == get_topic(Report.Closed)
    assert events.REPORT_VERIFIED == get_topic(Report.Verified)
    assert events.REPORT_ESCALATED == get_topic(Report.Escalated)
    assert events.PLEDGE_SIGNED == get_topic(Participant.PledgeSigned)
    assert events.MEDIATION_AGREED == get_topic(MediationCase.Agreed)
