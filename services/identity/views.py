"""Read models of identity, for the list queries: derived from the log, rebuilt at start."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from services.identity.domain.friendly import (
    CoBuildingSignature,
    FriendlyMark,
    FriendlyMarkStatus,
    MerchantStanding,
)
from services.identity.domain.model import (
    Organisation,
    Partner,
    Rider,
    ServiceSpace,
    SpaceUseDay,
    status_after_reinstatement,
    status_after_verification,
)
from services.identity.domain.values import (
    Amenity,
    OfferKind,
    OrganisationKind,
    PartnerCategory,
    RiderStatus,
)
from shared.views import Index, LogFollower

if TYPE_CHECKING:
    from shared.application import QijiApplication


class _Organisations(Index):
    def page(self, *, kind: OrganisationKind | None, parent_id: str, page_size: int,
             page_token: str) -> tuple[list[str], str]:
        return self.select({"kind": kind.value if kind else "", "parent_id": parent_id},
                           page_size=page_size, page_token=page_token)


class _Partners(Index):
    def page(self, *, category: PartnerCategory | None, offer_kind: OfferKind | None,
             page_size: int, page_token: str) -> tuple[list[str], str]:
        kind = offer_kind.value if offer_kind else ""
        return self.select({"category": category.value if category else ""},
                           page_size=page_size, page_token=page_token,
                           extra=lambda attrs, _id: not kind or kind in attrs["offer_kinds"],
                           filters=[f"offer_kind={kind}"])


class _ServiceSpaces(Index):
    def page(self, *, street_id: str, amenities: list[Amenity], page_size: int,
             page_token: str) -> tuple[list[str], str]:
        needed = frozenset(a.value for a in amenities)
        return self.select({"street_id": street_id}, page_size=page_size, page_token=page_token,
                           extra=lambda attrs, _id: needed <= set(attrs["amenities"]),
                           filters=[f"amenities={sorted(needed)}"])


class _Riders(Index):
    def page(self, *, home_street_id: str, station_id: str, status: RiderStatus | None,
             page_size: int, page_token: str) -> tuple[list[str], str]:
        return self.select({"home_street_id": home_street_id, "station_id": station_id,
                            "status": status.value if status else ""},
                           page_size=page_size, page_token=page_token)


class _SpaceUse:
    """Uses by space, day (YYYY-MM-DD) and amenity: the sums SpaceUseDay's events add up to,
    for reads over many days and spaces without loading an aggregate per day."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._day_of: dict[str, tuple[str, str]] = {}  # SpaceUseDay id -> (space, day)
        self._by_space: dict[str, dict[str, dict[str, int]]] = {}

    def started(self, ident: str, service_space_id: str, day: str) -> None:
        with self.lock:
            self._day_of[ident] = (service_space_id, day)

    def recorded(self, ident: str, amenity: str, count: int) -> None:
        with self.lock:
            space, day = self._day_of[ident]
            counts = self._by_space.setdefault(space, {}).setdefault(day, {})
            counts[amenity] = counts.get(amenity, 0) + count

    def days(self, service_space_id: str, from_day: str, to_day: str
             ) -> list[tuple[str, dict[str, int]]]:
        """The days from `from_day` to `to_day` (both included) with any use, in order, each
        with its counts by amenity (copies)."""
        with self.lock:
            days = self._by_space.get(service_space_id, {})
            return sorted((day, dict(counts)) for day, counts in days.items()
                          if from_day <= day <= to_day)


class IdentityViews:
    def __init__(self, app: QijiApplication):
        self.organisations = _Organisations()
        self.service_spaces = _ServiceSpaces()
        self.partners = _Partners()
        self.riders = _Riders()
        self.space_use = _SpaceUse()
        # Friendly marks: the marks by street and status; merchants' standing by street; each
        # organisation's co-building signatures (noted from merchants' and governance's feeds).
        self.friendly_marks = Index()
        self.merchants = Index()
        self._signatures: dict[str, list[dict[str, Any]]] = {}
        self._signatures_lock = threading.Lock()
        self._follower = LogFollower(app, "identity", self._apply)

    def catch_up(self) -> int:
        return self._follower.catch_up()

    def organisation(self, organisation_id: str) -> dict[str, Any] | None:
        """Kind and parent of an organisation, which never change once created: the view can
        answer for the store. Caught up first when the id is not known yet, so an organisation
        created a moment ago, by any replica, is found."""
        for attempt in range(2):
            with self.organisations.lock:
                position = self.organisations.by_id.get(organisation_id)
                if position is not None:
                    return dict(self.organisations.rows[position].attrs)
            if attempt == 0:
                self.catch_up()
        return None

    def approved_merchants(self, street_id: str, business_area_id: str = ""
                           ) -> list[dict[str, Any]]:
        """The street's friendly merchants approved now (with `business_area_id`, only those
        that named that business area): id, name, and the position in merchants' log of the
        event that approved (or reinstated) them."""
        return [{"id": attrs["merchant_id"], "name": attrs["name"],
                 "position": attrs["upstream_position"]}
                for _, _, attrs in self.merchants.snapshot()
                if attrs["street_id"] == street_id and attrs["status"] == "APPROVED"
                and (not business_area_id or attrs["business_area_id"] == business_area_id)]

    def co_building_signatures(self, organisation_id: str) -> list[dict[str, Any]]:
        with self._signatures_lock:
            return [dict(s) for s in self._signatures.get(organisation_id, [])]

    @property
    def position(self) -> int:
        return self._follower.position

    def _apply(self, position: int, event: Any) -> None:
        ident = str(event.originator_id)
        if isinstance(event, Organisation.Created):
            self.organisations.add(position, ident, kind=event.kind, parent_id=event.parent_id)
        elif isinstance(event, Partner.Registered | Partner.Revised):
            attrs = {"category": event.category,
                     "offer_kinds": sorted({o["kind"] for o in event.offers})}
            if isinstance(event, Partner.Registered):
                self.partners.add(position, ident, **attrs)
            else:
                self.partners.update(ident, **attrs)
        elif isinstance(event, ServiceSpace.Opened):
            self.service_spaces.add(position, ident, street_id=event.street_id,
                                    amenities=list(event.amenities))
        elif isinstance(event, ServiceSpace.FacilitiesUpdated):
            self.service_spaces.update(ident, amenities=list(event.amenities))
        elif isinstance(event, SpaceUseDay.UseRecorded):
            self.space_use.recorded(ident, event.amenity, event.count)
        elif isinstance(event, SpaceUseDay.Started):
            self.space_use.started(ident, event.service_space_id, event.day)
        elif isinstance(event, FriendlyMark.Applied):
            self.friendly_marks.add(position, ident, street_id=event.street_id,
                                    area_id=event.area_id, status=FriendlyMarkStatus.APPLIED.value)
        elif isinstance(event, FriendlyMark.Reapplied):
            self.friendly_marks.update(ident, status=FriendlyMarkStatus.APPLIED.value)
        elif isinstance(event, FriendlyMark.Awarded):
            self.friendly_marks.update(ident, status=FriendlyMarkStatus.AWARDED.value)
        elif isinstance(event, FriendlyMark.Withdrawn):
            self.friendly_marks.update(ident, status=FriendlyMarkStatus.WITHDRAWN.value)
        elif isinstance(event, MerchantStanding.Noted):
            self.merchants.add(position, ident, merchant_id=event.merchant_id,
                               street_id=event.street_id, name=event.name, status="APPLIED",
                               business_area_id=event.business_area_id, upstream_position=0)
        elif isinstance(event, MerchantStanding.StatusNoted):
            self.merchants.update(ident, status=event.status, upstream_position=event.position)
        elif isinstance(event, MerchantStanding.BusinessAreaNoted):
            self.merchants.update(ident, business_area_id=event.business_area_id)
        elif isinstance(event, CoBuildingSignature.Noted):
            with self._signatures_lock:
                self._signatures.setdefault(event.organisation_id, []).append(
                    {"version": event.version, "signed_at": event.signed_at,
                     "position": event.position})
        elif isinstance(event, Rider.Registered):
            self.riders.add(position, ident, home_street_id=event.home_street_id,
                            station_id=event.station_id, status=RiderStatus.REGISTERED.value,
                            verified=False)
        elif isinstance(event, Rider.Verified):
            row = self.riders.rows[self.riders.by_id[ident]].attrs
            status = status_after_verification(RiderStatus(row["status"]))
            self.riders.update(ident, verified=True, status=status.value)
        elif isinstance(event, Rider.Suspended):
            self.riders.update(ident, status=RiderStatus.SUSPENDED.value)
        elif isinstance(event, Rider.Reinstated):
            row = self.riders.rows[self.riders.by_id[ident]].attrs
            self.riders.update(ident, status=status_after_reinstatement(row["verified"]).value)
        elif isinstance(event, Rider.Left):
            self.riders.update(ident, status=RiderStatus.LEFT.value)
