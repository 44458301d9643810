"""The governance service layer: reports and their routing, departments' work and deadlines,
verification, mediation cases, the participation pledge, and the policy that follows
identity's feed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from eventsourcing.application import ProcessingEvent

from services.governance import history
from services.governance.domain.calendar import (
    AROUND_THE_CLOCK,
    DEFAULT_CALENDAR_STATE,
    Clock,
    WorkingCalendar,
    stored_calendar,
)
from services.governance.domain.model import (
    CityCalendar,
    CoBuildingPledge,
    MediationCase,
    MediationPolicy,
    Organisation,
    Participant,
    Pledge,
    Report,
    RoutingRules,
    check_follow_up,
    check_parties,
    check_rules,
    default_clock_for,
    resolve_departments,
)
from services.governance.domain.rates import (
    AS_OF_BEFORE_START,
    MAX_PERIOD,
    MORE_THAN_ONE_UNIT,
    PERIOD_TOO_LONG,
    RULES,
    RULES_VERSION,
    UNIT_REQUIRED,
    ServiceRates,
    Unit,
    service_rates,
)
from services.governance.domain.values import (
    ANY_DEPARTMENT_RULE,
    CLOCK_SKEW,
    CO_BUILDING_SIGNER_KINDS,
    DEFAULT_AT_RISK_PERCENT,
    DEFAULT_FOLLOW_UP_DAYS,
    DUPLICATE_WITHIN_METRES,
    FALLBACK_RULE,
    MAX_ATTACHMENT_REF,
    MAX_ATTACHMENTS,
    MAX_FOLLOW_UP_DAYS,
    MAX_NAME,
    MAX_NOTE,
    MAX_OBSERVATION_AGE,
    MAX_TEXT,
    Category,
    DeadlineKind,
    DepartmentFunction,
    EscalationLevel,
    FollowUpResult,
    Location,
    MediationStatus,
    PartyRole,
    PauseReason,
    PledgeKind,
    RejectionReason,
    ReportKind,
    ReportStatus,
    SatisfactionRating,
    check_deadline,
    default_clocks,
    default_deadline_seconds,
    latitude_band_degrees,
    same_incident,
)
from services.governance.help_application import HelpRequests
from services.governance.views import (
    GovernanceViews,
    MediationStatisticsRow,
    QueueEntry,
    StatisticsRow,
)
from services.identity import events as identity_events
from shared import auth, context, masking
from shared.application import (
    CommandResult,
    Outcome,
    QijiApplication,
)
from shared.config import Settings
from shared.context import Actor, RequestContext
from shared.errors import (
    DUPLICATE_VALUE,
    END_TIME_NOT_AFTER_START_TIME,
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    TEXT_INVALID,
    TIME_IN_THE_FUTURE,
    TIME_TOO_LONG_AGO,
    VALUE_OUT_OF_RANGE,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Violations,
    check_id,
    check_reason,
    check_text,
)
from shared.followers import FeedSource, Follower, UpstreamEvent, follower_of
from shared.paging import listed, page
from shared.personal_data import ERASED
from shared.references import organisation_kind_not_allowed
from shared.tenancy import EVERYONE, Owners
from shared.values import check_coordinates, city_day, parse_day
from shared.wire import one_of

# Who stores an escalation: the deadline scheduler, through the same command path as callers.
DEADLINE_SCHEDULER = Actor(principal="governance-deadline-scheduler",
                           roles=frozenset({auth.SERVICE}))
ESCALATE_RPC = "EscalateMissedDeadline"
AT_RISK_RPC = "MarkDeadlineAtRisk"
# What a report's assignments and events keep under a name the masking table would misread:
# the rider's words and each department's resolution are what the rider is owed back
# (REPORT_TEXT); a closed report's outcome and a rejection's reason are statuses, not text.
# Notes (work, rejection, verification) stay free text, for officials.
# A transfer's and an assignment's reasons are officials' free text; the rider's comment on
# their rating is the rider's own words, as the report's text. A paused clock's reason is a
# PauseReason; its note stays free text.
_ASSIGNMENT_TEXT = {"resolution": masking.REPORT_TEXT,
                    "transfer_reason": masking.FREE_TEXT,
                    "assignment_reason": masking.FREE_TEXT,
                    "reason": None}
_HISTORY_TEXT = {"text": masking.REPORT_TEXT, "resolution": masking.REPORT_TEXT,
                 "outcome": None, "reason": None, "transfer_reason": masking.FREE_TEXT,
                 "assignment_reason": masking.FREE_TEXT, "comment": masking.REPORT_TEXT,
                 "rating": None, "author_role": None}
# Events naming another report of the same incident (LinkedAsDuplicate, DuplicateNoted).
_OTHER_REPORT_IDS = ("original_id", "report_id")
# identity's organisation kinds, as its feed spells them.
STREET, DEPARTMENT, DISTRICT = "STREET", "DEPARTMENT", "DISTRICT"
# GetServiceRates' units: the request fields that may name one.
_UNITS = ("department_id", "street_id", "district_id")


@dataclass(frozen=True)
class ReportView:
    report_id: str
    rider_id: str
    kind: ReportKind
    category: Category
    location: Location
    text: str
    attachment_refs: list[str]
    observed_at: datetime
    submitted_at: datetime
    status: ReportStatus
    assignments: list[dict[str, Any]]
    rules_version: int
    rule_name: str
    unresolved_functions: list[str]
    duplicate_of: str
    duplicates: list[str]
    closed_at: datetime | None
    verified_at: datetime | None
    verification_note: str
    version: int
    # Notes shared between the departments and the street office, each {"author_id",
    # "author_role", "note", "at"}: none shown to a platform.
    notes: list[dict[str, Any]] = field(default_factory=list)
    # The rider's ratings, each {"rating": SatisfactionRating, "comment", "at", "closed_at"};
    # the latest.
    ratings: list[dict[str, Any]] = field(default_factory=list)
    satisfaction: SatisfactionRating | None = None
    rate_until: datetime | None = None
    reopen_count: int = 0
    reopened_at: datetime | None = None
    upheld_at: datetime | None = None
    upheld_note: str = ""
    # Assignments replaced by a later one of the same department, or by a new round after a
    # reopening, as they stood then.
    past_assignments: list[dict[str, Any]] = field(default_factory=list)
    # The clock policy it was routed with (Report.clocks); None while not routed.
    clocks: dict[str, Any] | None = None


@dataclass(frozen=True)
class ServiceRatesView:
    """A unit's three rates over [start, end) as of a moment (GetServiceRates): the counts
    behind each, and the rules they were made by."""

    department_id: str
    street_id: str
    district_id: str
    start: datetime
    end: datetime
    as_of: datetime
    rates: ServiceRates
    rules_version: int = RULES_VERSION
    rules: tuple[str, ...] = RULES


@dataclass(frozen=True)
class RoutingRulesView:
    rules: list[dict[str, Any]]
    # By kind: {"acknowledge": s, "resolve": s}; only EMERGENCY's is used (the emergency clock).
    deadlines: dict[str, dict[str, int]]
    version: int
    updated_at: datetime | None
    # By category: {"acknowledge": s, "resolve": s, "around_the_clock": bool}.
    clocks: dict[str, dict[str, Any]] = field(default_factory=default_clocks)
    at_risk_percent: int = DEFAULT_AT_RISK_PERCENT


@dataclass(frozen=True)
class WorkingCalendarView:
    spans: list[dict[str, str]]  # {"start": "HH:MM", "end": "HH:MM"}, in order
    weekdays: list[int]  # ISO: 1 Monday ... 7 Sunday
    holidays: list[str]  # YYYY-MM-DD
    working_days: list[str]  # adjusted working days (调休), YYYY-MM-DD
    version: int  # 0: never set, the default applies
    updated_at: datetime | None


@dataclass(frozen=True)
class MediationCaseView:
    case_id: str
    street_id: str
    report_id: str
    subject: str
    mediator_name: str
    parties: list[dict[str, str]]
    sessions: list[dict[str, Any]]
    status: MediationStatus
    outcome: str
    failure_reason: str
    opened_at: datetime
    closed_at: datetime | None
    version: int
    # Follow-ups of the agreement (回访): {"day": date, "result": FollowUpResult, "note", "at"}.
    follow_ups: list[dict[str, Any]] = field(default_factory=list)
    follow_up_due: date | None = None
    reopen_count: int = 0


@dataclass(frozen=True)
class MediationPolicyView:
    follow_up_days: int
    version: int  # 0: never set, the default applies
    updated_at: datetime | None


@dataclass(frozen=True)
class PledgeView:
    version: int
    text: str
    published_at: datetime
    kind: PledgeKind = PledgeKind.PARTICIPATION


@dataclass(frozen=True)
class SignatureEntry:
    """One signature of a pledge version, as ListPledgeSignatures shows it: a rider's
    (participation) or an organisation's (co-building)."""

    kind: PledgeKind
    version: int
    rider_id: str
    organisation_id: str
    organisation_name: str
    organisation_kind: str
    signed_at: datetime


@dataclass(frozen=True)
class SignatureView:
    rider_id: str
    pledge_version: int
    signed_at: datetime


@dataclass(frozen=True)
class Party:
    role: PartyRole | None
    name: str = ""
    rider_id: str = ""


@dataclass(frozen=True)
class RuleInput:
    name: str
    kind: ReportKind | None = None
    category: Category | None = None
    street_id: str = ""
    department_functions: list[DepartmentFunction | None] = field(default_factory=list)
    department_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SessionInput:
    """A mediation session as a request gives it (MediationSession)."""

    held_at: datetime | None
    place: str
    notes: str = ""


@dataclass(frozen=True)
class DeadlineInput:
    """Deadlines by report kind; EMERGENCY's is the emergency clock (always around the
    clock), the others' are kept as set and shown but no longer used."""

    kind: ReportKind | None
    acknowledge_within: timedelta | None
    resolve_within: timedelta | None


@dataclass(frozen=True)
class CategoryClockInput:
    """The clock of one category: plain time, or working time in the city's calendar."""

    category: Category | None
    acknowledge_within: timedelta | None
    resolve_within: timedelta | None
    around_the_clock: bool = False


class GovernanceApplication(HelpRequests, QijiApplication):
    name = "governance"

    IDENTITY_TOPICS = (*identity_events.RIDER_STATUS_TOPICS,
                       identity_events.ORGANISATION_CREATED,
                       identity_events.RIDER_PERSONAL_DATA_ERASED)

    def __init__(self, settings: Settings, master_key: bytes,
                 clock: Callable[[], datetime] | None = None, *,
                 feeds: FeedSource | None = None):
        super().__init__(settings, master_key)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.views = GovernanceViews(self)
        self.views.catch_up()
        self._open_help_views()
        # The follower of identity's feed, which a request naming a rider or an organisation
        # not known here yet catches up through (the directory reads the same feed).
        self.identity_follower: Follower | None = follower_of(
            self, feeds, "identity", self.follow_identity, self.IDENTITY_TOPICS)

    # ------------------------------------------------------------------ reports

    def submit_report(self, *, rider_id: str, kind: ReportKind | None,
                      category: Category | None, location: Location | None, text: str,
                      attachment_refs: list[str], observed_at: datetime | None,
                      violations: Violations | None = None) -> CommandResult:
        """Stores the report and, in the same save, either links it to the open report of the
        same incident or routes it by the current rules.

        `violations`, here and in every command and list that takes them: what the entry point
        already found wrong in the request (an enum number the contract does not define, a
        timestamp it could not read), reported with the rest in one answer."""
        violations = violations if violations is not None else Violations()
        violations.require_given(kind, "kind",
                                 one_of(ReportKind), ENUM_VALUE_REQUIRED)
        violations.require_given(category, "category",
                                 one_of(Category), ENUM_VALUE_REQUIRED)
        if location is None:
            violations.add("location", "must give the street and WGS84 coordinates",
                           FIELD_REQUIRED)
        else:
            self._note_organisation(violations, location.street_id, "location.street_id",
                                    STREET, "street")
            check_coordinates(violations, "location", location.latitude, location.longitude)
        check_text(violations, "text", text, MAX_TEXT)
        _check_attachments(violations, attachment_refs)
        if observed_at is not None and observed_at > self.clock() + CLOCK_SKEW:
            violations.add("observe_time", "must not be in the future", TIME_IN_THE_FUTURE)
        elif observed_at is not None and observed_at < self.clock() - MAX_OBSERVATION_AGE:
            violations.add("observe_time", f"must be within the last "
                           f"{MAX_OBSERVATION_AGE.days} days: a report is of what was seen "
                           "lately", TIME_TOO_LONG_AGO)
        # The rider last, once nothing else is wrong (a street office may name any rider who
        # reports in its street: the answer must not tell it whether they exist).
        self._require_riders(violations, [("rider_id", rider_id)],
                             refresh_unless=lambda p: p.is_active)
        assert kind is not None and category is not None and location is not None
        # Read once: the report does not change the rider, so a retried decision needs no
        # fresher copy.
        participant = self._participant(rider_id)

        def decide() -> Outcome:
            participant.require_active()
            now = self.clock()
            report = Report(rider_id=rider_id, kind=kind.value, category=category.value,
                            street_id=location.street_id, latitude=location.latitude,
                            longitude=location.longitude, text=text.strip(),
                            attachment_refs=[a.strip() for a in attachment_refs],
                            observed_at=observed_at or now, submitted_at=now)
            original = self._original_of(report)
            if original is not None:
                found, metres = original
                report.link_as_duplicate(str(found.id), metres)
                found.note_duplicate(str(report.id))
                return Outcome([report, found], {"report_id": str(report.id),
                                                 "version": report.version})
            self._route(report, now)
            return Outcome([report], {"report_id": str(report.id), "version": report.version})
        return self.execute(decide, id_key="report_id")

    def _original_of(self, report: Report) -> tuple[Report, float] | None:
        """The open report this one repeats, if any: the earliest observed of its incident."""
        self.views.catch_up()
        incident = report.as_incident()
        for report_id, other in self.views.open_incidents(
                report.category, report.latitude, latitude_band_degrees(DUPLICATE_WITHIN_METRES)):
            metres = same_incident(incident, other)
            if metres is None:
                continue
            original = self.get(report_id, Report, "report")
            # The view may lag a close stored a moment ago: the aggregate decides.
            if original.status is ReportStatus.OPEN:
                return original, metres
        return None

    def _route(self, report: Report, now: datetime) -> None:
        rules = self._rules(read_only=True)  # what the report takes from them is copied
        rule = (rules.match(report.kind, report.category, report.street_id) if rules else None
                ) or FALLBACK_RULE
        clocks = (rules.clock_for(report.kind, report.category) if rules
                  else default_clock_for(report.kind, report.category))
        chain = self._escalation_chain(report.street_id)
        levels = [chain.get(level.value, "") for level in EscalationLevel]

        def resolve(r: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
            return resolve_departments(
                r, levels, self.views.nearest_department,
                lambda d: (self.views.organisation(d) or {}).get("department_function", ""))
        departments, unresolved = resolve(rule)
        # A rider's report is not refused while the city has any department to take it: the
        # fallback (social work, petitions), and failing that the department nearest the
        # report's street, whatever its function. Only a city with no department refuses.
        for wider in (FALLBACK_RULE, ANY_DEPARTMENT_RULE):
            if departments:
                break
            rule = wider
            found, _ = resolve(wider)
            departments = found[:1] if wider is ANY_DEPARTMENT_RULE else found
        report.route(departments=departments, rules_version=rules.version if rules else 0,
                     rule_name=rule["name"], unresolved_functions=unresolved,
                     clocks=clocks, clock=self._clock_of(clocks),
                     escalation_chain=chain, at=now)

    def _clock_of(self, clocks: dict[str, Any] | None) -> Clock:
        """What counts a clock policy's time: plain time, or the city's working calendar as it
        stands now."""
        if clocks is None or clocks["around_the_clock"]:
            return AROUND_THE_CLOCK
        return self.working_calendar_now()

    def report_clock(self, report: Report) -> Clock:
        """What counts `report`'s clocks now (for a resumed pause, or fresh clocks)."""
        return self._clock_of(report.clocks)

    def _escalation_chain(self, street_id: str) -> dict[str, str]:
        """The street, its district and the city: where missed deadlines go, level by level."""
        chain = {EscalationLevel.STREET.value: street_id}
        street = self.views.organisation(street_id) or {}
        district_id = street.get("parent_id", "")
        if district_id:
            chain[EscalationLevel.DISTRICT.value] = district_id
            city_id = (self.views.organisation(district_id) or {}).get("parent_id", "")
            if city_id:
                chain[EscalationLevel.CITY.value] = city_id
        return chain

    def report(self, report_id: str, version: int | None = None) -> ReportView:
        # Only read, to render it: the cached report itself, not a copy.
        r = self.view(report_id, Report, "report", version)
        return ReportView(
            report_id=str(r.id), rider_id=r.rider_id, kind=ReportKind(r.kind),
            category=Category(r.category),
            location=Location(r.street_id, r.latitude, r.longitude),
            # What the rider wrote may name people: the masking table decides who reads it
            # (the rider's own platform among them: it is the rider's to follow).
            text=_report_text(r.text),
            attachment_refs=list(r.attachment_refs), observed_at=r.observed_at,
            submitted_at=r.submitted_at, status=r.status,
            assignments=[{"department_id": d,
                          **masking.redact(a, context.current().actor.roles, _ASSIGNMENT_TEXT)}
                         for d, a in r.assignments.items()],
            rules_version=r.rules_version, rule_name=r.rule_name,
            unresolved_functions=list(r.unresolved_functions),
            # Another report of the same incident may be another tenant's: its id is shown
            # only to whoever may read it (the status still says DUPLICATE).
            duplicate_of=r.duplicate_of if self.sees("report", r.duplicate_of) else "",
            duplicates=[d for d in r.duplicates if self.sees("report", d)],
            closed_at=r.closed_at, verified_at=r.verified_at,
            verification_note=_free_text(r.verification_note), version=r.version,
            notes=[{**n, "note": _free_text(n["note"])} for n in r.notes]
            if _reads_notes() else [],
            ratings=[{**x, "rating": SatisfactionRating(x["rating"]),
                      "comment": _report_text(x["comment"])} for x in r.ratings],
            satisfaction=SatisfactionRating(r.satisfaction["rating"]) if r.satisfaction else None,
            rate_until=r.rate_until if not r.rated_this_outcome else None,
            reopen_count=r.reopen_count, reopened_at=r.reopened_at, upheld_at=r.upheld_at,
            upheld_note=_free_text(r.upheld_note),
            past_assignments=[masking.redact(a, context.current().actor.roles,
                                             _ASSIGNMENT_TEXT) for a in r.past_assignments],
            clocks=dict(r.clocks) if r.clocks else None)

    def list_reports(self, *, street_id: str, kind: ReportKind | None,
                     status: ReportStatus | None, rider_id: str, page_size: int,
                     page_token: str, violations: Violations | None = None
                     ) -> tuple[list[ReportView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.reports.select(
            {"street_id": street_id, "kind": kind.value if kind else "",
             "status": status.value if status else "", "rider_id": rider_id},
            page_size=page_size, page_token=page_token))
        return [self.report(i) for i in ids], token

    def report_history(self, report_id: str) -> list[history.HistoryEntry]:
        """Every stored event of the report, in order, with who acted and by which request:
        what an auditor asks for when a report's handling is questioned."""
        report = self.get(report_id, Report, "report")
        entries = []
        for e in self.events.get(report.id):
            entries.append(history.entry(e, masking.redact(
                self._history_details(e), context.current().actor.roles, _HISTORY_TEXT)))
        return entries

    def _history_details(self, event: Any) -> dict[str, Any]:
        """The event's own fields; the id of another report of the same incident only to a
        caller that may read that report, as GetReport shows it (it may be another tenant's)."""
        details = history.own_fields(event)
        for key in _OTHER_REPORT_IDS:
            if details.get(key) and not self.sees("report", details[key]):
                details[key] = ""
        return details

    # ------------------------------------------------------------------ departments' work

    def acknowledge_assignment(self, *, report_id: str, department_id: str) -> CommandResult:
        return self._work(report_id, department_id, Violations(),
                          lambda r, now: r.acknowledge(department_id, now))

    def start_assignment_work(self, *, report_id: str, department_id: str, note: str
                              ) -> CommandResult:
        violations = Violations()
        check_text(violations, "note", note, MAX_NOTE, required=False)
        return self._work(report_id, department_id, violations,
                          lambda r, now: r.start_work(department_id, note.strip(), now))

    def resolve_assignment(self, *, report_id: str, department_id: str, resolution: str
                           ) -> CommandResult:
        violations = Violations()
        check_text(violations, "resolution", resolution, MAX_NOTE)
        return self._work(report_id, department_id, violations,
                          lambda r, now: r.resolve(department_id, resolution.strip(), now))

    def reject_assignment(self, *, report_id: str, department_id: str,
                          reason: RejectionReason | None, note: str,
                          violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        violations.require_given(reason, "reason",
                                 one_of(RejectionReason), ENUM_VALUE_REQUIRED)
        check_text(violations, "note", note, MAX_NOTE, required=False)
        return self._work(report_id, department_id, violations,
                          lambda r, now: r.reject(department_id, reason.value if reason else "",
                                                  note.strip(), now))

    def pause_assignment_clock(self, *, report_id: str, department_id: str,
                               reason: PauseReason | None, note: str,
                               violations: Violations | None = None) -> CommandResult:
        """The assigned department stops its clock, with a reason (a note is required for
        OTHER): paused time does not count, and nothing escalates or is at risk meanwhile."""
        violations = violations if violations is not None else Violations()
        violations.require_given(reason, "reason", one_of(PauseReason), ENUM_VALUE_REQUIRED)
        check_text(violations, "note", note, MAX_NOTE, required=reason is PauseReason.OTHER)

        def pause(report: Report, now: datetime) -> None:
            # Run only once the request passed its checks: a reason was given.
            assert reason is not None, "require_given refused a pause without a reason"
            report.pause_clock(department_id, reason, note.strip(), now)

        return self._work(report_id, department_id, violations, pause)

    def resume_assignment_clock(self, *, report_id: str, department_id: str
                                ) -> CommandResult:
        """Restarts the clock; its due times move on by the time it was paused."""
        return self._work(report_id, department_id, Violations(),
                          lambda r, now: r.resume_clock(department_id, now,
                                                        self.report_clock(r)))

    def _work(self, report_id: str, department_id: str,
              violations: Violations, change: Callable[[Report, datetime], None]
              ) -> CommandResult:
        check_id(violations, "report_id", report_id)
        check_id(violations, "department_id", department_id)
        violations.raise_if_any()

        def decide() -> Outcome:
            report = self.get(report_id, Report, "report")
            change(report, self.clock())
            return Outcome([report], {"report_id": report_id, "version": report.version})
        return self.execute(decide, id_key="report_id")

    def verify_report(self, *, report_id: str, note: str
                      ) -> CommandResult:
        violations = Violations()
        check_id(violations, "report_id", report_id)
        check_text(violations, "note", note, MAX_NOTE, required=False)
        violations.raise_if_any()

        def decide() -> Outcome:
            report = self.get(report_id, Report, "report")
            report.verify(note.strip(), self.clock())
            return Outcome([report], {"report_id": report_id, "version": report.version})
        return self.execute(decide, id_key="report_id")

    # ------------------------------------------------------------------ transfer, notes

    def transfer_assignment(self, *, report_id: str, department_id: str,
                            to_department_id: str, reason: str) -> CommandResult:
        """The assigned department (the caller, as the access table says) hands its open
        assignment to another department, with a reason; the receiver's clocks start anew by
        the policy the report was routed with. Report.transfer says what is refused."""
        violations = Violations()
        check_reason(violations, reason)
        target = None
        if to_department_id and to_department_id == department_id:
            violations.add("to_department_id", "must be another department than the one "
                           "transferring", "TRANSFER_TO_ITSELF")
        else:
            target = self._note_organisation(violations, to_department_id, "to_department_id",
                                             DEPARTMENT, "department")
        return self._work(report_id, department_id, violations, lambda r, now: r.transfer(
            department_id, to_department_id, (target or {}).get("department_function", ""),
            reason.strip(), now, self.report_clock(r)))

    def assign_report(self, *, report_id: str, department_id: str, reason: str
                      ) -> CommandResult:
        """The street office gives its report to a department itself, with a reason: where a
        transfer may not (a department that held it before), and to review a reopened report
        (a new round of work). Fresh clocks, by the policy it was routed with."""
        violations = Violations()
        check_id(violations, "report_id", report_id)
        check_reason(violations, reason)
        found = self._note_organisation(violations, department_id, "department_id",
                                        DEPARTMENT, "department")
        violations.raise_if_any()
        assert found is not None

        def decide() -> Outcome:
            report = self.get(report_id, Report, "report")
            report.assign(department_id, found.get("department_function", ""), reason.strip(),
                          self.clock(), self.report_clock(report))
            return Outcome([report], {"report_id": report_id, "version": report.version})
        return self.execute(decide, id_key="report_id")

    def add_report_note(self, *, report_id: str, text: str) -> CommandResult:
        """A note for the departments on the report and its street office, by one of them (the
        access table admits only those); the author is the caller's organisation."""
        violations = Violations()
        check_id(violations, "report_id", report_id)
        check_text(violations, "text", text, MAX_NOTE)
        violations.raise_if_any()
        actor = context.current().actor
        role = auth.DEPARTMENT if auth.DEPARTMENT in actor.roles else auth.STREET_OFFICE

        def decide() -> Outcome:
            report = self.get(report_id, Report, "report")
            report.add_note(actor.organisation_id, role, text.strip(), self.clock())
            return Outcome([report], {"report_id": report_id, "version": report.version})
        return self.execute(decide, id_key="report_id")

    # ------------------------------------------------------------------ the rider's rating

    def rate_report_outcome(self, *, report_id: str, rating: SatisfactionRating | None,
                            comment: str, violations: Violations | None = None
                            ) -> CommandResult:
        """The rider, through their platform, rates a closed report's outcome (Report.rate).
        The answer says whether the rating reopened the report."""
        violations = violations if violations is not None else Violations()
        check_id(violations, "report_id", report_id)
        violations.require_given(rating, "rating", one_of(SatisfactionRating), ENUM_VALUE_REQUIRED)
        check_text(violations, "comment", comment, MAX_NOTE, required=False)
        violations.raise_if_any()
        assert rating is not None

        def decide() -> Outcome:
            report = self.get(report_id, Report, "report")
            reopened = report.rate(rating, comment.strip(), self.clock())
            return Outcome([report], {"report_id": report_id, "version": report.version,
                                      "reopened": reopened})
        return self.execute(decide, id_key="report_id")

    def uphold_report_outcome(self, *, report_id: str, note: str) -> CommandResult:
        """The street office reviewed a reopened report and stands by its outcome, saying why
        (Report.uphold): it closes again, and the rider hears it."""
        violations = Violations()
        check_id(violations, "report_id", report_id)
        check_text(violations, "note", note, MAX_NOTE)
        violations.raise_if_any()

        def decide() -> Outcome:
            report = self.get(report_id, Report, "report")
            report.uphold(note.strip(), self.clock())
            return Outcome([report], {"report_id": report_id, "version": report.version})
        return self.execute(decide, id_key="report_id")

    def department_queue(self, *, department_id: str, page_size: int, page_token: str
                         ) -> tuple[list[QueueEntry], str]:
        """The department's open assignments, the most urgent deadline first."""
        violations = Violations()
        self._note_organisation(violations, department_id, "department_id", DEPARTMENT,
                                "department")
        violations.raise_if_any()
        self.views.catch_up()
        keys = self.views.queue(department_id)
        return page(sorted(keys), lambda key: self.views.queue_entry(keys[key], department_id),
                    page_size=page_size, page_token=page_token,
                    filters=[f"department_id={department_id}"])

    def report_statistics(self, *, street_id: str, kind: ReportKind | None,
                          start: datetime | None, end: datetime | None,
                          violations: Violations | None = None) -> list[StatisticsRow]:
        _check_period(violations if violations is not None else Violations(), street_id, start,
                      end)
        self.views.catch_up()
        return self.views.statistics(street_id=street_id, kind=kind.value if kind else "",
                                     start=start, end=end)

    # ------------------------------------------------------------------ the three rates

    def service_rates(self, *, department_id: str, street_id: str, district_id: str,
                      start: datetime | None, end: datetime | None, as_of: datetime | None,
                      violations: Violations | None = None) -> ServiceRatesView:
        """The response, resolution and satisfaction rates (domain/rates.py) of one unit — a
        department, a street or a district, exactly one named — over the assignments routed
        in [start, end), as the log stood at `as_of` (None: now). The reports the unit may
        count, and the version each stood at (its events stored by `as_of`), are found in the
        views; each is then read at that version, so a correction recorded later changes
        today's figures of the period and never the figures as they stood when reported."""
        violations = violations if violations is not None else Violations()
        now = self.clock()
        named = [f for f, value in zip(_UNITS, (department_id, street_id, district_id),
                                       strict=True) if value]
        if not named:
            violations.add("department_id", "name the unit: one of department_id, street_id "
                           "or district_id", UNIT_REQUIRED)
        for f in named[1:]:
            violations.add(f, f"name one unit only: {named[0]} names one already",
                           MORE_THAN_ONE_UNIT)
        if named == ["department_id"]:
            self._note_organisation(violations, department_id, "department_id", DEPARTMENT,
                                    "department")
        elif named == ["street_id"]:
            self._note_organisation(violations, street_id, "street_id", STREET, "street")
        elif named == ["district_id"]:
            self._note_organisation(violations, district_id, "district_id", DISTRICT,
                                    "district")
        violations.require_given(start, "start_time", "must be set", FIELD_REQUIRED)
        violations.require_given(end, "end_time", "must be set", FIELD_REQUIRED)
        if start is not None and start > now:
            violations.add("start_time", "must not be in the future: a period that has not "
                           "begun has no figures", TIME_IN_THE_FUTURE)
        if start is not None and end is not None:
            if end <= start:
                violations.add("end_time", "must be after start_time",
                               END_TIME_NOT_AFTER_START_TIME)
            elif end - start > MAX_PERIOD:
                violations.add("end_time", f"a period of at most {MAX_PERIOD.days} days; ask "
                               "for a longer one in parts", PERIOD_TOO_LONG)
        if as_of is not None and as_of > now:
            violations.add("as_of_time", f"must not be in the future (now is "
                           f"{now.isoformat()}): figures are as the log stood, not as it may "
                           "stand", TIME_IN_THE_FUTURE)
        elif as_of is not None and start is not None and as_of < start:
            violations.add("as_of_time", "must not be before start_time: the period had not "
                           "begun", AS_OF_BEFORE_START)
        violations.raise_if_any()
        assert start is not None and end is not None and len(named) == 1
        self.views.catch_up()
        if department_id:
            unit = Unit(department_id=department_id)
            candidates = self.views.routed_reports(department_id=department_id, start=start,
                                                   end=end)
        else:
            streets = [street_id] if street_id else self.views.streets_of(district_id)
            unit = Unit(street_ids=frozenset(streets))
            candidates = self.views.routed_reports(street_ids=streets, start=start, end=end)
        moment = as_of or now
        versions = [(r, self.views.report_version(r, as_of)) for r in candidates]
        rates = service_rates((self._report_at(r, v) for r, v in versions if v), unit, start,
                              end, moment)
        return ServiceRatesView(department_id=department_id, street_id=street_id,
                                district_id=district_id, start=start, end=end, as_of=moment,
                                rates=rates)

    def _report_at(self, report_id: str, version: int) -> Report:
        """The report at `version`, only to read (never handed to a command). A version's
        state never changes: the cached copy when it is at that version, else rebuilt from its
        events up to that version in one read (not the current copy brought up to date
        first, which would read the store once more for nothing)."""
        return self.aggregates.read_only_at(uuid.UUID(report_id), version)

    # ------------------------------------------------------------------ deadlines

    def escalate_missed_deadline(self, *, report_id: str, department_id: str,
                                 deadline: DeadlineKind) -> CommandResult:
        """Stores one escalation of one missed deadline. The request id is made from the
        assignment and the deadline, so a scheduler that runs this again (after a crash, or on
        another replica) finds the first answer and stores nothing twice."""
        request_id = self._deadline_request_id(report_id, department_id, deadline)
        ctx = RequestContext(actor=DEADLINE_SCHEDULER, rpc=ESCALATE_RPC, request_id=request_id,
                             # What the kernel fingerprints: the assignment and the deadline.
                             request=request_id.encode(),
                             # The escalation joins the story its report began.
                             correlation_id=self.views.correlation_id(report_id)
                             or str(uuid.uuid4()))

        def decide() -> Outcome:
            report = self.get(report_id, Report, "report")
            report.escalate(department_id, deadline, self.clock())
            return Outcome([report], {"report_id": report_id, "version": report.version,
                                      "level": report.assignments[department_id]["level"]})
        with context.acting_as(ctx):
            return self.execute(decide, id_key="report_id")

    def mark_deadline_at_risk(self, *, report_id: str, department_id: str,
                              deadline: DeadlineKind) -> CommandResult:
        """Stores that a deadline is at risk (its clock has run the routing rules' share):
        once, by a request id made from the assignment and the deadline, as an escalation."""
        request_id = self._deadline_request_id(report_id, department_id, deadline, "at-risk")
        ctx = RequestContext(actor=DEADLINE_SCHEDULER, rpc=AT_RISK_RPC, request_id=request_id,
                             request=request_id.encode(),
                             correlation_id=self.views.correlation_id(report_id)
                             or str(uuid.uuid4()))

        def decide() -> Outcome:
            report = self.get(report_id, Report, "report")
            report.mark_at_risk(department_id, deadline, self.clock())
            return Outcome([report], {"report_id": report_id, "version": report.version})
        with context.acting_as(ctx):
            return self.execute(decide, id_key="report_id")

    def _deadline_request_id(self, report_id: str, department_id: str,
                             deadline: DeadlineKind, step: str = "") -> str:
        """The request id of the scheduler's one escalation (or at-risk mark, `step`) of one
        deadline of one assignment. A department given the report again (by its street office,
        or after a reopening) has fresh deadlines of its own round: they are marked and
        escalate on their own, once each."""
        request_id = f"{report_id}:{department_id}:{deadline.value}"
        if step:
            request_id += f":{step}"
        round_ = self.views.assignment_round(report_id, department_id)
        return request_id + (f":{round_}" if round_ > 1 else "")

    # ------------------------------------------------------------------ working calendar

    def set_working_calendar(self, *, spans: list[tuple[str, str]], weekdays: list[int],
                             holidays: list[str], working_days: list[str]) -> CommandResult:
        """Replaces the city's working calendar (a new version). Reports routed already keep
        their due times; a clock resumed from now on counts its pause by this calendar."""
        violations = Violations()
        state = stored_calendar(violations, spans, weekdays, holidays, working_days)
        violations.raise_if_any()

        def decide() -> Outcome:
            current = self._calendar()
            if current is None:
                current = CityCalendar(**state, at=self.clock())
            else:
                current.change(**state, at=self.clock())
            return Outcome([current], {"version": current.version})
        return self.execute(decide, serialise_on=CityCalendar.ID)

    def working_calendar(self, version: int = 0) -> WorkingCalendarView:
        """The calendar at `version` (0: the current one; the default, Monday to Friday
        09:00-17:00 with no holidays, while never set)."""
        if version < 0:
            raise InvalidArgument([FieldViolation("version", "must not be negative",
                                                  VALUE_OUT_OF_RANGE)])
        current = self._calendar()
        if current is None or version > current.version:
            if version:
                raise NotFound("working_calendar_version", str(version))
            d = DEFAULT_CALENDAR_STATE
            return WorkingCalendarView(list(d["spans"]), list(d["weekdays"]), [], [], 0, None)
        c = self.view(CityCalendar.ID, CityCalendar, "working_calendar", version or None)
        return WorkingCalendarView([dict(s) for s in c.spans], list(c.weekdays),
                                   list(c.holidays), list(c.working_days), c.version,
                                   c.updated_at)

    def working_calendar_now(self) -> WorkingCalendar:
        current = self._calendar()
        return current.calendar() if current is not None else WorkingCalendar.of(
            DEFAULT_CALENDAR_STATE)

    def _calendar(self) -> CityCalendar | None:
        return self.found(CityCalendar.ID, CityCalendar)

    # ------------------------------------------------------------------ routing rules

    def set_routing_rules(self, *, rules: list[RuleInput], deadlines: list[DeadlineInput],
                          category_deadlines: tuple[CategoryClockInput, ...]
                          | list[CategoryClockInput] = (),
                          at_risk_percent: int = 0, violations: Violations | None = None
                          ) -> CommandResult:
        """Replaces the whole table; kinds and categories the request gives no deadlines for
        get the defaults of values.py; `at_risk_percent` 0: the default. A rule's kind or
        category None matches any (the contract's *_UNSPECIFIED); a number the contract does
        not define is the entry point's violation in `violations`, never a rule that matches
        any."""
        violations = violations if violations is not None else Violations()
        stored = [{"name": r.name.strip(), "kind": r.kind.value if r.kind else "",
                   "category": r.category.value if r.category else "",
                   "street_id": r.street_id,
                   "department_functions": [f.value if f else "" for f in
                                            r.department_functions],
                   "department_ids": list(r.department_ids)} for r in rules]
        check_rules(violations, stored)
        for i, rule in enumerate(rules):
            if rule.street_id:
                self._note_organisation(violations, rule.street_id, f"rules[{i}].street_id",
                                        STREET, "street")
            for j, department_id in enumerate(rule.department_ids):
                self._note_organisation(violations, department_id,
                                        f"rules[{i}].department_ids[{j}]", DEPARTMENT,
                                        "department")
        seconds = default_deadline_seconds()
        seen: set[ReportKind] = set()
        for i, d in enumerate(deadlines):
            check_deadline(violations, f"deadlines[{i}]", d.acknowledge_within, d.resolve_within)
            if d.kind is None:
                violations.require(violations.about(f"deadlines[{i}].kind"),
                                   f"deadlines[{i}].kind", one_of(ReportKind),
                                   ENUM_VALUE_REQUIRED)
            elif d.kind in seen:
                violations.add(f"deadlines[{i}].kind", "given twice", DUPLICATE_VALUE)
            elif d.acknowledge_within and d.resolve_within:
                seen.add(d.kind)
                seconds[d.kind.value] = {
                    "acknowledge": int(d.acknowledge_within.total_seconds()),
                    "resolve": int(d.resolve_within.total_seconds())}
        clocks = default_clocks()
        categories: set[Category] = set()
        for i, c in enumerate(category_deadlines):
            field_ = f"category_deadlines[{i}]"
            check_deadline(violations, field_, c.acknowledge_within, c.resolve_within)
            if c.category is None:
                violations.require(violations.about(f"{field_}.category"),
                                   f"{field_}.category", one_of(Category), ENUM_VALUE_REQUIRED)
            elif c.category in categories:
                violations.add(f"{field_}.category", "given twice", DUPLICATE_VALUE)
            elif c.acknowledge_within and c.resolve_within:
                categories.add(c.category)
                clocks[c.category.value] = {
                    "acknowledge": int(c.acknowledge_within.total_seconds()),
                    "resolve": int(c.resolve_within.total_seconds()),
                    "around_the_clock": c.around_the_clock}
        percent = at_risk_percent or DEFAULT_AT_RISK_PERCENT
        violations.require(1 <= percent <= 99, "at_risk_percent",
                           "1 to 99 (per cent of a clock), or 0 for the default 80",
                           VALUE_OUT_OF_RANGE)
        violations.raise_if_any()

        def decide() -> Outcome:
            current = self._rules()
            if current is None:
                current = RoutingRules(rules=stored, deadlines=seconds, clocks=clocks,
                                       at_risk_percent=percent)
            else:
                current.change(rules=stored, deadlines=seconds, clocks=clocks,
                               at_risk_percent=percent)
            return Outcome([current], {"version": current.version})
        # One table for the city: concurrent edits queue here instead of colliding.
        return self.execute(decide, serialise_on=RoutingRules.ID)

    def routing_rules(self, version: int = 0) -> RoutingRulesView:
        """The rules at `version` (the current ones for 0); version 0 and no rules when none
        were ever set."""
        if version < 0:
            raise InvalidArgument([FieldViolation("version", "must not be negative",
                                                  VALUE_OUT_OF_RANGE)])
        current = self._rules(version or None)
        if current is None or (version and current.version != version):
            if version:
                raise NotFound("routing_rules_version", str(version))
            return RoutingRulesView([], default_deadline_seconds(), 0, None)
        return RoutingRulesView([dict(r) for r in current.rules],
                                {k: dict(v) for k, v in current.deadlines.items()},
                                current.version, current.modified_on,
                                {k: dict(v) for k, v in current.clocks.items()},
                                current.at_risk_percent)

    def _rules(self, version: int | None = None, *, read_only: bool = False
               ) -> RoutingRules | None:
        """The rules; `read_only`: the cached ones, for a command that only reads them."""
        try:
            if read_only:
                return self.view(RoutingRules.ID, RoutingRules, "routing_rules", version)
            return self.get(RoutingRules.ID, RoutingRules, "routing_rules", version)
        except NotFound:
            return None

    # ------------------------------------------------------------------ mediation

    def open_mediation_case(self, *, street_id: str, report_id: str, subject: str,
                            mediator_name: str, parties: list[Party],
                            violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        self._note_organisation(violations, street_id, "street_id", STREET, "street")
        if report_id and check_id(violations, "report_id", report_id) \
                and self.found(report_id, Report) is None:
            violations.missing("report_id", "report", report_id)
        check_text(violations, "subject", subject, MAX_NOTE)
        check_text(violations, "mediator_name", mediator_name, MAX_NAME)
        plain = [{"role": p.role.value if p.role else "", "name": p.name.strip(),
                  "rider_id": p.rider_id} for p in parties]
        check_parties(violations, plain)
        # The parties' riders last: the guard admits the street office on its street alone,
        # and the riders may be anyone's.
        self._require_riders(violations, [(f"parties[{i}].rider_id", p["rider_id"])
                                          for i, p in enumerate(plain) if p["rider_id"]])
        # A rider whose personal data was erased can have nothing said of them stored again,
        # their name neither (the case itself may still name them, by id).
        for i, p in enumerate(plain):
            if p["rider_id"] and p["name"] and self.erased_here(p["rider_id"]):
                raise FailedPrecondition(
                    f"parties[{i}]: the rider's personal data was erased: their name cannot "
                    "be stored", reason="RIDER_PERSONAL_DATA_ERASED")
        # Sealed once, outside the retried decision: each party's name under its own key.
        sealed = []
        for p in plain:
            party_id = str(uuid.uuid4())
            sealed.append({"party_id": party_id, "role": p["role"], "rider_id": p["rider_id"],
                           "sealed_name": self.vault.seal(party_id, p["name"])
                           if p["name"] else ""})

        def decide() -> Outcome:
            case = MediationCase(street_id=street_id, report_id=report_id,
                                 subject=subject.strip(), mediator_name=mediator_name.strip(),
                                 parties=sealed, opened_at=self.clock())
            return Outcome([case], {"case_id": str(case.id), "version": case.version})
        result = self.execute(decide, id_key="case_id")
        self._erase_names_of_erased_riders(
            result["case_id"], {p["rider_id"] for p in plain if p["rider_id"] and p["name"]})
        return result

    def _erase_names_of_erased_riders(self, case_id: str, rider_ids: set[str]) -> None:
        """Closes the window between the check above and the commit. A replica that followed
        a named rider's erasure meanwhile swept only the cases its views already knew of, not
        this one. It stored its tombstone of the rider's key before that sweep
        (`_follow_erasure`), so of the two, at least one sees the other: either the sweep
        found this case, or the tombstone is in the store by now, and this case's names of
        the rider go here."""
        erased = {rider_id for rider_id in rider_ids if self.vault.is_erased(rider_id)}
        if not erased:
            return
        for party in self.view(case_id, MediationCase, "mediation_case").parties:
            if party["rider_id"] in erased and party["sealed_name"]:
                self.vault.erase(party["party_id"])

    def record_mediation_session(self, *, case_id: str, session: SessionInput | None,
                                 violations: Violations | None = None) -> CommandResult:
        """Violations name the session's fields by their path in the request (AIP-193):
        `session.hold_time`, `session.place`, `session.notes`; no session at all is `session`."""
        violations = violations if violations is not None else Violations()
        if session is None:
            violations.add("session", "must give when and where the session was held",
                           FIELD_REQUIRED)
        else:
            held_at = session.held_at
            violations.require_given(held_at, "session.hold_time", "must be set", FIELD_REQUIRED)
            if held_at is not None and held_at > self.clock() + CLOCK_SKEW:
                violations.add("session.hold_time",
                               "record a session once it was held, not before",
                               "TIME_IN_THE_FUTURE")
            check_text(violations, "session.place", session.place, MAX_NOTE)
            check_text(violations, "session.notes", session.notes, MAX_TEXT,
                       required=False)

        def hold(case: MediationCase) -> None:
            # A session with its time is there whenever the change runs: without, a violation
            # was raised first.
            assert session is not None and session.held_at is not None, "checked above"
            case.hold_session(session.held_at, session.place.strip(), session.notes.strip())

        return self._change_case(case_id, violations, hold)

    def record_mediation_agreement(self, *, case_id: str, outcome: str
                                   ) -> CommandResult:
        """The follow-up falls due by the city's rule as it stands now (MediationPolicy)."""
        violations = Violations()
        check_text(violations, "outcome", outcome, MAX_TEXT)

        def agree(case: MediationCase) -> None:
            now = self.clock()
            case.agree(outcome.strip(), now, self._follow_up_due(city_day(now)))
        return self._change_case(case_id, violations, agree)

    def record_mediation_follow_up(self, *, case_id: str, day: str,
                                   result: FollowUpResult | None, note: str, reopen: bool,
                                   violations: Violations | None = None) -> CommandResult:
        """A follow-up of the agreement on `day` (YYYY-MM-DD, the city's; empty: today). A
        partly kept agreement is due another follow-up by the city's rule; a broken one
        reopens the case when `reopen` says so."""
        violations = violations if violations is not None else Violations()
        today = city_day(self.clock())
        when = parse_day(violations, "day", day) if day else today
        check_text(violations, "note", note, MAX_TEXT, required=False)
        check_id(violations, "case_id", case_id)
        found = self.found(case_id, MediationCase) if not violations.about("case_id") else None
        check_follow_up(violations, day=when, result=result, reopen=reopen, today=today,
                        agreed_on=found.agreed_on if found is not None else None)
        violations.raise_if_any()
        assert result is not None and when is not None

        def follow_up(case: MediationCase) -> None:
            next_due = (self._follow_up_due(when) if result is FollowUpResult.PARTLY_KEPT
                        else None)
            case.record_follow_up(when, result, note.strip(), self.clock(), reopen, next_due)
        return self._change_case(case_id, Violations(), follow_up)

    def _follow_up_due(self, day: date) -> date:
        policy = self._mediation_policy()
        return day + timedelta(days=policy.follow_up_days if policy is not None
                               else DEFAULT_FOLLOW_UP_DAYS)

    def set_mediation_policy(self, *, follow_up_days: int) -> CommandResult:
        violations = Violations()
        violations.require(1 <= follow_up_days <= MAX_FOLLOW_UP_DAYS, "follow_up_days",
                           f"must be 1 to {MAX_FOLLOW_UP_DAYS}", VALUE_OUT_OF_RANGE)
        violations.raise_if_any()

        def decide() -> Outcome:
            policy = self._mediation_policy()
            if policy is None:
                policy = MediationPolicy(follow_up_days=follow_up_days, at=self.clock())
            else:
                policy.change(follow_up_days=follow_up_days, at=self.clock())
            return Outcome([policy], {"version": policy.version})
        return self.execute(decide, serialise_on=MediationPolicy.ID)

    def mediation_policy(self, version: int = 0) -> MediationPolicyView:
        """The policy at `version` (0: the current one; the default while never set)."""
        if version < 0:
            raise InvalidArgument([FieldViolation("version", "must not be negative",
                                                  VALUE_OUT_OF_RANGE)])
        current = self._mediation_policy()
        if current is None or version > current.version:
            if version:
                raise NotFound("mediation_policy_version", str(version))
            return MediationPolicyView(DEFAULT_FOLLOW_UP_DAYS, 0, None)
        policy = self.view(MediationPolicy.ID, MediationPolicy, "mediation_policy",
                           version or None)
        return MediationPolicyView(policy.follow_up_days, policy.version, policy.updated_at)

    def _mediation_policy(self) -> MediationPolicy | None:
        return self.found(MediationPolicy.ID, MediationPolicy)

    def mediation_statistics(self, *, street_id: str, start: datetime | None,
                             end: datetime | None, violations: Violations | None = None
                             ) -> list[MediationStatisticsRow]:
        """Per street (one row when `street_id` names one), what happened to its cases in
        [start, end): see GovernanceViews.mediation_statistics."""
        _check_period(violations if violations is not None else Violations(), street_id, start,
                      end)
        self.views.catch_up()
        return self.views.mediation_statistics(street_id=street_id, start=start, end=end,
                                               today=city_day(self.clock()))

    def record_mediation_failure(self, *, case_id: str, reason: str
                                 ) -> CommandResult:
        violations = Violations()
        check_reason(violations, reason)
        return self._change_case(case_id, violations,
                                 lambda c: c.fail(reason.strip(), self.clock()))

    def _change_case(self, case_id: str, violations: Violations,
                     change: Callable[[MediationCase], None]) -> CommandResult:
        check_id(violations, "case_id", case_id)
        violations.raise_if_any()

        def decide() -> Outcome:
            case = self.get(case_id, MediationCase, "mediation_case")
            change(case)
            return Outcome([case], {"case_id": case_id, "version": case.version})
        return self.execute(decide, id_key="case_id")

    def mediation_case(self, case_id: str, version: int | None = None) -> MediationCaseView:
        c = self.view(case_id, MediationCase, "mediation_case", version)  # only rendered
        parties = []
        for p in c.parties:
            if p["rider_id"] and self.erased_here(p["rider_id"]):
                # The replica that followed the erasure destroyed this party's key too
                # (`_follow_erasure`); this one may still hold it in its cache.
                self.vault.forget(p["party_id"])
                name = ERASED if p["sealed_name"] else ""
            else:
                name = self.vault.open(p["party_id"], p["sealed_name"])
            parties.append({"role": p["role"], "rider_id": p["rider_id"],
                            "name": masking.show_to_caller(masking.NAME, name)})
        return MediationCaseView(
            case_id=str(c.id), street_id=c.street_id, report_id=c.report_id,
            subject=_free_text(c.subject),
            mediator_name=masking.show_to_caller(masking.NAME, c.mediator_name),
            parties=parties,
            sessions=[{**s, "notes": _free_text(s.get("notes", "")),
                       "place": _free_text(s.get("place", ""))} for s in c.sessions],
            status=c.status, outcome=_free_text(c.outcome),
            failure_reason=_free_text(c.failure_reason), opened_at=c.opened_at,
            closed_at=c.closed_at, version=c.version,
            follow_ups=[{"day": date.fromisoformat(f["day"]),
                         "result": FollowUpResult(f["result"]),
                         "note": _free_text(f["note"]), "at": f["at"]} for f in c.follow_ups],
            follow_up_due=date.fromisoformat(c.follow_up_due) if c.follow_up_due else None,
            reopen_count=c.reopen_count)

    def list_mediation_cases(self, *, street_id: str, status: MediationStatus | None,
                             page_size: int, page_token: str,
                             violations: Violations | None = None
                             ) -> tuple[list[MediationCaseView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.cases.select(
            {"street_id": street_id, "status": status.value if status else ""},
            page_size=page_size, page_token=page_token))
        return [self.mediation_case(i) for i in ids], token

    # ------------------------------------------------------------------ pledge

    def publish_pledge(self, *, text: str, kind: PledgeKind | None = PledgeKind.PARTICIPATION,
                       violations: Violations | None = None) -> CommandResult:
        """`kind` None: unspecified, the participation pledge (as before pledges had kinds)."""
        violations = violations if violations is not None else Violations()
        kind = kind or PledgeKind.PARTICIPATION
        check_text(violations, "text", text, MAX_TEXT)
        violations.raise_if_any()
        series = _PLEDGES[kind]

        def decide() -> Outcome:
            pledge = self._pledge(kind)
            if pledge is None:
                pledge = series(text=text.strip(), at=self.clock())
            else:
                pledge.revise(text=text.strip(), at=self.clock())
            return Outcome([pledge], {"pledge_version": pledge.current_version})
        return self.execute(decide, serialise_on=series.ID)

    def pledge(self, version: int = 0, kind: PledgeKind | None = PledgeKind.PARTICIPATION,
               violations: Violations | None = None) -> PledgeView:
        violations = violations if violations is not None else Violations()
        kind = kind or PledgeKind.PARTICIPATION
        violations.require(version >= 0, "version", "must not be negative", VALUE_OUT_OF_RANGE)
        violations.raise_if_any()
        pledge = self._pledge(kind)
        if pledge is None:
            raise NotFound("pledge", _PLEDGE_NAMES[kind])
        wanted = version or pledge.current_version
        entry = pledge.text_of(wanted)
        return PledgeView(wanted, entry["text"], entry["published_at"], kind)

    def sign_pledge(self, *, rider_id: str, pledge_version: int
                    ) -> CommandResult:
        violations = Violations()
        violations.require(pledge_version >= 1, "pledge_version",
                           "name the version the rider read (1 or more)", VALUE_OUT_OF_RANGE)
        published = self._pledge()
        if published is not None and pledge_version > published.current_version:
            violations.missing("pledge_version", "pledge_version", str(pledge_version))
        self._require_riders(violations, [("rider_id", rider_id)],
                             refresh_unless=lambda p: p.is_active)

        def decide() -> Outcome:
            pledge = self._pledge()
            if pledge is None:
                raise NotFound("pledge", "participation pledge")
            pledge.text_of(pledge_version)
            participant = self.get(Participant.create_id(rider_id), Participant, "rider")
            participant.require_active()
            participant.sign_pledge(pledge_version, pledge.current_version, self.clock())
            return Outcome([participant], {"rider_id": rider_id,
                                           "pledge_version": pledge_version,
                                           "version": participant.version})
        return self.execute(decide, id_key="rider_id")

    def signature(self, rider_id: str, pledge_version: int, version: int | None = None
                  ) -> SignatureView:
        participant = self.get(Participant.create_id(rider_id), Participant, "rider", version)
        signed_at = participant.pledges.get(str(pledge_version))
        if signed_at is None:
            raise NotFound("pledge_signature", f"{rider_id}@{pledge_version}")
        return SignatureView(rider_id, pledge_version, signed_at)

    def sign_co_building_pledge(self, *, organisation_id: str, pledge_version: int
                                ) -> CommandResult:
        """The organisation signs the current version of the co-building pledge (共建倡议),
        once. Who may sign for it is the access table's (the organisation itself, its street
        office, the city admin); which kinds sign is CO_BUILDING_SIGNER_KINDS."""
        violations = Violations()
        violations.require(pledge_version >= 1, "pledge_version",
                           "name the version the organisation read (1 or more)",
                           VALUE_OUT_OF_RANGE)
        published = self._pledge(PledgeKind.CO_BUILDING)
        if published is not None and pledge_version > published.current_version:
            violations.missing("pledge_version", "pledge_version", str(pledge_version))
        if check_id(violations, "organisation_id", organisation_id):
            found = self.views.organisation(organisation_id)
            if found is None:
                self.catch_up_upstream()
                found = self.views.organisation(organisation_id)
            if found is None:
                violations.missing("organisation_id", "organisation", organisation_id)
            elif found["kind"] not in CO_BUILDING_SIGNER_KINDS:
                organisation_kind_not_allowed(
                    violations, "organisation_id", found["kind"],
                    not_allowed="may not sign the co-building pledge: the city publishes it")
        violations.raise_if_any()

        def decide() -> Outcome:
            pledge = self._pledge(PledgeKind.CO_BUILDING)
            if pledge is None:
                raise NotFound("pledge", _PLEDGE_NAMES[PledgeKind.CO_BUILDING])
            organisation = self.get(organisation_id, Organisation, "organisation")
            organisation.sign_co_building_pledge(pledge, pledge_version, self.clock())
            return Outcome([organisation], {"organisation_id": organisation_id,
                                            "pledge_version": pledge_version,
                                            "version": organisation.version})
        return self.execute(decide, id_key="organisation_id")

    def co_building_signature(self, organisation_id: str, pledge_version: int,
                              version: int | None = None) -> SignatureEntry:
        o = self.view(organisation_id, Organisation, "organisation", version)  # only read
        signed_at = o.co_building_pledges.get(str(pledge_version))
        if signed_at is None:
            raise NotFound("pledge_signature", f"{organisation_id}@{pledge_version}")
        return SignatureEntry(PledgeKind.CO_BUILDING, pledge_version, "", organisation_id,
                              o.name, o.kind, signed_at)

    def list_pledge_signatures(self, *, kind: PledgeKind | None, pledge_version: int,
                               page_size: int, page_token: str,
                               violations: Violations | None = None
                               ) -> tuple[list[SignatureEntry], str]:
        """Signatures of one pledge in the order they were signed; `pledge_version` 0: of
        every version. Which rows the caller sees is its access entry's (riders' signatures:
        officials only)."""
        violations = violations if violations is not None else Violations()
        violations.require_given(kind, "pledge_kind", one_of(PledgeKind), ENUM_VALUE_REQUIRED)
        violations.require(pledge_version >= 0, "pledge_version",
                           "0 for every version, or the version (1 or more)",
                           VALUE_OUT_OF_RANGE)
        self.views.catch_up()
        rows, token = listed(violations or None, lambda: self.views.signatures.select(
            {"kind": kind.value if kind else "",
             "version": pledge_version if pledge_version > 0 else 0},
            page_size=page_size, page_token=page_token, rows=True))
        return [SignatureEntry(PledgeKind(r["kind"]), r["version"], r["rider_id"],
                               r["organisation_id"], r["organisation_name"],
                               r["organisation_kind"], r["signed_at"]) for r in rows], token

    def _pledge(self, kind: PledgeKind = PledgeKind.PARTICIPATION
                ) -> Pledge | CoBuildingPledge | None:
        series = _PLEDGES[kind]
        try:
            return self.get(series.ID, series, "pledge")
        except NotFound:
            return None

    # ------------------------------------------------------------------ tenancy

    def owner_resolvers(self) -> dict[str, Callable[[str], Owners | None]]:
        return {**super().owner_resolvers(), "report": self._report_owners,
                "mediation_case": self._case_owners,
                "help_request": self._help_request_owners,
                "pledge_signer": self._pledge_signer_owners}

    def _report_owners(self, report_id: str) -> Owners | None:
        """A report is the street office's where it happened and each assigned department's
        (one it was transferred away from, or that rejected it, still sees what it did), and
        the reporting rider's platform's: the rider follows it in the platform's app."""
        report = self.found(report_id, Report)
        if report is None:
            return None
        rider = self.directory.rider(report.rider_id) if self.directory is not None else None
        return Owners.of(street_office=report.street_id,
                         department=sorted(report.departments_ever),
                         platform=rider.platform_id if rider is not None else "")

    def _pledge_signer_owners(self, signer: str) -> Owners | None:
        """Who may see one signature in ListPledgeSignatures (its row's `signer`): an
        organisation's signature of the co-building pledge is public (organisations are not
        personal data); a rider's of the participation pledge is their street office's only —
        officials, never another tenant, and not their platform's either: the list is the
        city's, a platform reads its own rider's signatures in the rider's record."""
        kind, _, ident = signer.partition(":")
        if kind == "organisation":
            return EVERYONE
        rider = self.directory.rider(ident) if self.directory is not None else None
        return None if rider is None else Owners.of(street_office=rider.home_street_id)

    def _case_owners(self, case_id: str) -> Owners | None:
        case = self.found(case_id, MediationCase)
        return None if case is None else Owners.of(street_office=case.street_id)

    # ------------------------------------------------------------------ identity's feed

    def follow_identity(self, upstream: UpstreamEvent, processing: ProcessingEvent) -> None:
        """What governance notes of identity's events: the organisation tree with its
        departments (for routing and escalation), and each rider's standing (who may report)."""
        topic, state = upstream.topic, upstream.state
        if topic == identity_events.ORGANISATION_CREATED:
            if not self.exists(upstream.originator_id):
                processing.collect_events(Organisation(
                    upstream_id=str(upstream.originator_id), kind=state["kind"],
                    name=state["name"], parent_id=state.get("parent_id", ""),
                    department_function=state.get("department_function", "")))
            return
        if topic == identity_events.RIDER_PERSONAL_DATA_ERASED:
            self._follow_erasure(upstream, processing)
            return
        rider_id = str(upstream.originator_id)
        participant_id = Participant.create_id(rider_id)
        if topic == identity_events.RIDER_REGISTERED:
            if not self.exists(participant_id):
                processing.collect_events(Participant(
                    rider_id=rider_id, home_street_id=state.get("home_street_id", "")))
            return
        # Never self._participant() here: it catches up the follower, which is running this.
        participant = (self.get(participant_id, Participant, "rider")
                       if self.exists(participant_id)
                       else Participant(rider_id=rider_id, home_street_id=""))
        verified, suspended, left = identity_events.rider_flags_after(
            topic, participant.verified, participant.suspended, participant.left)
        participant.note_status(verified=verified, suspended=suspended, left=left)
        processing.collect_events(participant)

    def catch_up_upstream(self) -> None:
        """Applies what identity has stored so far: a rider verified or a street created a
        moment ago is then known here too (read-your-writes across services). identity out of
        reach is the caller's UNAVAILABLE, to retry."""
        if self.identity_follower is not None:
            self.identity_follower.catch_up()

    # ------------------------------------------------------------------ helpers

    def _participant(self, rider_id: str,
                     refresh_unless: Callable[[Participant], bool] | None = None
                     ) -> Participant:
        # Unknown or not (yet) eligible here: identity may have said otherwise a moment ago.
        return self.followed(Participant.create_id(rider_id), Participant, "rider", rider_id,
                             self.catch_up_upstream, refresh_unless)

    def _require_riders(self, violations: Violations, named: list[tuple[str, str]],
                        refresh_unless: Callable[[Participant], bool] | None = None) -> None:
        """The riders a request names, (field, rider_id), looked up once nothing else is
        wrong with it (QijiApplication.require_riders)."""
        self.require_riders(violations, named, Participant.create_id, self.catch_up_upstream,
                            refresh_unless)

    def _note_organisation(self, violations: Violations, organisation_id: str, field: str,
                           kind: str, label: str) -> dict[str, str] | None:
        """A referenced organisation of `kind`, or None with what is wrong added to
        `violations`: malformed, unknown to identity (after catching up once), or of another
        kind (ORGANISATION_KIND_NOT_ALLOWED, named as the wire names organisation kinds)."""
        if not check_id(violations, field, organisation_id):
            return None
        found = self.views.organisation(organisation_id)
        if found is None:
            self.catch_up_upstream()
            found = self.views.organisation(organisation_id)
        if found is None:
            violations.missing(field, label, organisation_id)
            return None
        if found["kind"] != kind:
            organisation_kind_not_allowed(violations, field, found["kind"], kind)
            return None
        return found


_PLEDGES: dict[PledgeKind, type[Pledge] | type[CoBuildingPledge]] = {
    PledgeKind.PARTICIPATION: Pledge, PledgeKind.CO_BUILDING: CoBuildingPledge}
_PLEDGE_NAMES = {PledgeKind.PARTICIPATION: "participation pledge",
                 PledgeKind.CO_BUILDING: "co-building pledge"}


def _free_text(value: str) -> str:
    return masking.show_to_caller(masking.FREE_TEXT, value)


def _reads_notes() -> bool:
    """Notes on a report are officials' free text: never shown to a platform (not even
    withheld), shown to officials and to the city-wide readers as the masking table says."""
    roles = context.current().actor.roles
    return auth.PLATFORM not in roles or masking.shown(masking.FREE_TEXT, roles) \
        is not masking.Shown.WITHHELD


def _report_text(value: str) -> str:
    return masking.show_to_caller(masking.REPORT_TEXT, value)


def _check_attachments(violations: Violations, refs: list[str]) -> None:
    if len(refs) > MAX_ATTACHMENTS:
        violations.add("attachment_refs", f"at most {MAX_ATTACHMENTS} attachments",
                       "TOO_MANY_ATTACHMENTS")
    for i, ref in enumerate(refs):
        if not ref.strip() or len(ref) > MAX_ATTACHMENT_REF or not ref.isprintable():
            violations.add(f"attachment_refs[{i}]",
                           f"1 to {MAX_ATTACHMENT_REF} printable characters", TEXT_INVALID)


def _check_period(violations: Violations, street_id: str, start: datetime | None,
                  end: datetime | None) -> None:
    """A statistics request's street (optional) and period, every fault in one answer."""
    if street_id:
        check_id(violations, "street_id", street_id)
    if start is not None and end is not None:
        violations.require(end > start, "end_time", "must be after start_time",
                           END_TIME_NOT_AFTER_START_TIME)
    violations.raise_if_any()
