"""Aggregates of the badges domain: volunteer shifts, badge classes, riders' records, awards.

A rider's record is the evidence ledger: confirmed hours, completions and verified reports as
followed from the other services, and which badges the rider holds. An award is stored in the
same save as the record that says the rider now holds it, so a rider never holds one badge
twice at once, however many events arrive together.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event

from services.badges.domain.criteria import Criteria
from shared.errors import AlreadyExists, FailedPrecondition
from shared.rider_status import FollowedRiderStatus

_NS = uuid.UUID("8e0ad1c2-27a5-4c8b-a0f6-0f3d2b6e9c44")
# A reason in badges (why a rider is awarded a badge or has one revoked, why a shift or an
# activity is cancelled, why a title is conferred) stays on a rider's record of service, an
# award's as its citation: it may run to twice the city's usual reason (shared.errors.MAX_REASON).
MAX_REASON = 1000


class VolunteerShift(Aggregate):
    """Volunteer service (爱心公益) a rider did; only confirmed hours count."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Logged: ClassVar[type[Any]]
        Confirmed: ClassVar[type[Any]]
        Rejected: ClassVar[type[Any]]

    @event("Logged")
    def __init__(self, rider_id: str, community_id: str, activity: str, started_at: datetime,
                 hours: Decimal):
        self.rider_id = rider_id
        self.community_id = community_id
        self.activity = activity
        self.started_at = started_at
        self.hours = hours
        self.status = "LOGGED"
        self.reason = ""

    def confirm(self) -> None:
        self._require_logged()
        self._confirmed()

    @event("Confirmed")
    def _confirmed(self) -> None:
        self.status = "CONFIRMED"

    def reject(self, reason: str) -> None:
        self._require_logged()
        self._rejected(reason=reason)

    @event("Rejected")
    def _rejected(self, reason: str) -> None:
        self.status = "REJECTED"
        self.reason = reason

    def _require_logged(self) -> None:
        if self.status != "LOGGED":
            raise FailedPrecondition(f"the shift is already {self.status.lower()}",
                                     reason=f"SHIFT_{self.status}")


class BadgeClass(Aggregate):
    """A badge such as Golden Bee Knight (金蜂骑士) or Green Bee Knight (青蜂骑士)."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Created: ClassVar[type[Any]]
        ImageUploaded: ClassVar[type[Any]]
        CriteriaRevised: ClassVar[type[Any]]
        ProgressionRevised: ClassVar[type[Any]]

    @event("Created")
    def __init__(self, name: str, description: str, image_url: str, issuer_id: str,
                 criteria: dict[str, Any], validity_days: int):
        self.name = name
        self.description = description
        self.image_url = image_url
        self.issuer_id = issuer_id
        self.validity_days = validity_days
        self.criteria_versions: list[dict[str, Any]] = [criteria]
        # The badge's picture, uploaded with the class (or later) and served publicly:
        # {"media_type", "data" (base64), "sha256"}; None while only `image_url` names one.
        self.image: dict[str, str] | None = None
        # The class it grows from, one entry per ProgressionRevised ("": stands alone).
        self.progression_versions: list[str] = []

    @property
    def criteria_version(self) -> int:
        return len(self.criteria_versions)

    def criteria(self, version: int | None = None) -> Criteria:
        return Criteria.from_state(self.criteria_versions[(version or self.criteria_version) - 1])

    @event("ImageUploaded")
    def upload_image(self, media_type: str, data: str, sha256: str) -> None:
        # In the log like everything else: the picture a credential showed can be shown again
        # years later, and a changed picture is a recorded change.
        self.image = {"media_type": media_type, "data": data, "sha256": sha256}

    @event("CriteriaRevised")
    def revise(self, criteria: dict[str, Any]) -> None:
        # Old versions stay: every award names the version it was made under.
        self.criteria_versions.append(criteria)

    @property
    def grows_from(self) -> str:
        """The class this one grows from on its ladder now ("" when it stands alone)."""
        return self.progression_versions[-1] if self.progression_versions else ""

    @property
    def progression_version(self) -> int:
        return len(self.progression_versions)

    @event("ProgressionRevised")
    def revise_progression(self, grows_from: str) -> None:
        # Versioned like criteria: a growth recorded under one ladder stays explained by it
        # (the grown award names the award it grew into) whatever the ladder is later. The
        # ladder's rules need every class, so the application checks them (domain/ladder.py).
        self.progression_versions.append(grows_from)


class RiderRecord(FollowedRiderStatus, Aggregate):
    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Opened: ClassVar[type[Any]]
        StatusNoted: ClassVar[type[Any]]
        ServiceCounted: ClassVar[type[Any]]
        CompletionNoted: ClassVar[type[Any]]
        VerifiedReportNoted: ClassVar[type[Any]]
        VerifiedReportWithdrawn: ClassVar[type[Any]]
        BadgeHeld: ClassVar[type[Any]]
        BadgeReleased: ClassVar[type[Any]]
        TitleConferred: ClassVar[type[Any]]
        BadgeGrown: ClassVar[type[Any]]

    @staticmethod
    def create_id(rider_id: str, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_NS, f"record\n{rider_id}")

    @event("Opened")
    def __init__(self, rider_id: str):
        self.rider_id = rider_id
        self.verified = False
        self.suspended = False
        self.left = False
        self.shifts: dict[str, dict[str, Any]] = {}
        self.completions: list[dict[str, Any]] = []
        self.verified_reports: dict[str, dict[str, Any]] = {}
        self.held: dict[str, str] = {}  # badge class id -> award id
        # Classes an official revoked from this rider: not re-awarded automatically.
        self.revoked_classes: list[str] = []
        # Classes the rider grew out of (青蜂 → 金蜂): class id -> {"award_id", "into"}.
        self.grown: dict[str, dict[str, str]] = {}
        # Titles conferred (城市治理合伙人): title id -> the latest recognition's id.
        self.titles: dict[str, str] = {}

    @event("StatusNoted")
    def note_status(self, verified: bool, suspended: bool, left: bool) -> None:
        self.verified, self.suspended, self.left = verified, suspended, left

    @event("ServiceCounted")
    def count_service(self, shift_id: str, hours: Decimal, at: datetime) -> None:
        self.shifts[shift_id] = {"shift_id": shift_id, "hours": hours, "at": at}

    @event("CompletionNoted")
    def note_completion(self, course_id: str, track: str, result: str, at: datetime,
                        position: int) -> None:
        self.completions.append({"course_id": course_id, "track": track, "result": result,
                                 "at": at, "position": position})

    @event("VerifiedReportNoted")
    def note_verified_report(self, report_id: str, at: datetime, position: int) -> None:
        self.verified_reports[report_id] = {"report_id": report_id, "at": at,
                                            "position": position}

    @event("VerifiedReportWithdrawn")
    def withdraw_verified_report(self, report_id: str, at: datetime) -> None:
        # The rider's unsatisfied rating reopened it: no longer verified (governance's
        # Report.Reopened); a later verification notes it again.
        self.verified_reports.pop(report_id, None)

    def require_not_holding(self, badge_class_id: str) -> None:
        if badge_class_id in self.held:
            raise AlreadyExists("the rider already holds this badge",
                                reason="BADGE_ALREADY_HELD", award_id=self.held[badge_class_id])

    @event("BadgeHeld")
    def hold(self, badge_class_id: str, award_id: str) -> None:
        self.held[badge_class_id] = award_id

    def release(self, badge_class_id: str, award_id: str, *, revoked: bool) -> None:
        if self.held.get(badge_class_id) == award_id:
            self._released(badge_class_id=badge_class_id, revoked=revoked)

    @event("BadgeReleased")
    def _released(self, badge_class_id: str, revoked: bool) -> None:
        del self.held[badge_class_id]
        if revoked and badge_class_id not in self.revoked_classes:
            self.revoked_classes.append(badge_class_id)

    @event("TitleConferred")
    def confer_title(self, title_id: str, recognition_id: str) -> None:
        # Saved with the recognition: two conferrals at once collide here, one wins.
        self.titles[title_id] = recognition_id

    def grow(self, badge_class_id: str, into_badge_class_id: str) -> None:
        """The rider grew out of a badge they hold into the next on its ladder: no longer
        held, never awarded to them again, its award kept (Award.grow_into)."""
        if badge_class_id in self.held:
            self._grown(badge_class_id=badge_class_id, into_badge_class_id=into_badge_class_id)

    @event("BadgeGrown")
    def _grown(self, badge_class_id: str, into_badge_class_id: str) -> None:
        award_id = self.held.pop(badge_class_id)
        self.grown[badge_class_id] = {"award_id": award_id, "into": into_badge_class_id}


class Award(Aggregate):
    """A badge awarded to a rider, with the criteria version and the evidence that met it.

    Its Granted event is part of badges' published contract (services/badges/events.py): it
    carries `rider_id` and `badge_class_id`."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Granted: ClassVar[type[Any]]
        Revoked: ClassVar[type[Any]]
        Expired: ClassVar[type[Any]]
        GrownInto: ClassVar[type[Any]]
        GrewFrom: ClassVar[type[Any]]
        Presented: ClassVar[type[Any]]

    @event("Granted")
    def __init__(self, rider_id: str, badge_class_id: str, criteria_version: int, kind: str,
                 evidence: list[dict[str, Any]], reason: str, awarded_by: str,
                 awarded_at: datetime, expires_at: datetime | None):
        self.rider_id = rider_id
        self.badge_class_id = badge_class_id
        self.criteria_version = criteria_version
        self.kind = kind
        self.evidence = evidence
        self.reason = reason
        self.awarded_by = awarded_by
        self.awarded_at = awarded_at
        self.expires_at = expires_at
        self.status = "ACTIVE"
        self.revoked_at: datetime | None = None
        self.revoke_reason = ""
        self.revoked_by = ""
        # The ladder (青蜂 → 金蜂): the award this one grew into, or grew from.
        self.grown_into = ""
        self.grown_at: datetime | None = None
        self.grown_from = ""
        # The ceremony at which it was presented, with the officials present.
        self.ceremony_id = ""
        self.presented_at: datetime | None = None

    def revoke(self, reason: str, by: str, at: datetime) -> None:
        # A grown award is still in force (its credential verifies), so it can be withdrawn.
        if self.status not in ("ACTIVE", "GROWN"):
            raise FailedPrecondition(f"the award is already {self.status.lower()}",
                                     reason=f"AWARD_{self.status}")
        self._revoked(reason=reason, by=by, at=at)

    @event("Revoked")
    def _revoked(self, reason: str, by: str, at: datetime) -> None:
        self.status = "REVOKED"
        self.revoked_at = at
        self.revoke_reason = reason
        self.revoked_by = by

    def expire(self, at: datetime) -> None:
        if self.status != "ACTIVE" or self.expires_at is None or at < self.expires_at:
            raise FailedPrecondition("the award is not due to expire", reason="NOT_DUE")
        self._expired()

    @event("Expired")
    def _expired(self) -> None:
        self.status = "EXPIRED"

    def grow_into(self, award_id: str, at: datetime) -> None:
        """The rider was awarded the next badge on this one's ladder. Not a revocation: the
        award stays true (its credential still verifies, its status-list bit stays clear), it
        is only no longer the rider's current step."""
        if self.status != "ACTIVE":
            raise FailedPrecondition(f"the award is {self.status.lower()}",
                                     reason=f"AWARD_{self.status}")
        self._grown_into(award_id=award_id, at=at)

    @event("GrownInto")
    def _grown_into(self, award_id: str, at: datetime) -> None:
        self.status = "GROWN"
        self.grown_into = award_id
        self.grown_at = at

    @event("GrewFrom")
    def note_grown_from(self, award_id: str) -> None:
        self.grown_from = award_id

    def present(self, ceremony_id: str, at: datetime) -> None:
        """Handed to the rider at a ceremony. Once: a second ceremony for the same award would
        tell the platform twice that its rider was honoured."""
        if self.status in ("REVOKED", "EXPIRED"):
            raise FailedPrecondition(f"award {self.id} is {self.status.lower()}: a ceremony "
                                     "presents only awards in force", reason=f"AWARD_{self.status}")
        if self.ceremony_id:
            raise FailedPrecondition(f"award {self.id} was already presented at ceremony "
                                     f"{self.ceremony_id}", reason="AWARD_ALREADY_PRESENTED")
        self._presented(ceremony_id=ceremony_id, at=at)

    @event("Presented")
    def _presented(self, ceremony_id: str, at: datetime) -> None:
        self.ceremony_id = ceremony_id
        self.presented_at = at

    def status_at(self, now: datetime) -> str:
        """ACTIVE until revoked or past its expiry, whether or not Expired is stored yet."""
        if self.status == "ACTIVE" and self.expires_at is not None and now >= self.expires_at:
            return "EXPIRED"
        return self.status


class Reevaluation(Aggregate):
    """Evaluating every rider badges knows of against a badge class's new criteria (on its
    creation or revision): riders who already meet them are awarded without waiting for
    their next event. A job, not one transaction: a city has tens of thousands of riders, so
    it goes in batches, each saved with the awards it made and how far it got (the log
    position of the last rider record it evaluated). A crash resumes after the last saved
    batch; a batch saved twice is impossible (the job's version is the lock) and an award
    twice is too (the record's `held`)."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Started: ClassVar[type[Any]]
        Progressed: ClassVar[type[Any]]
        Finished: ClassVar[type[Any]]

    @staticmethod
    def create_id(badge_class_id: str, criteria_version: int, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_NS, f"reevaluation\n{badge_class_id}\n{criteria_version}")

    @event("Started")
    def __init__(self, badge_class_id: str, criteria_version: int):
        self.badge_class_id = badge_class_id
        self.criteria_version = criteria_version
        self.through_position = 0
        self.evaluated = 0
        self.awarded = 0
        self.status = "RUNNING"

    @event("Progressed")
    def progress(self, through_position: int, evaluated: int, awarded: int) -> None:
        self.through_position = through_position
        self.evaluated += evaluated
        self.awarded += awarded

    @event("Finished")
    def finish(self, superseded: bool) -> None:
        # Superseded: the criteria were revised again before it finished; the newer version's
        # own job evaluates everyone, so awarding under the older one would be wrong.
        self.status = "SUPERSEDED" if superseded else "FINISHED"


class AwardCeremony(Aggregate):
    """An award ceremony (颁奖仪式): awards handed to riders at an event, with the officials
    present, recorded by the street office (or the city admin)."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Recorded: ClassVar[type[Any]]

    @event("Recorded")
    def __init__(self, street_id: str, held_at: datetime, service_space_id: str, place: str,
                 officials: list[dict[str, str]], award_ids: list[str], recorded_by: str):
        self.street_id = street_id
        self.held_at = held_at
        self.service_space_id = service_space_id
        self.place = place
        self.officials = officials
        self.award_ids = award_ids
        self.recorded_by = recorded_by
