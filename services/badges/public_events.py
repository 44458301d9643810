"""badges' public event contract for outside consumers: badges awarded, revoked, expired,
grown into the next on their ladder (青蜂 → 金蜂), presented at a ceremony; titles
(城市治理合伙人) conferred on riders and revoked; volunteer activities published, revised and
cancelled (about no rider: every consumer), and each rider's sign-up accepted, withdrawn or
cancelled and attendance confirmed with its hours (the rider's platform only).
Revoked and Expired name the award only; the Award aggregate names the rider and the badge
class. A revocation's free-text reason and the award's evidence stay inside Qiji (the signed
Open Badges credential is how an award is shown outside)."""

from __future__ import annotations

import uuid
from typing import Any

from services.badges import events as topics
from shared.public_feed import Fact, Mapped, PublicCatalogue, PublicType


def _award_data(app: Any, fact: Fact) -> dict[str, Any]:
    award = app.current(fact.originator_id)
    return {"award_id": str(fact.originator_id), "rider_id": award.rider_id,
            "badge_class_id": award.badge_class_id}


def _awarded(app: Any, fact: Fact) -> Mapped:
    e = fact.event
    data = {**_award_data(app, fact), "criteria_version": e.criteria_version, "kind": e.kind,
            "awarded_time": e.awarded_at, "expire_time": e.expires_at}
    return Mapped(data["rider_id"], data)


def _revoked(app: Any, fact: Fact) -> Mapped:
    data = {**_award_data(app, fact), "revoked_time": fact.event.at}
    return Mapped(data["rider_id"], data)


def _expired(app: Any, fact: Fact) -> Mapped:
    data = {**_award_data(app, fact), "expired_time": fact.event.timestamp}
    return Mapped(data["rider_id"], data)


def _grown(app: Any, fact: Fact) -> Mapped:
    e = fact.event
    higher = app.current(_uuid(e.award_id))
    data = {**_award_data(app, fact), "into_award_id": e.award_id,
            "into_badge_class_id": higher.badge_class_id, "grown_time": e.at}
    return Mapped(data["rider_id"], data)


def _presented(app: Any, fact: Fact) -> Mapped:
    # Who was there and the place in words stay inside Qiji (officials' names, free text);
    # the platform learns when, which ceremony, and the service space when it was one.
    e = fact.event
    ceremony = app.current(_uuid(e.ceremony_id))
    data = {**_award_data(app, fact), "ceremony_id": e.ceremony_id,
            "street_id": ceremony.street_id, "service_space_id": ceremony.service_space_id,
            "presented_time": e.at}
    return Mapped(data["rider_id"], data)


def _conferred(app: Any, fact: Fact) -> Mapped:
    e = fact.event
    data = {"recognition_id": str(fact.originator_id), "rider_id": e.rider_id,
            "title_id": e.title_id, "title_name": app.current(_uuid(e.title_id)).name,
            "conferred_time": e.conferred_at, "end_time": e.ends_at}
    return Mapped(e.rider_id, data)


def _recognition_revoked(app: Any, fact: Fact) -> Mapped:
    recognition = app.current(fact.originator_id)
    data = {"recognition_id": str(fact.originator_id), "rider_id": recognition.rider_id,
            "title_id": recognition.title_id, "revoked_time": fact.event.at}
    return Mapped(recognition.rider_id, data)


def _uuid(value: str) -> uuid.UUID:
    return uuid.UUID(value)
# The activity as a rider's app shows it. Its cancellation reason is free text that may name
# people: it stays inside Qiji (GetVolunteerActivity shows it as the masking table says).
ACTIVITY_FIELDS = ("activity_id", "community_id", "street_id", "title", "kind", "start_time",
                   "end_time", "service_space_id", "address", "places", "sign_up_deadline")


def _activity(_app: Any, fact: Fact) -> Mapped:
    e = fact.event
    data = {"activity_id": str(fact.originator_id), "title": e.title, "kind": e.kind,
            "start_time": e.starts_at, "end_time": e.ends_at,
            "service_space_id": e.service_space_id, "address": e.address, "places": e.places,
            "sign_up_deadline": e.sign_up_deadline}
    return Mapped(data["activity_id"], {**_where(_app, fact), **data})


def _where(app: Any, fact: Fact) -> dict[str, Any]:
    activity = app.current(fact.originator_id)
    return {"community_id": activity.community_id, "street_id": activity.street_id}


def _activity_cancelled(app: Any, fact: Fact) -> Mapped:
    data = {"activity_id": str(fact.originator_id), **_where(app, fact),
            "cancelled_time": fact.event.at}
    return Mapped(data["activity_id"], data)


def _sign_up(app: Any, fact: Fact, time_field: str, at: Any) -> Mapped:
    e = fact.event
    activity = app.current(fact.originator_id)
    data = {"activity_id": str(fact.originator_id), "rider_id": e.rider_id,
            "community_id": activity.community_id, time_field: at}
    return Mapped(e.rider_id, data)


def _signed_up(app: Any, fact: Fact) -> Mapped:
    return _sign_up(app, fact, "signed_up_time", fact.event.at)


def _withdrawn(app: Any, fact: Fact) -> Mapped:
    return _sign_up(app, fact, "withdrawn_time", fact.event.at)


def _sign_up_cancelled(app: Any, fact: Fact) -> Mapped:
    return _sign_up(app, fact, "cancelled_time", fact.event.timestamp)


def _attended(app: Any, fact: Fact) -> Mapped:
    mapped = _sign_up(app, fact, "confirmed_time", fact.event.at)
    return Mapped(mapped.subject, {**mapped.data, "hours": fact.event.hours,
                                   "shift_id": fact.event.shift_id})


CATALOGUE = PublicCatalogue("badges", [
    PublicType("qiji.badges.v1.BadgeAwarded", topics.BADGE_GRANTED,
               ("award_id", "rider_id", "badge_class_id", "criteria_version", "kind",
                "awarded_time", "expire_time"), _awarded),
    PublicType("qiji.badges.v1.BadgeRevoked", topics.BADGE_REVOKED,
               ("award_id", "rider_id", "badge_class_id", "revoked_time"), _revoked),
    PublicType("qiji.badges.v1.BadgeExpired", topics.BADGE_EXPIRED,
               ("award_id", "rider_id", "badge_class_id", "expired_time"), _expired),
    PublicType("qiji.badges.v1.BadgeGrown", topics.BADGE_GROWN,
               ("award_id", "rider_id", "badge_class_id", "into_award_id",
                "into_badge_class_id", "grown_time"), _grown),
    PublicType("qiji.badges.v1.AwardPresented", topics.AWARD_PRESENTED,
               ("award_id", "rider_id", "badge_class_id", "ceremony_id", "street_id",
                "service_space_id", "presented_time"), _presented),
    PublicType("qiji.badges.v1.RecognitionConferred", topics.RECOGNITION_CONFERRED,
               ("recognition_id", "rider_id", "title_id", "title_name", "conferred_time",
                "end_time"), _conferred),
    PublicType("qiji.badges.v1.RecognitionRevoked", topics.RECOGNITION_REVOKED,
               ("recognition_id", "rider_id", "title_id", "revoked_time"),
               _recognition_revoked),
    PublicType("qiji.badges.v1.VolunteerActivityPublished", topics.ACTIVITY_PUBLISHED,
               ACTIVITY_FIELDS, _activity),
    PublicType("qiji.badges.v1.VolunteerActivityRevised", topics.ACTIVITY_REVISED,
               ACTIVITY_FIELDS, _activity),
    PublicType("qiji.badges.v1.VolunteerActivityCancelled", topics.ACTIVITY_CANCELLED,
               ("activity_id", "community_id", "street_id", "cancelled_time"),
               _activity_cancelled),
    PublicType("qiji.badges.v1.VolunteerSignUpAccepted", topics.SIGN_UP_ACCEPTED,
               ("activity_id", "rider_id", "community_id", "signed_up_time"), _signed_up),
    PublicType("qiji.badges.v1.VolunteerSignUpWithdrawn", topics.SIGN_UP_WITHDRAWN,
               ("activity_id", "rider_id", "community_id", "withdrawn_time"), _withdrawn),
    PublicType("qiji.badges.v1.VolunteerSignUpCancelled", topics.SIGN_UP_CANCELLED,
               ("activity_id", "rider_id", "community_id", "cancelled_time"),
               _sign_up_cancelled),
    PublicType("qiji.badges.v1.VolunteerAttendanceConfirmed", topics.ATTENDANCE_RECORDED,
               ("activity_id", "rider_id", "community_id", "hours", "shift_id",
                "confirmed_time"), _attended),
])
