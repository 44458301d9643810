"""Transfer (转派), the street office's own assignment, notes, the outcome back to the rider's
platform, and the rider's rating (and the reopening it may bring), over a real store (SQLite and
PostgreSQL), on a clock the test moves."""

# The fixtures `world` and `clock` come from test_governance_app: tests name them as arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from qiji.feed.v1 import public_feed_service_pb2 as fpb

from services.governance.deadlines import DeadlineScheduler
from services.governance.domain.values import (
    RATING_WINDOW,
    ReportStatus,
    SatisfactionRating,
)
from services.governance.public_events import CATALOGUE
from services.identity.domain.values import DepartmentFunction as IdentityFunction
from services.identity.domain.values import OrganisationKind
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from shared.followers import LocalFeed
from shared.grpc.public_feed import read_public
from shared.tenancy import TenancyDirectory
from tests.conftest import actor, as_actor
from tests.integration.test_governance_app import (  # noqa: F401  (fixtures)
    ADMIN,
    PLATFORM,
    clock,
    department,
    escalations,
    new_rider,
    open_governance,
    racing_city,
    standard_rules,
    submit,
    topics,
    work,
    world,
)

AUDITOR = actor("auditor", "auditor")


def office(w):
    return actor("hehuachi-office", "street_office", organisation_id=w["street"])


def transfer(w, name, report_id, to, reason="不属本部门职责，转公安", request_id=""):
    with as_actor(department(w, name), rpc="TransferAssignment", request_id=request_id,
                  request=f"{report_id}{to}{reason}".encode()):
        return w["governance"].transfer_assignment(report_id=report_id, department_id=w[name],
                                                   to_department_id=to, reason=reason)


def assign(w, report_id, name, reason="街道指派"):
    with as_actor(office(w), rpc="AssignReport"):
        return w["governance"].assign_report(report_id=report_id, department_id=w[name],
                                             reason=reason)


def rate(w, report_id, rating, comment=""):
    with as_actor(PLATFORM, rpc="RateReportOutcome"):
        return w["governance"].rate_report_outcome(report_id=report_id, rating=rating,
                                                   comment=comment)


def resolve(w, name, report_id, resolution="已处置完毕"):
    work(w, name, report_id, "acknowledge_assignment")
    work(w, name, report_id, "start_assignment_work", note="出警")
    work(w, name, report_id, "resolve_assignment", resolution=resolution)


def a_report(w) -> str:
    standard_rules(w)  # an emergency goes to the police (the emergency clock: 15 min / 2 h)
    return submit(w, new_rider(w))["report_id"]


def seen_by(w, who, report_id):
    with as_actor(who):
        return w["governance"].report(report_id)


# ---------------------------------------------------------------------------- transfer


def test_a_transfer_gives_the_receiver_fresh_clocks_and_the_office_sees_it(world, clock):
    report_id = a_report(world)
    work(world, "police", report_id, "acknowledge_assignment")
    clock.now += timedelta(hours=3)
    transferred_at = clock.now
    transfer(world, "police", report_id, world["social"])
    report = seen_by(world, office(world), report_id)
    police, social = (next(a for a in report.assignments if a["department_id"] == world[d])
                      for d in ("police", "social"))
    assert (police["status"], police["transferred_to"], police["transfer_reason"]) == (
        "TRANSFERRED", world["social"], "不属本部门职责，转公安")
    assert (social["status"], social["transferred_from"], social["routed_at"]) == (
        "ROUTED", world["police"], transferred_at)
    assert social["due"]["ACKNOWLEDGE"] == transferred_at + timedelta(minutes=15)
    assert social["due"]["RESOLVE"] == transferred_at + timedelta(hours=2)
    # The street office reads every transfer in the history, with who made it.
    with as_actor(office(world)):
        history = world["governance"].report_history(report_id)
    [entry] = [e for e in history if e.event_type == "Report.AssignmentTransferred"]
    assert (entry.principal, entry.details["to_department_id"],
            entry.details["transfer_reason"]) == ("dept-police", world["social"],
                                                  "不属本部门职责，转公安")
    # The platform reads neither the officials' reason nor anything of it in clear.
    with as_actor(PLATFORM):
        shown = world["governance"].report_history(report_id)
    [entry] = [e for e in shown if e.event_type == "Report.AssignmentTransferred"]
    assert entry.details["transfer_reason"].startswith("[withheld:")
    # The queues follow: the work is the receiver's now.
    with as_actor(department(world, "social")):
        queue, _ = world["governance"].department_queue(department_id=world["social"],
                                                        page_size=10, page_token="")
    assert [(e.report_id, e.due_at) for e in queue] == [
        (report_id, transferred_at + timedelta(minutes=15))]
    with as_actor(department(world, "police")):
        assert world["governance"].department_queue(department_id=world["police"],
                                                    page_size=10, page_token="")[0] == []
    # The receiver's outcome closes the report.
    resolve(world, "social", report_id)
    assert world["governance"].report(report_id).status is ReportStatus.RESOLVED


def test_the_receivers_missed_deadline_escalates_once_and_the_transferrers_never(world, clock):
    report_id = a_report(world)
    clock.now += timedelta(minutes=10)
    transfer(world, "police", report_id, world["social"])
    scheduler = DeadlineScheduler(world["governance"])
    clock.now += timedelta(minutes=14)  # the police's 15 minutes are past; social's are not
    assert scheduler.run_once() == 1  # social's acknowledgement is at risk (80 % of 15 min)
    assert escalations(world["governance"]) == []
    clock.now += timedelta(minutes=1)
    assert scheduler.run_once() == 1
    assert scheduler.run_once() == 0
    [escalated] = escalations(world["governance"])
    assert (escalated.department_id, escalated.deadline, escalated.escalated_to) == (
        world["social"], "ACKNOWLEDGE", world["district"])


def test_a_department_given_the_report_again_has_its_own_deadlines_escalated(world, clock):
    """Police miss their acknowledgement (escalated), transfer, and the street office gives it
    back: the new round's missed deadline escalates too, once."""
    report_id = a_report(world)
    scheduler = DeadlineScheduler(world["governance"])
    clock.now += timedelta(minutes=15)
    assert scheduler.run_once() == 1
    transfer(world, "police", report_id, world["social"])
    assert transfer_refused(world, "social", report_id, world["police"]) == (
        FailedPrecondition, "TRANSFER_WOULD_BOUNCE")
    assign(world, report_id, "police", "公安处置更合适")
    clock.now += timedelta(minutes=15)
    assert scheduler.run_once() == 2  # social's first, police's second round
    assert sorted((e.department_id, e.deadline) for e in escalations(world["governance"])) == \
        sorted([(world["police"], "ACKNOWLEDGE"), (world["social"], "ACKNOWLEDGE"),
                (world["police"], "ACKNOWLEDGE")])
    assert scheduler.run_once() == 0
    report = world["governance"].report(report_id)
    assert [(a["department_id"], a["status"]) for a in report.past_assignments] == [
        (world["police"], "TRANSFERRED")]


def transfer_refused(w, name, report_id, to, reason="转", request_id=""):
    before = w["governance"].last_position()
    with pytest.raises((InvalidArgument, FailedPrecondition, AlreadyExists, NotFound)) as error:
        transfer(w, name, report_id, to, reason, request_id)
    assert w["governance"].last_position() == before, "a refused transfer wrote something"
    return type(error.value), error.value.reason


def test_transfers_that_make_no_sense_are_refused_precisely_and_write_nothing(world):
    report_id = a_report(world)
    assert transfer_refused(world, "police", report_id, world["police"]) == (
        InvalidArgument, "TRANSFER_TO_ITSELF")
    assert transfer_refused(world, "police", report_id, world["street"]) == (
        InvalidArgument, "ORGANISATION_KIND_NOT_ALLOWED")
    assert transfer_refused(world, "police", report_id,
                            "00000000-0000-4000-8000-000000000000") == (
        NotFound, "DEPARTMENT_NOT_FOUND")
    assert transfer_refused(world, "police", report_id, world["social"], reason=" ") == (
        InvalidArgument, "FIELD_REQUIRED")
    # A second department on the report: a transfer to it would hand it the work it has.
    assign(world, report_id, "social")
    assert transfer_refused(world, "police", report_id, world["social"]) == (
        AlreadyExists, "DEPARTMENT_ALREADY_ASSIGNED")
    resolve(world, "police", report_id)
    assert transfer_refused(world, "police", report_id, world["legal"]) == (
        FailedPrecondition, "ASSIGNMENT_RESOLVED")
    # A department the report was never routed to has no assignment to transfer.
    assert transfer_refused(world, "legal", report_id, world["petitions"]) == (
        NotFound, "ASSIGNMENT_NOT_FOUND")


def test_the_street_office_assigns_only_to_a_department(world):
    report_id = a_report(world)
    with as_actor(office(world)), pytest.raises(InvalidArgument) as refused:
        world["governance"].assign_report(report_id=report_id, department_id=world["street"],
                                          reason="x")
    assert refused.value.reason == "ORGANISATION_KIND_NOT_ALLOWED"


@pytest.mark.postgres
def test_two_transfers_of_one_assignment_at_once_let_exactly_one_through(postgres_env, clock):
    with racing_city(postgres_env, clock, police=IdentityFunction.PUBLIC_SECURITY,
                     target0=IdentityFunction.SOCIAL_WORK,
                     target1=IdentityFunction.SOCIAL_WORK) as w:
        report_id = a_report(w)

        def attempt(n: int) -> Callable[[], Any]:
            return lambda: transfer(w, "police", report_id, w[f"target{n}"],
                                    request_id=f"clerk-{n}")

        assert w["at_once"](attempt(0), attempt(1)) == ["ASSIGNMENT_TRANSFERRED", "ok"]
        report = w["governance"].report(report_id)
        assert len([a for a in report.assignments if a["status"] == "ROUTED"]) == 1
        assert len(topics(w["governance"], "Report.AssignmentTransferred")) == 1


# ---------------------------------------------------------------------------- notes


def test_notes_are_shared_between_the_departments_and_the_office_never_the_platform(world):
    report_id = a_report(world)
    transfer(world, "police", report_id, world["social"])
    for who, text in ((office(world), "请两日内回复"), (department(world, "police"), "已转社工"),
                      (department(world, "social"), "已联系物业")):
        with as_actor(who, rpc="AddReportNote"):
            world["governance"].add_report_note(report_id=report_id, text=text)
    shown = seen_by(world, department(world, "social"), report_id).notes
    assert [(n["author_id"], n["author_role"], n["note"]) for n in shown] == [
        (world["street"], "street_office", "请两日内回复"),
        (world["police"], "department", "已转社工"),
        (world["social"], "department", "已联系物业")]
    assert all(n["at"] for n in shown)
    assert seen_by(world, PLATFORM, report_id).notes == []
    assert all(n["note"].startswith("[withheld:")
               for n in seen_by(world, AUDITOR, report_id).notes)
    with as_actor(PLATFORM):
        history = world["governance"].report_history(report_id)
    assert all(e.details["note"].startswith("[withheld:") for e in history
               if e.event_type == "Report.NoteAdded")
    with as_actor(office(world)), pytest.raises(InvalidArgument) as blank:
        world["governance"].add_report_note(report_id=report_id, text="  ")
    assert blank.value.reason == "FIELD_REQUIRED"


# ---------------------------------------------------------------------------- the rating


def test_the_rider_rates_within_the_window_once(world, clock):
    report_id = a_report(world)
    resolve(world, "police", report_id)
    closed = world["governance"].report(report_id).closed_at
    assert seen_by(world, PLATFORM, report_id).rate_until == closed + RATING_WINDOW
    with as_actor(PLATFORM), pytest.raises(InvalidArgument) as unrated:
        world["governance"].rate_report_outcome(report_id=report_id, rating=None, comment="")
    assert unrated.value.reason == "ENUM_VALUE_REQUIRED"
    before = world["governance"].last_position()
    clock.now = closed + RATING_WINDOW + timedelta(seconds=1)
    with pytest.raises(FailedPrecondition) as late:
        rate(world, report_id, SatisfactionRating.SATISFIED)
    assert late.value.reason == "RATING_WINDOW_CLOSED"
    assert world["governance"].last_position() == before
    clock.now = closed + RATING_WINDOW
    assert rate(world, report_id, SatisfactionRating.SATISFIED, "很快")["reopened"] is False
    with pytest.raises(AlreadyExists) as twice:
        rate(world, report_id, SatisfactionRating.BASICALLY_SATISFIED)
    assert twice.value.reason == "REPORT_ALREADY_RATED"
    report = seen_by(world, PLATFORM, report_id)
    assert (report.satisfaction, report.rate_until, report.ratings[0]["comment"]) == (
        SatisfactionRating.SATISFIED, None, "很快")


def test_an_unsatisfied_rating_reopens_once_and_badges_stop_counting_until_upheld(world, clock):
    report_id = a_report(world)
    resolve(world, "police", report_id)
    with as_actor(office(world)):
        world["governance"].verify_report(report_id=report_id, note="现场核实")
    clock.now += timedelta(days=1)
    assert rate(world, report_id, SatisfactionRating.UNSATISFIED, "又坏了")["reopened"]
    report = world["governance"].report(report_id)
    assert (report.status, report.verified_at, report.reopen_count) == (
        ReportStatus.REOPENED, None, 1)
    [reopened] = [world["governance"].to_domain_event(n)
                  for n in topics(world["governance"], "Report.Reopened")]
    assert reopened.was_verified is True
    with pytest.raises(FailedPrecondition) as again:
        rate(world, report_id, SatisfactionRating.SATISFIED)
    assert again.value.reason == "REPORT_REOPENED"
    # The office upholds the outcome: verified again (a second Report.Verified for badges).
    clock.now += timedelta(hours=2)
    with as_actor(office(world), rpc="UpholdReportOutcome"):
        world["governance"].uphold_report_outcome(report_id=report_id, note="复核：处置到位")
    report = seen_by(world, office(world), report_id)
    assert (report.status, report.closed_at, report.upheld_note) == (
        ReportStatus.VERIFIED, clock.now, "复核：处置到位")
    assert len(topics(world["governance"], "Report.Verified")) == 2
    # A second unsatisfied rating is recorded and reopens nothing.
    assert rate(world, report_id, SatisfactionRating.UNSATISFIED)["reopened"] is False
    report = world["governance"].report(report_id)
    assert report.status is ReportStatus.VERIFIED
    assert [r["rating"] for r in report.ratings] == [SatisfactionRating.UNSATISFIED] * 2


def test_a_reopened_report_assigned_again_is_worked_with_fresh_clocks(world, clock):
    report_id = a_report(world)
    resolve(world, "police", report_id, "已处理")
    rate(world, report_id, SatisfactionRating.UNSATISFIED)
    clock.now += timedelta(days=1)
    assign(world, report_id, "social", "换社工跟进")
    report = world["governance"].report(report_id)
    assert report.status is ReportStatus.OPEN
    assert [(a["department_id"], a["due"]["ACKNOWLEDGE"]) for a in report.assignments] == [
        (world["social"], clock.now + timedelta(minutes=15))]
    with as_actor(office(world)):
        assert world["governance"].list_reports(
            street_id="", kind=None, status=ReportStatus.OPEN, rider_id="", page_size=10,
            page_token="")[0][0].report_id == report_id
    resolve(world, "social", report_id, "社工已上门")
    assert world["governance"].report(report_id).status is ReportStatus.RESOLVED


# ---------------------------------------------------------------------------- the feed


def feed_for(governance, organisation: str) -> list[tuple[str, dict]]:
    reply = read_public(governance, CATALOGUE, fpb.ReadPublicEventsRequest(
        from_position=1, consumer_organisation_id=organisation))
    return [(e.event.type, json.loads(e.event.text_data)) for e in reply.events]


def test_the_outcome_reaches_the_riders_platform_only(world, clock):
    governance = world["governance"]
    governance.directory = TenancyDirectory(LocalFeed(world["identity"]))
    with as_actor(ADMIN):
        other = world["identity"].create_organisation(
            kind=OrganisationKind.PLATFORM, name="Other Co", parent_id="",
            department_function=None)["organisation_id"]
    report_id = a_report(world)
    transfer(world, "police", report_id, world["social"])
    resolve(world, "social", report_id, "社工已上门处置")
    closed = governance.report(report_id).closed_at
    rate(world, report_id, SatisfactionRating.UNSATISFIED)
    clock.now += timedelta(hours=1)
    with as_actor(office(world), rpc="UpholdReportOutcome"):
        governance.uphold_report_outcome(report_id=report_id, note="复核")
    ours = feed_for(governance, world["platform"])
    assert [t for t, _ in ours] == ["qiji.governance.v1.ReportClosed",
                                    "qiji.governance.v1.ReportReopened",
                                    "qiji.governance.v1.ReportClosed"]
    first, reopened, again = (d for _, d in ours)
    assert (first["status"], first["closed_again"], first["rate_until_time"]) == (
        "RESOLVED", False, (closed + RATING_WINDOW).isoformat().replace("+00:00", "Z"))
    # Each department that answered, with its words: the one that transferred is not one.
    assert first["resolutions"] == [{"department_id": world["social"], "status": "RESOLVED",
                                     "resolution": "社工已上门处置", "rejection_reason": ""}]
    assert (reopened["status"], reopened["rate_until_time"]) == ("REOPENED", None)
    assert (again["status"], again["closed_again"]) == ("RESOLVED", True)
    text = json.dumps(ours, ensure_ascii=False)
    assert "不属本部门职责" not in text and "复核" not in text  # officials' words stay inside
    assert feed_for(governance, other) == []
