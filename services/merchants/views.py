"""Read models of merchants, for the list queries: derived from the log, rebuilt at start."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from services.merchants.domain.model import (
    CareCampaign,
    Claim,
    Merchant,
    PerkOffer,
    RiderStanding,
)
from services.merchants.domain.values import (
    MerchantAmenity,
    MerchantStatus,
    PerkStatus,
    PlaceKind,
)
from services.merchants.nearby import Place, PlaceLayer
from shared.views import Index, LogFollower

if TYPE_CHECKING:
    from shared.application import QijiApplication


class _Merchants(Index):
    def page(self, *, street_id: str, status: MerchantStatus | None,
             amenities: list[MerchantAmenity], page_size: int, page_token: str
             ) -> tuple[list[str], str]:
        needed = frozenset(a.value for a in amenities)
        return self.select({"street_id": street_id, "status": status.value if status else ""},
                           page_size=page_size, page_token=page_token,
                           extra=lambda attrs, _id: needed <= set(attrs["amenities"]),
                           filters=[f"amenities={sorted(needed)}"])


class MerchantsViews:
    def __init__(self, app: QijiApplication):
        self.merchants = _Merchants()
        self.perks = Index()
        self.campaigns = Index()
        # One row per redemption, in the order they happened, with the quota after each.
        self.redemptions = Index()
        # Claims not yet redeemed, lapsed or reversed: what the lapse job looks through.
        self.open_claims: dict[str, dict[str, Any]] = {}
        self._claim_riders: dict[str, str] = {}  # claim id -> rider id
        self._standing_riders: dict[str, str] = {}  # standing id -> rider id
        self._award_holders: dict[str, str] = {}  # award id -> rider id
        # The rider's map: approved merchants only (FindNearby); every merchant's place kept
        # beside it, so that an approval puts it on the map as it stands.
        self.merchant_places = PlaceLayer(PlaceKind.MERCHANT)
        self._places: dict[str, dict[str, Any]] = {}
        self.perks_by_merchant: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._follower = LogFollower(app, "merchants", self._apply)

    def catch_up(self) -> int:
        return self._follower.catch_up()

    def merchant_street(self, merchant_id: str) -> str:
        position = self.merchants.by_id.get(merchant_id)
        return self.merchants.rows[position].attrs["street_id"] if position else ""

    def award_holder(self, award_id: str) -> str | None:
        self.catch_up()
        return self._award_holders.get(award_id)

    def expired_claims(self, now: Any) -> dict[str, str]:
        """Open claims past their expiry: claim id -> perk id."""
        self.catch_up()
        with self._lock:
            return {cid: c["perk_id"] for cid, c in self.open_claims.items()
                    if c["expires_at"] <= now}

    def _place(self, ident: str, **changes: Any) -> None:
        """A merchant's place changed: on the map while it is approved, off it otherwise."""
        place = self._places.setdefault(ident, {})
        place.update(changes)
        if place["status"] is MerchantStatus.APPROVED:
            self.merchant_places.put(Place(
                PlaceKind.MERCHANT, ident, place["name"], place["address"], place["latitude"],
                place["longitude"], tuple(sorted(set(place["amenities"]))),
                tuple(sorted(place["opening_hours"], key=lambda h: h["weekday"]))))
        else:
            self.merchant_places.remove(ident)

    def _apply(self, position: int, event: Any) -> None:
        ident = str(event.originator_id)
        if isinstance(event, Merchant.Applied):
            self.merchants.add(position, ident, street_id=event.street_id,
                               status=MerchantStatus.APPLIED.value,
                               amenities=list(event.amenities))
            self._place(ident, status=MerchantStatus.APPLIED, name=event.name,
                        address=event.address, latitude=event.latitude,
                        longitude=event.longitude, amenities=list(event.amenities),
                        opening_hours=list(event.opening_hours))
        elif isinstance(event, Merchant.Approved | Merchant.Reinstated):
            self.merchants.update(ident, status=MerchantStatus.APPROVED.value)
            self._place(ident, status=MerchantStatus.APPROVED)
        elif isinstance(event, Merchant.Rejected):
            self.merchants.update(ident, status=MerchantStatus.REJECTED.value)
            self._place(ident, status=MerchantStatus.REJECTED)
        elif isinstance(event, Merchant.Suspended):
            self.merchants.update(ident, status=MerchantStatus.SUSPENDED.value)
            self._place(ident, status=MerchantStatus.SUSPENDED)
        elif isinstance(event, Merchant.AmenitiesUpdated):
            self.merchants.update(ident, amenities=list(event.amenities))
            self._place(ident, amenities=list(event.amenities))
        elif isinstance(event, Merchant.PlaceUpdated):
            self._place(ident, latitude=event.latitude, longitude=event.longitude,
                        address=event.address, opening_hours=list(event.opening_hours))
        elif isinstance(event, PerkOffer.Created):
            self.perks.add(position, ident, merchant_id=event.merchant_id,
                           status=PerkStatus.DRAFT.value)
            self.perks_by_merchant.setdefault(event.merchant_id, []).append(ident)
        elif isinstance(event, PerkOffer.Published):
            self.perks.update(ident, status=PerkStatus.PUBLISHED.value)
        elif isinstance(event, PerkOffer.Paused):
            self.perks.update(ident, status=PerkStatus.PAUSED.value)
        elif isinstance(event, PerkOffer.Withdrawn):
            self.perks.update(ident, status=PerkStatus.WITHDRAWN.value)
        elif isinstance(event, PerkOffer.CodeIssued):
            self._claim_riders[event.claim_id] = event.rider_id
        elif isinstance(event, PerkOffer.CodeRedeemed):
            merchant_id = self.perks.rows[self.perks.by_id[ident]].attrs["merchant_id"]
            self.redemptions.add(position, event.claim_id, perk_id=ident,
                                 merchant_id=merchant_id,
                                 rider_id=self._claim_riders.get(event.claim_id, ""),
                                 redeemed_at=event.at, remaining_after=event.remaining_after,
                                 reversed=False)
        elif isinstance(event, PerkOffer.QuotaReturned) and event.why == "REVERSED":
            self.redemptions.update(event.claim_id, reversed=True, reversed_at=event.at,
                                    remaining_after_reversal=event.remaining_after)
        elif isinstance(event, Claim.Issued):
            with self._lock:
                self.open_claims[ident] = {"perk_id": event.perk_id,
                                           "expires_at": event.expires_at}
        elif isinstance(event, Claim.Redeemed | Claim.Lapsed):
            with self._lock:
                self.open_claims.pop(ident, None)
        elif isinstance(event, RiderStanding.Noted):
            self._standing_riders[ident] = event.rider_id
        elif isinstance(event, RiderStanding.BadgeNoted):
            self._award_holders[event.award_id] = self._standing_riders[ident]
        elif isinstance(event, CareCampaign.Launched):
            self.campaigns.add(position, ident, street_id=event.street_id)
