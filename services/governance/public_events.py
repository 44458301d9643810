"""governance's public event contract for outside consumers: that a rider's report was closed
(again, after a reopening), that the street office verified it, and that the rider's
unsatisfied rating reopened it — each with the outcome the rider is owed: its status, each
department's resolution, and until when the rider may rate it. Not public: a report's
submission, text, place, attachments, routing, transfers, notes and escalations — they are the
city's casework and may describe third parties. Public too: which organisation signed the
co-building pledge (共建倡议), which names no person. And the outcome of
a rider's help request (帮扶), which the rider is owed: to the rider's own platform only, through
the gateway (never over AMQP: it is the rider's personal data), and nothing else said in the
case — not the rider's words, not the caseworker, not a note."""

from __future__ import annotations

from typing import Any

from services.governance import events as topics
from services.governance.domain.help import HelpRequest
from services.governance.domain.model import Report
from services.governance.domain.values import AssignmentStatus, HelpChannel
from shared.personal_data import ERASED
from shared.public_feed import Fact, Mapped, PublicCatalogue, PublicType


def _outcome(app: Any, fact: Fact) -> tuple[Report, dict[str, Any]]:
    """The report as this event left it (the same data whenever the event is read), and the
    outcome the rider is owed: its status, each department's answer (a resolution is the
    rider's to read: REPORT_TEXT; officials' notes stay inside), and until when the rider may
    rate it (null while there is nothing to rate)."""
    report = app.view(fact.originator_id, Report, "report", fact.originator_version)
    return report, {
        "report_id": str(fact.originator_id), "rider_id": report.rider_id,
        "kind": report.kind, "category": report.category, "street_id": report.street_id,
        "status": report.status.value,
        "resolutions": [{"department_id": d, "status": a["status"],
                         "resolution": a["resolution"],
                         "rejection_reason": a["rejection_reason"]}
                        for d, a in report.assignments.items()
                        if a["status"] != AssignmentStatus.TRANSFERRED.value],
        "rate_until_time": report.rate_until}


def _closed(app: Any, fact: Fact) -> Mapped:
    report, data = _outcome(app, fact)
    return Mapped(report.rider_id, {**data, "outcome": fact.event.outcome,
                                    "closed_time": fact.event.at,
                                    "closed_again": report.reopen_count > 0})


def _verified(app: Any, fact: Fact) -> Mapped:
    report, data = _outcome(app, fact)
    return Mapped(report.rider_id, {**data, "verified_time": fact.event.at})


def _reopened(app: Any, fact: Fact) -> Mapped:
    report, data = _outcome(app, fact)
    return Mapped(report.rider_id, {**data, "reopened_time": fact.event.at})


def _co_building_signed(app: Any, fact: Fact) -> Mapped:
    # About an organisation, no rider: every platform receives it (organisations are public).
    e = fact.event
    return Mapped(e.organisation_id, {
        "organisation_id": e.organisation_id, "organisation_name": e.name,
        "organisation_kind": e.kind, "parent_id": e.parent_id, "pledge_version": e.version,
        "sign_time": e.at})


def _help_outcome(app: Any, fact: Fact) -> Mapped | None:
    e = fact.event
    # Asked at the street office's counter: the outcome is given there; the platform never
    # hears of the request (a rider may ask there about a dispute with the platform itself).
    request = app.view(fact.originator_id, HelpRequest, "help_request", fact.originator_version)
    if request.asked_through != HelpChannel.PLATFORM:
        return None
    outcome = None
    # The rider's words back to the rider: only to a platform asking for itself (the gateway
    # with its own token; the relay asks for no one), opened from the rider's key (None once
    # the rider's personal data is erased).
    if fact.consumer_organisation_id:
        opened = app.opener_of(e.rider_id)(e.sealed_outcome)
        outcome = opened if opened and opened != ERASED else None
    return Mapped(e.rider_id, {
        "help_request_id": str(fact.originator_id), "rider_id": e.rider_id, "kind": e.kind,
        "department_id": e.department_id, "outcome": outcome, "given_time": e.at})


CATALOGUE = PublicCatalogue("governance", [
    PublicType("qiji.governance.v1.ReportClosed", topics.REPORT_CLOSED,
               ("report_id", "rider_id", "kind", "category", "street_id", "outcome",
                "closed_time", "status", "resolutions", "rate_until_time", "closed_again"),
               _closed),
    PublicType("qiji.governance.v1.ReportVerified", topics.REPORT_VERIFIED,
               ("report_id", "rider_id", "kind", "category", "street_id", "verified_time",
                "status", "resolutions", "rate_until_time"), _verified),
    PublicType("qiji.governance.v1.ReportReopened", topics.REPORT_REOPENED,
               ("report_id", "rider_id", "kind", "category", "street_id", "status",
                "resolutions", "rate_until_time", "reopened_time"), _reopened),
    PublicType("qiji.governance.v1.CoBuildingPledgeSigned", topics.CO_BUILDING_PLEDGE_SIGNED,
               ("organisation_id", "organisation_name", "organisation_kind", "parent_id",
                "pledge_version", "sign_time"), _co_building_signed),
    PublicType("qiji.governance.v1.HelpOutcomeGiven", topics.HELP_OUTCOME_GIVEN,
               ("help_request_id", "rider_id", "kind", "department_id", "outcome",
                "given_time"), _help_outcome, personal=("outcome",)),
])
