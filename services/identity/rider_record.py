"""A rider's own record (骑手档案): what the programme did with and for one rider, across the
five services, in one answer — training and certificates, badges, perk claims and their codes,
care packages, volunteer service, the reports they made and how each ended, the pledges they
signed.

Where it lives, and why: in identity, as a read model of the other four services' published
events (each service's `events.py`), read through their feeds (ARCHITECTURE.md: "Between
services") and kept in memory. identity is where a rider is, and where it is decided who may
see one (the platform that registered them, their street office, the city); the rider's own
facts (status, milestones, consents) are identity's own, read from its store. A process of its
own would add an eighth thing to deploy, secure and watch for one derived view; the view reads
nothing but feeds, so moving it out later is mechanical.

It is derived, never the truth: rebuilt from position 1 of every upstream when the process
starts, kept close behind by a background thread, and caught up again before each answer, so a
record shows everything the services stored before it was asked for. Each upstream event is
applied once, in log order, after its MAC is checked (the upstream's feed checks its place
among its aggregate's versions): an event that fails stops that upstream's part of the record
there, raises the integrity alarm, and the answer says which part is not current and why — as
it does for an upstream that cannot be reached. The rest of the record is still answered."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.badges import events as badges
from services.governance import events as governance
from services.identity.feed_views import FeedView, SourceState
from services.merchants import events as merchants
from services.merchants.events import CodeMinter
from services.training import events as training
from shared import context
from shared.followers import Feed, UpstreamEvent

__all__ = ["SOURCES", "RiderRecord", "RiderRecords", "SourceState"]

READER = "identity.rider-records"

# What each upstream's part of the record is made of: its published topics.
SOURCES: dict[str, tuple[str, ...]] = {
    "training": (training.COURSE_DRAFTED, training.SESSION_SCHEDULED, *training.ENROLMENT_TOPICS,
                 *training.LEARNER_TOPICS),
    "merchants": (merchants.MERCHANT_APPLIED, merchants.PERK_CREATED, *merchants.CLAIM_TOPICS,
                  *merchants.CARE_TOPICS),
    "badges": (badges.BADGE_CLASS_CREATED, *badges.AWARD_TOPICS, badges.BADGE_GROWN,
               *badges.SHIFT_TOPICS),
    "governance": (*governance.REPORT_TOPICS, governance.PARTICIPANT_NOTED,
                   governance.PLEDGE_SIGNED),
}

_ENROLMENT_STATUS = {training.ENROLMENT_WITHDRAWN: "WITHDRAWN",
                     training.ENROLMENT_CANCELLED: "CANCELLED",
                     training.RIDER_CHECKED_IN: "CHECKED_IN",
                     training.NO_SHOW_RECORDED: "NO_SHOW"}
_ASSIGNMENT_STATUS = {governance.REPORT_ACKNOWLEDGED: "ACKNOWLEDGED",
                      governance.REPORT_WORK_STARTED: "IN_PROGRESS",
                      governance.ASSIGNMENT_RESOLVED: "RESOLVED",
                      governance.ASSIGNMENT_REJECTED: "REJECTED"}


# ------------------------------------------------------------------------ what is answered


@dataclass(frozen=True)
class SessionEntry:
    session_id: str
    course_id: str
    course_title: str
    track: str
    service_space_id: str
    starts_at: datetime | None
    ends_at: datetime | None
    status: str  # training's EnrolmentStatus name
    score: int | None
    enrolled_at: datetime | None
    # Who teaches it (站长+校长), as training's SESSION_SCHEDULED names them: {} for nobody.
    pair: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class CompletionEntry:
    course_id: str
    course_title: str
    session_id: str
    track: str
    hours: Decimal
    result: str
    score: int | None
    completed_at: datetime


@dataclass(frozen=True)
class AwardEntry:
    award_id: str
    badge_class_id: str
    badge_name: str
    kind: str
    status: str  # ACTIVE, REVOKED, EXPIRED (past its expiry, as badges' GetAward says), GROWN
    awarded_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class ClaimEntry:
    claim_id: str
    perk_id: str
    perk_title: str
    merchant_id: str
    merchant_name: str
    status: str  # merchants' ClaimStatus name
    code: str  # shown while it can still be redeemed; empty otherwise
    claimed_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    reversed_at: datetime | None


@dataclass(frozen=True)
class PackageEntry:
    campaign_id: str
    campaign_name: str
    street_id: str
    allocated_at: datetime
    handed_over_at: datetime | None


@dataclass(frozen=True)
class ShiftEntry:
    shift_id: str
    community_id: str
    activity: str
    started_at: datetime
    hours: Decimal
    status: str  # badges' ShiftStatus name: LOGGED, CONFIRMED, REJECTED


@dataclass(frozen=True)
class AssignmentEntry:
    department_id: str
    status: str  # governance's AssignmentStatus name
    changed_at: datetime | None


@dataclass(frozen=True)
class ReportEntry:
    report_id: str
    kind: str
    category: str
    street_id: str
    observed_at: datetime
    submitted_at: datetime
    status: str  # governance's ReportStatus name
    assignments: tuple[AssignmentEntry, ...]
    closed_at: datetime | None
    verified_at: datetime | None
    duplicate_of: str


@dataclass(frozen=True)
class PledgeEntry:
    version: int
    signed_at: datetime


@dataclass(frozen=True)
class RiderRecord:
    rider_id: str
    sessions: tuple[SessionEntry, ...]
    completions: tuple[CompletionEntry, ...]
    hours_by_track: dict[str, Decimal]
    certified_at: datetime | None
    certified_course_ids: tuple[str, ...]
    awards: tuple[AwardEntry, ...]
    claims: tuple[ClaimEntry, ...]
    packages: tuple[PackageEntry, ...]
    shifts: tuple[ShiftEntry, ...]
    confirmed_volunteer_hours: Decimal
    reports: tuple[ReportEntry, ...]
    pledges: tuple[PledgeEntry, ...]
    sources: tuple[SourceState, ...]


# ------------------------------------------------------------------------ what is kept


@dataclass(slots=True)
class _Rider:
    """One rider's entries, by the id of the thing each is about, in the order they began."""

    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    completions: list[dict[str, Any]] = field(default_factory=list)
    certified_at: datetime | None = None
    certified_course_ids: tuple[str, ...] = ()
    awards: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    shifts: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    pledges: dict[int, datetime] = field(default_factory=dict)


class RiderRecords(FeedView):
    """The read model, and what keeps it current (one of identity's background workers)."""

    # The name of its thread among the service's background work.
    upstream = "rider-records"
    reader = READER
    log_name = "rider_records"
    shows_nothing = "the rider's record does not show it"

    def __init__(self, feeds: Mapping[str, Feed], *, check_mac: Callable[..., bool],
                 master_key: bytes, clock: Callable[[], datetime]):
        super().__init__(feeds, SOURCES, check_mac=check_mac)
        self._codes = CodeMinter(master_key)
        self._clock = clock
        self._riders: dict[str, _Rider] = {}
        # Whose is a thing named by an event that does not repeat the rider (its originator).
        self._owner: dict[str, str] = {}
        # Reference data the entries are shown with: names and titles.
        self._courses: dict[str, dict[str, Any]] = {}
        self._sessions: dict[str, dict[str, Any]] = {}
        self._perks: dict[str, dict[str, Any]] = {}
        self._merchants: dict[str, str] = {}
        self._campaigns: dict[str, dict[str, Any]] = {}
        self._badge_classes: dict[str, str] = {}

    # -------------------------------------------------------------- applying

    def _rider(self, rider_id: str) -> _Rider:
        rider = self._riders.get(rider_id)
        if rider is None:
            # One copy of each id string, however many entries name it (a city's riders
            # number in the hundreds of thousands: memory is the view's cost).
            rider = self._riders[sys.intern(rider_id)] = _Rider()
        return rider

    def _own(self, thing_id: str, rider_id: str) -> None:
        self._owner[thing_id] = sys.intern(rider_id)

    def _of(self, thing_id: str) -> _Rider | None:
        rider_id = self._owner.get(thing_id)
        return self._riders.get(rider_id) if rider_id else None

    def _apply(self, event: UpstreamEvent) -> None:
        handler = _HANDLERS.get(event.topic)
        if handler is not None:
            handler(self, str(event.originator_id), event.state)

    def _course_drafted(self, ident: str, s: dict[str, Any]) -> None:
        self._courses[ident] = {"title": s["title"], "track": s["track"]}

    def _session_scheduled(self, ident: str, s: dict[str, Any]) -> None:
        self._sessions[ident] = {"course_id": s["course_id"],
                                 "service_space_id": s["service_space_id"],
                                 "starts_at": s["starts_at"], "ends_at": s["ends_at"],
                                 # v2 of the event; a session scheduled before names nobody.
                                 "pair": s.get("pair") or {}}

    def _enrolled(self, ident: str, s: dict[str, Any]) -> None:
        # Enrolling again after a withdrawal starts the entry afresh.
        self._rider(s["rider_id"]).sessions[ident] = {
            "status": "ENROLLED", "score": None, "enrolled_at": s["at"]}

    def _learner_noted(self, ident: str, s: dict[str, Any]) -> None:
        self._own(ident, s["rider_id"])

    def _course_completed(self, ident: str, s: dict[str, Any]) -> None:
        rider = self._of(ident)
        if rider is not None:
            rider.completions.append({k: s[k] for k in (
                "course_id", "session_id", "track", "hours", "result", "score", "at")})

    def _certified(self, ident: str, s: dict[str, Any]) -> None:
        rider = self._of(ident)
        if rider is not None:
            rider.certified_at, rider.certified_course_ids = s["at"], tuple(s["course_ids"])

    def _merchant_applied(self, ident: str, s: dict[str, Any]) -> None:
        self._merchants[ident] = s["name"]

    def _perk_created(self, ident: str, s: dict[str, Any]) -> None:
        self._perks[ident] = {"title": s["title"], "merchant_id": s["merchant_id"]}

    def _claim_issued(self, ident: str, s: dict[str, Any]) -> None:
        self._own(ident, s["rider_id"])
        self._rider(s["rider_id"]).claims[ident] = {
            "perk_id": s["perk_id"], "merchant_id": s["merchant_id"], "nonce": s["code_nonce"],
            "status": "ISSUED", "claimed_at": s["claimed_at"], "expires_at": s["expires_at"],
            "redeemed_at": None, "reversed_at": None}

    def _campaign_launched(self, ident: str, s: dict[str, Any]) -> None:
        self._campaigns[ident] = {"name": s["name"], "street_id": s["street_id"]}

    def _package_allocated(self, ident: str, s: dict[str, Any]) -> None:
        self._rider(s["rider_id"]).packages[ident] = {"allocated_at": s["at"],
                                                      "handed_over_at": None}

    def _package_handed_over(self, ident: str, s: dict[str, Any]) -> None:
        package = self._rider(s["rider_id"]).packages.get(ident)
        if package is not None:
            package["handed_over_at"] = s["at"]

    def _badge_class_created(self, ident: str, s: dict[str, Any]) -> None:
        self._badge_classes[ident] = s["name"]

    def _award_granted(self, ident: str, s: dict[str, Any]) -> None:
        self._own(ident, s["rider_id"])
        self._rider(s["rider_id"]).awards[ident] = {
            "badge_class_id": s["badge_class_id"], "kind": s["kind"], "status": "ACTIVE",
            "awarded_at": s["awarded_at"], "expires_at": s["expires_at"], "revoked_at": None}

    def _award_revoked(self, ident: str, s: dict[str, Any]) -> None:
        rider = self._of(ident)
        if rider is not None and ident in rider.awards:
            rider.awards[ident].update(status="REVOKED", revoked_at=s["at"])

    def _award_expired(self, ident: str, s: dict[str, Any]) -> None:
        rider = self._of(ident)
        if rider is not None and ident in rider.awards:
            rider.awards[ident]["status"] = "EXPIRED"

    def _award_grown(self, ident: str, s: dict[str, Any]) -> None:
        # 青蜂 after 金蜂: still true, no longer the rider's current step (badges' GetAward).
        rider = self._of(ident)
        if rider is not None and ident in rider.awards:
            rider.awards[ident]["status"] = "GROWN"

    def _shift_logged(self, ident: str, s: dict[str, Any]) -> None:
        self._own(ident, s["rider_id"])
        self._rider(s["rider_id"]).shifts[ident] = {
            "community_id": s["community_id"], "activity": s["activity"],
            "started_at": s["started_at"], "hours": s["hours"], "status": "LOGGED"}

    def _report_submitted(self, ident: str, s: dict[str, Any]) -> None:
        # Never the text, place or attachments: they stay governance's casework.
        self._own(ident, s["rider_id"])
        self._rider(s["rider_id"]).reports[ident] = {
            "kind": s["kind"], "category": s["category"], "street_id": s["street_id"],
            "observed_at": s["observed_at"], "submitted_at": s["submitted_at"],
            "status": "OPEN", "assignments": {}, "closed_at": None, "verified_at": None,
            "duplicate_of": ""}

    def _report(self, ident: str) -> dict[str, Any] | None:
        rider = self._of(ident)
        return rider.reports.get(ident) if rider is not None else None

    def _report_routed(self, ident: str, s: dict[str, Any]) -> None:
        report = self._report(ident)
        if report is not None:
            for a in s["assignments"]:
                report["assignments"][a["department_id"]] = {"status": "ROUTED",
                                                             "changed_at": s["at"]}

    def _assignment_changed(self, ident: str, s: dict[str, Any], status: str) -> None:
        report = self._report(ident)
        if report is not None and s["department_id"] in report["assignments"]:
            report["assignments"][s["department_id"]] = {"status": status,
                                                         "changed_at": s["at"]}

    def _report_transferred(self, ident: str, s: dict[str, Any]) -> None:
        self._assignment_changed(ident, s, "TRANSFERRED")
        report = self._report(ident)
        if report is not None:
            report["assignments"][s["to_department_id"]] = {"status": "ROUTED",
                                                            "changed_at": s["at"]}

    def _report_assigned(self, ident: str, s: dict[str, Any]) -> None:
        report = self._report(ident)
        if report is not None:
            if report["status"] == "REOPENED":  # a new round of work: open again
                report.update(status="OPEN", closed_at=None, assignments={})
            report["assignments"][s["department_id"]] = {"status": "ROUTED",
                                                         "changed_at": s["at"]}

    def _report_reopened(self, ident: str, s: dict[str, Any]) -> None:
        report = self._report(ident)
        if report is not None:
            report.update(status="REOPENED", verified_at=None)

    def _report_closed(self, ident: str, s: dict[str, Any]) -> None:
        report = self._report(ident)
        if report is not None:
            report.update(status=s["outcome"], closed_at=s["at"])

    def _report_verified(self, ident: str, s: dict[str, Any]) -> None:
        report = self._report(ident)
        if report is not None:
            report.update(status="VERIFIED", verified_at=s["at"])

    def _report_duplicate(self, ident: str, s: dict[str, Any]) -> None:
        report = self._report(ident)
        if report is not None:
            report.update(status="DUPLICATE", duplicate_of=s["original_id"])

    def _participant_noted(self, ident: str, s: dict[str, Any]) -> None:
        self._own(ident, s["rider_id"])

    def _pledge_signed(self, ident: str, s: dict[str, Any]) -> None:
        self._rider(s["rider_id"]).pledges[int(s["version"])] = s["at"]

    # -------------------------------------------------------------- answering

    def record(self, rider_id: str) -> RiderRecord:
        """The rider's record as of now: every upstream caught up first (once per request),
        what cannot be reached said in `sources`."""
        sources = self.sources_now()
        now = self._clock()
        show_codes = bool(context.current().actor.roles & merchants.SEES_CODES)
        with self._lock:
            rider = self._riders.get(rider_id) or _Rider()
            return self._render(rider_id, rider, now, sources, show_codes)

    def _render(self, rider_id: str, r: _Rider, now: datetime, sources: Sequence[SourceState],
                show_codes: bool) -> RiderRecord:
        def course(course_id: str) -> dict[str, Any]:
            return self._courses.get(course_id, {"title": "", "track": ""})

        sessions = []
        for session_id, e in r.sessions.items():
            session = self._sessions.get(session_id, {})
            c = course(session.get("course_id", ""))
            sessions.append(SessionEntry(
                session_id, session.get("course_id", ""), c["title"], c["track"],
                session.get("service_space_id", ""), session.get("starts_at"),
                session.get("ends_at"), e["status"], e["score"], e["enrolled_at"],
                session.get("pair", {})))
        completions = [CompletionEntry(
            c["course_id"], course(c["course_id"])["title"], c["session_id"], c["track"],
            Decimal(c["hours"]), c["result"], c["score"], c["at"]) for c in r.completions]
        awards = [AwardEntry(
            award_id, a["badge_class_id"], self._badge_classes.get(a["badge_class_id"], ""),
            a["kind"], _award_status(a, now), a["awarded_at"], a["expires_at"],
            a["revoked_at"]) for award_id, a in r.awards.items()]
        claims = []
        for claim_id, c in r.claims.items():
            perk = self._perks.get(c["perk_id"], {"title": ""})
            # A code is shown only while a merchant would still redeem it, and only to those
            # merchants' own rule lets see codes (the auditor reading a record sees none).
            open_ = c["status"] == "ISSUED" and now < c["expires_at"] and show_codes
            claims.append(ClaimEntry(
                claim_id, c["perk_id"], perk["title"], c["merchant_id"],
                self._merchants.get(c["merchant_id"], ""), c["status"],
                CodeMinter.display(self._codes.code(c["nonce"])) if open_ else "",
                c["claimed_at"], c["expires_at"], c["redeemed_at"], c["reversed_at"]))
        packages = [PackageEntry(
            campaign_id, self._campaigns.get(campaign_id, {}).get("name", ""),
            self._campaigns.get(campaign_id, {}).get("street_id", ""), p["allocated_at"],
            p["handed_over_at"]) for campaign_id, p in r.packages.items()]
        shifts = [ShiftEntry(shift_id, s["community_id"], s["activity"], s["started_at"],
                             Decimal(s["hours"]), s["status"]) for shift_id, s in r.shifts.items()]
        reports = [ReportEntry(
            report_id, e["kind"], e["category"], e["street_id"], e["observed_at"],
            e["submitted_at"], e["status"],
            tuple(AssignmentEntry(d, a["status"], a["changed_at"])
                  for d, a in e["assignments"].items()),
            e["closed_at"], e["verified_at"], e["duplicate_of"])
            for report_id, e in r.reports.items()]
        return RiderRecord(
            rider_id=rider_id, sessions=tuple(sessions), completions=tuple(completions),
            hours_by_track=training.passed_hours_by_track(r.completions),
            certified_at=r.certified_at, certified_course_ids=r.certified_course_ids,
            awards=tuple(awards), claims=tuple(claims), packages=tuple(packages),
            shifts=tuple(shifts),
            confirmed_volunteer_hours=sum((s.hours for s in shifts if s.status == "CONFIRMED"),
                                          Decimal(0)),
            reports=tuple(reports),
            pledges=tuple(PledgeEntry(v, at) for v, at in sorted(r.pledges.items())),
            sources=tuple(sources))


def _award_status(award: dict[str, Any], now: datetime) -> str:
    # Past its expiry an award is EXPIRED, before the expiry job has stored it (as GetAward).
    if award["status"] == "ACTIVE" and award["expires_at"] is not None \
            and now >= award["expires_at"]:
        return "EXPIRED"
    return str(award["status"])


def _enrolment(status: str) -> Callable[[RiderRecords, str, dict[str, Any]], None]:
    def apply(records: RiderRecords, ident: str, s: dict[str, Any]) -> None:
        entry = records._riders.get(s["rider_id"], _Rider()).sessions.get(ident)
        if entry is not None:
            entry["status"] = status
    return apply


def _completion_recorded(records: RiderRecords, ident: str, s: dict[str, Any]) -> None:
    entry = records._riders.get(s["rider_id"], _Rider()).sessions.get(ident)
    if entry is not None:
        entry.update(status=s["result"], score=s["score"])


def _claim(status: str, at_field: str = "") -> Callable[[RiderRecords, str, dict[str, Any]],
                                                        None]:
    def apply(records: RiderRecords, ident: str, s: dict[str, Any]) -> None:
        rider = records._of(ident)
        claim = rider.claims.get(ident) if rider is not None else None
        if claim is not None:
            claim["status"] = status
            if at_field:
                claim[at_field] = s["at"]
    return apply


def _shift(status: str) -> Callable[[RiderRecords, str, dict[str, Any]], None]:
    def apply(records: RiderRecords, ident: str, _s: dict[str, Any]) -> None:
        rider = records._of(ident)
        if rider is not None and ident in rider.shifts:
            rider.shifts[ident]["status"] = status
    return apply


def _assignment(status: str) -> Callable[[RiderRecords, str, dict[str, Any]], None]:
    def apply(records: RiderRecords, ident: str, s: dict[str, Any]) -> None:
        records._assignment_changed(ident, s, status)
    return apply


_HANDLERS: dict[str, Callable[[RiderRecords, str, dict[str, Any]], None]] = {
    training.COURSE_DRAFTED: RiderRecords._course_drafted,
    training.SESSION_SCHEDULED: RiderRecords._session_scheduled,
    training.RIDER_ENROLLED: RiderRecords._enrolled,
    **{topic: _enrolment(status) for topic, status in _ENROLMENT_STATUS.items()},
    training.COMPLETION_RECORDED: _completion_recorded,
    training.LEARNER_NOTED: RiderRecords._learner_noted,
    training.COURSE_COMPLETED: RiderRecords._course_completed,
    training.PRE_JOB_CERTIFIED: RiderRecords._certified,
    merchants.MERCHANT_APPLIED: RiderRecords._merchant_applied,
    merchants.PERK_CREATED: RiderRecords._perk_created,
    merchants.CLAIM_ISSUED: RiderRecords._claim_issued,
    merchants.CLAIM_REDEEMED: _claim("REDEEMED", "redeemed_at"),
    merchants.CLAIM_REVERSED: _claim("REVERSED", "reversed_at"),
    merchants.CLAIM_LAPSED: _claim("LAPSED"),
    merchants.CLAIM_FROZEN: _claim("FROZEN"),
    merchants.CLAIM_UNFROZEN: _claim("ISSUED"),
    merchants.CAMPAIGN_LAUNCHED: RiderRecords._campaign_launched,
    merchants.PACKAGE_ALLOCATED: RiderRecords._package_allocated,
    merchants.PACKAGE_HANDED_OVER: RiderRecords._package_handed_over,
    badges.BADGE_CLASS_CREATED: RiderRecords._badge_class_created,
    badges.BADGE_GRANTED: RiderRecords._award_granted,
    badges.BADGE_REVOKED: RiderRecords._award_revoked,
    badges.BADGE_EXPIRED: RiderRecords._award_expired,
    badges.BADGE_GROWN: RiderRecords._award_grown,
    badges.SHIFT_LOGGED: RiderRecords._shift_logged,
    badges.SHIFT_CONFIRMED: _shift("CONFIRMED"),
    badges.SHIFT_REJECTED: _shift("REJECTED"),
    governance.REPORT_SUBMITTED: RiderRecords._report_submitted,
    governance.REPORT_ROUTED: RiderRecords._report_routed,
    **{topic: _assignment(status) for topic, status in _ASSIGNMENT_STATUS.items()},
    governance.REPORT_CLOSED: RiderRecords._report_closed,
    governance.REPORT_VERIFIED: RiderRecords._report_verified,
    governance.REPORT_LINKED_AS_DUPLICATE: RiderRecords._report_duplicate,
    governance.REPORT_TRANSFERRED: RiderRecords._report_transferred,
    governance.REPORT_ASSIGNED: RiderRecords._report_assigned,
    governance.REPORT_REOPENED: RiderRecords._report_reopened,
    governance.PARTICIPANT_NOTED: RiderRecords._participant_noted,
    governance.PLEDGE_SIGNED: RiderRecords._pledge_signed,
}
