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
from typing import Any

from eventsourcing.domain import Aggregate, event

from services.badges.domain.criteria import Criteria
from shared.errors import AlreadyExists, FailedPrecondition
from shared.rider_status import FollowedRiderStatus

_NS = uuid.UUID("8e0ad1c2-27a5-4c8b-a0f6-0f3d2b6e9c44")


class VolunteerShift(Aggregate):
    """Volunteer service (爱心公益) a rider did; only confirmed hours count."""

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


class RiderRecord(FollowedRiderStatus, Aggregate):
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


class Award(Aggregate):
    """A badge awarded to a rider, with the criteria version and the evidence that met it.

    Its Granted event is part of badges' published contract (services/badges/events.py): it
    carries `rider_id` and `badge_class_id`."""

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

    def revoke(self, reason: str, by: str, at: datetime) -> None:
        if self.status != "ACTIVE":
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

    def status_at(self, now: datetime) -> str:
        """ACTIVE until revoked or past its expiry, whether or not Expired is stored yet."""
        if self.status == "ACTIVE" and self.expires_at is not None and now >= self.expires_at:
            return "EXPIRED"
        return self.status
