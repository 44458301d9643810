"""The friendly marks of the rider-friendly programme — a community's (友好社区) and a
business area's (友好商圈): the criteria the city sets and versions for each kind of area, an
area's application by its street office, the city's award against a named
criteria version with each criterion's evidence, and withdrawal; beside them, what identity
notes of merchants' and governance's feeds to judge the criteria (a merchant's standing, an
organisation's signature of the co-building pledge).

Event classes are stored by topic (this module and the class name): keep them here, and when
one must change its fields, raise its class_version and add an upcaster."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event

from shared.errors import (
    DUPLICATE_VALUE,
    ENUM_VALUE_REQUIRED,
    VALUE_OUT_OF_RANGE,
    FailedPrecondition,
    NotFound,
    Violations,
)
from shared.wire import must_be_specified

_NS = uuid.UUID("9a41c2d7-3e58-4b1f-8c6a-0d2e7f4b9a63")

# A criterion asks for at most this many spaces or merchants: more is a slip of the finger.
MAX_CRITERION_COUNT = 100
MAX_BRAND_NAME = 20
MAX_ATTESTATION = 500
# Reason of the FAILED_PRECONDITION of an award whose criteria are not all met.
CRITERIA_NOT_MET = "FRIENDLY_MARK_CRITERIA_NOT_MET"
# Reason of the field violation of criteria that ask for nothing.
CRITERIA_EMPTY = "CRITERIA_EMPTY"


class FriendlyMarkStatus(StrEnum):
    APPLIED = "APPLIED"  # the street office asked; the city has not decided
    AWARDED = "AWARDED"
    WITHDRAWN = "WITHDRAWN"


class FriendlyMarkCriterion(StrEnum):
    SERVICE_SPACES = "SERVICE_SPACES"  # rest points (歇脚) with the amenities asked for
    FRIENDLY_MERCHANTS = "FRIENDLY_MERCHANTS"  # approved friendly merchants (友好商户)
    CO_BUILDING_PLEDGE = "CO_BUILDING_PLEDGE"  # the community signed 共建倡议
    STREET_ATTESTATION = "STREET_ATTESTATION"  # the street office vouches for riders' access


def check_criteria(violations: Violations, *, min_service_spaces: int,
                   space_amenities: list[Any], min_friendly_merchants: int,
                   co_building_pledge: bool, street_attestation: bool,
                   amenity_type: type[StrEnum], path: str = "criteria") -> None:
    """The rules of one criteria version: counts from 0 to MAX_CRITERION_COUNT, amenities
    specified and named once, and at least one criterion that asks for something (a mark for
    nothing would say nothing)."""
    for name, value in (("min_service_spaces", min_service_spaces),
                        ("min_friendly_merchants", min_friendly_merchants)):
        violations.require(0 <= value <= MAX_CRITERION_COUNT, f"{path}.{name}",
                           f"must be 0 to {MAX_CRITERION_COUNT}", VALUE_OUT_OF_RANGE)
    seen: set[Any] = set()
    for i, amenity in enumerate(space_amenities):
        violations.require_given(amenity, f"{path}.space_amenities[{i}]",
                                 must_be_specified(amenity_type), ENUM_VALUE_REQUIRED)
        if amenity is not None and amenity in seen:
            violations.add(f"{path}.space_amenities[{i}]", "named twice", DUPLICATE_VALUE)
        seen.add(amenity)
    if space_amenities and min_service_spaces == 0:
        violations.add(f"{path}.space_amenities", "amenities of spaces only count with "
                       "min_service_spaces of 1 or more", VALUE_OUT_OF_RANGE)
    if not (min_service_spaces or min_friendly_merchants or co_building_pledge
            or street_attestation):
        violations.add(path, "must ask for something: spaces, merchants, the co-building "
                       "pledge or the street office's attestation", CRITERIA_EMPTY)


# The kinds of area that earn a friendly mark: a community (友好社区) and a business area
# (友好商圈), each judged by criteria of its own kind.
AREA_KINDS = ("COMMUNITY", "BUSINESS_AREA")


class FriendlyMarkCriteria(Aggregate):
    """What earns the friendly mark of one kind of area, as the city sets it; each change is a
    new version, and a mark names the version it was judged by. One per kind of area: the
    community's under the id it had before business areas existed (its versions keep their
    numbers), the business area's under an id of its own."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Revised: ClassVar[type[Any]]

    ID = uuid.uuid5(_NS, "friendly-mark-criteria")

    @staticmethod
    def create_id(area_kind: str = "COMMUNITY", **_: Any) -> uuid.UUID:
        return FriendlyMarkCriteria.id_for(area_kind)

    @staticmethod
    def id_for(area_kind: str) -> uuid.UUID:
        if area_kind == "COMMUNITY":
            return FriendlyMarkCriteria.ID
        return uuid.uuid5(_NS, f"friendly-mark-criteria\n{area_kind}")

    class Set(Aggregate.Created):
        # v2 added `area_kind` (the id derives from it): criteria set before business areas
        # existed are the community's.
        class_version = 2
        criteria: dict[str, Any]
        at: datetime
        area_kind: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["area_kind"] = "COMMUNITY"

    @event(Set)
    def __init__(self, criteria: dict[str, Any], at: datetime, area_kind: str):
        self.area_kind = area_kind
        self.versions = [{"criteria": criteria, "set_at": at}]

    @event("Revised")
    def revise(self, criteria: dict[str, Any], at: datetime) -> None:
        self.versions.append({"criteria": criteria, "set_at": at})

    @property
    def current_version(self) -> int:
        return len(self.versions)

    def version_of(self, version: int) -> dict[str, Any]:
        if not 1 <= version <= len(self.versions):
            raise NotFound("friendly_mark_criteria", str(version))
        return self.versions[version - 1]


def evaluate(criteria: dict[str, Any], *, spaces: list[dict[str, Any]],
             merchants: list[dict[str, Any]], signatures: list[dict[str, Any]],
             attestation: str) -> list[dict[str, Any]]:
    """Each criterion the version asks for, met or not, with the evidence that met it (or what
    was found): `spaces` of the area (id, name, amenities), its approved `merchants` (id, name,
    the merchants' log position that approved them), the community's co-building
    `signatures` (version, signed_at, governance's log position), and the street office's
    `attestation`. Pure: the same inputs judge the same years later."""
    results: list[dict[str, Any]] = []
    if criteria["min_service_spaces"]:
        wanted = set(criteria["space_amenities"])
        found = [s for s in spaces if wanted <= set(s["amenities"])]
        results.append(_result(FriendlyMarkCriterion.SERVICE_SPACES, len(found),
                               criteria["min_service_spaces"],
                               [{"kind": "service_space", "id": s["id"], "name": s["name"],
                                 "source": "identity", "position": s["position"]}
                                for s in found]))
    if criteria["min_friendly_merchants"]:
        results.append(_result(FriendlyMarkCriterion.FRIENDLY_MERCHANTS, len(merchants),
                               criteria["min_friendly_merchants"],
                               [{"kind": "merchant", "id": m["id"], "name": m["name"],
                                 "source": "merchants", "position": m["position"]}
                                for m in merchants]))
    if criteria["co_building_pledge"]:
        results.append(_result(FriendlyMarkCriterion.CO_BUILDING_PLEDGE, len(signatures), 1,
                               [{"kind": "pledge_signature", "id": f"v{s['version']}",
                                 "name": f"co-building pledge version {s['version']}",
                                 "source": "governance", "position": s["position"]}
                                for s in signatures]))
    if criteria["street_attestation"]:
        results.append(_result(FriendlyMarkCriterion.STREET_ATTESTATION,
                               1 if attestation else 0, 1,
                               [{"kind": "attestation", "id": "", "name": "",
                                 "source": "identity", "position": 0}] if attestation else []))
    return results


def _result(criterion: FriendlyMarkCriterion, found: int, required: int,
            evidence: list[dict[str, Any]]) -> dict[str, Any]:
    return {"criterion": criterion.value, "required": required, "found": found,
            "met": found >= required, "evidence": evidence}


class FriendlyMark(Aggregate):
    """The friendly mark of one area (友好社区 for a community): applied for by the street
    office, awarded by the city against a named criteria version with its evidence, withdrawn
    with a reason, applied for again. One aggregate per area, so that two applications at once
    collide and one wins, and the area's whole history is one stream."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Applied: ClassVar[type[Any]]
        Reapplied: ClassVar[type[Any]]
        Awarded: ClassVar[type[Any]]
        Withdrawn: ClassVar[type[Any]]

    @staticmethod
    def create_id(area_id: str, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_NS, f"friendly-mark\n{area_id}")

    @event("Applied")
    def __init__(self, area_id: str, area_kind: str, street_id: str, brand_name: str,
                 attestation: str, at: datetime):
        self.area_id = area_id
        self.area_kind = area_kind
        self.street_id = street_id
        self._applied(brand_name, attestation, at)

    def _applied(self, brand_name: str, attestation: str, at: datetime) -> None:
        self.brand_name = brand_name
        self.attestation = attestation
        self.status = FriendlyMarkStatus.APPLIED
        self.applied_at = at
        self.criteria_version = 0
        self.criteria: dict[str, Any] = {}
        self.results: list[dict[str, Any]] = []
        self.awarded_at: datetime | None = None
        self.withdrawn_at: datetime | None = None
        self.withdrawal_reason = ""

    def apply_again(self, brand_name: str, attestation: str, at: datetime) -> None:
        """A new application after a withdrawal; while one is pending or the mark is held, a
        second is refused."""
        if self.status is not FriendlyMarkStatus.WITHDRAWN:
            raise FailedPrecondition(f"the area's mark is {self.status.value.lower()} already",
                                     reason=f"FRIENDLY_MARK_{self.status.value}")
        self._reapplied(brand_name=brand_name, attestation=attestation, at=at)

    @event("Reapplied")
    def _reapplied(self, brand_name: str, attestation: str, at: datetime) -> None:
        self._applied(brand_name, attestation, at)

    def award(self, criteria_version: int, criteria: dict[str, Any],
              results: list[dict[str, Any]], at: datetime) -> None:
        """Awards the mark when every criterion of the version is met; else refuses, naming
        the criteria not met (nothing is stored: the street office applies again when it
        has them)."""
        self._require(FriendlyMarkStatus.APPLIED)
        unmet = [r["criterion"] for r in results if not r["met"]]
        if unmet:
            raise FailedPrecondition(
                f"criteria version {criteria_version} is not met: " + "; ".join(
                    f"{r['criterion']} (found {r['found']}, needs {r['required']})"
                    for r in results if not r["met"]),
                reason=CRITERIA_NOT_MET, unmet=",".join(unmet))
        self._awarded(criteria_version=criteria_version, criteria=criteria, results=results,
                      at=at)

    @event("Awarded")
    def _awarded(self, criteria_version: int, criteria: dict[str, Any],
                 results: list[dict[str, Any]], at: datetime) -> None:
        # The criteria travel with the award (not only their version): the award explains
        # itself from its own event, years later.
        self.status = FriendlyMarkStatus.AWARDED
        self.criteria_version = criteria_version
        self.criteria = criteria
        self.results = results
        self.awarded_at = at

    def withdraw(self, reason: str, at: datetime) -> None:
        self._require(FriendlyMarkStatus.AWARDED)
        self._withdrawn(reason=reason, at=at)

    @event("Withdrawn")
    def _withdrawn(self, reason: str, at: datetime) -> None:
        self.status = FriendlyMarkStatus.WITHDRAWN
        self.withdrawn_at = at
        self.withdrawal_reason = reason

    def _require(self, wanted: FriendlyMarkStatus) -> None:
        if self.status is not wanted:
            raise FailedPrecondition(
                f"the area's mark is {self.status.value.lower()}, not "
                f"{wanted.value.lower()}", reason=f"FRIENDLY_MARK_{self.status.value}")


# ---------------------------------------------------------------------------- from the feeds


class MerchantStanding(Aggregate):
    """A friendly merchant as identity learns of it from merchants' feed: its street, its
    business area (if it named one), its name and whether the street office approved it (and
    at which position of merchants' log)."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        StatusNoted: ClassVar[type[Any]]
        BusinessAreaNoted: ClassVar[type[Any]]

    @staticmethod
    def create_id(merchant_id: str, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_NS, f"merchant-standing\n{merchant_id}")

    class Noted(Aggregate.Created):
        # v2 added `business_area_id`: a merchant noted before business areas existed is in
        # none ("").
        class_version = 2
        merchant_id: str
        street_id: str
        name: str
        business_area_id: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["business_area_id"] = ""

    @event(Noted)
    def __init__(self, merchant_id: str, street_id: str, name: str, business_area_id: str):
        self.merchant_id = merchant_id
        self.street_id = street_id
        self.business_area_id = business_area_id
        self.name = name
        self.status = "APPLIED"
        self.position = 0

    @event("StatusNoted")
    def note_status(self, status: str, position: int) -> None:
        self.status = status
        self.position = position

    @event("BusinessAreaNoted")
    def note_business_area(self, business_area_id: str) -> None:
        self.business_area_id = business_area_id


class CoBuildingSignature(Aggregate):
    """An organisation's signature of one version of the co-building pledge, as identity
    learns of it from governance's feed (with that event's position in governance's log)."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Noted: ClassVar[type[Any]]

    @staticmethod
    def create_id(organisation_id: str, version: int, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_NS, f"co-building-signature\n{organisation_id}\n{version}")

    @event("Noted")
    def __init__(self, organisation_id: str, version: int, signed_at: datetime,
                 position: int):
        self.organisation_id = organisation_id
        self.version = version
        self.signed_at = signed_at
        self.position = position
