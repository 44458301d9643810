"""The service layer of help requests (帮扶), a part of GovernanceApplication: a rider asks
for help, the request is routed by kind to social work (legal aid, the trade union where the
city has them), a caseworker is assigned, contacts and referrals are recorded, the outcome goes
back to the rider, who may rate it; missed deadlines escalate as reports' do.

Everything said in a case is sealed here, before a decision, under the rider's own data key
(the subject is the rider): erasing the rider erases it. It is opened only to render an answer,
and shown as the masking table says (HELP_TEXT, HELP_OUTCOME): the request's departments and
the city admin read it; the street office, other departments, auditors and operators see that
things happened, not what was said; the rider's own platform reads the outcome."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from eventsourcing.application import ProcessingEvent

from services.governance import history
from services.governance.domain.help import (
    HelpRequest,
    HelpRouting,
    check_help_routes,
    help_departments,
)
from services.governance.domain.model import Participant
from services.governance.domain.values import (
    CLOCK_SKEW,
    MAX_HELP_TEXT,
    MAX_NAME,
    MAX_TEXT,
    ContactChannel,
    DeadlineKind,
    DepartmentFunction,
    EscalationLevel,
    HelpAssignmentStatus,
    HelpChannel,
    HelpKind,
    HelpStatus,
    SatisfactionRating,
    default_help_routing,
    help_alternatives,
)
from services.governance.help_views import HelpStatisticsRow, HelpViews
from shared import auth, context, masking
from shared.application import CommandResult, Outcome, QijiApplication
from shared.context import Actor, RequestContext
from shared.errors import (
    END_TIME_NOT_AFTER_START_TIME,
    ENUM_VALUE_REQUIRED,
    TIME_IN_THE_FUTURE,
    VALUE_OUT_OF_RANGE,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Violations,
    check_id,
    check_text,
    is_uuid,
)
from shared.followers import UpstreamEvent
from shared.paging import listed
from shared.personal_data import ERASED, PersonalDataErased
from shared.tenancy import Owners
from shared.wire import one_of

if TYPE_CHECKING:
    from services.governance.views import GovernanceViews

# Who stores a help request's escalation: its deadline scheduler, through the command path.
HELP_DEADLINE_SCHEDULER = Actor(principal="governance-help-deadline-scheduler",
                                roles=frozenset({auth.SERVICE}))
ESCALATE_HELP_RPC = "EscalateMissedHelpDeadline"
# A contact recorded before the request was made is no contact about it.
TIME_BEFORE_REQUEST = "TIME_BEFORE_REQUEST"
REFERRAL_TO_ITSELF = "REFERRAL_TO_ITSELF"
DEPARTMENT = "DEPARTMENT"
# A sealed field of an event, and how the masking table shows it once opened.
_SEALED_SHOWN = {"sealed_text": masking.HELP_TEXT, "sealed_caseworker_name": masking.HELP_TEXT,
                 "sealed_note": masking.HELP_TEXT, "sealed_outcome": masking.HELP_OUTCOME}


@dataclass(frozen=True)
class HelpRequestView:
    help_request_id: str
    rider_id: str
    kind: HelpKind
    home_street_id: str
    text: str
    contact_preference: ContactChannel | None
    requested_at: datetime
    status: HelpStatus
    # Each: department_id, department_function, status, routed_at, referred_by, due
    # {"ACKNOWLEDGE", "RESOLVE"}, caseworker_name, caseworker_assigned_at, outcome,
    # outcome_given_at, level, escalations {deadline: {...}}.
    assignments: list[dict[str, Any]]
    contacts: list[dict[str, Any]]
    referrals: list[dict[str, Any]]
    closed_at: datetime | None
    satisfaction: dict[str, Any] | None
    version: int
    routing_version: int = 0
    asked_through: HelpChannel = HelpChannel.PLATFORM


@dataclass(frozen=True)
class HelpRouteInput:
    """One kind's routing as SetHelpRouting gives it (None: not given, or unreadable)."""

    kind: HelpKind | None
    functions: list[DepartmentFunction | None]
    acknowledge_within: timedelta | None
    resolve_within: timedelta | None


@dataclass(frozen=True)
class HelpRoutingView:
    # kind -> {"functions": [...], "acknowledge": seconds, "resolve": seconds}, every kind.
    routes: dict[str, dict[str, Any]]
    version: int  # 0: never set, the defaults apply
    updated_at: datetime | None


class HelpRequests(QijiApplication):
    """GovernanceApplication's help requests (mixed in: it shares the organisation tree, the
    riders and the command path)."""

    help_views: HelpViews
    if TYPE_CHECKING:  # GovernanceApplication's, which this part of it uses
        views: GovernanceViews
        clock: Callable[[], datetime]

        def _participant(self, rider_id: str,
                         refresh_unless: Callable[[Participant], bool] | None = None
                         ) -> Participant: ...

        def _require_riders(self, violations: Violations, named: list[tuple[str, str]],
                            refresh_unless: Callable[[Participant], bool] | None = None
                            ) -> None: ...

        def _note_organisation(self, violations: Violations, organisation_id: str, field: str,
                               kind: str, label: str) -> dict[str, str] | None: ...

        def _escalation_chain(self, street_id: str) -> dict[str, str]: ...

    def _open_help_views(self) -> None:
        self.help_views = HelpViews(self)
        self.help_views.catch_up()

    # ------------------------------------------------------------------ asking

    def request_help(self, *, rider_id: str, kind: HelpKind | None,
                     text: str, contact_preference: ContactChannel | None = None,
                     violations: Violations | None = None) -> CommandResult:
        """Stores the rider's request and, in the same save, routes it by the city's help
        routing (the defaults while none is set) to the departments nearest the rider's home
        street, with its kind's clocks."""
        violations = violations if violations is not None else Violations()
        violations.require_given(kind, "kind", one_of(HelpKind), ENUM_VALUE_REQUIRED)
        check_text(violations, "text", text, MAX_HELP_TEXT)
        # The rider last, once nothing else is wrong (QijiApplication.require_riders).
        self._require_riders(violations, [("rider_id", rider_id)],
                             refresh_unless=lambda p: p.is_active)
        assert kind is not None
        participant = self._participant(rider_id)
        participant.require_active()
        # Noted from identity's registration; the directory for a participant noted first
        # from a status event.
        entry = (self.directory.rider(rider_id)
                 if not participant.home_street_id and self.directory is not None else None)
        home = participant.home_street_id or (entry.home_street_id if entry else "")
        sealed = self._seal_for(rider_id, text.strip())
        routing = self.help_routing()
        route = routing.routes[kind.value]
        clocks = {"acknowledge": route["acknowledge"], "resolve": route["resolve"]}
        self.views.catch_up()  # the departments as the log has them now
        chain = self._escalation_chain(home) if home else {}
        levels = [chain.get(level.value, "") for level in EscalationLevel]

        through = _channel()

        def decide() -> Outcome:
            now = self.clock()
            request = HelpRequest(rider_id=rider_id, kind=kind.value, home_street_id=home,
                                  sealed_text=sealed,
                                  contact_preference=contact_preference.value
                                  if contact_preference else "",
                                  asked_through=through.value, requested_at=now)
            request.route(departments=help_departments(
                help_alternatives(route["functions"]), levels, self.views.nearest_department),
                          escalation_chain=chain, clocks=clocks,
                          routing_version=routing.version, at=now)
            return Outcome([request], {"help_request_id": str(request.id),
                                       "version": request.version})
        return self.execute(decide, id_key="help_request_id")

    # ------------------------------------------------------------------ routing

    def set_help_routing(self, *, routes: list[HelpRouteInput],
                         violations: Violations | None = None) -> CommandResult:
        """Replaces the city's help routing; kinds the request leaves out keep the defaults.
        Requests routed already keep their departments and clocks."""
        violations = violations if violations is not None else Violations()
        check_help_routes(violations, [
            {"kind": r.kind, "functions": r.functions,
             "acknowledge_within": r.acknowledge_within, "resolve_within": r.resolve_within}
            for r in routes])
        violations.raise_if_any()
        table = default_help_routing()
        for r in routes:
            assert r.kind is not None and r.acknowledge_within and r.resolve_within
            table[r.kind.value] = {
                "functions": [f.value for f in r.functions if f is not None],
                "acknowledge": int(r.acknowledge_within.total_seconds()),
                "resolve": int(r.resolve_within.total_seconds())}

        def decide() -> Outcome:
            current = self.found(HelpRouting.ID, HelpRouting)
            if current is None:
                current = HelpRouting(routes=table, at=self.clock())
            else:
                current = self.get(HelpRouting.ID, HelpRouting, "help_routing")
                current.change(routes=table, at=self.clock())
            return Outcome([current], {"version": current.version})
        return self.execute(decide, serialise_on=HelpRouting.ID)

    def help_routing(self, version: int = 0) -> HelpRoutingView:
        """The routing at `version` (0: the current one; the defaults while never set)."""
        if version < 0:
            raise InvalidArgument([FieldViolation("version", "must not be negative",
                                                  VALUE_OUT_OF_RANGE)])
        current = self.found(HelpRouting.ID, HelpRouting)
        if current is None or version > current.version:
            if version:
                raise NotFound("help_routing_version", str(version))
            return HelpRoutingView(default_help_routing(), 0, None)
        routing = self.view(HelpRouting.ID, HelpRouting, "help_routing", version or None)
        return HelpRoutingView({k: dict(v) for k, v in routing.routes.items()},
                               routing.version, routing.updated_at)

    def _seal_for(self, rider_id: str, value: str) -> str:
        """`value` sealed under the rider's key ("" stays ""): a rider whose personal data
        was erased can have nothing said of them stored again."""
        if not value:
            return ""
        try:
            if self.erased_here(rider_id):
                raise PersonalDataErased(rider_id)
            return self.vault.seal(rider_id, value)
        except PersonalDataErased:
            raise FailedPrecondition("the rider's personal data was erased: nothing said about "
                                     "them can be stored", reason="RIDER_PERSONAL_DATA_ERASED"
                                     ) from None

    # ------------------------------------------------------------------ a department's work

    def assign_caseworker(self, *, help_request_id: str,
                          department_id: str, caseworker_name: str) -> CommandResult:
        """The department names who follows the case up (its acknowledgement)."""
        violations = Violations()
        check_text(violations, "caseworker_name", caseworker_name, MAX_NAME)
        rider_id = self._help_rider(violations, help_request_id, department_id)
        sealed = self._seal_for(rider_id, caseworker_name.strip())
        return self._help_change(help_request_id, lambda h, now: h.assign_caseworker(
            department_id, sealed, now))

    def record_help_contact(self, *, help_request_id: str,
                            department_id: str, channel: ContactChannel | None,
                            contacted_at: datetime | None, note: str,
                            violations: Violations | None = None) -> CommandResult:
        """A contact of the caseworker with the rider (`contacted_at` None: now)."""
        violations = violations if violations is not None else Violations()
        violations.require_given(channel, "channel", one_of(ContactChannel),
                                 ENUM_VALUE_REQUIRED)
        check_text(violations, "note", note, MAX_TEXT, required=False)
        now = self.clock()
        if contacted_at is not None and contacted_at > now + CLOCK_SKEW:
            violations.add("contact_time", "record a contact once it was made",
                           TIME_IN_THE_FUTURE)
        found = (self.found(help_request_id, HelpRequest) if is_uuid(help_request_id)
                 else None)
        if contacted_at is not None and found is not None \
                and contacted_at < found.requested_at:
            violations.add("contact_time", "must not be before the help request was made "
                           f"({found.requested_at.isoformat()})", TIME_BEFORE_REQUEST)
        rider_id = self._help_rider(violations, help_request_id, department_id)
        assert channel is not None
        sealed = self._seal_for(rider_id, note.strip())
        contact_id = str(uuid.uuid4())
        return self._help_change(help_request_id, lambda h, at: h.record_contact(
            department_id, contact_id, channel.value, contacted_at or at, sealed, at),
            contact_id=contact_id)

    def record_help_referral(self, *, help_request_id: str,
                             department_id: str, to_department_id: str, note: str
                             ) -> CommandResult:
        """The department refers the rider to another department, which is given the request
        (clocks of its own from now) and reads it from then on."""
        violations = Violations()
        check_text(violations, "note", note, MAX_TEXT, required=False)
        target = self._note_organisation(violations, to_department_id, "to_department_id",
                                         DEPARTMENT, "department")
        if target is not None and to_department_id == department_id:
            violations.add("to_department_id", "must be another department than the one "
                           "referring", REFERRAL_TO_ITSELF)
        rider_id = self._help_rider(violations, help_request_id, department_id)
        assert target is not None
        sealed = self._seal_for(rider_id, note.strip())
        referral_id = str(uuid.uuid4())
        return self._help_change(help_request_id, lambda h, at: h.refer(
            department_id, referral_id, to_department_id, target["department_function"],
            sealed, at), referral_id=referral_id)

    def give_help_outcome(self, *, help_request_id: str,
                          department_id: str, outcome: str) -> CommandResult:
        """The department's outcome, which the rider's platform receives; the request closes
        when every department it was given to has given one."""
        violations = Violations()
        check_text(violations, "outcome", outcome, MAX_TEXT)
        rider_id = self._help_rider(violations, help_request_id, department_id)
        sealed = self._seal_for(rider_id, outcome.strip())
        return self._help_change(help_request_id, lambda h, now: h.give_outcome(
            department_id, sealed, now))

    def rate_help_outcome(self, *, help_request_id: str,
                          rating: SatisfactionRating | None,
                          violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        violations.require_given(rating, "rating", one_of(SatisfactionRating), ENUM_VALUE_REQUIRED)
        check_id(violations, "help_request_id", help_request_id)
        violations.raise_if_any()
        assert rating is not None
        through = _channel()
        return self._help_change(help_request_id,
                                 lambda h, now: h.rate(rating, through, now))

    def _help_rider(self, violations: Violations,
                    help_request_id: str, department_id: str) -> str:
        """The request's rider (whose key seals what is said), once the request's every other
        fault is told; NOT_FOUND when there is no such help request."""
        check_id(violations, "help_request_id", help_request_id)
        check_id(violations, "department_id", department_id)
        violations.raise_if_any()
        return self.view(help_request_id, HelpRequest, "help_request").rider_id

    def _help_change(self, help_request_id: str, change: Any,
                     **answer: str) -> CommandResult:
        def decide() -> Outcome:
            request = self.get(help_request_id, HelpRequest, "help_request")
            change(request, self.clock())
            return Outcome([request], {"help_request_id": help_request_id,
                                       "version": request.version, **answer})
        return self.execute(decide, id_key="help_request_id")

    # ------------------------------------------------------------------ deadlines

    def escalate_missed_help_deadline(self, *, help_request_id: str,
                                      department_id: str, deadline: DeadlineKind
                                      ) -> CommandResult:
        """One escalation of one missed deadline, under a request id made of the assignment
        and the deadline: run again (a crash, a second replica), it stores nothing twice."""
        request_id = f"help:{help_request_id}:{department_id}:{deadline.value}"
        ctx = RequestContext(actor=HELP_DEADLINE_SCHEDULER, rpc=ESCALATE_HELP_RPC,
                             request_id=request_id, request=request_id.encode(),
                             correlation_id=self.help_views.correlation_id(help_request_id)
                             or str(uuid.uuid4()))

        def decide() -> Outcome:
            request = self.get(help_request_id, HelpRequest, "help_request")
            request.escalate(department_id, deadline, self.clock())
            return Outcome([request], {
                "help_request_id": help_request_id, "version": request.version,
                "level": request.assignments[department_id]["level"]})
        with context.acting_as(ctx):
            return self.execute(decide, id_key="help_request_id")

    # ------------------------------------------------------------------ reading

    def help_request(self, help_request_id: str,
                     version: int | None = None) -> HelpRequestView:
        h = self.view(help_request_id, HelpRequest, "help_request", version)
        opened = self.opener_of(h.rider_id)

        def said(sealed: str, field: str = masking.HELP_TEXT) -> str:
            return masking.show_to_caller(field, opened(sealed))
        return HelpRequestView(
            help_request_id=str(h.id), rider_id=h.rider_id, kind=HelpKind(h.kind),
            home_street_id=h.home_street_id, text=said(h.sealed_text),
            contact_preference=ContactChannel(h.contact_preference)
            if h.contact_preference else None,
            requested_at=h.requested_at, status=h.status, routing_version=h.routing_version,
            asked_through=HelpChannel(h.asked_through),
            assignments=[{
                "department_id": d, "department_function": a["department_function"],
                "status": HelpAssignmentStatus(a["status"]), "routed_at": a["routed_at"],
                "referred_by": a["referred_by"], "due": dict(a["due"]),
                "caseworker_name": said(a["sealed_caseworker_name"]),
                "caseworker_assigned_at": a["caseworker_assigned_at"],
                "outcome": said(a["sealed_outcome"], masking.HELP_OUTCOME),
                "outcome_given_at": a["outcome_given_at"], "level": a["level"],
                "escalations": dict(a["escalations"])} for d, a in h.assignments.items()],
            contacts=[{"contact_id": c["contact_id"], "department_id": c["department_id"],
                       "channel": ContactChannel(c["channel"]),
                       "contacted_at": c["contacted_at"], "note": said(c["sealed_note"]),
                       "at": c["at"]} for c in h.contacts],
            referrals=[{"referral_id": r["referral_id"], "department_id": r["department_id"],
                        "to_department_id": r["to_department_id"],
                        "note": said(r["sealed_note"]), "at": r["at"]} for r in h.referrals],
            closed_at=h.closed_at, satisfaction=dict(h.satisfaction) if h.satisfaction else None,
            version=h.version)

    def list_help_requests(self, *, department_id: str,
                           kind: HelpKind | None, status: HelpStatus | None, page_size: int,
                           page_token: str, violations: Violations | None = None
                           ) -> tuple[list[HelpRequestView], str]:
        """In the order they were made; a department sees only those given to it (its access
        entry's rows), the city-wide readers every one."""
        violations = violations if violations is not None else Violations()
        if department_id:
            check_id(violations, "department_id", department_id)
        self.help_views.catch_up()
        ids, token = listed(violations or None, lambda: self.help_views.requests.select(
            {"kind": kind.value if kind else "", "status": status.value if status else ""},
            extra=(lambda attrs, _: department_id in attrs["department_ids"])
            if department_id else None, filters=[f"department_id={department_id}"],
            page_size=page_size, page_token=page_token))
        return [self.help_request(i) for i in ids], token

    def help_request_history(self, help_request_id: str
                             ) -> list[history.HistoryEntry]:
        """Every stored event of the request with who acted; what was said is shown as in
        GetHelpRequest (an auditor sees that it was said, and how long it was)."""
        h = self.get(help_request_id, HelpRequest, "help_request")
        opened = self.opener_of(h.rider_id)
        entries = []
        for e in self.events.get(h.id):
            details: dict[str, Any] = {}
            for key, value in history.own_fields(e).items():
                if key in _SEALED_SHOWN:
                    details[key.removeprefix("sealed_")] = masking.show_to_caller(
                        _SEALED_SHOWN[key], opened(value))
                else:
                    details[key] = value
            entries.append(history.entry(e, details))
        return entries

    def help_statistics(self, *, department_id: str,
                        kind: HelpKind | None, start: datetime | None, end: datetime | None,
                        violations: Violations | None = None) -> list[HelpStatisticsRow]:
        violations = violations if violations is not None else Violations()
        if department_id:
            check_id(violations, "department_id", department_id)
        if start is not None and end is not None:
            violations.require(end > start, "end_time", "must be after start_time",
                               END_TIME_NOT_AFTER_START_TIME)
        violations.raise_if_any()
        self.help_views.catch_up()
        return self.help_views.statistics(department_id=department_id,
                                          kind=kind.value if kind else "", start=start,
                                          end=end)

    # ------------------------------------------------------------------ tenancy, erasure

    def _help_request_owners(self, help_request_id: str
                             ) -> Owners | None:
        """A help request is each department's it was given to (one that gave its outcome
        still reads what it did), the rider's home street office's (a missed deadline
        escalates there first: it sees that things happened, not what was said) and the
        rider's platform's (it carries the outcome to the rider)."""
        h = self.found(help_request_id, HelpRequest)
        if h is None:
            return None
        rider = (self.directory.rider(h.rider_id)
                 if self.directory is not None and h.asked_through == HelpChannel.PLATFORM
                 else None)
        # Asked at the counter: the platform never hears of it, not even that it exists.
        return Owners.of(department=list(h.assignments), street_office=h.home_street_id,
                         platform=rider.platform_id if rider is not None else "")

    def _follow_erasure(self, upstream: UpstreamEvent,
                        processing: ProcessingEvent) -> None:
        """identity erased a rider's personal data: destroy governance's own key of that
        rider, and with it everything said in their help requests, and the keys of their
        names as a party to mediation cases (the facts stay). Only the replica leading this
        follower gets here: the erasure is noted on the rider's participant as well, in the
        batch's transaction, so that every other replica learns it from the log and drops
        the keys it may still hold in its cache (`erased_here`)."""
        rider_id = str(upstream.originator_id)
        # The tombstone first, then the sweep: a case committed before the tombstone is
        # found by the sweep, one committed after it finds the tombstone itself
        # (GovernanceApplication._erase_names_of_erased_riders).
        self.vault.erase(rider_id)
        self.views.catch_up()  # every case that names the rider as a party, so far
        for party_id in self.views.parties_of(rider_id):
            self.vault.erase(party_id)
        participant_id = Participant.create_id(rider_id)
        if self.exists(participant_id):
            # Never self._participant() here: it catches up the follower, which is running
            # this.
            participant = self.get(participant_id, Participant, "rider")
            if not participant.personal_data_erased:
                participant.note_personal_data_erased(at=upstream.timestamp)
                processing.collect_events(participant)

    def erased_here(self, rider_id: str) -> bool:
        """Whether governance noted the rider's erasure. The replica that followed it
        destroyed the key in the store; this one may still hold it in its key cache (it
        opened or sealed the rider's words before), and drops it here rather than open, or
        seal, with a key the store no longer has."""
        participant = self.found(Participant.create_id(rider_id), Participant)
        if participant is None or not participant.personal_data_erased:
            return False
        self.vault.forget(rider_id)
        return True

    def opener_of(self, rider_id: str) -> Callable[[str], str]:
        """What opens the words said of a rider: ERASED for every one once the rider's
        personal data was erased, whatever this process's key cache holds."""
        if self.erased_here(rider_id):
            return lambda sealed: ERASED if sealed else ""
        return lambda sealed: self.vault.open(rider_id, sealed)


def _channel() -> HelpChannel:
    """Where the caller asks (or rates) for the rider: the access table admits only the
    rider's platform and their street office."""
    roles = context.current().actor.roles
    return HelpChannel.PLATFORM if auth.PLATFORM in roles else HelpChannel.STREET_OFFICE


