"""governance's events as the city's figures count them: the real governance application takes
reports, help requests and mediation cases through their lives on a real store, and its stored
events go through the statistics mappers as the read model feeds them."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from eventsourcing.domain import DomainEvent
from eventsourcing.utils import resolve_topic

from services.governance.application import Party, RuleInput, SessionInput
from services.governance.domain.values import (
    Category,
    DepartmentFunction,
    FollowUpResult,
    HelpKind,
    PartyRole,
    RejectionReason,
    ReportKind,
    SatisfactionRating,
)
from services.statistics.domain import catalogue
from services.statistics.domain import governance_facts as g
from services.statistics.domain.facts import Dimension
from tests.conftest import as_actor
from tests.integration import test_governance_app as governance_world
from tests.integration.statistics_facts import (
    JsonMemory,
    directory_of,
    facts_fit_their_measures,
    map_log,
    measures_are_well_formed,
    values,
)
from tests.integration.test_governance_app import (
    LAT,
    PLATFORM,
    new_rider,
    set_rules,
    standard_rules,
    submit,
    work,
)
from tests.integration.test_help_requests import act, ask
from tests.integration.test_report_transfer_and_rating import assign, office, rate, resolve

world = governance_world.world
clock = governance_world.clock


@pytest.fixture
def store_env(tmp_path):
    """The mappers read the state as stored, the same bytes on either store: SQLite will do."""
    return {"QIJI_DATA_DIR": str(tmp_path / "data")}


def figures(w):
    return map_log(w["governance"], "governance", w["identity"])


def fires_to_two_departments(w) -> None:
    set_rules(w, RuleInput(name="fires", category=Category.FIRE, department_functions=[
        DepartmentFunction.PUBLIC_SECURITY, DepartmentFunction.SOCIAL_WORK]))


def test_every_topic_mapped_names_an_event_class_governance_stores():
    for topic in g.MAPPERS:
        assert issubclass(resolve_topic(topic), DomainEvent), topic
    assert set(g.REPORT_KIND_LABELS) == {k.value for k in ReportKind}
    assert set(g.REPORT_CATEGORY_LABELS) == {c.value for c in Category}
    measures_are_well_formed("governance")
    labels = catalogue.key_labels()
    assert labels[Dimension.REPORT_KIND]["EMERGENCY"] == "突发事件直报"
    assert labels[Dimension.REPORT_CATEGORY]["UTILITIES"] == "水电气热"


def test_a_report_counts_where_it_was_made_by_kind_and_category_through_its_life(world, clock):
    fires_to_two_departments(world)
    submitted_at = clock.now
    report = submit(world, new_rider(world))["report_id"]
    clock.now += timedelta(minutes=5)
    work(world, "police", report, "acknowledge_assignment")
    work(world, "social", report, "acknowledge_assignment")  # the same round: not again
    for name in ("police", "social"):
        work(world, name, report, "start_assignment_work", note="处置")
    clock.now += timedelta(hours=1)
    closed_at = clock.now
    work(world, "police", report, "resolve_assignment", resolution="已扑灭")
    work(world, "social", report, "reject_assignment", reason=RejectionReason.NOT_ACTIONABLE,
         note="")
    with as_actor(office(world)):
        world["governance"].verify_report(report_id=report, note="现场核实")
    rate(world, report, SatisfactionRating.BASICALLY_SATISFIED)
    f = figures(world)
    facts_fit_their_measures(f)
    [submitted] = f.of(g.REPORTS_SUBMITTED)
    assert (submitted.effective_at, submitted.report_kind, submitted.report_category) == (
        submitted_at, "EMERGENCY", "FIRE")
    assert (submitted.where.street_id, submitted.where.platform_id,
            submitted.where.station_id) == (world["street"], world["platform"], world["station"])
    assert [x.effective_at for x in f.of(g.REPORTS_ACKNOWLEDGED)] == [
        submitted_at + timedelta(minutes=5)]
    assert [x.effective_at for x in f.of(g.REPORTS_CLOSED)] == [closed_at]
    assert (f.total(g.REPORTS_RESOLVED), f.total(g.REPORTS_REJECTED)) == (1, 0)
    assert f.total(g.REPORTS_VERIFIED) == 1
    assert (f.total(g.RATINGS_BASICALLY_SATISFIED), f.total(g.RATINGS_SATISFIED),
            f.total(g.RATINGS_UNSATISFIED)) == (1, 0, 0)
    assert values(f.of(g.REPORTS_IN_HAND)) == [1, -1]
    assert f.total(g.REPORTS_IN_HAND, end=closed_at) == 1
    assert f.total(g.REPORTS_IN_HAND) == 0
    for x in (x for _, x in f.facts):
        assert (x.where, x.report_kind, x.report_category) == (submitted.where, "EMERGENCY",
                                                               "FIRE")


def test_a_report_every_department_rejects_counts_as_rejected(world):
    standard_rules(world)
    report = submit(world, new_rider(world), kind=ReportKind.PUBLIC_SENTIMENT,
                    category=Category.OTHER)["report_id"]
    work(world, "social", report, "reject_assignment", reason=RejectionReason.NOT_ACTIONABLE,
         note="非本街道事务")
    f = figures(world)
    assert (f.total(g.REPORTS_CLOSED), f.total(g.REPORTS_REJECTED),
            f.total(g.REPORTS_RESOLVED)) == (1, 1, 0)
    assert f.of(g.REPORTS_REJECTED)[0].report_kind == "PUBLIC_SENTIMENT"


def test_a_duplicate_counts_as_submitted_and_merged_and_is_never_in_hand(world):
    standard_rules(world)
    rider = new_rider(world)
    submit(world, rider)
    submit(world, rider, lat=LAT + 0.00005)  # a few metres away: the same fire
    f = figures(world)
    assert (f.total(g.REPORTS_SUBMITTED), f.total(g.REPORTS_MERGED_AS_DUPLICATES)) == (2, 1)
    assert f.total(g.REPORTS_IN_HAND) == 1


def test_a_reopening_counts_at_its_moment_and_leaves_the_first_rounds_closing_in_its_period(
        world, clock):
    standard_rules(world)
    report = submit(world, new_rider(world))["report_id"]
    closed_at = clock.now
    resolve(world, "police", report)
    with as_actor(office(world)):
        world["governance"].verify_report(report_id=report, note="现场核实")
    first_round = figures(world)
    clock.now += timedelta(days=3)
    reopened_at = clock.now
    assert rate(world, report, SatisfactionRating.UNSATISFIED)["reopened"]
    f = figures(world)
    [reopened] = f.of(g.REPORTS_REOPENED)
    assert (reopened.value, reopened.effective_at) == (1, reopened_at)
    assert [(x.value, x.effective_at) for x in f.by_topic("Report.Reopened")] == [
        (1, reopened_at), (1, reopened_at)]  # reopened, and in hand again
    assert f.total(g.RATINGS_UNSATISFIED) == 1
    # The first round's closing and verification stay where they were counted.
    round_one = dict(start=closed_at - timedelta(hours=1), end=closed_at + timedelta(hours=1))
    for measure in (g.REPORTS_CLOSED, g.REPORTS_RESOLVED, g.REPORTS_VERIFIED):
        assert f.total(measure, **round_one) == first_round.total(measure, **round_one) == 1
    assert f.total(g.REPORTS_IN_HAND, end=reopened_at) == 0
    assert f.total(g.REPORTS_IN_HAND) == 1
    # The office upholds the outcome: it closes (and is verified) again as it was — nothing
    # new is counted, and it is no longer in hand.
    clock.now += timedelta(hours=2)
    with as_actor(office(world), rpc="UpholdReportOutcome"):
        world["governance"].uphold_report_outcome(report_id=report, note="复核：处置到位")
    f = figures(world)
    assert (f.total(g.REPORTS_CLOSED), f.total(g.REPORTS_RESOLVED),
            f.total(g.REPORTS_VERIFIED)) == (1, 1, 1)
    assert f.total(g.REPORTS_IN_HAND) == 0
    assert f.of(g.REPORTS_IN_HAND)[-1].effective_at == clock.now


def test_a_reopened_report_handled_again_counts_its_second_round_when_it_comes(world, clock):
    standard_rules(world)
    report = submit(world, new_rider(world))["report_id"]
    resolve(world, "police", report, "已处理")
    rate(world, report, SatisfactionRating.UNSATISFIED)
    clock.now += timedelta(days=1)
    assign(world, report, "social", "换社工跟进")
    second = clock.now
    resolve(world, "social", report, "社工已上门")
    rate(world, report, SatisfactionRating.SATISFIED)
    f = figures(world)
    assert [x.effective_at for x in f.of(g.REPORTS_ACKNOWLEDGED)][1:] == [second]
    assert (f.total(g.REPORTS_ACKNOWLEDGED), f.total(g.REPORTS_CLOSED),
            f.total(g.REPORTS_RESOLVED), f.total(g.REPORTS_REOPENED)) == (2, 2, 2, 1)
    assert (f.total(g.RATINGS_UNSATISFIED), f.total(g.RATINGS_SATISFIED)) == (1, 1)
    assert f.total(g.REPORTS_IN_HAND) == 0


def test_a_help_request_asked_at_the_counter_never_carries_the_platform(world, clock):
    rider = new_rider(world)
    through_app = ask(world, rider)["help_request_id"]
    at_counter = ask(world, rider, HelpKind.LABOUR_DISPUTE,
                     who=office(world))["help_request_id"]
    clock.now += timedelta(days=2)
    for help_id in (through_app, at_counter):
        act(world, "social", help_id, "assign_caseworker", caseworker_name="王社工")
        act(world, "social", help_id, "give_help_outcome", outcome="已协调解决")
    f = figures(world)
    facts_fit_their_measures(f)
    asked, answered = f.of(g.HELP_REQUESTS_ASKED), f.of(g.HELP_REQUESTS_ANSWERED)
    assert [(x.where.street_id, x.where.platform_id, x.where.station_id) for x in asked] == [
        (world["street"], world["platform"], world["station"]), (world["street"], "", "")]
    assert [x.where for x in answered] == [x.where for x in asked]
    assert [x.effective_at for x in answered] == [clock.now, clock.now]
    assert f.total(g.HELP_REQUESTS_ASKED, where=lambda w: w.platform_id == world["platform"]) \
        == 1
    # Counts only: nothing of what the rider said nor of the kind travels with a fact.
    assert {(x.report_kind, x.report_category) for x in asked + answered} == {("", "")}


def test_mediation_cases_count_in_their_street_opened_agreed_reopened_failed(world, clock):
    rider = new_rider(world)

    def a_case(subject):
        with as_actor(office(world)):
            case_id = world["governance"].open_mediation_case(
                street_id=world["street"], report_id="", subject=subject,
                mediator_name="李调解员", parties=[Party(PartyRole.RIDER, rider_id=rider),
                                                Party(PartyRole.PROPERTY_MANAGER, name="张经理")]
            )["case_id"]
            world["governance"].record_mediation_session(
                case_id=case_id, session=SessionInput(held_at=clock.now, place="荷花池驿站"))
        return case_id

    agreed, failed = a_case("小区禁止骑手进入"), a_case("餐损赔偿")
    with as_actor(office(world)):
        world["governance"].record_mediation_agreement(case_id=agreed, outcome="开放骑手通道")
        world["governance"].record_mediation_failure(case_id=failed, reason="商家拒绝")
    clock.now += timedelta(days=10)
    with as_actor(office(world)):
        world["governance"].record_mediation_follow_up(
            case_id=agreed, day="", result=FollowUpResult.BROKEN, note="又禁止了", reopen=True)
    f = figures(world)
    facts_fit_their_measures(f)
    assert [f.total(m) for m in (g.MEDIATION_CASES_OPENED, g.MEDIATION_CASES_AGREED,
                                 g.MEDIATION_CASES_FAILED, g.MEDIATION_CASES_REOPENED)] == [
        2, 1, 1, 1]
    assert f.of(g.MEDIATION_CASES_REOPENED)[0].effective_at == clock.now
    assert {x.where for x in f.of(g.MEDIATION_CASES_OPENED)} == {
        f.of(g.MEDIATION_CASES_REOPENED)[0].where}
    assert f.of(g.MEDIATION_CASES_OPENED)[0].where.street_id == world["street"]
    assert f.of(g.MEDIATION_CASES_OPENED)[0].where.platform_id == ""


def test_platform_reports_are_counted_by_the_platform_only_when_they_are_its_riders(world):
    standard_rules(world)
    submit(world, new_rider(world), who=PLATFORM)
    f = figures(world)
    assert f.total(g.REPORTS_SUBMITTED, where=lambda w: w.platform_id == world["platform"]) == 1
    assert f.total(g.REPORTS_SUBMITTED, where=lambda w: w.platform_id == "someone else") == 0


def test_a_help_request_stored_before_its_channel_was_recorded_is_kept_off_the_platform(
        world):
    """HelpRequest.Requested gained `asked_through` without a class version: a request stored
    before names no channel. Where it was asked is not known, so it is counted the quieter
    way — for its street and the city, never for a platform."""
    ask(world, new_rider(world))
    [requested] = [e for e in figures(world).events if e.topic == g.topics.HELP_REQUESTED]
    old = {k: v for k, v in requested.state.items() if k != "asked_through"}
    [counted] = g.help_requested(replace(requested, state=old), directory_of(world["identity"]),
                                 JsonMemory())
    assert (counted.where.street_id, counted.where.platform_id, counted.where.station_id) == (
        world["street"], "", "")
