"""Deadline clocks by category (12345's standard) in the city's working calendar, pausing and
resuming a clock, at-risk marking before a breach, and escalation exactly once across a
restart and two replicas; on SQLite and PostgreSQL, on a clock the test moves.

The calendar of these tests is 2026's National Day: 1-8 October off (Thursday to Thursday),
Sunday 27 September and Saturday 10 October worked instead (调休), working hours 09:00-12:00
and 13:30-17:30 (7 hours a day), China Standard Time."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from eventsourcing.persistence import StoredEvent

from services.governance.application import CategoryClockInput, DeadlineInput, RuleInput
from services.governance.deadlines import DeadlineScheduler
from services.governance.domain.model import RoutingRules
from services.governance.domain.values import (
    Category,
    DeadlineKind,
    DepartmentFunction,
    PauseReason,
    ReportKind,
)
from shared.application import MAC_KEY
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.values import CITY_TIME
from tests.conftest import as_actor, stored_state

# governance's world (a city, its streets and departments, riders) and its clock.
from tests.integration.test_governance_app import (  # noqa: F401
    ADMIN,
    LAT,
    clock,
    new_rider,
    open_governance,
    set_rules,
    submit,
    topics,
    work,
    world,
)

HOUR = timedelta(hours=1)


def cst(*args: int) -> datetime:
    return datetime(*args, tzinfo=CITY_TIME)


def national_day(w) -> int:
    with as_actor(ADMIN):
        return w["governance"].set_working_calendar(
            spans=[("09:00", "12:00"), ("13:30", "17:30")], weekdays=[1, 2, 3, 4, 5],
            holidays=[f"2026-10-0{d}" for d in range(1, 9)],
            working_days=["2026-09-27", "2026-10-10"])["version"]


def all_to_social_work(w, **kwargs) -> int:
    with as_actor(ADMIN):
        return w["governance"].set_routing_rules(
            rules=[RuleInput(name="all to social work",
                             department_functions=[DepartmentFunction.SOCIAL_WORK])],
            deadlines=[], **kwargs)["version"]


def as_release_0_1_0_stored_it(app, notification, drop) -> object:
    """The event of `notification` as the release before clocks by category stored it:
    without the fields `drop` takes out of its state, without a class_version, MACed as any
    stored event; read back through the application's own mapper (upcasters included)."""
    state = app.mapper.transcoder.decode(notification.state)
    for key in ("class_version", MAC_KEY):
        state.pop(key, None)
    drop(state)
    return app.mapper.to_domain_event(StoredEvent(
        originator_id=notification.originator_id,
        originator_version=notification.originator_version, topic=notification.topic,
        state=stored_state(notification.originator_id, notification.originator_version,
                           notification.topic, state)))


@pytest.fixture
def city(world, clock):  # noqa: F811
    national_day(world)
    all_to_social_work(world)
    world["rider"] = new_rider(world)
    world["n"] = 0
    return world


def report_at(w, clock, at, *, kind=ReportKind.PUBLIC_SENTIMENT,  # noqa: F811
              category=Category.ROAD_HAZARD) -> dict:
    clock.now = at
    w["n"] += 1  # each far from the others: none is a duplicate
    report_id = submit(w, w["rider"], kind=kind, category=category,
                       lat=LAT + w["n"] * 0.01)["report_id"]
    [assignment] = w["governance"].report(report_id).assignments
    return {"report_id": report_id, **assignment}


def history(w, report_id, event_type):
    return [e for e in w["governance"].report_history(report_id)
            if e.event_type == f"Report.{event_type}"]


# ---------------------------------------------------------------------------- by category


def test_an_emergency_runs_two_hours_around_the_clock_whatever_its_category(city, clock):  # noqa: F811
    # Friday 9 October, 20:00 (after hours), a dispute reported as an emergency.
    a = report_at(city, clock, cst(2026, 10, 9, 20, 0), kind=ReportKind.EMERGENCY,
                  category=Category.DISPUTE)
    assert a["due"]["ACKNOWLEDGE"] == cst(2026, 10, 9, 20, 15)
    assert a["due"]["RESOLVE"] == cst(2026, 10, 9, 22, 0)
    assert city["governance"].report(a["report_id"]).clocks == {
        "acknowledge": 900, "resolve": 7200, "around_the_clock": True, "at_risk_percent": 80}


def test_a_risk_to_life_runs_around_the_clock_through_a_public_holiday(city, clock):  # noqa: F811
    a = report_at(city, clock, cst(2026, 10, 3, 23, 0), category=Category.PERSON_IN_NEED)
    assert (a["due"]["ACKNOWLEDGE"], a["due"]["RESOLVE"]) == (
        cst(2026, 10, 3, 23, 15), cst(2026, 10, 4, 1, 0))


def test_water_power_gas_and_heating_get_24_hours_around_the_clock(city, clock):  # noqa: F811
    # The eve of the holiday: the 24 hours run through National Day itself.
    a = report_at(city, clock, cst(2026, 9, 30, 17, 0), category=Category.UTILITIES)
    assert a["due"]["RESOLVE"] == cst(2026, 10, 1, 17, 0)
    assert a["due"]["ACKNOWLEDGE"] == cst(2026, 9, 30, 19, 0)


def test_a_general_request_gets_seven_working_days_across_the_holiday_and_adjusted_days(
        city, clock):  # noqa: F811
    # Wednesday 30 September, 16:30: one working hour left that day; 1-8 October off; Friday 9
    # and Saturday 10 (adjusted) worked; then the week of 12 October.
    a = report_at(city, clock, cst(2026, 9, 30, 16, 30), category=Category.ROAD_HAZARD)
    # 4 working hours: 16:30-17:30, then 9 October 09:00-12:00, ending as the morning closes.
    assert a["due"]["ACKNOWLEDGE"] == cst(2026, 10, 9, 12, 0)
    # 56 working hours: 1 (30 Sep) + 7 (9 Oct) + 7 (10 Oct) + 35 (12-16 Oct) = 50, then 6 on
    # Monday 19 October: 09:00-12:00 and 13:30-16:30.
    assert a["due"]["RESOLVE"] == cst(2026, 10, 19, 16, 30)
    # 80 % of 56 hours is 44.8: 43 by the morning of Friday 16 October, then 1 h 48 min.
    assert a["at_risk_from"]["RESOLVE"] == cst(2026, 10, 16, 10, 48)


def test_a_complex_request_starts_on_the_adjusted_sunday_after_a_weekend_report(city, clock):  # noqa: F811
    # Saturday 26 September (off) at 10:00; Sunday 27 is worked (调休).
    a = report_at(city, clock, cst(2026, 9, 26, 10, 0), category=Category.DISPUTE)
    # 8 working hours: 7 on Sunday 27, 1 on Monday 28.
    assert a["due"]["ACKNOWLEDGE"] == cst(2026, 9, 28, 10, 0)
    # 120 working hours: 27-30 Sep (28), 9 and 10 Oct (14), then from 12 Oct, 7 a day: 78
    # more = 11 full days (12-16, 19-23, 26 Oct) and one hour on 27 Oct.
    assert a["due"]["RESOLVE"] == cst(2026, 10, 27, 10, 0)


def test_a_weekend_report_of_a_general_request_waits_for_monday_with_the_default_calendar(
        world, clock):  # noqa: F811
    # No calendar set: Monday to Friday 09:00-17:00.
    assert world["governance"].working_calendar().version == 0
    all_to_social_work(world)
    world["rider"], world["n"] = new_rider(world), 0
    a = report_at(world, clock, cst(2026, 6, 6, 22, 0), category=Category.ENVIRONMENT)
    assert a["due"]["ACKNOWLEDGE"] == cst(2026, 6, 8, 13, 0)


def test_the_city_admin_sets_the_clocks_of_a_category_and_the_share_at_risk(city, clock):  # noqa: F811
    version = all_to_social_work(city, category_deadlines=[CategoryClockInput(
        Category.ROAD_HAZARD, HOUR, 3 * HOUR, around_the_clock=True)], at_risk_percent=50)
    rules = city["governance"].routing_rules()
    assert (rules.version, rules.at_risk_percent) == (version, 50)
    assert rules.clocks["ROAD_HAZARD"] == {"acknowledge": 3600, "resolve": 10800,
                                           "around_the_clock": True}
    assert rules.clocks["DISPUTE"]["resolve"] == 15 * 8 * 3600  # the default
    a = report_at(city, clock, cst(2026, 10, 4, 12, 0))
    assert a["due"]["RESOLVE"] == cst(2026, 10, 4, 15, 0)
    assert a["at_risk_from"]["RESOLVE"] == cst(2026, 10, 4, 13, 30)


def test_bad_clocks_and_calendars_are_refused_and_nothing_is_stored(city, clock):  # noqa: F811
    before = city["governance"].last_position()
    with pytest.raises(InvalidArgument) as bad_rules:
        all_to_social_work(city, category_deadlines=[
            CategoryClockInput(None, HOUR, 2 * HOUR),
            CategoryClockInput(Category.FIRE, 2 * HOUR, HOUR),
            CategoryClockInput(Category.FIRE, HOUR, 2 * HOUR),
            CategoryClockInput(Category.FIRE, HOUR, 2 * HOUR)], at_risk_percent=100)
    assert {(v.field, v.reason) for v in bad_rules.value.violations} == {
        ("category_deadlines[0].category", "ENUM_VALUE_REQUIRED"),
        ("category_deadlines[1].resolve_within", "RESOLVE_WITHIN_NOT_AFTER_ACKNOWLEDGE_WITHIN"),
        ("category_deadlines[2].category", "DUPLICATE_VALUE"),
        ("category_deadlines[3].category", "DUPLICATE_VALUE"),
        ("at_risk_percent", "VALUE_OUT_OF_RANGE")}
    with pytest.raises(InvalidArgument) as bad_calendar, as_actor(ADMIN):
        city["governance"].set_working_calendar(
            spans=[("09:00", "09:00")], weekdays=[], holidays=["2026-13-01", "2026-10-10"],
            working_days=["2026-10-10"])
    assert {(v.field, v.reason) for v in bad_calendar.value.violations} == {
        ("working_hours[0].end", "SPAN_END_NOT_AFTER_START"),
        ("working_weekdays", "NO_WORKING_WEEKDAYS"),
        ("holidays[0]", "DAY_INVALID"),
        ("adjusted_working_days[0]", "HOLIDAY_AND_WORKING_DAY")}
    assert city["governance"].last_position() == before


def test_the_calendar_is_versioned_and_the_default_applies_until_set(world):  # noqa: F811
    app = world["governance"]
    default = app.working_calendar()
    assert (default.spans, default.weekdays, default.holidays, default.version) == (
        [{"start": "09:00", "end": "17:00"}], [1, 2, 3, 4, 5], [], 0)
    first = national_day(world)
    with as_actor(ADMIN):
        second = app.set_working_calendar(spans=[("08:30", "17:00")], weekdays=[1, 2, 3, 4, 5, 6],
                                          holidays=[], working_days=[])["version"]
    assert (first, second) == (1, 2)
    assert app.working_calendar(first).working_days == ["2026-09-27", "2026-10-10"]
    assert app.working_calendar().weekdays == [1, 2, 3, 4, 5, 6]
    with pytest.raises(NotFound) as unknown:
        app.working_calendar(3)
    assert unknown.value.reason == "WORKING_CALENDAR_VERSION_NOT_FOUND"


# ---------------------------------------------------------------------------- pausing


def test_a_paused_clock_does_not_count_and_moves_the_due_time_on(city, clock):  # noqa: F811
    app, scheduler = city["governance"], DeadlineScheduler(city["governance"])
    a = report_at(city, clock, cst(2026, 10, 12, 9, 0))  # Monday
    report_id = a["report_id"]
    assert a["due"]["RESOLVE"] == cst(2026, 10, 21, 17, 30)  # 56 h: 8 days of 7 h
    clock.now = cst(2026, 10, 12, 9, 30)
    work(city, "social", report_id, "acknowledge_assignment")
    clock.now = cst(2026, 10, 16, 16, 30)  # Friday
    work(city, "social", report_id, "pause_assignment_clock",
         reason=PauseReason.WAITING_FOR_RIDER, note="asked the rider for a photo")
    paused = app.report(report_id).assignments[0]
    assert paused["paused"]["reason"] == "WAITING_FOR_RIDER"
    [entry], _ = app.department_queue(department_id=city["social"], page_size=0, page_token="")
    assert (entry.pause_reason, entry.at_risk) == ("WAITING_FOR_RIDER", False)

    # Past the old due time, and past its at-risk share: nothing happens while paused.
    clock.now = cst(2026, 10, 22, 10, 0)
    assert scheduler.run_once() == 0
    with pytest.raises(FailedPrecondition) as twice:
        work(city, "social", report_id, "pause_assignment_clock",
             reason=PauseReason.OTHER, note="again")
    assert twice.value.reason == "CLOCK_ALREADY_PAUSED"

    work(city, "social", report_id, "resume_assignment_clock")
    resumed = app.report(report_id).assignments[0]
    # Paused Friday 16:30 to Thursday 10:00: 1 + 7 + 7 + 7 + 1 = 23 working hours; 22 were
    # left at the pause, counted from now: 6 today, 7 on Friday 23, 7 on Monday 26, and 2 on
    # Tuesday 27 October.
    assert resumed["due"]["RESOLVE"] == cst(2026, 10, 27, 11, 0)
    assert resumed["due"]["ACKNOWLEDGE"] == a["due"]["ACKNOWLEDGE"]  # met: it stays
    assert resumed["paused"] is None
    assert [p["paused_seconds"] for p in resumed["pauses"]] == [23 * 3600]
    with pytest.raises(FailedPrecondition) as not_paused:
        work(city, "social", report_id, "resume_assignment_clock")
    assert not_paused.value.reason == "CLOCK_NOT_PAUSED"
    [entry], _ = app.department_queue(department_id=city["social"], page_size=0, page_token="")
    assert (entry.due_at, entry.pause_reason) == (cst(2026, 10, 27, 11, 0), "")
    # The at-risk share (44.8 h: Tuesday 20 October 11:48) moved on by 23 working hours too.
    assert scheduler.run_once() == 0
    assert resumed["at_risk_from"]["RESOLVE"] == cst(2026, 10, 23, 15, 18)
    clock.now = cst(2026, 10, 23, 15, 18)
    assert scheduler.run_once() == 1
    assert [e.details["deadline"] for e in history(city, report_id, "AtRisk")] == ["RESOLVE"]
    clock.now = cst(2026, 10, 27, 11, 0)
    assert scheduler.run_once() == 1
    assert [e.details["deadline"] for e in history(city, report_id, "Escalated")] == [
        "RESOLVE"]


def test_what_cannot_be_paused_is_refused_with_its_reason_and_nothing_is_stored(city, clock):  # noqa: F811
    app = city["governance"]
    a = report_at(city, clock, cst(2026, 10, 12, 9, 0))
    report_id = a["report_id"]
    before = app.last_position()
    with pytest.raises(FailedPrecondition) as routed:
        work(city, "social", report_id, "pause_assignment_clock",
             reason=PauseReason.WAITING_FOR_RIDER, note="")
    assert routed.value.reason == "ASSIGNMENT_ROUTED"
    with pytest.raises(InvalidArgument) as no_reason:
        work(city, "social", report_id, "pause_assignment_clock", reason=None, note="")
    assert {(v.field, v.reason) for v in no_reason.value.violations} == {
        ("reason", "ENUM_VALUE_REQUIRED")}
    with pytest.raises(InvalidArgument) as other_without_note:
        work(city, "social", report_id, "pause_assignment_clock", reason=PauseReason.OTHER,
             note=" ")
    assert {(v.field, v.reason) for v in other_without_note.value.violations} == {
        ("note", "FIELD_REQUIRED")}
    with pytest.raises(NotFound) as not_assigned:
        work(city, "police", report_id, "pause_assignment_clock",
             reason=PauseReason.WAITING_FOR_RIDER, note="")
    assert not_assigned.value.reason == "ASSIGNMENT_NOT_FOUND"
    assert app.last_position() == before
    # Paused, then resolved: the pause ends with the work; a done assignment is not paused.
    work(city, "social", report_id, "acknowledge_assignment")
    work(city, "social", report_id, "start_assignment_work", note="")
    work(city, "social", report_id, "pause_assignment_clock",
         reason=PauseReason.WAITING_FOR_THIRD_PARTY, note="")
    work(city, "social", report_id, "resolve_assignment", resolution="repaired")
    assert app.report(report_id).assignments[0]["paused"] is None
    with pytest.raises(FailedPrecondition) as done:
        work(city, "social", report_id, "pause_assignment_clock",
             reason=PauseReason.WAITING_FOR_RIDER, note="")
    assert done.value.reason == "ASSIGNMENT_RESOLVED"


# ---------------------------------------------------------------------------- at risk, breach


def test_at_risk_then_breach_each_exactly_once_across_a_restart(city, clock):  # noqa: F811
    a = report_at(city, clock, cst(2026, 10, 9, 20, 0), kind=ReportKind.EMERGENCY,
                  category=Category.FIRE)
    report_id = a["report_id"]
    scheduler = DeadlineScheduler(city["governance"])
    clock.now = cst(2026, 10, 9, 20, 11, 59)  # 80 % of 15 minutes is 12
    assert scheduler.run_once() == 0
    clock.now = cst(2026, 10, 9, 20, 12)
    assert scheduler.run_once() == 1
    assert scheduler.run_once() == 0
    assignment = city["governance"].report(report_id).assignments[0]
    assert assignment["at_risk"] == {"ACKNOWLEDGE": {"due_at": cst(2026, 10, 9, 20, 15),
                                                     "at": cst(2026, 10, 9, 20, 12)}}
    [entry], _ = city["governance"].department_queue(department_id=city["social"],
                                                     page_size=0, page_token="")
    assert entry.at_risk

    # A new process on the same store: nothing is marked or escalated twice.
    city["governance"].close()
    city["governance"] = open_governance(city["env"], clock, city["identity"])
    scheduler = DeadlineScheduler(city["governance"])
    assert scheduler.run_once() == 0
    again = city["governance"].mark_deadline_at_risk(
        report_id=report_id, department_id=city["social"], deadline=DeadlineKind.ACKNOWLEDGE)
    assert again["version"] == 3  # the first answer: Submitted, Routed, AtRisk
    clock.now = cst(2026, 10, 9, 20, 15)
    assert scheduler.run_once() == 1
    city["governance"].close()
    city["governance"] = open_governance(city["env"], clock, city["identity"])
    assert DeadlineScheduler(city["governance"]).run_once() == 0
    assert [(e.principal, e.rpc, e.request_id) for e in history(city, report_id, "AtRisk")] == [
        ("governance-deadline-scheduler", "MarkDeadlineAtRisk",
         f"{report_id}:{city['social']}:ACKNOWLEDGE:at-risk")]
    assert len(history(city, report_id, "Escalated")) == 1
    # Acknowledged late: the resolution's clock reaches its share (96 minutes) and its due.
    work(city, "social", report_id, "acknowledge_assignment")
    clock.now = cst(2026, 10, 9, 21, 36)
    assert DeadlineScheduler(city["governance"]).run_once() == 1
    clock.now = cst(2026, 10, 9, 22, 0)
    assert DeadlineScheduler(city["governance"]).run_once() == 1
    assert [e.details["deadline"] for e in history(city, report_id, "AtRisk")] == [
        "ACKNOWLEDGE", "RESOLVE"]
    assert [e.details["deadline"] for e in history(city, report_id, "Escalated")] == [
        "ACKNOWLEDGE", "RESOLVE"]


def run_together(scheduler: DeadlineScheduler, start: threading.Barrier) -> None:
    start.wait()
    scheduler.run_once()


def test_two_replicas_mark_and_escalate_once(city, clock):  # noqa: F811
    reports = [report_at(city, clock, cst(2026, 10, 9, 20, 0), kind=ReportKind.EMERGENCY)[
        "report_id"] for _ in range(3)]
    other = open_governance(city["env"], clock, city["identity"])
    try:
        schedulers = [DeadlineScheduler(city["governance"]), DeadlineScheduler(other)]
        for at in (cst(2026, 10, 9, 20, 13), cst(2026, 10, 9, 20, 16)):
            clock.now = at
            start = threading.Barrier(2)
            threads = [threading.Thread(target=run_together, args=(s, start))
                       for s in schedulers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        other.close()
    for report_id in reports:
        assert len(history(city, report_id, "AtRisk")) == 1
        assert len(history(city, report_id, "Escalated")) == 1


def test_a_report_routed_before_clocks_by_category_keeps_its_due_times(city, clock):  # noqa: F811
    """A report routed by the release before (Routed v1: no clock policy) reads back with the
    policy its due times imply, around the clock and never at risk; its clock still pauses."""
    app = city["governance"]
    a = report_at(city, clock, cst(2026, 10, 12, 9, 0), category=Category.FIRE)
    assert app.report(a["report_id"]).clocks["around_the_clock"]
    # What 0.1.0 stored: the same event without the clocks and at-risk instants.
    [routed] = [n for n in topics(app, "Report.Routed")
                if str(n.originator_id) == a["report_id"]]

    def drop(state):
        state.pop("clocks")
        for assignment in state["assignments"]:
            assignment.pop("acknowledge_at_risk")
            assignment.pop("resolve_at_risk")
    event = as_release_0_1_0_stored_it(app, routed, drop)
    assert event.clocks == {"acknowledge": 900, "resolve": 7200, "around_the_clock": True,
                            "at_risk_percent": 0}
    assert event.assignments[0]["acknowledge_due"] == a["due"]["ACKNOWLEDGE"]


def test_routing_rules_stored_by_kind_only_are_read_with_the_default_category_clocks(
        city, clock):  # noqa: F811
    """Release 0.1.0's RoutingRules events (deadlines by kind, no clocks by category): read
    back with the default category clocks and share, their EMERGENCY deadlines the emergency
    clock."""
    app = city["governance"]
    set_rules(city, RuleInput(name="all", department_functions=[DepartmentFunction.SOCIAL_WORK]),
              deadlines=[DeadlineInput(ReportKind.EMERGENCY, timedelta(minutes=5),
                                       timedelta(hours=24))])
    [*_, changed] = [n for n in app.read_log(1, 100_000)
                     if n.topic.endswith(("RoutingRules.Configured", "RoutingRules.Changed"))]

    def drop(state):
        state.pop("clocks")
        state.pop("at_risk_percent")
    event = as_release_0_1_0_stored_it(app, changed, drop)
    assert event.originator_id == RoutingRules.ID
    assert event.at_risk_percent == 80
    assert event.clocks["UTILITIES"] == {"acknowledge": 7200, "resolve": 86400,
                                         "around_the_clock": True}
    assert event.deadlines["EMERGENCY"] == {"acknowledge": 300, "resolve": 86400}
    # And a report routed by such a table takes its emergency deadlines around the clock.
    a = report_at(city, clock, cst(2026, 10, 4, 3, 0), kind=ReportKind.EMERGENCY)
    assert a["due"]["RESOLVE"] == cst(2026, 10, 5, 3, 0)
    assert json.dumps(app.routing_rules().deadlines["EMERGENCY"]) == json.dumps(
        {"acknowledge": 300, "resolve": 86400})
