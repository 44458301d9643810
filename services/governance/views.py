"""Read models of governance: derived from the log, rebuilt at start, caught up before each
query. They answer the questions no single aggregate can: which open report a new one repeats,
which deadlines are due, a department's queue, statistics, and the organisation tree."""

from __future__ import annotations

import bisect
import statistics
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from services.governance.domain.model import MediationCase, Organisation, Participant, Report
from services.governance.domain.values import (
    AssignmentStatus,
    DeadlineKind,
    EscalationLevel,
    MediationStatus,
    ReportStatus,
)
from shared.application import event_metadata
from shared.views import Index, LogFollower

if TYPE_CHECKING:
    from shared.application import QijiApplication

# identity's OrganisationKind.DEPARTMENT and STREET, as its feed spells them.
DEPARTMENT, STREET = "DEPARTMENT", "STREET"


@dataclass
class AssignmentRow:
    report_id: str
    department_id: str
    position: int  # of the Routed event: ties in a queue go in routing order
    status: AssignmentStatus
    routed_at: datetime
    due: dict[str, datetime]
    level: str
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    escalated: set[str] = field(default_factory=set)
    # 1 for the department's first assignment of the report; one more each time it is given
    # the report again (by the street office): each round's deadlines escalate on their own.
    round: int = 1
    # When each clock reaches its at-risk share (None: never), and the deadlines marked.
    at_risk_from: dict[str, datetime | None] = field(default_factory=dict)
    at_risk: set[str] = field(default_factory=set)
    pause_reason: str = ""  # the PauseReason while the clock is paused, "" while it runs

    @property
    def next_deadline(self) -> DeadlineKind:
        return (DeadlineKind.ACKNOWLEDGE if self.status is AssignmentStatus.ROUTED
                else DeadlineKind.RESOLVE)


@dataclass
class ReportRow:
    report_id: str
    street_id: str
    kind: str
    category: str
    latitude: float
    longitude: float
    observed_at: datetime
    submitted_at: datetime
    correlation_id: str
    status: ReportStatus = ReportStatus.OPEN
    departments: list[str] = field(default_factory=list)
    escalations: int = 0

    def as_incident(self) -> dict[str, Any]:
        return {"category": self.category, "latitude": self.latitude,
                "longitude": self.longitude, "observed_at": self.observed_at}


@dataclass(frozen=True)
class QueueEntry:
    report_id: str
    department_id: str
    kind: str
    category: str
    street_id: str
    status: AssignmentStatus
    deadline: DeadlineKind
    due_at: datetime
    level: str
    submitted_at: datetime
    # The next deadline was marked at risk; the clock is paused (and why: a PauseReason).
    at_risk: bool = False
    pause_reason: str = ""


@dataclass(frozen=True)
class StatisticsRow:
    street_id: str
    kind: str
    submitted: int
    duplicates: int
    open: int
    resolved: int
    rejected: int
    verified: int
    escalations: int
    acknowledged_assignments: int
    median_acknowledge: timedelta | None
    resolved_assignments: int
    median_resolve: timedelta | None


@dataclass(frozen=True)
class MediationStatisticsRow:
    """What happened to one street's mediation cases in a period (each counted when it was
    recorded), and the follow-ups overdue today."""

    street_id: str
    opened: int
    agreed: int  # agreements (a case reopened and agreed again counts twice)
    failed: int
    kept: int  # follow-ups by what they found
    partly_kept: int
    broken: int
    reopened: int
    # Mean days from a case's opening to each agreement in the period; None with none.
    average_days_to_agreement: float | None
    # Agreed cases whose follow-up fell due before today and has not been recorded (now,
    # whatever the period).
    follow_ups_overdue: int


@dataclass
class _MediationFact:
    street_id: str
    what: str  # OPENED, AGREED, FAILED, KEPT, PARTLY_KEPT, BROKEN, REOPENED
    at: datetime
    days_to_agreement: float = 0.0


def queue_key(due_at: datetime, position: int) -> int:
    """A department's queue is ordered by deadline, ties by routing order: one integer, so the
    kernel's AIP-158 paging (which pages over ascending integer keys) serves it unchanged."""
    return (int(due_at.timestamp() * 1_000_000) << 32) | position


class GovernanceViews:
    def __init__(self, app: QijiApplication):
        self.reports = Index()
        self.cases = Index()
        # Mediation, for its statistics: every fact in log order, and each case's street,
        # opening and follow-up due day (while agreed).
        self._mediation: list[_MediationFact] = []
        self._cases: dict[str, dict[str, Any]] = {}
        # Every signature of either pledge, in the order signed (ListPledgeSignatures); a row's
        # `signer` is what the tenancy check resolves ("rider:<id>", "organisation:<id>").
        self.signatures = Index()
        self._lock = threading.RLock()
        self._rows: dict[str, ReportRow] = {}
        self._assignments: dict[tuple[str, str], AssignmentRow] = {}
        self._open_assignments: set[tuple[str, str]] = set()
        # department -> report -> its place in the department's queue (`queue_key`).
        self._queues: dict[str, dict[str, int]] = defaultdict(dict)
        # Open reports per category, sorted by latitude: a duplicate check looks only at the
        # band of latitudes within reach instead of at every open report of the city.
        self._open_by_category: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self._organisations: dict[str, dict[str, str]] = {}
        self._departments: dict[tuple[str, str], list[str]] = defaultdict(list)
        # district -> its streets, in the order identity created them (a district's rates).
        self._streets: dict[str, list[str]] = defaultdict(list)
        # rider -> the party ids under which mediation cases sealed the rider's name: what
        # the rider's erasure destroys the keys of.
        self._parties_of: dict[str, list[str]] = defaultdict(list)
        # "department:<id>" / "street:<id>" -> (routed_at, report id) of every assignment ever
        # given, sorted: the reports a period's rates may count are found without reading the
        # rest (GetServiceRates). An assignment never leaves it: it was given, whatever became
        # of it, so the reports it names at any moment include those it named before.
        self._routings: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        # report -> when each of its events was stored, by version (index 0: version 1): the
        # version it stood at any moment, found without reading its events again.
        self._stored_at: dict[str, list[datetime]] = defaultdict(list)
        self._follower = LogFollower(app, "governance", self._apply)

    def catch_up(self) -> int:
        return self._follower.catch_up()

    # ------------------------------------------------------------------ queries

    def organisation(self, organisation_id: str) -> dict[str, str] | None:
        """Kind, parent and function of an organisation noted from identity; they never change
        once created. Caught up first when the id is not known yet."""
        for attempt in range(2):
            with self._lock:
                found = self._organisations.get(organisation_id)
            if found is not None:
                return dict(found)
            if attempt == 0:
                self.catch_up()
        return None

    def nearest_department(self, parent_id: str, function: str) -> str | None:
        """The first department of `function` created under `parent_id`."""
        with self._lock:
            found = self._departments.get((parent_id, function))
            return found[0] if found else None

    def parties_of(self, rider_id: str) -> list[str]:
        """The party ids under which mediation cases sealed the rider's name."""
        with self._lock:
            return list(self._parties_of.get(rider_id, ()))

    def streets_of(self, district_id: str) -> list[str]:
        """The streets identity created under `district_id`."""
        with self._lock:
            return list(self._streets.get(district_id, ()))

    def routed_reports(self, *, department_id: str = "", street_ids: list[str] | None = None,
                       start: datetime, end: datetime) -> list[str]:
        """Reports with an assignment routed in [start, end): to `department_id`, or of a
        report made in one of `street_ids`. In routing order, each once."""
        keys = ([f"department:{department_id}"] if department_id
                else [f"street:{s}" for s in street_ids or ()])
        found: dict[str, None] = {}
        with self._lock:
            for key in keys:
                routings = self._routings.get(key, [])
                first = bisect.bisect_left(routings, (start,))
                last = bisect.bisect_left(routings, (end,))
                found.update(dict.fromkeys(r for _, r in routings[first:last]))
        return list(found)

    def report_version(self, report_id: str, as_of: datetime | None = None) -> int:
        """The report's version as this view has it (`as_of` None), or as its stored events
        stood at `as_of`: those stored at or before it, up to the first stored after (as
        QijiApplication.version_at counts). 0: none was stored by then."""
        with self._lock:
            stored = self._stored_at.get(report_id, [])
            if as_of is None:
                return len(stored)
            version = 0
            for at in stored:
                if at > as_of:
                    break
                version += 1
            return version

    def open_incidents(self, category: str, latitude: float, band_degrees: float
                       ) -> list[tuple[str, dict[str, Any]]]:
        """Open reports of a category within `band_degrees` of latitude, earliest observed
        first: a duplicate links to the first report of its incident."""
        with self._lock:
            band = self._open_by_category.get(category, [])
            start = bisect.bisect_left(band, (latitude - band_degrees, ""))
            end = bisect.bisect_right(band, (latitude + band_degrees, "\uffff"))
            rows = [self._rows[report_id] for _, report_id in band[start:end]]
        return [(r.report_id, r.as_incident())
                for r in sorted(rows, key=lambda r: (r.observed_at, r.report_id))]

    def correlation_id(self, report_id: str) -> str:
        with self._lock:
            row = self._rows.get(report_id)
            return row.correlation_id if row else ""

    def due_deadlines(self, now: datetime) -> list[tuple[str, str, DeadlineKind]]:
        """(report, department, deadline) for every deadline past and not yet escalated, the
        longest overdue first."""
        due: list[tuple[datetime, str, str, DeadlineKind]] = []
        with self._lock:
            for key in self._open_assignments:
                row = self._assignments[key]
                if row.pause_reason:  # paused time does not count
                    continue
                for deadline in DeadlineKind:
                    if deadline.value in row.escalated or row.due[deadline.value] > now:
                        continue
                    if (deadline is DeadlineKind.ACKNOWLEDGE
                            and row.status is not AssignmentStatus.ROUTED):
                        continue
                    due.append((row.due[deadline.value], *key, deadline))
        return [(report, department, deadline)
                for _, report, department, deadline in sorted(due)]

    def assignment_round(self, report_id: str, department_id: str) -> int:
        with self._lock:
            row = self._assignments.get((report_id, department_id))
            return row.round if row is not None else 1
    def at_risk_deadlines(self, now: datetime) -> list[tuple[str, str, DeadlineKind]]:
        """(report, department, deadline) for every deadline whose clock has run its at-risk
        share, not yet marked, not yet missed, its clock running; the earliest due first."""
        found: list[tuple[datetime, str, str, DeadlineKind]] = []
        with self._lock:
            for key in self._open_assignments:
                row = self._assignments[key]
                if row.pause_reason:
                    continue
                for deadline in DeadlineKind:
                    start = row.at_risk_from.get(deadline.value)
                    if (start is None or deadline.value in row.at_risk or start > now
                            or row.due[deadline.value] <= now):
                        continue
                    if (deadline is DeadlineKind.ACKNOWLEDGE
                            and row.status is not AssignmentStatus.ROUTED):
                        continue
                    found.append((row.due[deadline.value], *key, deadline))
        return [(report, department, deadline)
                for _, report, department, deadline in sorted(found)]

    def queue(self, department_id: str) -> dict[int, str]:
        """The department's open assignments: `queue_key` -> report id."""
        with self._lock:
            return {key: report_id
                    for report_id, key in self._queues.get(department_id, {}).items()}

    def queue_entry(self, report_id: str, department_id: str) -> QueueEntry | None:
        """The entry, built only for the rows of the page asked for; None once it is done."""
        with self._lock:
            if report_id not in self._queues.get(department_id, {}):
                return None
            a = self._assignments[(report_id, department_id)]
            r = self._rows[report_id]
            deadline = a.next_deadline
            return QueueEntry(
                report_id=report_id, department_id=department_id, kind=r.kind,
                category=r.category, street_id=r.street_id, status=a.status,
                deadline=deadline, due_at=a.due[deadline.value], level=a.level,
                submitted_at=r.submitted_at, at_risk=deadline.value in a.at_risk,
                pause_reason=a.pause_reason)

    def statistics(self, *, street_id: str, kind: str, start: datetime | None,
                   end: datetime | None) -> list[StatisticsRow]:
        """Per street and kind, over reports submitted in [start, end)."""
        groups: dict[tuple[str, str], list[ReportRow]] = defaultdict(list)
        with self._lock:
            for row in self._rows.values():
                if ((street_id and row.street_id != street_id) or (kind and row.kind != kind)
                        or (start and row.submitted_at < start)
                        or (end and row.submitted_at >= end)):
                    continue
                groups[(row.street_id, row.kind)].append(row)
            result = [self._summarise(key, rows) for key, rows in sorted(groups.items())]
        return result

    def mediation_statistics(self, *, street_id: str, start: datetime | None,
                             end: datetime | None, today: date
                             ) -> list[MediationStatisticsRow]:
        """Per street with any case (only `street_id`'s, always, when it names one), the
        facts recorded in [start, end), and follow-ups overdue on `today`."""
        facts: dict[str, list[_MediationFact]] = defaultdict(list)
        overdue: dict[str, int] = defaultdict(int)
        with self._lock:
            for fact in self._mediation:
                if ((street_id and fact.street_id != street_id)
                        or (start and fact.at < start) or (end and fact.at >= end)):
                    continue
                facts[fact.street_id].append(fact)
            for case in self._cases.values():
                if (not street_id or case["street_id"] == street_id) and case["due"] \
                        and date.fromisoformat(case["due"]) < today:
                    overdue[case["street_id"]] += 1
        streets = {street_id} if street_id else set(facts) | set(overdue)
        rows = []
        for street in sorted(streets):
            counts: dict[str, int] = defaultdict(int)
            days = []
            for fact in facts[street]:
                counts[fact.what] += 1
                if fact.what == "AGREED":
                    days.append(fact.days_to_agreement)
            rows.append(MediationStatisticsRow(
                street_id=street, opened=counts["OPENED"], agreed=counts["AGREED"],
                failed=counts["FAILED"], kept=counts["KEPT"], partly_kept=counts["PARTLY_KEPT"],
                broken=counts["BROKEN"], reopened=counts["REOPENED"],
                average_days_to_agreement=statistics.fmean(days) if days else None,
                follow_ups_overdue=overdue[street]))
        return rows

    def _summarise(self, key: tuple[str, str], rows: list[ReportRow]) -> StatisticsRow:
        counts: defaultdict[ReportStatus, int] = defaultdict(int)
        to_acknowledge: list[float] = []
        to_resolve: list[float] = []
        for row in rows:
            counts[row.status] += 1
            for dept in row.departments:
                a = self._assignments[(row.report_id, dept)]
                if a.acknowledged_at is not None:
                    to_acknowledge.append((a.acknowledged_at - a.routed_at).total_seconds())
                if a.resolved_at is not None:
                    to_resolve.append((a.resolved_at - a.routed_at).total_seconds())

        def median(values: list[float]) -> timedelta | None:
            return timedelta(seconds=statistics.median(values)) if values else None

        return StatisticsRow(
            street_id=key[0], kind=key[1], submitted=len(rows),
            # A reopened report is back with its street office: open again.
            duplicates=counts[ReportStatus.DUPLICATE],
            open=counts[ReportStatus.OPEN] + counts[ReportStatus.REOPENED],
            # A verified report was resolved first: it counts as both.
            resolved=counts[ReportStatus.RESOLVED] + counts[ReportStatus.VERIFIED],
            rejected=counts[ReportStatus.REJECTED], verified=counts[ReportStatus.VERIFIED],
            escalations=sum(r.escalations for r in rows),
            acknowledged_assignments=len(to_acknowledge), median_acknowledge=median(to_acknowledge),
            resolved_assignments=len(to_resolve), median_resolve=median(to_resolve))

    # ------------------------------------------------------------------ building

    def _apply(self, position: int, event: Any) -> None:
        with self._lock:
            self._apply_locked(position, event)

    def _apply_locked(self, position: int, event: Any) -> None:
        ident = str(event.originator_id)
        if isinstance(event, Report.Event):
            # Every event of a report, whichever part of the model it comes from.
            self._stored_at[ident].append(event.timestamp)
        if isinstance(event, Report.Submitted):
            self._rows[ident] = ReportRow(
                report_id=ident, street_id=event.street_id, kind=event.kind,
                category=event.category, latitude=event.latitude, longitude=event.longitude,
                observed_at=event.observed_at, submitted_at=event.submitted_at,
                correlation_id=event_metadata(event).get("correlation_id", ""))
            bisect.insort(self._open_by_category[event.category], (event.latitude, ident))
            self.reports.add(position, ident, street_id=event.street_id, kind=event.kind,
                             category=event.category, rider_id=event.rider_id,
                             status=ReportStatus.OPEN.value, department_ids=[])
        elif isinstance(event, Report.Routed):
            row = self._rows[ident]
            for given in event.assignments:
                dept = given["department_id"]
                row.departments.append(dept)
                self._assignments[(ident, dept)] = AssignmentRow(
                    report_id=ident, department_id=dept, position=position,
                    status=AssignmentStatus.ROUTED, routed_at=event.at,
                    due={DeadlineKind.ACKNOWLEDGE.value: given["acknowledge_due"],
                         DeadlineKind.RESOLVE.value: given["resolve_due"]},
                    level=EscalationLevel.STREET.value,
                    at_risk_from={
                        DeadlineKind.ACKNOWLEDGE.value: given.get("acknowledge_at_risk"),
                        DeadlineKind.RESOLVE.value: given.get("resolve_at_risk")})
                self._open_assignments.add((ident, dept))
                self._queue(ident, dept)
                self._routing_noted(ident, dept, event.at)
            # Who the report is assigned to decides which departments see it in lists.
            self.reports.update(ident, department_ids=list(row.departments))
        elif isinstance(event, Report.LinkedAsDuplicate):
            self._set_report_status(ident, ReportStatus.DUPLICATE)
        elif isinstance(event, Report.Acknowledged):
            a = self._assignments[(ident, event.department_id)]
            a.status, a.acknowledged_at = AssignmentStatus.ACKNOWLEDGED, event.at
            self._queue(ident, event.department_id)  # now due by its resolution deadline
        elif isinstance(event, Report.WorkStarted):
            self._assignments[(ident, event.department_id)].status = AssignmentStatus.IN_PROGRESS
        elif isinstance(event, Report.AssignmentResolved):
            a = self._assignments[(ident, event.department_id)]
            a.status, a.resolved_at = AssignmentStatus.RESOLVED, event.at
            a.pause_reason = ""
            self._assignment_done(ident, event.department_id)
        elif isinstance(event, Report.AssignmentRejected):
            a = self._assignments[(ident, event.department_id)]
            a.status, a.pause_reason = AssignmentStatus.REJECTED, ""
            self._assignment_done(ident, event.department_id)
        elif isinstance(event, Report.AssignmentTransferred):
            self._assignments[(ident, event.department_id)].status = \
                AssignmentStatus.TRANSFERRED
            self._assignment_done(ident, event.department_id)
            self._new_assignment(ident, event.to_department_id, position, event)
        elif isinstance(event, Report.Assigned):
            if self._rows[ident].status is ReportStatus.REOPENED:
                self._set_report_status(ident, ReportStatus.OPEN)
            self._new_assignment(ident, event.department_id, position, event)
        elif isinstance(event, Report.Reopened):
            self._set_report_status(ident, ReportStatus.REOPENED)
        elif isinstance(event, Report.Closed):
            self._set_report_status(ident, ReportStatus(event.outcome))
        elif isinstance(event, Report.Verified):
            self._set_report_status(ident, ReportStatus.VERIFIED)
        elif isinstance(event, Report.Escalated):
            a = self._assignments[(ident, event.department_id)]
            a.escalated.add(event.deadline)
            a.level = event.level
            self._rows[ident].escalations += 1
        elif isinstance(event, Report.AtRisk):
            self._assignments[(ident, event.department_id)].at_risk.add(event.deadline)
        elif isinstance(event, Report.ClockPaused):
            self._assignments[(ident, event.department_id)].pause_reason = event.reason
        elif isinstance(event, Report.ClockResumed):
            a = self._assignments[(ident, event.department_id)]
            a.pause_reason = ""
            a.due = dict(event.due)
            a.at_risk_from = dict(event.at_risk_from)
            self._queue(ident, event.department_id)  # due later now
        elif isinstance(event, MediationCase.Opened):
            self.cases.add(position, ident, street_id=event.street_id,
                           report_id=event.report_id, status=MediationStatus.OPEN.value)
            for party in event.parties:
                if party["rider_id"]:
                    self._parties_of[party["rider_id"]].append(party["party_id"])
            self._cases[ident] = {"street_id": event.street_id, "opened_at": event.opened_at,
                                  "due": ""}
            self._fact(ident, "OPENED", event.opened_at)
        elif isinstance(event, MediationCase.Agreed):
            self.cases.update(ident, status=MediationStatus.AGREED.value)
            case = self._cases[ident]
            case["due"] = event.follow_up_due
            self._fact(ident, "AGREED", event.at,
                       (event.at - case["opened_at"]).total_seconds() / 86400)
        elif isinstance(event, MediationCase.Failed):
            self.cases.update(ident, status=MediationStatus.FAILED.value)
            self._fact(ident, "FAILED", event.at)
        elif isinstance(event, MediationCase.FollowedUp):
            self._cases[ident]["due"] = event.next_due
            self._fact(ident, event.result, event.at)
        elif isinstance(event, MediationCase.Reopened):
            self.cases.update(ident, status=MediationStatus.OPEN.value)
            self._cases[ident]["due"] = ""
            self._fact(ident, "REOPENED", event.at)
        elif isinstance(event, Participant.PledgeSigned):
            self.signatures.add(position, f"{ident}:{event.version}", kind="PARTICIPATION",
                                version=event.version, rider_id=event.rider_id,
                                organisation_id="", organisation_name="",
                                organisation_kind="", signed_at=event.at,
                                signer=f"rider:{event.rider_id}")
        elif isinstance(event, Organisation.CoBuildingPledgeSigned):
            self.signatures.add(position, f"{ident}:co-building:{event.version}",
                                kind="CO_BUILDING", version=event.version, rider_id="",
                                organisation_id=event.organisation_id,
                                organisation_name=event.name, organisation_kind=event.kind,
                                signed_at=event.at, signer=f"organisation:{ident}")
        elif isinstance(event, Organisation.Noted):
            self._organisations[ident] = {"kind": event.kind, "parent_id": event.parent_id,
                                          "department_function": event.department_function,
                                          "name": event.name}
            if event.kind == DEPARTMENT:
                self._departments[(event.parent_id, event.department_function)].append(ident)
            elif event.kind == STREET and event.parent_id:
                self._streets[event.parent_id].append(ident)

    def _new_assignment(self, report_id: str, department_id: str, position: int,
                        event: Any) -> None:
        """A transfer's receiver, or a department the street office assigned (`event`, with
        the fresh clocks' due and at-risk instants)."""
        key = (report_id, department_id)
        earlier = self._assignments.get(key)
        self._assignments[key] = AssignmentRow(
            report_id=report_id, department_id=department_id, position=position,
            status=AssignmentStatus.ROUTED, routed_at=event.at,
            due={DeadlineKind.ACKNOWLEDGE.value: event.acknowledge_due,
                 DeadlineKind.RESOLVE.value: event.resolve_due},
            level=EscalationLevel.STREET.value,
            at_risk_from={DeadlineKind.ACKNOWLEDGE.value: event.acknowledge_at_risk,
                          DeadlineKind.RESOLVE.value: event.resolve_at_risk},
            round=earlier.round + 1 if earlier is not None else 1)
        self._open_assignments.add(key)
        self._queue(report_id, department_id)
        # The rates count it among the department's from the transfer or assignment on.
        self._routing_noted(report_id, department_id, event.at)
        row = self._rows[report_id]
        if department_id not in row.departments:
            row.departments.append(department_id)
            self.reports.update(report_id, department_ids=list(row.departments))

    def _fact(self, case_id: str, what: str, at: datetime, days: float = 0.0) -> None:
        self._mediation.append(_MediationFact(self._cases[case_id]["street_id"], what, at,
                                              days))

    def _routing_noted(self, report_id: str, department_id: str, at: datetime) -> None:
        """An assignment given to `department_id` at `at`: every event that gives one (routing,
        a transfer, a new assignment) notes it here, or the rates would not find its report."""
        street = self._rows[report_id].street_id
        for key in (f"department:{department_id}", f"street:{street}"):
            routings = self._routings[key]
            entry = (at, report_id)
            if not routings or routings[-1] <= entry:
                routings.append(entry)  # the usual case: the log comes in time order
            else:
                bisect.insort(routings, entry)

    def _queue(self, report_id: str, department_id: str) -> None:
        a = self._assignments[(report_id, department_id)]
        self._queues[department_id][report_id] = queue_key(a.due[a.next_deadline.value],
                                                           a.position)

    def _assignment_done(self, report_id: str, department_id: str) -> None:
        self._open_assignments.discard((report_id, department_id))
        self._queues[department_id].pop(report_id, None)

    def _set_report_status(self, report_id: str, status: ReportStatus) -> None:
        row = self._rows[report_id]
        was_open = row.status is ReportStatus.OPEN
        row.status = status
        if was_open and status is not ReportStatus.OPEN:
            band = self._open_by_category[row.category]
            entry = (row.latitude, report_id)
            at = bisect.bisect_left(band, entry)
            if at < len(band) and band[at] == entry:
                del band[at]
        self.reports.update(report_id, status=status.value)


