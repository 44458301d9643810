"""Aggregates of the governance domain: reports and their department assignments, the routing
rules, mediation cases, the participation pledge, and what governance knows of identity's riders
and organisations.

A report holds its assignments, so every change to one assignment is a change of the report:
two departments' clerks acknowledging the same assignment at once collide on the report's
version, and the loser decides again from what the winner stored.

Event classes are stored by topic (this module and the class name): keep them here, and when
one must change its fields, raise its class_version and add an upcaster. Topics other services
follow are listed in services/governance/events.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Set
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import register_topic

from services.governance.domain.calendar import Clock, WorkingCalendar
from services.governance.domain.values import (
    DAY_BEFORE_AGREEMENT,
    DEFAULT_AT_RISK_PERCENT,
    DONE,
    MAX_NAME,
    MAX_PARTIES,
    MAX_REOPENINGS,
    MAX_RULES,
    OPEN_ASSIGNMENT,
    RATING_WINDOW,
    REOPEN_NEEDS_BROKEN,
    AssignmentStatus,
    DeadlineKind,
    DepartmentFunction,
    EscalationLevel,
    FollowUpResult,
    MediationStatus,
    PartyRole,
    PauseReason,
    ReportStatus,
    SatisfactionRating,
    clock_policy,
    default_clocks,
    default_deadline_seconds,
    next_level,
)
from shared.errors import (
    DUPLICATE_VALUE,
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    TEXT_TOO_LONG,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    Violations,
)
from shared.rider_status import FollowedRiderStatus
from shared.values import DAY_IN_THE_FUTURE, city_day
from shared.wire import one_of

_NS = uuid.UUID("5d0c1f3e-4a6b-4e0f-9b7d-2c8e1a9f6b55")


# ---------------------------------------------------------------------------- reports


class Report(Aggregate):
    """What a rider saw and reported (a "mobile probe", 移动探头), and what each department it
    was routed to did about it."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Submitted: ClassVar[type[Any]]
        LinkedAsDuplicate: ClassVar[type[Any]]
        DuplicateNoted: ClassVar[type[Any]]
        Acknowledged: ClassVar[type[Any]]
        WorkStarted: ClassVar[type[Any]]
        AssignmentResolved: ClassVar[type[Any]]
        AssignmentRejected: ClassVar[type[Any]]
        Closed: ClassVar[type[Any]]
        AssignmentTransferred: ClassVar[type[Any]]
        Assigned: ClassVar[type[Any]]
        NoteAdded: ClassVar[type[Any]]
        Rated: ClassVar[type[Any]]
        Reopened: ClassVar[type[Any]]
        OutcomeUpheld: ClassVar[type[Any]]
        Verified: ClassVar[type[Any]]
        Escalated: ClassVar[type[Any]]
        AtRisk: ClassVar[type[Any]]
        ClockPaused: ClassVar[type[Any]]
        ClockResumed: ClassVar[type[Any]]

    @event("Submitted")
    def __init__(self, rider_id: str, kind: str, category: str, street_id: str,
                 latitude: float, longitude: float, text: str, attachment_refs: list[str],
                 observed_at: datetime, submitted_at: datetime):
        self.rider_id = rider_id
        self.kind = kind
        self.category = category
        self.street_id = street_id
        self.latitude = latitude
        self.longitude = longitude
        self.text = text
        self.attachment_refs = list(attachment_refs)
        self.observed_at = observed_at
        self.submitted_at = submitted_at
        self.status = ReportStatus.OPEN
        self.assignments: dict[str, dict[str, Any]] = {}
        self.rules_version = 0
        self.rule_name = ""
        self.unresolved_functions: list[str] = []
        # Who a missed deadline goes to at each level: the street, its district, the city.
        self.escalation_chain: dict[str, str] = {}
        self.duplicate_of = ""
        self.duplicate_distance_metres = 0.0
        self.duplicates: list[str] = []
        self.closed_at: datetime | None = None
        self.verified_at: datetime | None = None
        self.verification_note = ""
        # The deadline policy it was routed with ({"acknowledge": s, "resolve": s}): a
        # transfer or a new assignment starts its clocks anew by the same policy.
        self.clocks: dict[str, Any] | None = None
        # Assignments of departments given the report again (by the street office, or after
        # a reopening), as they stood when replaced; each with its department_id.
        self.past_assignments: list[dict[str, Any]] = []
        # Notes shared between the departments on the report and the street office.
        self.notes: list[dict[str, Any]] = []
        # The rider's ratings of the outcome, each {"rating", "comment", "at", "closed_at"},
        # and the latest ({"rating", "at"}) as `satisfaction`; None until rated.
        self.ratings: list[dict[str, Any]] = []
        self.satisfaction: dict[str, Any] | None = None
        self.reopen_count = 0
        self.reopened_at: datetime | None = None
        # The status it was reopened from (RESOLVED, REJECTED or VERIFIED): what upholding
        # the outcome closes it as again.
        self.reopened_from = ""
        self.upheld_note = ""
        self.upheld_at: datetime | None = None

    def as_incident(self) -> dict[str, Any]:
        return {"category": self.category, "latitude": self.latitude,
                "longitude": self.longitude, "observed_at": self.observed_at}

    # -- routing and duplicates

    def route(self, *, departments: list[tuple[str, str]], rules_version: int, rule_name: str,
              unresolved_functions: list[str], clocks: dict[str, Any], clock: Clock,
              escalation_chain: dict[str, str], at: datetime) -> None:
        """Assigns the report to each department (id, function) the matching rule named, each
        with the clocks `clocks` (the routing rules' policy for the report) started now and
        counted by `clock` (around the clock, or the city's working calendar)."""
        if self.status is not ReportStatus.OPEN or self.assignments:
            raise FailedPrecondition("the report is already routed",
                                     reason="REPORT_ALREADY_ROUTED")
        if not departments:
            raise FailedPrecondition(
                "no routing rule sends this report to a department that exists; the city "
                "admin must add one", reason="NO_ROUTE")
        times = clock_times(clocks, at, clock)
        self._routed(
            assignments=[{"department_id": d, "department_function": f, **times}
                         for d, f in departments],
            rules_version=rules_version, rule_name=rule_name,
            unresolved_functions=unresolved_functions, escalation_chain=escalation_chain,
            at=at, clocks=dict(clocks))

    def due_times_from(self, at: datetime, clock: Clock) -> ClockTimes:
        """Fresh clocks started at `at` by the policy this report was routed with (what a new
        assignment of it gets): acknowledge_due, resolve_due and their at-risk instants."""
        assert self.clocks is not None, "a report is routed before it has clocks"
        return clock_times(self.clocks, at, clock)

    class Routed(Aggregate.Event):
        # v2 added `clocks` (the policy the report was routed with) and, in each assignment,
        # the instants its clocks reach the at-risk share (`acknowledge_at_risk`,
        # `resolve_at_risk`). A report routed before (v1) ran its clocks around the clock with
        # no at-risk share: its policy is read back from its first assignment's due times, and
        # it is never marked at risk.
        class_version = 2
        assignments: list[dict[str, Any]]
        rules_version: int
        rule_name: str
        unresolved_functions: list[str]
        escalation_chain: dict[str, str]
        at: datetime
        clocks: dict[str, Any]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            first, at = state["assignments"][0], state["at"]
            state["clocks"] = {
                "acknowledge": int((first["acknowledge_due"] - at).total_seconds()),
                "resolve": int((first["resolve_due"] - at).total_seconds()),
                "around_the_clock": True, "at_risk_percent": 0}

    @event(Routed)
    def _routed(self, assignments: list[dict[str, Any]], rules_version: int, rule_name: str,
                unresolved_functions: list[str], escalation_chain: dict[str, str],
                at: datetime, clocks: dict[str, Any]) -> None:
        self.rules_version = rules_version
        self.rule_name = rule_name
        self.unresolved_functions = list(unresolved_functions)
        self.escalation_chain = dict(escalation_chain)
        self.clocks = dict(clocks)
        for a in assignments:
            self.assignments[a["department_id"]] = _assignment(
                a["department_function"], at, a["acknowledge_due"], a["resolve_due"],
                acknowledge_at_risk=a.get("acknowledge_at_risk"),
                resolve_at_risk=a.get("resolve_at_risk"))

    def link_as_duplicate(self, original_id: str, distance_metres: float) -> None:
        if self.status is not ReportStatus.OPEN or self.assignments:
            raise FailedPrecondition("only a new report can be linked as a duplicate",
                                     reason="REPORT_ALREADY_ROUTED")
        self._linked_as_duplicate(original_id=original_id,
                                  distance_metres=round(distance_metres, 1))

    @event("LinkedAsDuplicate")
    def _linked_as_duplicate(self, original_id: str, distance_metres: float) -> None:
        self.status = ReportStatus.DUPLICATE
        self.duplicate_of = original_id
        self.duplicate_distance_metres = distance_metres

    def note_duplicate(self, report_id: str) -> None:
        if self.status is not ReportStatus.OPEN:
            raise FailedPrecondition("only an open report takes duplicates",
                                     reason=f"REPORT_{self.status.value}")
        self._duplicate_noted(report_id=report_id)

    @event("DuplicateNoted")
    def _duplicate_noted(self, report_id: str) -> None:
        self.duplicates.append(report_id)

    # -- a department's work on its assignment

    def acknowledge(self, department_id: str, at: datetime) -> None:
        self._require(department_id, {AssignmentStatus.ROUTED}, "acknowledge")
        self._acknowledged(department_id=department_id, at=at)

    @event("Acknowledged")
    def _acknowledged(self, department_id: str, at: datetime) -> None:
        a = self.assignments[department_id]
        a["status"] = AssignmentStatus.ACKNOWLEDGED.value
        a["acknowledged_at"] = at

    def start_work(self, department_id: str, note: str, at: datetime) -> None:
        self._require(department_id, {AssignmentStatus.ACKNOWLEDGED}, "start work on")
        self._work_started(department_id=department_id, note=note, at=at)

    @event("WorkStarted")
    def _work_started(self, department_id: str, note: str, at: datetime) -> None:
        a = self.assignments[department_id]
        a["status"] = AssignmentStatus.IN_PROGRESS.value
        a["work_started_at"] = at
        a["work_note"] = note

    def resolve(self, department_id: str, resolution: str, at: datetime) -> None:
        self._require(department_id, {AssignmentStatus.IN_PROGRESS}, "resolve")
        self._assignment_resolved(department_id=department_id, resolution=resolution, at=at)
        self._close_if_done(at)

    @event("AssignmentResolved")
    def _assignment_resolved(self, department_id: str, resolution: str, at: datetime) -> None:
        a = self.assignments[department_id]
        a["status"] = AssignmentStatus.RESOLVED.value
        a["resolved_at"] = at
        a["resolution"] = resolution
        _end_pause(a, at)

    def reject(self, department_id: str, reason: str, note: str, at: datetime) -> None:
        self._require(department_id, {AssignmentStatus.ROUTED, AssignmentStatus.ACKNOWLEDGED,
                                      AssignmentStatus.IN_PROGRESS}, "reject")
        self._assignment_rejected(department_id=department_id, reason=reason, note=note, at=at)
        self._close_if_done(at)

    @event("AssignmentRejected")
    def _assignment_rejected(self, department_id: str, reason: str, note: str,
                             at: datetime) -> None:
        a = self.assignments[department_id]
        a["status"] = AssignmentStatus.REJECTED.value
        a["rejected_at"] = at
        a["rejection_reason"] = reason
        a["rejection_note"] = note
        _end_pause(a, at)

    def _close_if_done(self, at: datetime) -> None:
        statuses = {AssignmentStatus(a["status"]) for a in self.assignments.values()}
        if statuses <= DONE:
            outcome = (ReportStatus.RESOLVED if AssignmentStatus.RESOLVED in statuses
                       else ReportStatus.REJECTED)
            self._closed(outcome=outcome.value, at=at)

    @event("Closed")
    def _closed(self, outcome: str, at: datetime) -> None:
        self.status = ReportStatus(outcome)
        self.closed_at = at

    def _require(self, department_id: str, wanted: Set[AssignmentStatus], verb: str
                 ) -> dict[str, Any]:
        assignment = self.assignments.get(department_id)
        if assignment is None:
            raise NotFound("assignment", department_id)
        status = AssignmentStatus(assignment["status"])
        if status not in wanted:
            raise FailedPrecondition(f"cannot {verb} an assignment that is {status.value}",
                                     reason=f"ASSIGNMENT_{status.value}")
        return assignment

    # -- transfer (转派), and assignment by the street office

    @property
    def departments_ever(self) -> set[str]:
        """Every department that holds or held an assignment of the report."""
        return set(self.assignments) | {a["department_id"] for a in self.past_assignments}

    def transfer(self, department_id: str, to_department_id: str, to_function: str,
                 reason: str, at: datetime, clock: Clock) -> None:
        """The assigned department hands its open assignment on to another department, whose
        clocks start anew. No bouncing: a department that held the report before (it
        transferred it away, rejected or resolved it) gets it back only from the street
        office (assign), which so sees every back-and-forth."""
        self._require(department_id, OPEN_ASSIGNMENT, "transfer")
        if to_department_id == department_id:
            violations = Violations()
            violations.add("to_department_id", "must be another department than the one "
                           "transferring", "TRANSFER_TO_ITSELF")
            violations.raise_if_any()
        self._require_not_holding(to_department_id)
        if to_department_id in self.departments_ever:
            raise FailedPrecondition(
                "the department held this report before: only the street office may give it "
                "back (AssignReport)", reason="TRANSFER_WOULD_BOUNCE",
                department_id=to_department_id)
        self._transferred(department_id=department_id, to_department_id=to_department_id,
                          to_department_function=to_function, transfer_reason=reason,
                          **self.due_times_from(at, clock), at=at)

    @event("AssignmentTransferred")
    def _transferred(self, department_id: str, to_department_id: str,
                     to_department_function: str, transfer_reason: str,
                     acknowledge_due: datetime, resolve_due: datetime,
                     acknowledge_at_risk: datetime | None, resolve_at_risk: datetime | None,
                     at: datetime) -> None:
        a = self.assignments[department_id]
        a["status"] = AssignmentStatus.TRANSFERRED.value
        a["transferred_at"] = at
        a["transferred_to"] = to_department_id
        a["transfer_reason"] = transfer_reason
        self.assignments[to_department_id] = _assignment(
            to_department_function, at, acknowledge_due, resolve_due,
            acknowledge_at_risk=acknowledge_at_risk, resolve_at_risk=resolve_at_risk,
            transferred_from=department_id)

    def assign(self, department_id: str, function: str, reason: str, at: datetime,
               clock: Clock) -> None:
        """The street office gives the report to a department itself: an open report (e.g.
        one a transfer could not take back to a department that held it), or a reopened one
        under review (a new round: the earlier assignments become its history, and the report
        is open again). Fresh clocks, by the policy it was routed with."""
        if self.status not in (ReportStatus.OPEN, ReportStatus.REOPENED) or (
                self.status is ReportStatus.OPEN and not self.assignments):
            raise FailedPrecondition(
                f"only a routed open or a reopened report is assigned; this one is "
                f"{self.status.value}", reason=f"REPORT_{self.status.value}")
        if self.status is ReportStatus.OPEN:
            self._require_not_holding(department_id)
        self._assigned(department_id=department_id, department_function=function,
                       assignment_reason=reason, **self.due_times_from(at, clock), at=at)

    @event("Assigned")
    def _assigned(self, department_id: str, department_function: str, assignment_reason: str,
                  acknowledge_due: datetime, resolve_due: datetime,
                  acknowledge_at_risk: datetime | None, resolve_at_risk: datetime | None,
                  at: datetime) -> None:
        if self.status is ReportStatus.REOPENED:
            self.past_assignments += [{"department_id": d, **a}
                                      for d, a in self.assignments.items()]
            self.assignments = {}
            self.status = ReportStatus.OPEN
            self.closed_at = None
        elif department_id in self.assignments:
            self.past_assignments.append({"department_id": department_id,
                                          **self.assignments[department_id]})
        self.assignments[department_id] = _assignment(
            department_function, at, acknowledge_due, resolve_due,
            acknowledge_at_risk=acknowledge_at_risk, resolve_at_risk=resolve_at_risk,
            assignment_reason=assignment_reason)

    def _require_not_holding(self, department_id: str) -> None:
        held = self.assignments.get(department_id)
        if held is not None and AssignmentStatus(held["status"]) in OPEN_ASSIGNMENT:
            raise AlreadyExists("the department already holds an open assignment of this "
                                "report", reason="DEPARTMENT_ALREADY_ASSIGNED",
                                department_id=department_id)

    # -- notes shared between the departments and the street office

    def add_note(self, author_id: str, author_role: str, note: str, at: datetime) -> None:
        """Who may write (a department that holds or held the report, its street office) is
        the access table's; the note is officials' free text."""
        self._note_added(author_id=author_id, author_role=author_role, note=note, at=at)

    @event("NoteAdded")
    def _note_added(self, author_id: str, author_role: str, note: str, at: datetime) -> None:
        self.notes.append({"author_id": author_id, "author_role": author_role, "note": note,
                           "at": at})

    # -- the rider's rating of the outcome (满意度), reopening, upholding

    CLOSED = (ReportStatus.RESOLVED, ReportStatus.REJECTED, ReportStatus.VERIFIED)

    @property
    def rate_until(self) -> datetime | None:
        """Until when the rider may rate the outcome; None while there is none to rate."""
        if self.status not in self.CLOSED or self.closed_at is None:
            return None
        return self.closed_at + RATING_WINDOW

    @property
    def rated_this_outcome(self) -> bool:
        return any(r["closed_at"] == self.closed_at for r in self.ratings)

    def rate(self, rating: SatisfactionRating, comment: str, at: datetime) -> bool:
        """The rider rates the outcome once per closing, within RATING_WINDOW of it. An
        unsatisfied rating reopens the report for the street office, at most MAX_REOPENINGS
        times; later ones are recorded and reopen nothing. True when it reopened."""
        if self.status not in self.CLOSED:
            raise FailedPrecondition(
                f"only a closed report's outcome is rated; this one is {self.status.value}",
                reason=f"REPORT_{self.status.value}")
        if self.rated_this_outcome:
            raise AlreadyExists("the rider already rated this outcome",
                                reason="REPORT_ALREADY_RATED")
        until = self.rate_until
        if until is not None and at > until:
            raise FailedPrecondition(
                f"the outcome could be rated until {until.isoformat()}",
                reason="RATING_WINDOW_CLOSED", rate_until=until.isoformat())
        reopens = rating is SatisfactionRating.UNSATISFIED and self.reopen_count < MAX_REOPENINGS
        self._rated(rider_id=self.rider_id, street_id=self.street_id, rating=rating.value,
                    comment=comment, closed_at=self.closed_at,
                    department_ids=[d for d, a in self.assignments.items()
                                    if a["status"] != AssignmentStatus.TRANSFERRED.value],
                    reopens=reopens, at=at)
        if reopens:
            self._reopened(rider_id=self.rider_id, street_id=self.street_id,
                           was_verified=self.status is ReportStatus.VERIFIED, at=at)
        return reopens

    @event("Rated")
    def _rated(self, rider_id: str, street_id: str, rating: str, comment: str,
               closed_at: datetime | None, department_ids: list[str], reopens: bool,
               at: datetime) -> None:
        # Who, where and which departments travel with the event: the satisfaction rate of a
        # department or street is counted from this one event.
        self.ratings.append({"rating": rating, "comment": comment, "at": at,
                             "closed_at": closed_at})
        self.satisfaction = {"rating": rating, "at": at}

    @event("Reopened")
    def _reopened(self, rider_id: str, street_id: str, was_verified: bool, at: datetime
                  ) -> None:
        # `was_verified`: badges stop counting the report until the office upholds it.
        self.reopened_from = self.status.value
        self.status = ReportStatus.REOPENED
        self.reopened_at = at
        self.reopen_count += 1
        self.verified_at = None

    def uphold(self, note: str, at: datetime) -> None:
        """The street office reviewed a reopened report and stands by its outcome: it closes
        again as it was (RESOLVED or REJECTED; VERIFIED again when it had been verified), and
        the rider hears it and may rate it again (which reopens it no more)."""
        if self.status is not ReportStatus.REOPENED:
            raise FailedPrecondition(
                f"only a reopened report's outcome is upheld; this one is {self.status.value}",
                reason=f"REPORT_{self.status.value}")
        was = ReportStatus(self.reopened_from)
        self._upheld(note=note, at=at)
        self._closed(outcome=(ReportStatus.REJECTED if was is ReportStatus.REJECTED
                              else ReportStatus.RESOLVED).value, at=at)
        if was is ReportStatus.VERIFIED:
            self._verified(rider_id=self.rider_id, street_id=self.street_id, kind=self.kind,
                           category=self.category, note=note, at=at)

    @event("OutcomeUpheld")
    def _upheld(self, note: str, at: datetime) -> None:
        self.upheld_note = note
        self.upheld_at = at

    # -- verification by the street office

    def verify(self, note: str, at: datetime) -> None:
        if self.status is not ReportStatus.RESOLVED:
            raise FailedPrecondition(
                f"only a resolved report can be verified; this one is {self.status.value}",
                reason=f"REPORT_{self.status.value}")
        self._verified(rider_id=self.rider_id, street_id=self.street_id, kind=self.kind,
                       category=self.category, note=note, at=at)

    @event("Verified")
    def _verified(self, rider_id: str, street_id: str, kind: str, category: str, note: str,
                  at: datetime) -> None:
        # The event repeats who reported what and where, so that badges can count verified
        # reports per rider from this one event without reading governance's aggregates.
        self.status = ReportStatus.VERIFIED
        self.verified_at = at
        self.verification_note = note

    # -- deadlines

    def _pending(self, a: dict[str, Any], deadline: DeadlineKind) -> bool:
        status = AssignmentStatus(a["status"])
        return (status is AssignmentStatus.ROUTED if deadline is DeadlineKind.ACKNOWLEDGE
                else status not in DONE)

    def missed_deadline(self, department_id: str, deadline: DeadlineKind, now: datetime
                        ) -> bool:
        """True while the deadline is past and the work it asks for is still not done (and
        its clock is not paused: paused time does not count)."""
        a = self.assignments[department_id]
        return (self._pending(a, deadline) and a["paused"] is None
                and now >= a["due"][deadline.value])

    def escalate(self, department_id: str, deadline: DeadlineKind, at: datetime) -> None:
        """Records a missed deadline one level up the tree: once per assignment and deadline."""
        assignment = self.assignments.get(department_id)
        if assignment is None:
            raise NotFound("assignment", department_id)
        if deadline.value in assignment["escalations"]:
            raise FailedPrecondition("this missed deadline was already escalated",
                                     reason="ALREADY_ESCALATED")
        if assignment["paused"] is not None:
            raise FailedPrecondition("the assignment's clock is paused", reason="CLOCK_PAUSED")
        if not self.missed_deadline(department_id, deadline, at):
            raise FailedPrecondition("the deadline is not missed", reason="DEADLINE_NOT_MISSED")
        level = next_level(EscalationLevel(assignment["level"]))
        self._escalated(department_id=department_id, deadline=deadline.value,
                        due_at=assignment["due"][deadline.value], level=level.value,
                        escalated_to=self.escalation_chain.get(level.value, ""), at=at)

    @event("Escalated")
    def _escalated(self, department_id: str, deadline: str, due_at: datetime, level: str,
                   escalated_to: str, at: datetime) -> None:
        a = self.assignments[department_id]
        a["level"] = level
        a["escalations"][deadline] = {"due_at": due_at, "level": level,
                                      "escalated_to": escalated_to, "at": at}

    def at_risk(self, department_id: str, deadline: DeadlineKind, now: datetime) -> bool:
        """True while the clock has run its at-risk share, the work is not done, the clock is
        not paused, and the deadline is not yet missed (a miss is the escalation's to say)."""
        a = self.assignments[department_id]
        start = a["at_risk_from"].get(deadline.value)
        return (start is not None and self._pending(a, deadline) and a["paused"] is None
                and start <= now < a["due"][deadline.value])

    def mark_at_risk(self, department_id: str, deadline: DeadlineKind, at: datetime) -> None:
        """Records that the deadline is at risk: once per assignment and deadline."""
        assignment = self.assignments.get(department_id)
        if assignment is None:
            raise NotFound("assignment", department_id)
        if deadline.value in assignment["at_risk"]:
            raise FailedPrecondition("this deadline was already marked at risk",
                                     reason="ALREADY_AT_RISK")
        if assignment["paused"] is not None:
            raise FailedPrecondition("the assignment's clock is paused", reason="CLOCK_PAUSED")
        if not self.at_risk(department_id, deadline, at):
            raise FailedPrecondition("the deadline is not at risk", reason="DEADLINE_NOT_AT_RISK")
        self._at_risk(department_id=department_id, deadline=deadline.value,
                      due_at=assignment["due"][deadline.value], at=at)

    @event("AtRisk")
    def _at_risk(self, department_id: str, deadline: str, due_at: datetime, at: datetime
                 ) -> None:
        self.assignments[department_id]["at_risk"][deadline] = {"due_at": due_at, "at": at}

    # -- pausing an assignment's clock

    def pause_clock(self, department_id: str, reason: PauseReason, note: str, at: datetime
                    ) -> None:
        """The department stops its clock while it waits (for the rider, a third party...).
        Only an acknowledged assignment, not done: acknowledging takes a moment and is never
        waited for; a done one has no clock running."""
        a = self._require(department_id, {AssignmentStatus.ACKNOWLEDGED,
                                          AssignmentStatus.IN_PROGRESS}, "pause the clock of")
        if a["paused"] is not None:
            raise FailedPrecondition("the assignment's clock is already paused",
                                     reason="CLOCK_ALREADY_PAUSED")
        self._clock_paused(department_id=department_id, reason=reason.value, note=note, at=at)

    @event("ClockPaused")
    def _clock_paused(self, department_id: str, reason: str, note: str, at: datetime) -> None:
        self.assignments[department_id]["paused"] = {"reason": reason, "note": note, "at": at}

    def resume_clock(self, department_id: str, at: datetime, clock: Clock) -> None:
        """Restarts the clock: each deadline still pending, and its at-risk instant, moves on
        by the time paused as `clock` counts it (working time, or plain time)."""
        a = self.assignments.get(department_id)
        if a is None:
            raise NotFound("assignment", department_id)
        if a["paused"] is None:
            raise FailedPrecondition("the assignment's clock is not paused",
                                     reason="CLOCK_NOT_PAUSED")
        paused = clock.between(a["paused"]["at"], at).total_seconds()
        due, at_risk_from = dict(a["due"]), dict(a["at_risk_from"])
        for deadline in DeadlineKind:
            if not self._pending(a, deadline):
                continue
            due[deadline.value] = clock.add(due[deadline.value], paused)
            if at_risk_from.get(deadline.value) is not None \
                    and deadline.value not in a["at_risk"]:
                at_risk_from[deadline.value] = clock.add(at_risk_from[deadline.value], paused)
        self._clock_resumed(department_id=department_id, paused_seconds=paused, due=due,
                            at_risk_from=at_risk_from, at=at)

    @event("ClockResumed")
    def _clock_resumed(self, department_id: str, paused_seconds: float,
                       due: dict[str, datetime], at_risk_from: dict[str, datetime | None],
                       at: datetime) -> None:
        # The event carries the moved due times: replaying it needs no calendar.
        a = self.assignments[department_id]
        a["due"] = dict(due)
        a["at_risk_from"] = dict(at_risk_from)
        a["pauses"].append({**a["paused"], "resumed_at": at, "paused_seconds": paused_seconds})
        a["paused"] = None


def _end_pause(a: dict[str, Any], at: datetime) -> None:
    """Work done while the clock is paused ends the pause: no clock runs on a done assignment."""
    if a.get("paused") is not None:
        a["pauses"].append({**a["paused"], "resumed_at": at, "paused_seconds": None})
        a["paused"] = None


class ClockTimes(TypedDict):
    """When a department's two clocks fall due, and when each reaches its at-risk share."""

    acknowledge_due: datetime
    resolve_due: datetime
    acknowledge_at_risk: datetime | None
    resolve_at_risk: datetime | None


def clock_times(clocks: dict[str, Any], at: datetime, clock: Clock) -> ClockTimes:
    """Due times of clocks started at `at` by the policy `clocks`, and the instants each
    reaches its at-risk share (None when the policy has none)."""
    percent = clocks.get("at_risk_percent", 0)

    def at_risk(name: str) -> datetime | None:
        return clock.add(at, clocks[name] * percent // 100) if percent else None

    # In this order: a routed report stores them in its assignments.
    return ClockTimes(acknowledge_due=clock.add(at, clocks["acknowledge"]),
                      acknowledge_at_risk=at_risk("acknowledge"),
                      resolve_due=clock.add(at, clocks["resolve"]),
                      resolve_at_risk=at_risk("resolve"))


def _assignment(function: str, at: datetime, acknowledge_due: datetime, resolve_due: datetime,
                *, acknowledge_at_risk: datetime | None, resolve_at_risk: datetime | None,
                transferred_from: str = "", assignment_reason: str = "") -> dict[str, Any]:
    """A department's fresh assignment, given at `at` (routed, transferred to it, or assigned
    by the street office): its clocks start then."""
    return {
        "department_function": function,
        "status": AssignmentStatus.ROUTED.value, "routed_at": at,
        # Always the current due times: a resumed clock moves them on.
        "due": {DeadlineKind.ACKNOWLEDGE.value: acknowledge_due,
                DeadlineKind.RESOLVE.value: resolve_due},
        # When each clock reaches the at-risk share (None: never marked), and when it was
        # marked (deadline -> {"due_at", "at"}).
        "at_risk_from": {DeadlineKind.ACKNOWLEDGE.value: acknowledge_at_risk,
                         DeadlineKind.RESOLVE.value: resolve_at_risk},
        "at_risk": {},
        # The pause running now ({"reason", "note", "at"}), and those ended.
        "paused": None, "pauses": [],
        "acknowledged_at": None, "work_started_at": None, "work_note": "",
        "resolved_at": None, "resolution": "", "rejected_at": None,
        "rejection_reason": "", "rejection_note": "",
        "level": EscalationLevel.STREET.value, "escalations": {},
        "transferred_at": None, "transferred_to": "", "transfer_reason": "",
        "transferred_from": transferred_from, "assignment_reason": assignment_reason,
    }


# ---------------------------------------------------------------------------- routing rules


def rule_matches(rule: dict[str, Any], kind: str, category: str, street_id: str) -> bool:
    """An empty kind, category or street in a rule matches any."""
    return ((not rule["kind"] or rule["kind"] == kind)
            and (not rule["category"] or rule["category"] == category)
            and (not rule["street_id"] or rule["street_id"] == street_id))


def check_rules(violations: Violations, rules: list[dict[str, Any]]) -> None:
    """The shape of a rule table; whether its streets and departments exist is the caller's."""
    if not rules:
        violations.add("rules", "name at least one rule", FIELD_REQUIRED)
    if len(rules) > MAX_RULES:
        violations.add("rules", f"at most {MAX_RULES} rules", "TOO_MANY_RULES")
    names: set[str] = set()
    for i, rule in enumerate(rules):
        field = f"rules[{i}]"
        name = rule["name"]
        if not name.strip():
            violations.add(f"{field}.name", "must not be empty", FIELD_REQUIRED)
        elif len(name) > MAX_NAME:
            violations.add(f"{field}.name", f"at most {MAX_NAME} characters", TEXT_TOO_LONG)
        elif name in names:
            violations.add(f"{field}.name", "given to another rule already", DUPLICATE_VALUE)
        names.add(name)
        if not rule["department_functions"] and not rule["department_ids"]:
            violations.add(field, "name at least one department function or department id",
                           "RULE_WITHOUT_DEPARTMENT")
        for j, function in enumerate(rule["department_functions"]):
            # Unless the entry point found a number the contract does not define there.
            if not function and not violations.about(f"{field}.department_functions[{j}]"):
                violations.add(f"{field}.department_functions[{j}]",
                               one_of(DepartmentFunction), ENUM_VALUE_REQUIRED)
        named = [f for f in rule["department_functions"] if f]  # the others are said above
        if len(set(named)) != len(named):
            violations.add(f"{field}.department_functions", "names a function twice",
                           DUPLICATE_VALUE)
        if len(set(rule["department_ids"])) != len(rule["department_ids"]):
            violations.add(f"{field}.department_ids", "names a department twice",
                           DUPLICATE_VALUE)


def resolve_departments(rule: dict[str, Any], chain: list[str],
                        nearest: Callable[[str, str], str | None],
                        function_of: Callable[[str], str]
                        ) -> tuple[list[tuple[str, str]], list[str]]:
    """The (department id, function) pairs a rule routes to, and the functions no department
    could be found for. A function goes to the department of that function nearest the
    report's street: one of the street's own, else its district's, else the city's."""
    found: list[tuple[str, str]] = []
    unresolved: list[str] = []
    for function in rule["department_functions"]:
        department = next((d for d in (nearest(level, function) for level in chain if level)
                           if d), None)
        if department is None:
            unresolved.append(function)
        elif department not in {d for d, _ in found}:
            found.append((department, function))
    for department in rule["department_ids"]:
        if department not in {d for d, _ in found}:
            found.append((department, function_of(department)))
    return found, unresolved


class RoutingRules(Aggregate):
    """Which departments get which reports, and the deadlines they get them with: data the city
    admin changes at run time. Its version is stored with every routing decision it made."""

    ID = uuid.uuid5(_NS, "routing-rules")

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return RoutingRules.ID

    class Configured(Aggregate.Created):
        # v2 added the clocks by category (`clocks`, category name -> {"acknowledge": s,
        # "resolve": s, "around_the_clock": bool}) and the at-risk share. A v1 table keeps
        # its deadlines by kind (EMERGENCY's is the emergency clock), and its categories take
        # the default clocks and share.
        class_version = 2
        rules: list[dict[str, Any]]
        deadlines: dict[str, dict[str, int]]
        clocks: dict[str, dict[str, Any]]
        at_risk_percent: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            _upcast_deadlines(state)

    class Changed(Aggregate.Event):
        class_version = 2  # as Configured
        rules: list[dict[str, Any]]
        deadlines: dict[str, dict[str, int]]
        clocks: dict[str, dict[str, Any]]
        at_risk_percent: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            _upcast_deadlines(state)

    @event(Configured)
    def __init__(self, rules: list[dict[str, Any]], deadlines: dict[str, dict[str, int]],
                 clocks: dict[str, dict[str, Any]], at_risk_percent: int):
        self.rules = [dict(r) for r in rules]
        self.deadlines = {k: dict(v) for k, v in deadlines.items()}
        self.clocks = {k: dict(v) for k, v in clocks.items()}
        self.at_risk_percent = at_risk_percent

    @event(Changed)
    def change(self, rules: list[dict[str, Any]], deadlines: dict[str, dict[str, int]],
               clocks: dict[str, dict[str, Any]], at_risk_percent: int) -> None:
        # Reports routed already keep their assignments and clocks: each records the version
        # that routed it, and the policy it was routed with.
        self.rules = [dict(r) for r in rules]
        self.deadlines = {k: dict(v) for k, v in deadlines.items()}
        self.clocks = {k: dict(v) for k, v in clocks.items()}
        self.at_risk_percent = at_risk_percent

    def clock_for(self, kind: str, category: str) -> dict[str, Any]:
        """The clock policy of a report: the emergency clock for that kind, else its
        category's."""
        return clock_policy(self.deadlines, self.clocks, self.at_risk_percent, kind, category)

    def match(self, kind: str, category: str, street_id: str) -> dict[str, Any] | None:
        """The first rule, in the admin's order, that matches: specific rules go first and a
        catch-all last, as in a firewall's table."""
        return next((r for r in self.rules if rule_matches(r, kind, category, street_id)), None)


def default_clock_for(kind: str, category: str) -> dict[str, Any]:
    """A report's clock policy while the city admin has set no routing rules."""
    return clock_policy(default_deadline_seconds(), default_clocks(), DEFAULT_AT_RISK_PERCENT,
                        kind, category)


def _upcast_deadlines(state: dict[str, Any]) -> None:
    state["clocks"] = default_clocks()
    state["at_risk_percent"] = DEFAULT_AT_RISK_PERCENT


# ---------------------------------------------------------------------------- working calendar


class CityCalendar(Aggregate):
    """The city's working calendar (working hours, weekdays, public holidays, adjusted working
    days 调休): data the city admin sets and versions. Clocks not around the clock count in
    it; a report keeps the due times it was given, and a resumed clock counts its pause by the
    calendar as it stands at the resumption."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Set: ClassVar[type[Any]]
        Changed: ClassVar[type[Any]]

    ID = uuid.uuid5(_NS, "working-calendar")

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return CityCalendar.ID

    @event("Set")
    def __init__(self, spans: list[dict[str, str]], weekdays: list[int], holidays: list[str],
                 working_days: list[str], at: datetime):
        self._apply(spans, weekdays, holidays, working_days, at)

    @event("Changed")
    def change(self, spans: list[dict[str, str]], weekdays: list[int], holidays: list[str],
               working_days: list[str], at: datetime) -> None:
        self._apply(spans, weekdays, holidays, working_days, at)

    def _apply(self, spans: list[dict[str, str]], weekdays: list[int], holidays: list[str],
               working_days: list[str], at: datetime) -> None:
        self.spans = [dict(s) for s in spans]
        self.weekdays = list(weekdays)
        self.holidays = list(holidays)
        self.working_days = list(working_days)
        self.updated_at = at

    def state(self) -> dict[str, Any]:
        return {"spans": self.spans, "weekdays": self.weekdays, "holidays": self.holidays,
                "working_days": self.working_days}

    def calendar(self) -> WorkingCalendar:
        return WorkingCalendar.of(self.state())


# ---------------------------------------------------------------------------- mediation


def check_parties(violations: Violations, parties: list[dict[str, Any]]) -> None:
    if len(parties) < 2:
        violations.add("parties", "a mediation needs at least two parties",
                       "TOO_FEW_PARTIES")
    elif len(parties) > MAX_PARTIES:
        violations.add("parties", f"a mediation has at most {MAX_PARTIES} parties",
                       "TOO_MANY_PARTIES")
    for i, party in enumerate(parties):
        field = f"parties[{i}]"
        if not party["role"]:
            violations.require(violations.about(f"{field}.role"), f"{field}.role",
                               one_of(PartyRole), ENUM_VALUE_REQUIRED)
        elif party["role"] == PartyRole.RIDER.value and not party["rider_id"]:
            violations.add(f"{field}.rider_id", "a PARTY_ROLE_RIDER party names the rider",
                           "RIDER_PARTY_WITHOUT_RIDER_ID")
        elif party["role"] != PartyRole.RIDER.value and party["rider_id"]:
            violations.add(f"{field}.rider_id", "only a PARTY_ROLE_RIDER party has a rider id",
                           "RIDER_ID_ON_OTHER_PARTY")
        if party["role"] != PartyRole.RIDER.value and not party["name"].strip():
            violations.add(f"{field}.name", "must not be empty", FIELD_REQUIRED)
        if len(party["name"]) > MAX_NAME:
            violations.add(f"{field}.name", f"at most {MAX_NAME} characters", TEXT_TOO_LONG)


class MediationCase(Aggregate):
    """A dispute mediated by a street office (调处) between riders, property managers,
    merchants and customers. Parties' names are sealed, each under its own key, so that one
    person's name can be erased without touching the rest of the case."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Opened: ClassVar[type[Any]]
        SessionHeld: ClassVar[type[Any]]
        FollowedUp: ClassVar[type[Any]]
        Reopened: ClassVar[type[Any]]
        Failed: ClassVar[type[Any]]

    @event("Opened")
    def __init__(self, street_id: str, report_id: str, subject: str, mediator_name: str,
                 parties: list[dict[str, Any]], opened_at: datetime):
        self.street_id = street_id
        self.report_id = report_id
        self.subject = subject
        self.mediator_name = mediator_name
        self.parties = [dict(p) for p in parties]
        self.opened_at = opened_at
        self.sessions: list[dict[str, Any]] = []
        self.status = MediationStatus.OPEN
        self.outcome = ""
        self.failure_reason = ""
        self.closed_at: datetime | None = None
        self.agreed_at: datetime | None = None
        self.follow_up_due = ""  # YYYY-MM-DD, the city's day; "" when none is due
        self.follow_ups: list[dict[str, Any]] = []
        self.reopen_count = 0

    def hold_session(self, held_at: datetime, place: str, notes: str) -> None:
        self._require_open()
        self._session_held(held_at=held_at, place=place, notes=notes)

    @event("SessionHeld")
    def _session_held(self, held_at: datetime, place: str, notes: str) -> None:
        self.sessions.append({"held_at": held_at, "place": place, "notes": notes})

    class Agreed(Aggregate.Event):
        # v2 added `follow_up_due` (YYYY-MM-DD, the city's day): an agreement stored before
        # follow-ups existed has none due ("").
        class_version = 2
        outcome: str
        at: datetime
        follow_up_due: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["follow_up_due"] = ""

    def agree(self, outcome: str, at: datetime, follow_up_due: date | None = None) -> None:
        """`follow_up_due`: the day the street office should ask whether it is kept, by the
        city's rule (MediationPolicy) as it stood at the agreement; None: none is due."""
        self._require_open()
        self._require_a_session()
        self._agreed(outcome=outcome, at=at,
                     follow_up_due=follow_up_due.isoformat() if follow_up_due else "")

    @event(Agreed)
    def _agreed(self, outcome: str, at: datetime, follow_up_due: str) -> None:
        self.status = MediationStatus.AGREED
        self.outcome = outcome
        self.closed_at = at
        self.agreed_at = at
        self.follow_up_due = follow_up_due

    def record_follow_up(self, day: date, result: FollowUpResult, note: str, at: datetime,
                         reopen: bool, next_due: date | None) -> None:
        """A follow-up (回访) of the agreement on `day` (checked before: not in the future, not
        before the agreement; `reopen` only with BROKEN). `next_due`: when the next one is due
        (a partly kept agreement is looked at again), None for none. A broken agreement reopens
        the case when the office says so: it mediates again, and the history stays."""
        if self.status is not MediationStatus.AGREED:
            raise FailedPrecondition(
                f"only an agreed case is followed up; this one is {self.status.value}",
                reason="CASE_NOT_AGREED", status=self.status.value)
        self._followed_up(day=day.isoformat(), result=result.value, note=note, at=at,
                          next_due=next_due.isoformat() if next_due else "")
        if reopen:
            self._reopened(at=at)

    @event("FollowedUp")
    def _followed_up(self, day: str, result: str, note: str, at: datetime,
                     next_due: str) -> None:
        self.follow_ups.append({"day": day, "result": result, "note": note, "at": at})
        self.follow_up_due = next_due

    @event("Reopened")
    def _reopened(self, at: datetime) -> None:
        self.status = MediationStatus.OPEN
        self.closed_at = None
        self.follow_up_due = ""
        self.reopen_count += 1

    @property
    def agreed_on(self) -> date | None:
        return city_day(self.agreed_at) if self.agreed_at else None

    def fail(self, reason: str, at: datetime) -> None:
        self._require_open()
        self._require_a_session()
        self._failed(reason=reason, at=at)

    @event("Failed")
    def _failed(self, reason: str, at: datetime) -> None:
        self.status = MediationStatus.FAILED
        self.failure_reason = reason
        self.closed_at = at

    def _require_open(self) -> None:
        if self.status is not MediationStatus.OPEN:
            raise FailedPrecondition(f"the case is closed ({self.status.value})",
                                     reason=f"CASE_{self.status.value}")

    def _require_a_session(self) -> None:
        # An outcome nobody sat down for is not a mediation.
        if not self.sessions:
            raise FailedPrecondition("record a mediation session first",
                                     reason="NO_SESSION_HELD")


def check_follow_up(violations: Violations, *, day: date | None, result: FollowUpResult | None,
                    reopen: bool, today: date, agreed_on: date | None) -> None:
    """The rules of one follow-up: a result, a day from the agreement's to today (the city's),
    and a reopening only of a broken agreement. `day` None: not readable (already said);
    `agreed_on` None: not known here (the case's own state decides)."""
    violations.require_given(result, "result", one_of(FollowUpResult), ENUM_VALUE_REQUIRED)
    if day is not None and day > today:
        violations.add("day", f"must not be after today ({today.isoformat()} in the city's "
                       "time): a follow-up is recorded once made", DAY_IN_THE_FUTURE)
    elif day is not None and agreed_on is not None and day < agreed_on:
        violations.add("day", f"must not be before the agreement ({agreed_on.isoformat()})",
                       DAY_BEFORE_AGREEMENT)
    if reopen and result is not None and result is not FollowUpResult.BROKEN:
        violations.add("reopen", "only a FOLLOW_UP_RESULT_BROKEN agreement reopens the case",
                       REOPEN_NEEDS_BROKEN)


class MediationPolicy(Aggregate):
    """The city's rule for following mediation agreements up: how many days after an agreement
    (and after a follow-up that found it partly kept) the next follow-up is due. Data the city
    admin sets and versions; each agreement stores the due day it was given."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Set: ClassVar[type[Any]]
        Changed: ClassVar[type[Any]]

    ID = uuid.uuid5(_NS, "mediation-policy")

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return MediationPolicy.ID

    @event("Set")
    def __init__(self, follow_up_days: int, at: datetime):
        self.follow_up_days = follow_up_days
        self.updated_at = at

    @event("Changed")
    def change(self, follow_up_days: int, at: datetime) -> None:
        self.follow_up_days = follow_up_days
        self.updated_at = at

    def due_after(self, day: date) -> date:
        return day + timedelta(days=self.follow_up_days)


# ---------------------------------------------------------------------------- pledge, riders


class _VersionedText:
    """What both pledges share: a series of texts, each its own version from 1."""

    texts: list[dict[str, Any]]

    @property
    def current_version(self) -> int:
        return len(self.texts)

    def text_of(self, version: int) -> dict[str, Any]:
        if not 1 <= version <= len(self.texts):
            raise NotFound("pledge_version", str(version))
        return self.texts[version - 1]

    def require_current(self, version: int) -> None:
        if version != self.current_version:
            # A signer signs the text the city stands behind now, not one it has replaced.
            raise FailedPrecondition(
                f"version {version} of the pledge was replaced by version "
                f"{self.current_version}", reason="PLEDGE_VERSION_SUPERSEDED")


class Pledge(_VersionedText, Aggregate):
    """The governance participation pledge (承诺倡议); each new text is a new version that
    riders sign afresh. One per Qiji installation."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Published: ClassVar[type[Any]]
        Revised: ClassVar[type[Any]]

    ID = uuid.uuid5(_NS, "participation-pledge")

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return Pledge.ID

    @event("Published")
    def __init__(self, text: str, at: datetime):
        self.texts = [{"text": text, "published_at": at}]

    @event("Revised")
    def revise(self, text: str, at: datetime) -> None:
        self.texts.append({"text": text, "published_at": at})


class CoBuildingPledge(_VersionedText, Aggregate):
    """The co-building pledge (共建倡议) of the rider-friendly programme: the city's text that
    organisations (communities, streets, merchants, platforms, education providers...) sign,
    each new text a new version signed afresh. One per Qiji installation. An aggregate of its
    own rather than a kind inside Pledge: the participation pledge's stored events stay as they
    are, and neither series ever waits on the other's writes."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Published: ClassVar[type[Any]]
        Revised: ClassVar[type[Any]]

    ID = uuid.uuid5(_NS, "co-building-pledge")

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return CoBuildingPledge.ID

    @event("Published")
    def __init__(self, text: str, at: datetime):
        self.texts = [{"text": text, "published_at": at}]

    @event("Revised")
    def revise(self, text: str, at: datetime) -> None:
        self.texts.append({"text": text, "published_at": at})


class Participant(FollowedRiderStatus, Aggregate):
    """A rider as governance knows them: eligibility learned from identity's feed (the rule
    for "active" is shared/rider_status.py's, as in every follower of identity), and the
    pledges they signed."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Noted: ClassVar[type[Any]]
        StatusNoted: ClassVar[type[Any]]
        PledgeSigned: ClassVar[type[Any]]
        PersonalDataErased: ClassVar[type[Any]]

    @staticmethod
    def create_id(rider_id: str, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_NS, f"participant\n{rider_id}")

    @event("Noted")
    def __init__(self, rider_id: str, home_street_id: str):
        self.rider_id = rider_id
        self.home_street_id = home_street_id
        self.verified = False
        self.suspended = False
        self.left = False
        self.pledges: dict[str, datetime] = {}  # version (as text: JSON keys) -> signed at
        self.personal_data_erased = False

    # Named as badges' and merchants' followers name it. Stored before as RiderStatusNoted,
    # same fields: that topic stays registered to this class below the class.
    @event("StatusNoted")
    def note_status(self, verified: bool, suspended: bool, left: bool) -> None:
        self.verified, self.suspended, self.left = verified, suspended, left

    def sign_pledge(self, version: int, current_version: int, at: datetime) -> None:
        if str(version) in self.pledges:
            raise AlreadyExists("the rider already signed this version of the pledge",
                                reason="PLEDGE_ALREADY_SIGNED", pledge_version=str(version))
        if version != current_version:
            # A rider signs the text the city stands behind now, not one it has replaced.
            raise FailedPrecondition(
                f"version {version} of the pledge was replaced by version {current_version}",
                reason="PLEDGE_VERSION_SUPERSEDED")
        self._pledge_signed(rider_id=self.rider_id, version=version, at=at)

    @event("PledgeSigned")
    def _pledge_signed(self, rider_id: str, version: int, at: datetime) -> None:
        self.pledges[str(version)] = at

    @event("PersonalDataErased")
    def note_personal_data_erased(self, at: datetime) -> None:
        """identity erased the rider's personal data, and governance destroyed its own key of
        the rider. Stored so that every replica learns it from the log: one that opened the
        rider's words before still holds that key in its cache, which the store no longer
        has."""
        self.personal_data_erased = True


# Release 0.1.0 stored Participant's status events under this topic (the embedded release log in
# tests/upgrade holds some): they replay into the renamed class, whose fields are the same.
register_topic("services.governance.domain.model:Participant.RiderStatusNoted",
               Participant.StatusNoted)


class Organisation(Aggregate):
    """An organisation identity owns (a street, district, city or department), noted from
    identity's feed under identity's id, so that routing and escalation can walk the tree
    locally.

    Not a shared.references.Reference, though noted as other services note theirs: it is more
    than a reference. It carries a department's function (which routing reads), it is the
    signer of the co-building pledge (its CoBuildingPledgeSigned is a published topic identity
    follows), and since release 0.1.0 every organisation's history is stored under identity's
    own id, where a Reference lives under a derived one: a Reference beside it would be a
    second copy of the tree, and moving it would strand the stored history."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Noted: ClassVar[type[Any]]
        CoBuildingPledgeSigned: ClassVar[type[Any]]

    @staticmethod
    def create_id(upstream_id: str, **_: Any) -> uuid.UUID:
        return uuid.UUID(upstream_id)

    @event("Noted")
    def __init__(self, upstream_id: str, kind: str, name: str, parent_id: str,
                 department_function: str):
        self.upstream_id = upstream_id
        self.kind = kind
        self.name = name
        self.parent_id = parent_id
        self.department_function = department_function
        # Versions of the co-building pledge it signed (as text: JSON keys) -> signed at.
        self.co_building_pledges: dict[str, datetime] = {}

    def sign_co_building_pledge(self, pledge: CoBuildingPledge, version: int,
                                at: datetime) -> None:
        """The organisation signs `version` of the co-building pledge (共建倡议): the current
        one, once. Its kind was checked by the caller (CO_BUILDING_SIGNER_KINDS)."""
        pledge.text_of(version)
        if str(version) in self.co_building_pledges:
            raise AlreadyExists("the organisation already signed this version of the "
                                "co-building pledge",
                                reason="CO_BUILDING_PLEDGE_ALREADY_SIGNED",
                                pledge_version=str(version))
        pledge.require_current(version)
        self._co_building_pledge_signed(organisation_id=self.upstream_id, kind=self.kind,
                                        name=self.name, parent_id=self.parent_id,
                                        version=version, at=at)

    @event("CoBuildingPledgeSigned")
    def _co_building_pledge_signed(self, organisation_id: str, kind: str, name: str,
                                   parent_id: str, version: int, at: datetime) -> None:
        # Kind, name and parent travel with the event: identity's friendly marks and the
        # public feed read who signed without a second look-up.
        self.co_building_pledges[str(version)] = at
