"""Help requests (帮扶): a rider's own trouble — hardship, legal aid, psychological support, a
work injury, a wage or labour dispute — taken by social work (with legal aid or the trade union
where the city has them), followed up by a caseworker, and answered with an outcome the rider
hears and may rate.

Confidential by design: everything said in a case (the rider's words, the caseworker's name,
contact and referral notes, the outcome) is stored sealed under the rider's own data key
(shared/personal_data.py), so erasing the rider erases all of it and leaves the facts (what
kind, which department, when, whether in time). The aggregate holds only the sealed values; the
application seals before it decides and opens for those the masking table lets read.

A help request holds its departments' assignments, as a report does: two caseworkers assigned
at once collide on the request's version, and the loser decides again from what the winner
stored. Event classes are stored by topic (this module and the class name): keep them here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event

from services.governance.domain.values import (
    RATING_WINDOW,
    DeadlineKind,
    DepartmentFunction,
    EscalationLevel,
    HelpAssignmentStatus,
    HelpChannel,
    HelpKind,
    HelpStatus,
    SatisfactionRating,
    check_deadline,
    help_due_times,
    next_level,
)
from shared.errors import (
    DUPLICATE_VALUE,
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    Violations,
)
from shared.wire import one_of

_NS = uuid.UUID("0f7c1a52-3b8e-4d6a-9e21-7a4c5d2b8e10")


class HelpRequest(Aggregate):
    """A rider's request for help and what each department given it did."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Requested: ClassVar[type[Any]]
        Routed: ClassVar[type[Any]]
        CaseworkerAssigned: ClassVar[type[Any]]
        ContactRecorded: ClassVar[type[Any]]
        Referred: ClassVar[type[Any]]
        OutcomeGiven: ClassVar[type[Any]]
        Closed: ClassVar[type[Any]]
        Rated: ClassVar[type[Any]]
        Escalated: ClassVar[type[Any]]

    @event("Requested")
    def __init__(self, rider_id: str, kind: str, home_street_id: str, sealed_text: str,
                 contact_preference: str, asked_through: str, requested_at: datetime):
        self.rider_id = rider_id
        # HelpChannel: where the rider asked, heard the outcome and rates it.
        self.asked_through = asked_through
        self.kind = kind
        self.home_street_id = home_street_id
        self.sealed_text = sealed_text
        self.contact_preference = contact_preference
        self.requested_at = requested_at
        self.status = HelpStatus.OPEN
        self.assignments: dict[str, dict[str, Any]] = {}
        self.escalation_chain: dict[str, str] = {}
        self.contacts: list[dict[str, Any]] = []
        self.referrals: list[dict[str, Any]] = []
        self.closed_at: datetime | None = None
        self.satisfaction: dict[str, Any] | None = None
        # The city's help routing that routed it (0: the defaults), and the kind's clocks
        # then ({"acknowledge", "resolve"} seconds): a referral starts the same clocks.
        self.routing_version = 0
        self.clocks: dict[str, int] = {}

    # -- routing

    def route(self, *, departments: list[tuple[str, str]], escalation_chain: dict[str, str],
              clocks: dict[str, int], routing_version: int, at: datetime) -> None:
        """Gives the request to each (department id, function) the help routing found, with
        the kind's clocks."""
        if self.assignments:
            raise FailedPrecondition("the help request is already routed",
                                     reason="HELP_REQUEST_ALREADY_ROUTED")
        if not departments:
            raise FailedPrecondition(
                "the city has no social-work department to take this help request; the city "
                "admin must create one", reason="NO_HELP_ROUTE")
        self._routed(assignments=[_assignment(d, f, clocks, at) for d, f in departments],
                     escalation_chain=escalation_chain, clocks=dict(clocks),
                     routing_version=routing_version, at=at)

    @event("Routed")
    def _routed(self, assignments: list[dict[str, Any]], escalation_chain: dict[str, str],
                clocks: dict[str, int], routing_version: int, at: datetime) -> None:
        self.escalation_chain = dict(escalation_chain)
        self.clocks = dict(clocks)
        self.routing_version = routing_version
        for a in assignments:
            self._add_assignment(a, at, referred_by="")

    def _add_assignment(self, a: dict[str, Any], at: datetime, referred_by: str) -> None:
        self.assignments[a["department_id"]] = {
            "department_function": a["department_function"],
            "status": HelpAssignmentStatus.ROUTED.value, "routed_at": at,
            "referred_by": referred_by,
            "due": {DeadlineKind.ACKNOWLEDGE.value: a["acknowledge_due"],
                    DeadlineKind.RESOLVE.value: a["resolve_due"]},
            "sealed_caseworker_name": "", "caseworker_assigned_at": None,
            "sealed_outcome": "", "outcome_given_at": None,
            "level": EscalationLevel.STREET.value, "escalations": {},
        }

    # -- a department's work

    def assign_caseworker(self, department_id: str, sealed_name: str, at: datetime) -> None:
        self._require(department_id, {HelpAssignmentStatus.ROUTED}, "assign a caseworker to")
        self._caseworker_assigned(department_id=department_id, sealed_caseworker_name=sealed_name,
                                  at=at)

    @event("CaseworkerAssigned")
    def _caseworker_assigned(self, department_id: str, sealed_caseworker_name: str,
                             at: datetime) -> None:
        a = self.assignments[department_id]
        a["status"] = HelpAssignmentStatus.CASEWORKER_ASSIGNED.value
        a["sealed_caseworker_name"] = sealed_caseworker_name
        a["caseworker_assigned_at"] = at

    def record_contact(self, department_id: str, contact_id: str, channel: str,
                       contacted_at: datetime, sealed_note: str, at: datetime) -> None:
        self._require(department_id, {HelpAssignmentStatus.CASEWORKER_ASSIGNED},
                      "record a contact on")
        self._contact_recorded(department_id=department_id, contact_id=contact_id,
                               channel=channel, contacted_at=contacted_at,
                               sealed_note=sealed_note, at=at)

    @event("ContactRecorded")
    def _contact_recorded(self, department_id: str, contact_id: str, channel: str,
                          contacted_at: datetime, sealed_note: str, at: datetime) -> None:
        self.contacts.append({"contact_id": contact_id, "department_id": department_id,
                              "channel": channel, "contacted_at": contacted_at,
                              "sealed_note": sealed_note, "at": at})

    def refer(self, department_id: str, referral_id: str, to_department_id: str,
              to_function: str, sealed_note: str, at: datetime) -> None:
        """The department refers the rider to another department (legal aid, the trade
        union...), which is given the request with clocks of its own and gives its own outcome;
        the referring department still gives its outcome."""
        self._require(department_id, {HelpAssignmentStatus.CASEWORKER_ASSIGNED}, "refer from")
        if to_department_id in self.assignments:
            raise FailedPrecondition("that department already has this help request",
                                     reason="HELP_ALREADY_ASSIGNED",
                                     department_id=to_department_id)
        assignment = _assignment(to_department_id, to_function, self.clocks, at)
        self._referred(department_id=department_id, referral_id=referral_id,
                       to_department_id=to_department_id, to_function=to_function,
                       sealed_note=sealed_note, acknowledge_due=assignment["acknowledge_due"],
                       resolve_due=assignment["resolve_due"], at=at)

    @event("Referred")
    def _referred(self, department_id: str, referral_id: str, to_department_id: str,
                  to_function: str, sealed_note: str, acknowledge_due: datetime,
                  resolve_due: datetime, at: datetime) -> None:
        self.referrals.append({"referral_id": referral_id, "department_id": department_id,
                               "to_department_id": to_department_id,
                               "sealed_note": sealed_note, "at": at})
        self._add_assignment({"department_id": to_department_id,
                              "department_function": to_function,
                              "acknowledge_due": acknowledge_due, "resolve_due": resolve_due},
                             at, referred_by=department_id)

    def give_outcome(self, department_id: str, sealed_outcome: str, at: datetime) -> None:
        self._require(department_id, {HelpAssignmentStatus.CASEWORKER_ASSIGNED},
                      "give the outcome of")
        self._outcome_given(rider_id=self.rider_id, kind=self.kind, department_id=department_id,
                            sealed_outcome=sealed_outcome, at=at)
        if all(a["status"] == HelpAssignmentStatus.OUTCOME_GIVEN.value
               for a in self.assignments.values()):
            self._closed(at=at)

    @event("OutcomeGiven")
    def _outcome_given(self, rider_id: str, kind: str, department_id: str,
                       sealed_outcome: str, at: datetime) -> None:
        # Rider and kind travel with the event: the public feed tells the rider's platform
        # from this one event.
        a = self.assignments[department_id]
        a["status"] = HelpAssignmentStatus.OUTCOME_GIVEN.value
        a["sealed_outcome"] = sealed_outcome
        a["outcome_given_at"] = at

    @event("Closed")
    def _closed(self, at: datetime) -> None:
        self.status = HelpStatus.CLOSED
        self.closed_at = at

    def _require(self, department_id: str, wanted: set[HelpAssignmentStatus], verb: str
                 ) -> dict[str, Any]:
        assignment = self.assignments.get(department_id)
        if assignment is None:
            raise NotFound("help_assignment", department_id)
        status = HelpAssignmentStatus(assignment["status"])
        if status not in wanted:
            raise FailedPrecondition(f"cannot {verb} a help assignment that is {status.value}",
                                     reason=f"HELP_ASSIGNMENT_{status.value}")
        return assignment

    # -- the rider's rating

    def rate(self, rating: SatisfactionRating, through: HelpChannel, at: datetime) -> None:
        """The rider rates the outcome once, within RATING_WINDOW of the closing, where they
        asked (`through`: the platform's app, or the street office's counter)."""
        if through.value != self.asked_through:
            raise FailedPrecondition(
                "the rider rates the outcome where they asked for help: "
                + ("in their platform's app" if self.asked_through == HelpChannel.PLATFORM
                   else "at their street office's counter"), reason="RATE_WHERE_ASKED")
        if self.satisfaction is not None:
            raise AlreadyExists("the rider already rated this help request",
                                reason="HELP_ALREADY_RATED",
                                rating=self.satisfaction["rating"])
        if self.status is not HelpStatus.CLOSED or self.closed_at is None:
            raise FailedPrecondition("only a closed help request (every outcome given) is "
                                     "rated", reason="HELP_REQUEST_OPEN")
        closes = self.closed_at + RATING_WINDOW
        if at > closes:
            raise FailedPrecondition(
                f"the rating window closed at {closes.isoformat()} "
                f"({RATING_WINDOW.days} days after the outcome)",
                reason="RATING_WINDOW_CLOSED", window_closed_time=closes.isoformat())
        self._rated(rating=rating.value, at=at)

    @event("Rated")
    def _rated(self, rating: str, at: datetime) -> None:
        self.satisfaction = {"rating": rating, "at": at}

    # -- deadlines

    def missed_deadline(self, department_id: str, deadline: DeadlineKind, now: datetime
                        ) -> bool:
        """True while the deadline is past and what it asks for is still not done."""
        a = self.assignments[department_id]
        status = HelpAssignmentStatus(a["status"])
        pending = (status is HelpAssignmentStatus.ROUTED if deadline is DeadlineKind.ACKNOWLEDGE
                   else status is not HelpAssignmentStatus.OUTCOME_GIVEN)
        return pending and now >= a["due"][deadline.value]

    def escalate(self, department_id: str, deadline: DeadlineKind, at: datetime) -> None:
        """A missed deadline one level up the rider's home street's tree: once per assignment
        and deadline."""
        assignment = self.assignments.get(department_id)
        if assignment is None:
            raise NotFound("help_assignment", department_id)
        if deadline.value in assignment["escalations"]:
            raise FailedPrecondition("this missed deadline was already escalated",
                                     reason="ALREADY_ESCALATED")
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


def _assignment(department_id: str, function: str, clocks: dict[str, int], at: datetime
                ) -> dict[str, Any]:
    due = help_due_times(at, clocks)
    return {"department_id": department_id, "department_function": function,
            "acknowledge_due": due[DeadlineKind.ACKNOWLEDGE.value],
            "resolve_due": due[DeadlineKind.RESOLVE.value]}


def help_departments(routes: tuple[tuple[str, ...], ...], chain: list[str],
                     nearest: Any) -> list[tuple[str, str]]:
    """The (department id, function) pairs a help request goes to: the first alternative of
    `routes` (values.help_alternatives) with any department of its functions at the rider's
    home street, its district or the city (the nearest first); empty when none has one."""
    for functions in routes:
        found: list[tuple[str, str]] = []
        for function in functions:
            department = next((d for d in (nearest(level, function) for level in chain if level)
                               if d), None)
            if department is not None and department not in {d for d, _ in found}:
                found.append((department, function))
        if found:
            return found
    return []


# ---------------------------------------------------------------------------- help routing


def check_help_routes(violations: Violations, routes: list[dict[str, Any]]) -> None:
    """The shape of the city admin's help routing: each kind at most once, with at least one
    department function (none twice) and its two clocks. `routes`: {"kind" (None: not given
    or unreadable, said already where the entry point said it), "functions" (None each for an
    unreadable one), "acknowledge_within", "resolve_within" (timedelta or None)}."""
    if not routes:
        # An empty table would store a version that changes nothing: a mistake, not a choice.
        violations.add("routes", "name at least one kind's route (kinds left out keep the "
                       "defaults)", FIELD_REQUIRED)
    seen: set[HelpKind] = set()
    for i, route in enumerate(routes):
        field = f"routes[{i}]"
        kind = route["kind"]
        violations.require_given(kind, f"{field}.kind", one_of(HelpKind), ENUM_VALUE_REQUIRED)
        if kind is not None and kind in seen:
            violations.add(f"{field}.kind", "given twice", DUPLICATE_VALUE)
        if kind is not None:
            seen.add(kind)
        functions = route["functions"]
        if not functions:
            violations.add(f"{field}.department_functions",
                           "name at least one department function", FIELD_REQUIRED)
        for j, function in enumerate(functions):
            violations.require_given(function, f"{field}.department_functions[{j}]",
                                     one_of(DepartmentFunction), ENUM_VALUE_REQUIRED)
        named = [f for f in functions if f is not None]
        if len(set(named)) != len(named):
            violations.add(f"{field}.department_functions", "names a function twice",
                           DUPLICATE_VALUE)
        check_deadline(violations, field, route["acknowledge_within"], route["resolve_within"])


class HelpRouting(Aggregate):
    """Where each kind of help request goes and its clocks: data the city admin sets and
    versions (SetHelpRouting); each request stores the version that routed it. Kinds the admin
    leaves out keep the defaults (values.default_help_routing); social work is always the
    floor (values.HELP_FALLBACK)."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Set: ClassVar[type[Any]]
        Changed: ClassVar[type[Any]]

    ID = uuid.uuid5(_NS, "help-routing")

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return HelpRouting.ID

    @event("Set")
    def __init__(self, routes: dict[str, dict[str, Any]], at: datetime):
        self.routes = {k: dict(v) for k, v in routes.items()}
        self.updated_at = at

    @event("Changed")
    def change(self, routes: dict[str, dict[str, Any]], at: datetime) -> None:
        # Requests routed already keep their departments and clocks.
        self.routes = {k: dict(v) for k, v in routes.items()}
        self.updated_at = at
