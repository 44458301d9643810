"""Aggregates of the identity domain: organisations, service spaces and riders.

Event classes are stored by topic (this module and the class name): keep them here, and when
one must change its fields, raise its class_version and add an upcaster.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event

from services.identity.domain.values import (
    AMENITY_NOT_OFFERED,
    DAY_BEFORE_SPACE_OPENED,
    DEPARTMENT_FUNCTION_NOT_ALLOWED,
    DEPARTMENT_FUNCTION_REQUIRED,
    MAX_NAME_LENGTH,
    MAX_OFFERS,
    MAX_TEXT_LENGTH,
    MAX_USES_PER_CALL,
    NATIONAL_ID_INVALID,
    PARENT_KIND_NOT_ALLOWED,
    PARENT_KINDS,
    PARENT_NOT_ALLOWED,
    PARENT_REQUIRED,
    PHONE_INVALID,
    PLATFORM_RIDER_ID,
    PLATFORM_RIDER_ID_INVALID,
    Amenity,
    CareerMilestoneKind,
    ConsentScope,
    DepartmentFunction,
    OfferKind,
    OrganisationKind,
    PartnerCategory,
    RiderStatus,
    is_mobile_phone,
    is_national_id,
)
from shared.errors import (
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    VALUE_OUT_OF_RANGE,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    Violations,
    check_text,
)
from shared.values import DAY_IN_THE_FUTURE, check_opening_hours, city_day
from shared.wire import alternatives, must_be_specified, unspecified, wire_name

_RIDER_NAMESPACE = uuid.UUID("0b7f4c8e-8a7e-4b7e-9f43-6f1f2c0d9a11")
_SPACE_USE_NAMESPACE = uuid.UUID("6d3c1f0e-2b9a-4f57-8e41-5a7c9d2e4b18")
_PARTNER_NAMESPACE = uuid.UUID("3f9e2a7c-5d14-4b8e-a6c3-9b0d7e1f2a45")


# ---------------------------------------------------------------------------- organisations


class Organisation(Aggregate):
    """A node of the city → district → street → community tree, or an organisation beside it:
    a department, the platform company, a delivery station, an education provider, a merchant."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Created: ClassVar[type[Any]]

    @event("Created")
    def __init__(self, kind: str, name: str, parent_id: str, department_function: str):
        self.kind = OrganisationKind(kind)
        self.name = name
        self.parent_id = parent_id
        self.department_function = department_function

    @classmethod
    def check(cls, violations: Violations, kind: OrganisationKind | None, name: str,
              parent_kind: OrganisationKind | None, parent_given: bool,
              department_function: DepartmentFunction | None) -> None:
        """The rules of the tree. `parent_kind` is None when no parent is given, or when the
        one given names nothing (that is the reference's own violation, added by the caller:
        its kind is then not judged)."""
        check_text(violations, "name", name, MAX_NAME_LENGTH)
        if kind is None:  # unless the entry point said already what is wrong with it
            violations.require(violations.about("kind"), "kind",
                               must_be_specified(OrganisationKind), ENUM_VALUE_REQUIRED)
            return
        this = wire_name(kind)
        allowed = PARENT_KINDS[kind]
        wanted = [k for k in allowed if k is not None]
        if parent_given and not wanted:
            violations.add("parent_id", f"an {this} has no parent", PARENT_NOT_ALLOWED)
        elif not parent_given and None not in allowed:
            violations.add("parent_id", f"an {this} needs a parent: {alternatives(wanted)}",
                           PARENT_REQUIRED)
        elif parent_given and parent_kind is not None and parent_kind not in allowed:
            violations.add("parent_id", f"the parent of an {this} must be "
                           f"{alternatives(wanted)}, not an {wire_name(parent_kind)}",
                           PARENT_KIND_NOT_ALLOWED)
        department = wire_name(OrganisationKind.DEPARTMENT)
        if kind is OrganisationKind.DEPARTMENT and department_function is None and (
                not violations.about("department_function")):
            violations.add("department_function",
                           f"must be specified for an {department} (not "
                           f"{unspecified(DepartmentFunction)})", DEPARTMENT_FUNCTION_REQUIRED)
        if kind is not OrganisationKind.DEPARTMENT and department_function is not None:
            violations.add("department_function",
                           f"only an {department} has a function; leave it "
                           f"{unspecified(DepartmentFunction)} for {this}",
                           DEPARTMENT_FUNCTION_NOT_ALLOWED)


# ---------------------------------------------------------------------------- partners


class Partner(Aggregate):
    """An organisation's partner profile (多方资源): which kind of body it is and what it offers
    the programme. A profile, not an organisation of its own: what a partner gives is already
    recorded under its organisation's id (the courses it provides, the perks it offers), so the
    link from the register to what was given is that id. One profile per organisation, its id
    derived from the organisation's, so two registrations of one partner collide in the store.

    Offers are [{"kind": OfferKind value, "description": str}], in the order given; a revision
    replaces category and offers, and every version stays readable."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Registered: ClassVar[type[Any]]
        Revised: ClassVar[type[Any]]

    @staticmethod
    def create_id(organisation_id: str, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_PARTNER_NAMESPACE, organisation_id)

    @event("Registered")
    def __init__(self, organisation_id: str, category: str, offers: list[dict[str, str]]):
        self.organisation_id = organisation_id
        self.category = PartnerCategory(category)
        self.offers = [dict(o) for o in offers]

    def revise(self, category: PartnerCategory, offers: list[dict[str, str]]) -> None:
        self._revised(category=category.value, offers=offers)

    @event("Revised")
    def _revised(self, category: str, offers: list[dict[str, str]]) -> None:
        self.category = PartnerCategory(category)
        self.offers = [dict(o) for o in offers]

    @staticmethod
    def check(violations: Violations, category: PartnerCategory | None,
              offers: list[tuple[OfferKind | None, str]]) -> list[dict[str, str]]:
        """The rules of a profile; the offers as stored (descriptions stripped)."""
        violations.require_given(category, "category", must_be_specified(PartnerCategory),
                                 ENUM_VALUE_REQUIRED)
        if not offers:
            violations.add("offers", "a partner offers something: at least one offer",
                           FIELD_REQUIRED)
        elif len(offers) > MAX_OFFERS:
            violations.add("offers", f"at most {MAX_OFFERS} offers", VALUE_OUT_OF_RANGE)
        stored = []
        for i, (kind, description) in enumerate(offers):
            violations.require_given(kind, f"offers[{i}].kind", must_be_specified(OfferKind),
                                     ENUM_VALUE_REQUIRED)
            check_text(violations, f"offers[{i}].description", description, MAX_TEXT_LENGTH)
            if kind is not None:
                stored.append({"kind": kind.value, "description": description.strip()})
        return stored


# ---------------------------------------------------------------------------- service spaces


class ServiceSpace(Aggregate):
    """A service space (服务空间 / 驿站) of a street, with its amenities, opening hours and
    location ({"latitude", "longitude"} in WGS-84 degrees, or None: not given)."""

    class Opened(Aggregate.Created):
        # v2 added `location`; a space opened before has none (None), and is not on the map.
        class_version = 2
        street_id: str
        name: str
        address: str
        amenities: list[str]
        opening_hours: list[dict[str, Any]]
        location: dict[str, float] | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["location"] = None

    class FacilitiesUpdated(Aggregate.Event):
        # v2 added `location` (None: unchanged); an update stored before moved nothing.
        class_version = 2
        amenities: list[str]
        opening_hours: list[dict[str, Any]]
        location: dict[str, float] | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["location"] = None

    @event(Opened)
    def __init__(self, street_id: str, name: str, address: str, amenities: list[str],
                 opening_hours: list[dict[str, Any]], location: dict[str, float] | None):
        self.street_id = street_id
        self.name = name
        self.address = address
        self.amenities = sorted(set(amenities))
        self.opening_hours = sorted(opening_hours, key=lambda h: h["weekday"])
        self.location = location

    @event(FacilitiesUpdated)
    def update_facilities(self, amenities: list[str], opening_hours: list[dict[str, Any]],
                          location: dict[str, float] | None) -> None:
        self.amenities = sorted(set(amenities))
        self.opening_hours = sorted(opening_hours, key=lambda h: h["weekday"])
        if location is not None:
            self.location = location

    @staticmethod
    def check(violations: Violations, amenities: list[Amenity | None],
              opening_hours: list[dict[str, Any]]) -> None:
        for i, amenity in enumerate(amenities):
            violations.require_given(amenity, f"amenities[{i}]", must_be_specified(Amenity),
                                     ENUM_VALUE_REQUIRED)
        check_opening_hours(violations, opening_hours)

    @property
    def opened_on(self) -> date:
        """The day it opened, in the city's time: no use is recorded before it."""
        return city_day(self.created_on)

    def require_offers(self, amenity: Amenity) -> None:
        if amenity.value not in self.amenities:
            offered = ", ".join(wire_name(a) for a in Amenity if a.value in self.amenities)
            raise FailedPrecondition(
                f"the space does not offer {wire_name(amenity)} (it offers: "
                f"{offered or 'none'}); "
                "UpdateServiceSpace adds an amenity", reason=AMENITY_NOT_OFFERED,
                amenity=wire_name(amenity))


# ---------------------------------------------------------------------------- visits


def check_use(violations: Violations, *, amenity: Amenity | None, count: int, day: date | None,
              today: date, opened_on: date | None) -> None:
    """The rules of one recording of use (到访): an amenity, 1 to MAX_USES_PER_CALL uses, on a
    day from the one the space opened to today (the city's). `day` None: not readable (already
    said); `opened_on` None: the space is not known (already said)."""
    violations.require_given(amenity, "amenity", must_be_specified(Amenity), ENUM_VALUE_REQUIRED)
    violations.require(1 <= count <= MAX_USES_PER_CALL, "count",
                       f"must be 1 to {MAX_USES_PER_CALL}", VALUE_OUT_OF_RANGE)
    if day is None:
        return
    if day > today:
        violations.add("day", f"must not be after today ({today.isoformat()} in the city's "
                       "time): use is recorded once it happened", DAY_IN_THE_FUTURE)
    elif opened_on is not None and day < opened_on:
        violations.add("day", f"must not be before the space opened ({opened_on.isoformat()})",
                       DAY_BEFORE_SPACE_OPENED)


class SpaceUseDay(Aggregate):
    """How often riders used each amenity of one service space on one calendar day (the
    city's): counts only, never who (骑手到访). One aggregate per space and day, so that a
    busy space's history is read a day at a time and a recording contends only with the same
    day's, never with every visit the space ever had."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Started: ClassVar[type[Any]]
        UseRecorded: ClassVar[type[Any]]

    @staticmethod
    def create_id(service_space_id: str, day: str, **_: Any) -> uuid.UUID:
        # Deterministic: the first two recordings of a day collide on the same id, and the
        # store lets one through; the other retries and adds to it (QijiApplication.execute).
        return uuid.uuid5(_SPACE_USE_NAMESPACE, f"{service_space_id}\n{day}")

    @event("Started")
    def __init__(self, service_space_id: str, day: str):
        self.service_space_id = service_space_id
        self.day = day  # YYYY-MM-DD
        self.counts: dict[str, int] = {}

    def record_use(self, amenity: Amenity, count: int) -> None:
        """Checked by check_use and ServiceSpace.require_offers before."""
        self._use_recorded(amenity=amenity.value, count=count)

    @event("UseRecorded")
    def _use_recorded(self, amenity: str, count: int) -> None:
        self.counts[amenity] = self.counts.get(amenity, 0) + count


# ---------------------------------------------------------------------------- riders


def check_registration(violations: Violations, *, platform_rider_id: str, name: str, phone: str,
                       national_id: str) -> None:
    if not PLATFORM_RIDER_ID.fullmatch(platform_rider_id):
        violations.add("platform_rider_id", "1 to 64 letters, digits or _ . : -",
                       PLATFORM_RIDER_ID_INVALID)
    check_text(violations, "name", name, MAX_NAME_LENGTH)
    if not is_mobile_phone(phone):
        violations.add("phone", "must be an 11-digit mainland mobile number such as 13800000000",
                       PHONE_INVALID)
    if national_id and not is_national_id(national_id):
        violations.add("national_id", "not a valid 18-character resident identity card number",
                       NATIONAL_ID_INVALID)


def status_after_verification(status: RiderStatus) -> RiderStatus:
    """Verification activates a registered rider; a suspended one stays suspended."""
    return RiderStatus.ACTIVE if status is RiderStatus.REGISTERED else status


def status_after_reinstatement(verified: bool) -> RiderStatus:
    return RiderStatus.ACTIVE if verified else RiderStatus.REGISTERED


class Rider(Aggregate):
    """A delivery rider. Name, phone and national id arrive sealed (encrypted under the rider's
    own key): the domain keeps them but never reads them."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Registered: ClassVar[type[Any]]
        Verified: ClassVar[type[Any]]
        Suspended: ClassVar[type[Any]]
        Reinstated: ClassVar[type[Any]]
        Left: ClassVar[type[Any]]
        CareerMilestoneRecorded: ClassVar[type[Any]]
        ConsentGranted: ClassVar[type[Any]]
        ConsentWithdrawn: ClassVar[type[Any]]
        PersonalDataErased: ClassVar[type[Any]]

    @staticmethod
    def create_id(platform_id: str, platform_rider_id: str, **_: Any) -> uuid.UUID:
        # Deterministic: two concurrent registrations of one platform rider id collide on the
        # same aggregate id, so the store itself lets only one of them through.
        return uuid.uuid5(_RIDER_NAMESPACE, f"{platform_id}\n{platform_rider_id}")

    @event("Registered")
    def __init__(self, platform_id: str, platform_rider_id: str, sealed_name: str,
                 sealed_phone: str, sealed_national_id: str, home_street_id: str,
                 station_id: str):
        self.platform_id = platform_id
        self.platform_rider_id = platform_rider_id
        self.sealed_name = sealed_name
        self.sealed_phone = sealed_phone
        self.sealed_national_id = sealed_national_id
        self.home_street_id = home_street_id
        self.station_id = station_id
        self.status = RiderStatus.REGISTERED
        self.status_reason = ""
        self.verified_at: datetime | None = None
        self.registered_at: datetime = self.created_on
        self.milestones: list[dict[str, Any]] = []
        self.consents: list[dict[str, Any]] = []
        self.personal_data_erased = False

    # -- lifecycle

    def verify(self, at: datetime) -> None:
        self._require_not_left()
        if self.verified_at is not None:
            raise FailedPrecondition("the rider is already verified", reason="ALREADY_VERIFIED")
        self._verified(at=at)

    @event("Verified")
    def _verified(self, at: datetime) -> None:
        self.verified_at = at
        self.status = status_after_verification(self.status)

    def suspend(self, reason: str) -> None:
        self._require_not_left()
        if self.status is RiderStatus.SUSPENDED:
            raise FailedPrecondition("the rider is already suspended", reason="ALREADY_SUSPENDED")
        self._suspended(reason=reason)

    @event("Suspended")
    def _suspended(self, reason: str) -> None:
        self.status = RiderStatus.SUSPENDED
        self.status_reason = reason

    def reinstate(self, reason: str) -> None:
        if self.status is not RiderStatus.SUSPENDED:
            raise FailedPrecondition("only a suspended rider can be reinstated",
                                     reason="NOT_SUSPENDED", status=self.status.value)
        self._reinstated(reason=reason)

    @event("Reinstated")
    def _reinstated(self, reason: str) -> None:
        self.status = status_after_reinstatement(self.verified_at is not None)
        self.status_reason = reason

    def leave(self, reason: str) -> None:
        self._require_not_left()
        self._left(reason=reason)

    @event("Left")
    def _left(self, reason: str) -> None:
        self.status = RiderStatus.LEFT
        self.status_reason = reason

    # -- career

    def record_milestone(self, kind: CareerMilestoneKind, organisation_id: str,
                         effective_at: datetime, note: str) -> None:
        self._require_not_left()
        for m in self.milestones:
            if m["kind"] == kind.value and m["organisation_id"] == organisation_id:
                raise AlreadyExists("this milestone is already recorded for the rider",
                                    reason="MILESTONE_ALREADY_RECORDED")
        self._milestone_recorded(kind=kind.value, organisation_id=organisation_id,
                                 effective_at=effective_at, note=note)

    @event("CareerMilestoneRecorded")
    def _milestone_recorded(self, kind: str, organisation_id: str, effective_at: datetime,
                            note: str) -> None:
        self.milestones.append({"kind": kind, "organisation_id": organisation_id,
                                "effective_at": effective_at, "note": note})

    # -- consent

    def grant_consent(self, consent_id: str, scope: ConsentScope, recipient_id: str,
                      at: datetime) -> None:
        self._require_not_left()
        for c in self.consents:
            if (c["scope"] == scope.value and c["recipient_id"] == recipient_id
                    and c["withdrawn_at"] is None):
                raise AlreadyExists("the rider already consents to this", reason="CONSENT_EXISTS",
                                    consent_id=c["consent_id"])
        self._consent_granted(consent_id=consent_id, scope=scope.value, recipient_id=recipient_id,
                              at=at)

    @event("ConsentGranted")
    def _consent_granted(self, consent_id: str, scope: str, recipient_id: str,
                         at: datetime) -> None:
        self.consents.append({"consent_id": consent_id, "scope": scope,
                              "recipient_id": recipient_id, "granted_at": at,
                              "withdrawn_at": None})

    def withdraw_consent(self, consent_id: str, at: datetime) -> None:
        consent = next((c for c in self.consents if c["consent_id"] == consent_id), None)
        if consent is None:
            raise NotFound("consent", consent_id)
        if consent["withdrawn_at"] is not None:
            raise FailedPrecondition("the consent was already withdrawn",
                                     reason="CONSENT_ALREADY_WITHDRAWN")
        self._consent_withdrawn(consent_id=consent_id, at=at)

    @event("ConsentWithdrawn")
    def _consent_withdrawn(self, consent_id: str, at: datetime) -> None:
        for c in self.consents:
            if c["consent_id"] == consent_id:
                c["withdrawn_at"] = at

    def consents_to(self, scope: ConsentScope, recipient_id: str) -> bool:
        return any(c["scope"] == scope.value and c["recipient_id"] == recipient_id
                   and c["withdrawn_at"] is None for c in self.consents)

    def record_erasure(self, reason: str) -> None:
        if self.personal_data_erased:
            raise FailedPrecondition("the rider's personal data is already erased",
                                     reason="ALREADY_ERASED")
        self._erased(reason=reason)

    @event("PersonalDataErased")
    def _erased(self, reason: str) -> None:
        # The sealed values stay in the history; without their key they are noise.
        self.personal_data_erased = True

    def _require_not_left(self) -> None:
        if self.status is RiderStatus.LEFT:
            raise FailedPrecondition("the rider has left the programme", reason="RIDER_LEFT")
