"""identity's public event contract for outside consumers (the platform company's feed): which
internal events become which versioned CloudEvent types, with which fields.

Personal fields (`name`, `phone`) appear only while the rider's consent for that scope to the
consumer's organisation is in force at the moment of delivery, and never after an erasure; the
national id never appears. Free-text reasons are internal and left out. Consent events are
delivered only to the organisation the consent names."""

from __future__ import annotations

from typing import Any

from services.identity import events as topics
from services.identity.domain.model import Rider
from services.identity.domain.values import ConsentScope
from shared.personal_data import ERASED
from shared.public_feed import Fact, Mapped, PublicCatalogue, PublicType

CONSENT_GRANTED = "services.identity.domain.model:Rider.ConsentGranted"
CONSENT_WITHDRAWN = "services.identity.domain.model:Rider.ConsentWithdrawn"
MILESTONE_RECORDED = "services.identity.domain.model:Rider.CareerMilestoneRecorded"
PERSONAL_DATA_ERASED = "services.identity.domain.model:Rider.PersonalDataErased"
FRIENDLY_MARK_AWARDED = "services.identity.domain.friendly:FriendlyMark.Awarded"
FRIENDLY_MARK_WITHDRAWN = "services.identity.domain.friendly:FriendlyMark.Withdrawn"

# Which consent scope opens which personal field.
PERSONAL_FIELDS = {ConsentScope.NAME: "name", ConsentScope.PHONE: "phone"}


def personal_data(app: Any, rider: Rider, organisation_id: str,
                  scopes: tuple[ConsentScope, ...] = tuple(PERSONAL_FIELDS)) -> dict[str, str]:
    """The rider's personal fields this organisation may see now: those whose consent is in
    force, none once erased."""
    if not organisation_id or rider.personal_data_erased:
        return {}
    sealed = {ConsentScope.NAME: rider.sealed_name, ConsentScope.PHONE: rider.sealed_phone}
    found = {}
    for scope in scopes:
        if scope in PERSONAL_FIELDS and rider.consents_to(scope, organisation_id):
            value = app.vault.open(str(rider.id), sealed[scope])
            if value and value != ERASED:
                found[PERSONAL_FIELDS[scope]] = value
    return found


def _rider(app: Any, fact: Fact) -> Rider:
    # Today's rider, not the one at the event: consent is judged at the moment of delivery.
    return app.current(fact.originator_id)


def _registered(app: Any, fact: Fact) -> Mapped:
    e = fact.event
    data = {"rider_id": str(fact.originator_id), "platform_id": e.platform_id,
            "platform_rider_id": e.platform_rider_id, "home_street_id": e.home_street_id,
            "station_id": e.station_id, "registered_time": e.timestamp}
    data.update(personal_data(app, _rider(app, fact), fact.consumer_organisation_id))
    return Mapped(str(fact.originator_id), data)


def _status(time_field: str) -> Any:
    def build(app: Any, fact: Fact) -> Mapped:
        return Mapped(str(fact.originator_id), {
            "rider_id": str(fact.originator_id),
            time_field: getattr(fact.event, "at", None) or fact.event.timestamp})
    return build


def _milestone(app: Any, fact: Fact) -> Mapped:
    e = fact.event
    return Mapped(str(fact.originator_id), {
        "rider_id": str(fact.originator_id), "kind": e.kind,
        "organisation_id": e.organisation_id, "effective_time": e.effective_at})


def _consent_granted(app: Any, fact: Fact) -> Mapped | None:
    e = fact.event
    if not fact.consumer_organisation_id or e.recipient_id != fact.consumer_organisation_id:
        return None
    data = {"rider_id": str(fact.originator_id), "consent_id": e.consent_id, "scope": e.scope,
            "granted_time": e.at}
    data.update(personal_data(app, _rider(app, fact), fact.consumer_organisation_id,
                              (ConsentScope(e.scope),)))
    return Mapped(str(fact.originator_id), data)


def _consent_withdrawn(app: Any, fact: Fact) -> Mapped | None:
    e = fact.event
    consent = next((c for c in _rider(app, fact).consents
                    if c["consent_id"] == e.consent_id), None)
    if (consent is None or not fact.consumer_organisation_id
            or consent["recipient_id"] != fact.consumer_organisation_id):
        return None
    return Mapped(str(fact.originator_id), {
        "rider_id": str(fact.originator_id), "consent_id": e.consent_id,
        "scope": consent["scope"], "withdrawn_time": e.at})


def _erased(app: Any, fact: Fact) -> Mapped:
    return Mapped(str(fact.originator_id), {"rider_id": str(fact.originator_id),
                                            "erased_time": fact.event.timestamp})


def _mark(time_field: str) -> Any:
    # About a community, no rider: every platform receives it (riders may look for friendly
    # communities). The withdrawal's reason is free text and stays in Qiji.
    def build(app: Any, fact: Fact) -> Mapped:
        mark = app.current(fact.originator_id)
        data = {"mark_id": str(fact.originator_id), "area_id": mark.area_id,
                "area_kind": mark.area_kind, "street_id": mark.street_id,
                "brand_name": mark.brand_name, time_field: fact.event.at}
        if time_field == "awarded_time":
            data["criteria_version"] = fact.event.criteria_version
        return Mapped(mark.area_id, data)
    return build


CATALOGUE = PublicCatalogue("identity", [
    PublicType("qiji.identity.v1.RiderRegistered", topics.RIDER_REGISTERED,
               ("rider_id", "platform_id", "platform_rider_id", "home_street_id", "station_id",
                "registered_time", "name", "phone"), _registered, personal=("name", "phone")),
    PublicType("qiji.identity.v1.RiderVerified", topics.RIDER_VERIFIED,
               ("rider_id", "verified_time"), _status("verified_time")),
    PublicType("qiji.identity.v1.RiderSuspended", topics.RIDER_SUSPENDED,
               ("rider_id", "suspended_time"), _status("suspended_time")),
    PublicType("qiji.identity.v1.RiderReinstated", topics.RIDER_REINSTATED,
               ("rider_id", "reinstated_time"), _status("reinstated_time")),
    PublicType("qiji.identity.v1.RiderLeft", topics.RIDER_LEFT,
               ("rider_id", "left_time"), _status("left_time")),
    PublicType("qiji.identity.v1.RiderCareerMilestoneRecorded", MILESTONE_RECORDED,
               ("rider_id", "kind", "organisation_id", "effective_time"), _milestone),
    PublicType("qiji.identity.v1.RiderConsentGranted", CONSENT_GRANTED,
               ("rider_id", "consent_id", "scope", "granted_time", "name", "phone"),
               _consent_granted, personal=("name", "phone")),
    PublicType("qiji.identity.v1.RiderConsentWithdrawn", CONSENT_WITHDRAWN,
               ("rider_id", "consent_id", "scope", "withdrawn_time"), _consent_withdrawn),
    PublicType("qiji.identity.v1.RiderPersonalDataErased", PERSONAL_DATA_ERASED,
               ("rider_id", "erased_time"), _erased),
    PublicType("qiji.identity.v1.FriendlyMarkAwarded", FRIENDLY_MARK_AWARDED,
               ("mark_id", "area_id", "area_kind", "street_id", "brand_name",
                "criteria_version", "awarded_time"), _mark("awarded_time")),
    PublicType("qiji.identity.v1.FriendlyMarkWithdrawn", FRIENDLY_MARK_WITHDRAWN,
               ("mark_id", "area_id", "area_kind", "street_id", "brand_name",
                "withdrawn_time"), _mark("withdrawn_time")),
])
