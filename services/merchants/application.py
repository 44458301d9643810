"""The merchants service layer: merchants, perk offers, claims and redemptions, care packages,
and the policies that follow identity's and badges' feeds."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import ProcessingEvent

from services.badges import events as badge_events
from services.identity import events as identity_events
from services.merchants.badge_classes import BadgeClassDirectory
from services.merchants.domain.model import (
    CareCampaign,
    CareEligibilityRules,
    Claim,
    Merchant,
    PerkOffer,
    RiderFacts,
    RiderStanding,
)
from services.merchants.domain.values import (
    ALLOCATIONS_LOOKED_AT,
    ALLOCATIONS_SHOWN,
    ALLOCATIONS_SHOWN_LOOKED_AT,
    BUSINESS_AREA_OF_ANOTHER_STREET,
    MAX_AMOUNT_OFF_FEN,
    MAX_CARE_ITEMS,
    MAX_CARE_RULES,
    MAX_CARE_STOCK,
    MAX_CATEGORY,
    MAX_CODE_TTL_MINUTES,
    MAX_DESCRIPTION,
    MAX_HANDED_OVER_BY,
    MAX_ITEM_NAME,
    MAX_ITEM_QUANTITY,
    MAX_NEARBY_RADIUS_METRES,
    MAX_NEW_RIDER_DAYS,
    MAX_PERCENT_OFF,
    MAX_QUOTA,
    MAX_RULE_NAME,
    MAX_TEXT,
    CareRuleKind,
    ClaimStatus,
    Eligibility,
    LimitPeriod,
    MerchantAmenity,
    MerchantStatus,
    PerkKind,
    PerkStatus,
    PlaceAmenity,
    PlaceKind,
)
from services.merchants.events import CODE_LENGTH, CROCKFORD, SEES_CODES, CodeMinter
from services.merchants.nearby import Place, ServiceSpaceMap
from services.merchants.views import MerchantsViews
from shared import context, masking
from shared.application import CommandResult, Outcome, QijiApplication
from shared.config import Settings
from shared.errors import (
    DUPLICATE_VALUE,
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    TIME_IN_THE_PAST,
    VALUE_OUT_OF_RANGE,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    QijiError,
    Unavailable,
    Violations,
    check_id,
    check_reason,
    check_text,
    is_uuid,
    require_ids,
)
from shared.followers import FeedSource, Follower, UpstreamEvent, follower_of
from shared.paging import check_page, listed, page
from shared.references import Reference, note_reference
from shared.tenancy import Owners
from shared.values import (
    CoordinateSystem,
    GeoPoint,
    check_opening_hours,
    is_open_at,
    sorted_hours,
    wgs84_location,
)
from shared.wire import one_of, wire_name


@dataclass(frozen=True)
class MerchantView:
    merchant_id: str
    name: str
    street_id: str
    category: str
    latitude: float
    longitude: float
    address: str
    amenities: list[MerchantAmenity]
    status: MerchantStatus
    status_reason: str
    version: int
    opening_hours: list[dict[str, Any]]
    business_area_id: str = ""


@dataclass(frozen=True)
class NearbyView:
    """A place on the rider's map, at its distance from the point asked about."""

    place: Place
    distance_metres: float
    open_now: bool
    # The perks the rider named may claim there now (merchants only, with a rider).
    claimable_perks: list[PerkView]


@dataclass(frozen=True)
class PerkView:
    perk_id: str
    merchant_id: str
    title: str
    kind: PerkKind
    percent_off: int
    amount_off_fen: int
    free_item: str
    eligibility: Eligibility
    badge_class_id: str
    total_quota: int
    per_rider_limit: int
    limit_period: LimitPeriod
    valid_from: datetime
    valid_until: datetime
    code_ttl_minutes: int
    status: PerkStatus
    remaining: int
    outstanding: int
    redeemed: int
    version: int


@dataclass(frozen=True)
class ClaimView:
    claim_id: str
    perk_id: str
    merchant_id: str
    rider_id: str
    code: str
    status: ClaimStatus
    claimed_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    reversed_at: datetime | None
    reverse_reason: str
    version: int


@dataclass(frozen=True)
class CampaignView:
    campaign_id: str
    street_id: str
    name: str
    description: str
    stock: int
    # The first ALLOCATIONS_SHOWN packages the caller may see (its own riders'; all of them
    # for the street office running the campaign), in allocation order, and the page token of
    # the rest (campaign_allocations) when there are more; `allocated` counts every package,
    # seen or not.
    allocations: dict[str, dict[str, Any]]
    allocations_next_page_token: str
    allocated: int
    handed_over: int
    version: int
    contents: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    rules_version: int
    donations: list[dict[str, Any]]
    remaining: int
    # The package a command allocated or handed over (campaign(rider_id=...)), as it stood at
    # the campaign's version; None for a read.
    allocation: dict[str, Any] | None = None


@dataclass(frozen=True)
class CareRuleInput:
    """One rule as a SetCareEligibilityRules request gives it (kind None: not given)."""

    name: str
    kind: CareRuleKind | None
    days: int = 0
    badge_class_id: str = ""


@dataclass(frozen=True)
class CareItem:
    item: str
    quantity: int


@dataclass(frozen=True)
class CareRulesView:
    rules: list[dict[str, Any]]
    version: int
    updated_at: datetime | None


class MerchantsApplication(QijiApplication):
    name = "merchants"
    # A perk's or a care campaign's first read after a restart starts from its newest
    # snapshot.
    snapshot_kinds = (PerkOffer, CareCampaign)
    _space_map: ServiceSpaceMap | None = None

    def __init__(self, settings: Settings, master_key: bytes,
                 clock: Callable[[], datetime] | None = None, *,
                 feeds: FeedSource | None = None):
        super().__init__(settings, master_key)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.codes = CodeMinter(master_key)
        self.views = MerchantsViews(self)
        self.views.catch_up()
        # The follower of identity's feed, which a request naming a rider or an organisation
        # not known here yet catches up through (the directory and the map of service spaces
        # read the same feed).
        self.identity_follower: Follower | None = follower_of(
            self, feeds, "identity", self.follow_identity, self.IDENTITY_TOPICS)
        # badges' classes, read from badges' feed on a channel of their own (a perk naming a
        # class that does not exist is refused).
        self.badge_classes: BadgeClassDirectory | None = (
            BadgeClassDirectory(feeds("badges")) if feeds is not None else None)

    # ------------------------------------------------------------------ merchants

    def apply_merchant(self, *, merchant_id: str, name: str, street_id: str, category: str,
                       latitude: float, longitude: float, address: str,
                       amenities: list[MerchantAmenity | None],
                       coordinate_system: CoordinateSystem | None = CoordinateSystem.WGS84,
                       opening_hours: list[dict[str, Any]] | None = None,
                       business_area_id: str = "",
                       violations: Violations | None = None) -> CommandResult:
        """`violations`, here and in every command and list that takes them: what the entry
        point already found wrong in the request (an enum number the contract does not define,
        a timestamp it could not read), reported with the rest in one answer.
        `business_area_id`: the business area (商圈) of `street_id` the merchant is in, or ""
        for none."""
        # Everything wrong with the request, references included, in one answer.
        violations = violations if violations is not None else Violations()
        check_text(violations, "name", name, MAX_TEXT)
        check_text(violations, "category", category, MAX_CATEGORY)
        hours = list(opening_hours or [])
        place = wgs84_location(violations, "location",
                               GeoPoint(latitude, longitude, coordinate_system))
        check_text(violations, "location.address", address, MAX_TEXT, required=False)
        check_opening_hours(violations, hours)
        _check_amenities(violations, amenities)
        merchant_ref = self._note_reference(violations, merchant_id, "merchant_id", "merchant")
        street_ref = self._note_reference(violations, street_id, "street_id", "street")
        if merchant_ref and street_ref and merchant_ref.parent_id \
                and merchant_ref.parent_id != street_id:
            # identity placed the merchant under another street: that street's office decides.
            violations.add("street_id", "is not the street identity registered the merchant in",
                           "MERCHANT_OF_ANOTHER_STREET")
        if business_area_id:
            self._check_business_area(violations, business_area_id,
                                      street_id if street_ref else "")
        violations.raise_if_any()
        assert place is not None

        def decide() -> Outcome:
            if self.exists(uuid.UUID(merchant_id)):
                raise AlreadyExists("the merchant has already applied",
                                    reason="MERCHANT_ALREADY_APPLIED")
            merchant = Merchant(merchant_id=merchant_id, name=name.strip(), street_id=street_id,
                                category=category.strip(), latitude=place["latitude"],
                                longitude=place["longitude"], address=address.strip(),
                                amenities=[a.value for a in amenities if a],
                                opening_hours=sorted_hours(hours),
                                business_area_id=business_area_id)
            return Outcome([merchant], {"merchant_id": merchant_id, "version": merchant.version})
        return self.execute(decide, id_key="merchant_id")

    def approve_merchant(self, *, merchant_id: str) -> CommandResult:
        return self._street_office_decides(merchant_id, Merchant.approve)

    def reject_merchant(self, *, merchant_id: str, reason: str
                        ) -> CommandResult:
        violations = Violations()
        check_reason(violations, reason)
        return self._street_office_decides(merchant_id, lambda m: m.reject(reason.strip()),
                                           violations)

    def suspend_merchant(self, *, merchant_id: str, reason: str
                         ) -> CommandResult:
        violations = Violations()
        check_reason(violations, reason)
        return self._street_office_decides(merchant_id, lambda m: m.suspend(reason.strip()),
                                           violations)

    def reinstate_merchant(self, *, merchant_id: str, reason: str
                           ) -> CommandResult:
        violations = Violations()
        check_reason(violations, reason)
        return self._street_office_decides(merchant_id, lambda m: m.reinstate(reason.strip()),
                                           violations)

    def update_merchant_amenities(self, *, merchant_id: str,
                                  amenities: list[MerchantAmenity | None],
                                  violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        check_id(violations, "merchant_id", merchant_id)
        _check_amenities(violations, amenities)
        violations.raise_if_any()

        def decide() -> Outcome:
            merchant = self.get(merchant_id, Merchant, "merchant")
            merchant.update_amenities(amenities=[a.value for a in amenities if a])
            return Outcome([merchant], {"merchant_id": merchant_id, "version": merchant.version})
        return self.execute(decide, id_key="merchant_id")

    def update_merchant_place(self, *, merchant_id: str, location: GeoPoint | None,
                              address: str, opening_hours: list[dict[str, Any]],
                              business_area_id: str = "",
                              violations: Violations | None = None) -> CommandResult:
        """Moves the merchant (`location` None: not given, refused) and replaces its week;
        `business_area_id`, when given, names the business area of its street it is now in
        (empty keeps the one it named: a caller that knows nothing of areas moves nobody out
        of one)."""
        violations = violations if violations is not None else Violations()
        check_id(violations, "merchant_id", merchant_id)
        place = None
        if location is None:
            violations.add("location", "must be set: where the merchant is", FIELD_REQUIRED)
        else:
            place = wgs84_location(violations, "location", location)
        check_text(violations, "location.address", address, MAX_TEXT, required=False)
        check_opening_hours(violations, opening_hours)
        # Its kind and existence with the request's other faults; its street once the
        # merchant is read.
        area = (self._note_reference(violations, business_area_id, "business_area_id",
                                     "business_area") if business_area_id else None)
        violations.raise_if_any()
        assert place is not None

        def decide() -> Outcome:
            merchant = self.get(merchant_id, Merchant, "merchant")
            if area is not None and area.parent_id != merchant.street_id:
                found = Violations()
                found.add("business_area_id", "is a business area of another street than the "
                          "merchant's", BUSINESS_AREA_OF_ANOTHER_STREET)
                found.raise_if_any()
            merchant.update_place(latitude=place["latitude"], longitude=place["longitude"],
                                  address=address.strip(),
                                  opening_hours=sorted_hours(opening_hours))
            if business_area_id:
                merchant.move_to_business_area(business_area_id)
            return Outcome([merchant], {"merchant_id": merchant_id, "version": merchant.version})
        return self.execute(decide, id_key="merchant_id")

    def _street_office_decides(self, merchant_id: str, change: Callable[[Merchant], None],
                               violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        check_id(violations, "merchant_id", merchant_id)
        violations.raise_if_any()

        def decide() -> Outcome:
            merchant = self.get(merchant_id, Merchant, "merchant")
            change(merchant)
            return Outcome([merchant], {"merchant_id": merchant_id, "version": merchant.version})
        return self.execute(decide, id_key="merchant_id")

    def merchant(self, merchant_id: str, version: int | None = None) -> MerchantView:
        m = self.view(merchant_id, Merchant, "merchant", version)  # only rendered
        return MerchantView(
            merchant_id=str(m.id), name=m.name, street_id=m.street_id, category=m.category,
            latitude=m.latitude, longitude=m.longitude, address=m.address,
            amenities=[MerchantAmenity(a) for a in m.amenities], status=m.status,
            status_reason=masking.show_to_caller(masking.FREE_TEXT, m.status_reason),
            version=m.version, opening_hours=list(m.opening_hours),
            business_area_id=m.business_area_id)

    def list_merchants(self, *, street_id: str, status: MerchantStatus | None,
                       amenities: list[MerchantAmenity], page_size: int, page_token: str,
                       violations: Violations | None = None) -> tuple[list[MerchantView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.merchants.page(
            street_id=street_id, status=status, amenities=amenities, page_size=page_size,
            page_token=page_token))
        return [self.merchant(i) for i in ids], token

    # ------------------------------------------------------------------ perk offers

    def create_perk_offer(self, *, merchant_id: str, title: str, kind: PerkKind | None,
                          percent_off: int, amount_off_fen: int, free_item: str,
                          eligibility: Eligibility | None, badge_class_id: str,
                          total_quota: int, per_rider_limit: int,
                          limit_period: LimitPeriod | None, valid_from: datetime | None,
                          valid_until: datetime | None, code_ttl_minutes: int,
                          violations: Violations | None = None) -> CommandResult:
        v = violations if violations is not None else Violations()
        check_text(v, "title", title, MAX_TEXT)
        v.require_given(kind, "kind", one_of(PerkKind),
                        ENUM_VALUE_REQUIRED)
        if kind is PerkKind.PERCENT_DISCOUNT:
            v.require(1 <= percent_off <= MAX_PERCENT_OFF, "percent_off",
                      f"must be 1 to {MAX_PERCENT_OFF} for "
                      f"{wire_name(PerkKind.PERCENT_DISCOUNT)}",
                      "PERCENT_OFF_INVALID")
        if kind is PerkKind.FIXED_DISCOUNT:
            v.require(1 <= amount_off_fen <= MAX_AMOUNT_OFF_FEN, "amount_off_fen",
                      f"must be 1 to {MAX_AMOUNT_OFF_FEN:,} fen for "
                      f"{wire_name(PerkKind.FIXED_DISCOUNT)}",
                      "AMOUNT_OFF_INVALID")
        if kind is PerkKind.FREE_ITEM:
            check_text(v, "free_item", free_item, MAX_TEXT)
        v.require_given(eligibility, "eligibility",
                        one_of(Eligibility), ENUM_VALUE_REQUIRED)
        if eligibility is Eligibility.BADGE_HOLDERS:
            if not badge_class_id:
                v.add("badge_class_id", "must name a badge class for an "
                      f"{wire_name(Eligibility.BADGE_HOLDERS)} perk", "BADGE_CLASS_REQUIRED")
            else:
                check_id(v, "badge_class_id", badge_class_id)
        v.require(1 <= total_quota <= MAX_QUOTA, "total_quota", f"must be 1 to {MAX_QUOTA}",
                  "QUOTA_INVALID")
        v.require(per_rider_limit >= 1, "per_rider_limit", "must be at least 1",
                  "PER_RIDER_LIMIT_INVALID")
        v.require_given(limit_period, "limit_period",
                        one_of(LimitPeriod), ENUM_VALUE_REQUIRED)
        for name, value in (("valid_from_time", valid_from), ("valid_until_time", valid_until)):
            v.require_given(value, name, "must be set", FIELD_REQUIRED)
        if valid_from and valid_until:
            v.require(valid_until > valid_from, "valid_until_time",
                      "must be after valid_from_time", "VALID_UNTIL_BEFORE_VALID_FROM")
            v.require(valid_until > self.clock(), "valid_until_time", "must be in the future",
                      TIME_IN_THE_PAST)
        v.require(1 <= code_ttl_minutes <= MAX_CODE_TTL_MINUTES, "code_ttl_minutes",
                  f"must be 1 to {MAX_CODE_TTL_MINUTES}", "CODE_TTL_INVALID")
        if eligibility is Eligibility.BADGE_HOLDERS and is_uuid(badge_class_id) \
                and not self.badge_class_exists(badge_class_id):
            # A perk for holders of a class badges never created could never be claimed.
            v.missing("badge_class_id", "badge class", badge_class_id)
        # The merchant last: one that never applied is listed with the rest (alone, NOT_FOUND).
        if check_id(v, "merchant_id", merchant_id) \
                and not self.exists(uuid.UUID(merchant_id)):
            v.missing("merchant_id", "merchant", merchant_id)
        v.raise_if_any()
        assert kind and eligibility and limit_period and valid_from and valid_until

        def decide() -> Outcome:
            merchant = self.get(merchant_id, Merchant, "merchant", field="merchant_id")
            merchant.require_approved()
            offer = PerkOffer(
                merchant_id=merchant_id, title=title.strip(), kind=kind.value,
                percent_off=percent_off if kind is PerkKind.PERCENT_DISCOUNT else 0,
                amount_off_fen=amount_off_fen if kind is PerkKind.FIXED_DISCOUNT else 0,
                free_item=free_item.strip() if kind is PerkKind.FREE_ITEM else "",
                eligibility=eligibility.value,
                badge_class_id=badge_class_id if eligibility is Eligibility.BADGE_HOLDERS else "",
                total_quota=total_quota, per_rider_limit=per_rider_limit,
                limit_period=limit_period.value, valid_from=valid_from,
                valid_until=valid_until, code_ttl_minutes=code_ttl_minutes)
            return Outcome([offer], {"perk_id": str(offer.id), "version": offer.version})
        return self.execute(decide, id_key="perk_id")

    def publish_perk_offer(self, *, perk_id: str) -> CommandResult:
        def change(offer: PerkOffer) -> None:
            self.get(offer.merchant_id, Merchant, "merchant").require_approved()
            offer.publish()
        return self._merchant_changes_offer(perk_id, change)

    def pause_perk_offer(self, *, perk_id: str) -> CommandResult:
        return self._merchant_changes_offer(perk_id, PerkOffer.pause)

    def withdraw_perk_offer(self, *, perk_id: str) -> CommandResult:
        return self._merchant_changes_offer(perk_id, PerkOffer.withdraw)

    def _merchant_changes_offer(self, perk_id: str, change: Callable[[PerkOffer], None]
                                ) -> CommandResult:
        def decide() -> Outcome:
            offer = self.get(perk_id, PerkOffer, "perk")
            change(offer)
            return Outcome([offer], {"perk_id": perk_id, "version": offer.version})
        return self.execute(decide, id_key="perk_id", serialise_on=perk_id)

    def perk(self, perk_id: str, version: int | None = None) -> PerkView:
        o = self.view(perk_id, PerkOffer, "perk", version)  # only rendered
        return PerkView(
            perk_id=str(o.id), merchant_id=o.merchant_id, title=o.title, kind=PerkKind(o.kind),
            percent_off=o.percent_off, amount_off_fen=o.amount_off_fen, free_item=o.free_item,
            eligibility=o.eligibility, badge_class_id=o.badge_class_id,
            total_quota=o.total_quota, per_rider_limit=o.per_rider_limit,
            limit_period=o.limit_period, valid_from=o.valid_from, valid_until=o.valid_until,
            code_ttl_minutes=o.code_ttl_minutes, status=o.status, remaining=o.remaining,
            outstanding=len(o.ledger.outstanding), redeemed=len(o.ledger.redeemed),
            version=o.version)

    def list_perk_offers(self, *, merchant_id: str, status: PerkStatus | None, page_size: int,
                         page_token: str, violations: Violations | None = None
                         ) -> tuple[list[PerkView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.perks.select(
            {"merchant_id": merchant_id, "status": status.value if status else ""},
            page_size=page_size, page_token=page_token))
        return [self.perk(i) for i in ids], token

    def perks_for_rider(self, *, rider_id: str, street_id: str, page_size: int,
                        page_token: str) -> tuple[list[PerkView], str]:
        """Perks the rider could claim right now: published, valid, quota and limit left,
        eligible, at an approved merchant."""
        require_ids(rider_id=rider_id)
        standing = self._standing(rider_id)
        now = self.clock()
        self.views.catch_up()

        def claimable(attrs: dict[str, Any], perk_id: str) -> bool:
            if street_id and self.views.merchant_street(attrs["merchant_id"]) != street_id:
                return False
            return self._claimable(perk_id, standing, now)

        ids, token = self.views.perks.select(
            {"status": PerkStatus.PUBLISHED.value}, extra=lambda attrs, perk_id: claimable(
                attrs, perk_id), page_size=page_size, page_token=page_token,
            filters=[f"rider={rider_id}", f"street={street_id}"])
        return [self.perk(i) for i in ids], token

    def _claimable(self, perk_id: str, standing: RiderStanding, now: datetime) -> bool:
        """The rule of "this rider may claim this perk now", without claiming: what ClaimPerk
        would refuse (the merchant not approved, the rider not active, and every rule of
        PerkOffer.check_claimable) makes it not claimable. One rule for every list that
        shows a rider their perks (ListPerksForRider, FindNearby)."""
        offer = self.view(perk_id, PerkOffer, "perk")
        if offer.status is not PerkStatus.PUBLISHED or not standing.is_active:
            return False
        merchant = self.view(offer.merchant_id, Merchant, "merchant")
        if merchant.status is not MerchantStatus.APPROVED:
            return False
        try:
            offer.check_claimable(standing.rider_id, now,
                                  standing.holds_badge(offer.badge_class_id))
        except QijiError:  # any refusal means "not open to this rider"
            return False
        return True

    # ------------------------------------------------------------------ the rider's map

    @property
    def space_map(self) -> ServiceSpaceMap | None:
        """identity's service spaces, read from the same feed as the follower of identity
        (unless wired to another)."""
        if getattr(self, "_space_map", None) is None:
            follower = getattr(self, "identity_follower", None)
            if follower is not None:
                self._space_map = ServiceSpaceMap(follower.feed)
        return getattr(self, "_space_map", None)

    @space_map.setter
    def space_map(self, space_map: ServiceSpaceMap | None) -> None:
        self._space_map = space_map

    def find_nearby(self, *, location: GeoPoint | None, radius_metres: float,
                    amenities: list[PlaceAmenity | None], open_now: bool,
                    kinds: list[PlaceKind | None], rider_id: str, page_size: int,
                    page_token: str, violations: Violations | None = None
                    ) -> tuple[list[NearbyView], str]:
        """Service spaces and approved merchants within `radius_metres` of `location`,
        nearest first (ties by kind, then id), paged; with `rider_id`, each merchant with the
        perks that rider may claim there now (`_claimable`, the rule ClaimPerk applies)."""
        violations = violations if violations is not None else Violations()
        centre = None
        if location is None:
            violations.add("location", "must be set: where to look from", FIELD_REQUIRED)
        else:
            centre = wgs84_location(violations, "location", location)
        if not 0 < radius_metres <= MAX_NEARBY_RADIUS_METRES:  # NaN fails too
            violations.add("radius_metres",
                           f"must be more than 0 and at most {MAX_NEARBY_RADIUS_METRES:.0f} "
                           "metres", VALUE_OUT_OF_RANGE)
        for i, amenity in enumerate(amenities):
            violations.require_given(amenity, f"amenities[{i}]", one_of(PlaceAmenity),
                                     ENUM_VALUE_REQUIRED)
        for i, kind in enumerate(kinds):
            violations.require_given(kind, f"kinds[{i}]", one_of(PlaceKind),
                                     ENUM_VALUE_REQUIRED)
        filters = [location, radius_metres, sorted(a.value for a in amenities if a), open_now,
                   sorted(k.value for k in kinds if k), rider_id]
        # A bad page_size or page_token is said with the rest.
        violations.collect(lambda: check_page(page_size, page_token, filters))
        if rider_id:
            # The rider last, once nothing else is wrong (require_riders).
            self._require_rider(violations, rider_id)
        violations.raise_if_any()
        assert centre is not None
        standing = self._standing(rider_id, catch_up=False) if rider_id else None
        now = self.clock()
        wanted_kinds = {k for k in kinds if k} or set(PlaceKind)
        needed = {a.value for a in amenities if a}
        layers = []
        if PlaceKind.SERVICE_SPACE in wanted_kinds and self.space_map is not None:
            self.space_map.catch_up()
            layers.append(self.space_map.layer)
        if PlaceKind.MERCHANT in wanted_kinds:
            self.views.catch_up()
            layers.append(self.views.merchant_places)
        found: list[tuple[float, str, str, Place]] = []
        for layer in layers:
            for distance, place in layer.within(centre["latitude"], centre["longitude"],
                                                radius_metres):
                if needed <= set(place.amenities) and (
                        not open_now or is_open_at(place.opening_hours, now)):
                    found.append((distance, place.kind.value, place.ident, place))
        found.sort(key=lambda f: f[:3])

        def row(rank: int) -> NearbyView:
            distance, _, _, place = found[rank - 1]
            perks: list[PerkView] = []
            if standing is not None and place.kind is PlaceKind.MERCHANT:
                perks = [self.perk(p) for p in self.views.perks_by_merchant.get(place.ident, ())
                         if self._claimable(p, standing, now)]
            return NearbyView(place, distance, is_open_at(place.opening_hours, now), perks)
        # Ranks from 1: a page token holds the last rank given.
        return page(range(1, len(found) + 1), row, page_size=page_size, page_token=page_token,
                    filters=filters)

    # ------------------------------------------------------------------ claims

    def claim_perk(self, *, perk_id: str, rider_id: str
                   ) -> CommandResult:
        violations = Violations()
        if check_id(violations, "perk_id", perk_id) and not self.exists(uuid.UUID(perk_id)):
            violations.missing("perk_id", "perk", perk_id)
        # The rider last, as everywhere (require_riders); caught up with identity if it is new
        # here, or may have been verified a moment ago.
        self._require_rider(violations, rider_id)

        def decide() -> Outcome:
            now = self.clock()
            offer = self.get(perk_id, PerkOffer, "perk")
            # Only read (never in the outcome): the cached merchant, not a copy of it.
            merchant = self.view(offer.merchant_id, Merchant, "merchant")
            standing = self._standing(rider_id, catch_up=False)
            merchant.require_approved()
            standing.require_active()
            touched: list[Any] = [offer, standing]
            # Codes past their expiry give their quota back now, in this same save, rather
            # than whenever the lapse job next runs: the next rider in line is not refused.
            touched += self._lapse_expired(offer, now, touched)
            offer.check_claimable(rider_id, now, standing.holds_badge(offer.badge_class_id))
            nonce = self.codes.new_nonce()
            digest = self.codes.digest(self.codes.code(nonce))
            claim_id = Claim.create_id(digest)
            expires_at = offer.issue(str(claim_id), rider_id, now)
            claim = Claim(code_digest=digest, code_nonce=nonce, perk_id=perk_id,
                          merchant_id=offer.merchant_id, rider_id=rider_id, claimed_at=now,
                          expires_at=expires_at)
            standing.claim_opened(str(claim.id))
            return Outcome([*touched, claim], {"claim_id": str(claim.id),
                                               "version": claim.version,
                                               "remaining": offer.remaining})
        # A perk is a hot spot when it opens: claims queue on it here, and replicas settle
        # collisions on the offer's version.
        return self.execute(decide, id_key="claim_id", serialise_on=perk_id)

    def redeem_code(self, *, merchant_id: str, code: str
                    ) -> CommandResult:
        canonical = self.codes.normalise(code)
        violations = Violations()
        check_id(violations, "merchant_id", merchant_id)
        if not canonical:
            violations.add("code", "must not be empty", FIELD_REQUIRED)
        else:
            violations.require(len(canonical) == CODE_LENGTH and all(
                c in CROCKFORD for c in canonical), "code",
                f"a code has {CODE_LENGTH} characters of Crockford's base32 (dashes and "
                "spaces aside)", "CODE_MALFORMED")
        violations.raise_if_any()
        claim_id = Claim.create_id(self.codes.digest(canonical))
        # Another merchant's code is, at this counter, no code at all: saying it belongs to
        # someone else would confirm that it is valid.
        # Read, not changed: the cached claim, not two copies of it.
        if not self.exists(claim_id) or (
                found := self.view(claim_id, Claim, "code")).merchant_id != merchant_id:
            raise NotFound("code", "(as given)")
        perk_id = found.perk_id

        def decide() -> Outcome:
            now = self.clock()
            claim = self.get(claim_id, Claim, "code")
            offer = self.get(perk_id, PerkOffer, "perk")
            standing = self._standing(claim.rider_id, catch_up=False)
            # A merchant the street office suspended honours no code until it is reinstated;
            # the code keeps its place (it may still be redeemed then, or lapse).
            self.view(merchant_id, Merchant, "merchant").require_approved()
            claim.redeem(merchant_id, now)
            offer.note_redeemed(str(claim_id), now)
            standing.claim_closed(str(claim_id))
            return Outcome([claim, offer, standing], {
                "claim_id": str(claim_id), "version": claim.version, "perk_id": perk_id,
                "perk_version": offer.version})
        return self.execute(decide, id_key="claim_id", serialise_on=perk_id)

    def reverse_redemption(self, *, claim_id: str, reason: str
                           ) -> CommandResult:
        violations = Violations()
        check_id(violations, "claim_id", claim_id)
        check_reason(violations, reason)
        violations.raise_if_any()
        perk_id = self.get(claim_id, Claim, "claim").perk_id

        def decide() -> Outcome:
            now = self.clock()
            claim = self.get(claim_id, Claim, "claim")
            offer = self.get(perk_id, PerkOffer, "perk")
            claim.reverse(reason.strip(), now)
            offer.note_returned(claim_id, "REVERSED", now)
            return Outcome([claim, offer], {"claim_id": claim_id, "version": claim.version,
                                            "remaining": offer.remaining})
        return self.execute(decide, id_key="claim_id", serialise_on=perk_id)

    def lapse_expired(self, perk_id: str) -> int:
        """Lapses the perk's codes that expired unredeemed (the lapse job calls this)."""
        def decide() -> Outcome:
            offer = self.get(perk_id, PerkOffer, "perk")
            touched: list[Any] = [offer]
            changed = self._lapse_expired(offer, self.clock(), touched)
            lapsed = sum(1 for c in changed if isinstance(c, Claim))
            return Outcome([*touched, *changed] if changed else [], {"lapsed": lapsed})
        return int(self.execute(decide, serialise_on=perk_id)["lapsed"] or 0)

    def _lapse_expired(self, offer: PerkOffer, now: datetime, touched: list[Any]) -> list[Any]:
        changed: list[Any] = []
        standings: dict[str, RiderStanding] = {
            str(t.rider_id): t for t in touched if isinstance(t, RiderStanding)}
        for claim_id in offer.expired_outstanding(now):
            claim = self.get(claim_id, Claim, "claim")
            claim.lapse(now)
            offer.note_returned(claim_id, "LAPSED", now)
            standing = standings.get(claim.rider_id)
            if standing is None:
                standing = standings[claim.rider_id] = self._standing(claim.rider_id,
                                                                      catch_up=False)
                changed.append(standing)
            standing.claim_closed(claim_id)
            changed.append(claim)
        return changed

    def claim(self, claim_id: str, version: int | None = None) -> ClaimView:
        c = self.view(claim_id, Claim, "claim", version)  # only rendered
        actor = context.current().actor
        # The code is the rider's, a bearer secret: shown to their platform and to the
        # officials who hand codes out at a counter, never to a merchant (who must be shown it
        # by the rider) nor to an auditor.
        show_code = bool(actor.roles & SEES_CODES)
        return ClaimView(
            claim_id=str(c.id), perk_id=c.perk_id, merchant_id=c.merchant_id,
            rider_id=c.rider_id,
            code=self.codes.display(self.codes.code(c.code_nonce)) if show_code else "",
            status=c.status, claimed_at=c.claimed_at, expires_at=c.expires_at,
            redeemed_at=c.redeemed_at, reversed_at=c.reversed_at,
            reverse_reason=masking.show_to_caller(masking.FREE_TEXT, c.reverse_reason),
            version=c.version)

    def redemptions(self, *, merchant_id: str, perk_id: str, page_size: int, page_token: str
                    ) -> tuple[list[dict[str, Any]], str]:
        violations = Violations()
        violations.require(bool(merchant_id or perk_id), "merchant_id",
                           "name a merchant or a perk", "MERCHANT_OR_PERK_REQUIRED")
        # NOT_FOUND, not an empty list, for a merchant or perk there is none of.
        if merchant_id and check_id(violations, "merchant_id", merchant_id) \
                and self.found(merchant_id, Merchant) is None:
            violations.missing("merchant_id", "merchant", merchant_id)
        if perk_id and check_id(violations, "perk_id", perk_id) \
                and self.found(perk_id, PerkOffer) is None:
            violations.missing("perk_id", "perk", perk_id)
        violations.raise_if_any()
        self.views.catch_up()
        return self.views.redemptions.select(
            {"merchant_id": merchant_id, "perk_id": perk_id}, page_size=page_size,
            page_token=page_token, rows=True)

    # ------------------------------------------------------------------ care packages

    def set_care_eligibility_rules(self, *, rules: list[CareRuleInput],
                                   violations: Violations | None = None) -> CommandResult:
        """Replaces the city's whole set (a new version). Campaigns launched already keep the
        copies they took; a campaign launched later picks from the new set."""
        v = violations if violations is not None else Violations()
        # At least one: an empty request is a mistake, never "the city has no rules".
        if not rules:
            v.add("rules", f"must give 1 to {MAX_CARE_RULES} rules", FIELD_REQUIRED)
        v.require(len(rules) <= MAX_CARE_RULES, "rules", f"at most {MAX_CARE_RULES} rules",
                  VALUE_OUT_OF_RANGE)
        stored: list[dict[str, Any]] = []
        names: set[str] = set()
        for i, rule in enumerate(rules):
            at = f"rules[{i}]"
            name = rule.name.strip()
            check_text(v, f"{at}.name", rule.name, MAX_RULE_NAME)
            if name and name in names:
                v.add(f"{at}.name", "given twice: each rule's name is unique", DUPLICATE_VALUE)
            names.add(name)
            if not v.about(f"{at}.kind"):
                v.require_given(rule.kind, f"{at}.kind", one_of(CareRuleKind),
                                ENUM_VALUE_REQUIRED)
            if rule.kind is CareRuleKind.HARDSHIP:
                v.add(f"{at}.kind", f"{wire_name(CareRuleKind.HARDSHIP)} is kept for "
                      "governance's help requests, which do not reach merchants yet: no "
                      "rider's hardship could be known", "RULE_NOT_YET_FED")
            if rule.kind is CareRuleKind.NEW_RIDER:
                v.require(1 <= rule.days <= MAX_NEW_RIDER_DAYS, f"{at}.days",
                          f"must be 1 to {MAX_NEW_RIDER_DAYS} for "
                          f"{wire_name(CareRuleKind.NEW_RIDER)}", "DAYS_INVALID")
            if rule.kind is CareRuleKind.HOLDS_BADGE:
                self._check_badge_class(v, f"{at}.badge_class_id", rule.badge_class_id,
                                        f"for {wire_name(CareRuleKind.HOLDS_BADGE)}")
            if rule.kind is not None:
                stored.append({
                    "name": name, "kind": rule.kind.value,
                    "days": rule.days if rule.kind is CareRuleKind.NEW_RIDER else 0,
                    "badge_class_id": rule.badge_class_id
                    if rule.kind is CareRuleKind.HOLDS_BADGE else ""})
        v.raise_if_any()

        def decide() -> Outcome:
            current = self._care_rules()
            if current is None:
                current = CareEligibilityRules(rules=stored)
            else:
                current.change(rules=stored)
            return Outcome([current], {"version": current.version})
        # One set for the city: concurrent edits queue here instead of colliding.
        return self.execute(decide, serialise_on=CareEligibilityRules.ID)

    def care_eligibility_rules(self, version: int = 0) -> CareRulesView:
        """The set at `version` (the current one for 0); version 0 and no rules when the city
        never set any."""
        if version < 0:
            raise InvalidArgument([FieldViolation("version", "must not be negative",
                                                  VALUE_OUT_OF_RANGE)])
        current = self._care_rules(version or None)
        if current is None or (version and current.version != version):
            if version:
                raise NotFound("care_eligibility_rules_version", str(version))
            return CareRulesView([], 0, None)
        return CareRulesView([dict(r) for r in current.rules], current.version,
                             current.modified_on)

    def _care_rules(self, version: int | None = None) -> CareEligibilityRules | None:
        try:
            return self.get(CareEligibilityRules.ID, CareEligibilityRules,
                            "care_eligibility_rules", version)
        except NotFound:
            return None

    def create_care_campaign(self, *, street_id: str, name: str, description: str, stock: int,
                             contents: list[CareItem] | None = None,
                             eligibility_rules: list[str] | None = None,
                             violations: Violations | None = None) -> CommandResult:
        """`eligibility_rules`: names of rules of the city's current set, copied into the
        campaign with that set's version."""
        violations = violations if violations is not None else Violations()
        check_text(violations, "name", name, MAX_TEXT)
        check_text(violations, "description", description, MAX_DESCRIPTION,
                   required=False)
        # 0: every package is to come from sponsors' donations (RecordCareDonation).
        violations.require(0 <= stock <= MAX_CARE_STOCK, "stock", f"must be 0 to {MAX_CARE_STOCK}",
                           "STOCK_INVALID")
        items = _check_items(violations, "contents", contents or [])
        picked: list[dict[str, Any]] = []
        rule_names = list(eligibility_rules or [])
        current = self._care_rules() if rule_names else None
        for i, rule_name in enumerate(rule_names):
            field_name = f"eligibility_rules[{i}]"
            rule = current.named(rule_name) if current is not None else None
            if rule is None:
                violations.add(field_name, "names no rule of the city's current care-package "
                               "eligibility set", "CARE_RULE_UNKNOWN")
            elif rule in picked:
                violations.add(field_name, "given twice", DUPLICATE_VALUE)
            else:
                picked.append(rule)
        self._note_reference(violations, street_id, "street_id", "street")
        violations.raise_if_any()
        rules_version = current.version if current is not None and picked else 0

        def decide() -> Outcome:
            campaign = CareCampaign(street_id=street_id, name=name.strip(),
                                    description=description.strip(), stock=stock,
                                    contents=items, rules=picked, rules_version=rules_version)
            return Outcome([campaign], {"campaign_id": str(campaign.id),
                                        "version": campaign.version})
        return self.execute(decide, id_key="campaign_id")

    def record_care_donation(self, *, campaign_id: str, sponsor_id: str, packages: int,
                             items: list[CareItem], violations: Violations | None = None
                             ) -> CommandResult:
        """A sponsor's gift to a campaign: whole packages (they add to the stock) and/or
        items (recorded as given). The sponsor is any organisation identity knows (a
        merchant, a platform, a community...; enterprises and associations once identity
        registers them); it gains no access to the campaign by giving."""
        violations = violations if violations is not None else Violations()
        if check_id(violations, "campaign_id", campaign_id) \
                and self.found(campaign_id, CareCampaign) is None:
            violations.missing("campaign_id", "campaign", campaign_id)
        violations.require(0 <= packages <= MAX_CARE_STOCK, "packages",
                           f"must be 0 to {MAX_CARE_STOCK}", "PACKAGES_INVALID")
        given = _check_items(violations, "items", items)
        if not violations.about("packages") and not violations.about("items"):
            violations.require(packages > 0 or bool(given), "packages",
                               "a donation gives packages, items or both",
                               "DONATION_EMPTY")
        if check_id(violations, "sponsor_id", sponsor_id) and (
                self.directory is None or self.directory.organisation(sponsor_id) is None):
            violations.missing("sponsor_id", "organisation", sponsor_id)
        violations.raise_if_any()

        def decide() -> Outcome:
            campaign = self.get(campaign_id, CareCampaign, "campaign")
            campaign.record_donation(str(uuid.uuid4()), sponsor_id, packages, given,
                                     context.current().actor.principal, self.clock())
            return Outcome([campaign], {"campaign_id": campaign_id, "version": campaign.version})
        return self.execute(decide, id_key="campaign_id", serialise_on=campaign_id)

    def allocate_care_package(self, *, campaign_id: str, rider_id: str
                              ) -> CommandResult:
        violations = Violations()
        if check_id(violations, "campaign_id", campaign_id) \
                and self.found(campaign_id, CareCampaign) is None:
            violations.missing("campaign_id", "campaign", campaign_id)
        check_id(violations, "rider_id", rider_id)
        violations.raise_if_any()

        def decide() -> Outcome:
            campaign = self.get(campaign_id, CareCampaign, "campaign")
            # The street office is admitted on its campaign alone, and the rider may be
            # anyone's: what the campaign refuses (no packages left) is said before the rider
            # is looked up, so that no answer tells whether the rider exists without
            # allocating them a package (require_riders). Here, not before execute: a retry
            # must find its first answer.
            campaign.check_allocatable(rider_id)
            self._require_rider(Violations(), rider_id)
            standing = self._standing(rider_id, catch_up=False)
            if standing.left:
                raise FailedPrecondition("the rider has left the programme", reason="RIDER_LEFT")
            # The campaign's rules, each refusal naming its rule; checked in the same
            # serialised save as the stock, so a package goes only to a rider who qualified.
            now = self.clock()
            campaign.allocate(rider_id, now, self._rider_facts(standing))
            return Outcome([campaign], {"campaign_id": campaign_id, "version": campaign.version})
        return self.execute(decide, id_key="campaign_id", serialise_on=campaign_id)

    def campaigns_for_rider(self, *, rider_id: str, page_size: int, page_token: str
                            ) -> tuple[list[CampaignView], str]:
        """Campaigns that would give the rider a package now: a package left, none yet theirs,
        every rule met (the rules AllocateCarePackage applies)."""
        require_ids(rider_id=rider_id)
        standing = self._standing(rider_id)
        facts = self._rider_facts(standing) if not standing.left else None
        now = self.clock()
        self.views.catch_up()

        def open_to_rider(_: dict[str, Any], campaign_id: str) -> bool:
            campaign = self.view(campaign_id, CareCampaign, "campaign")
            return facts is not None and campaign.is_open_to(facts, now)

        ids, token = self.views.campaigns.select(
            {}, extra=open_to_rider, page_size=page_size, page_token=page_token,
            filters=[f"rider={rider_id}"])
        return [self.campaign(i) for i in ids], token

    def _rider_facts(self, standing: RiderStanding) -> RiderFacts:
        entry = self.directory.rider(standing.rider_id) if self.directory else None
        return RiderFacts(rider_id=standing.rider_id, active=standing.is_active,
                          home_street_id=entry.home_street_id if entry else "",
                          registered_at=entry.registered_at if entry else None,
                          badge_class_ids=frozenset(standing.awards.values()))

    def record_hand_over(self, *, campaign_id: str, rider_id: str, handed_over_by: str
                         ) -> CommandResult:
        violations = Violations()
        check_id(violations, "campaign_id", campaign_id)
        check_id(violations, "rider_id", rider_id)
        # Who handed it over.
        check_text(violations, "handed_over_by", handed_over_by, MAX_HANDED_OVER_BY)
        violations.raise_if_any()

        def decide() -> Outcome:
            campaign = self.get(campaign_id, CareCampaign, "campaign")
            campaign.hand_over(rider_id, handed_over_by.strip(),
                               context.current().actor.principal, self.clock())
            return Outcome([campaign], {"campaign_id": campaign_id, "version": campaign.version})
        return self.execute(decide, id_key="campaign_id", serialise_on=campaign_id)

    def campaign(self, campaign_id: str, version: int | None = None, *, rider_id: str = ""
                 ) -> CampaignView:
        """The campaign with its first packages (a command's answer too: the office's till
        allocates the 60,000th package without the other 59,999 rendered and sent back, which
        once made each answer cost O(stock) and, past about 50,000, larger than a gRPC
        client takes); with `rider_id`, that rider's package as well."""
        # Only read, to render it: the cached campaign, not a copy of every allocation.
        c = self.view(campaign_id, CareCampaign, "campaign", version)
        shown, token = self._allocations_page(c, ALLOCATIONS_SHOWN, "",
                                              ALLOCATIONS_SHOWN_LOOKED_AT)
        return CampaignView(campaign_id=str(c.id), street_id=c.street_id, name=c.name,
                            description=c.description, stock=c.stock,
                            allocations=dict(shown), allocations_next_page_token=token,
                            allocated=len(c.allocations), handed_over=c.handed_over,
                            version=c.version, contents=[dict(i) for i in c.contents],
                            rules=[dict(r) for r in c.rules], rules_version=c.rules_version,
                            donations=[dict(d) for d in c.donations], remaining=c.remaining,
                            allocation={"rider_id": rider_id,
                                        **self._shown_allocation(c, rider_id)}
                            if rider_id else None)

    def campaign_allocations(self, *, campaign_id: str, page_size: int, page_token: str
                             ) -> tuple[list[tuple[str, dict[str, Any]]], str]:
        """(rider id, package) the caller may see, in allocation order, a page at a time."""
        require_ids(campaign_id=campaign_id)
        c = self.view(campaign_id, CareCampaign, "campaign")
        return self._allocations_page(c, page_size, page_token, ALLOCATIONS_LOOKED_AT)

    def _allocations_page(self, c: CareCampaign, page_size: int, page_token: str,
                          looks_at: int) -> tuple[list[tuple[str, dict[str, Any]]], str]:
        whole_list = self.caller_owns("campaign", str(c.id))

        def shown(key: int) -> tuple[str, dict[str, Any]] | None:
            rider_id = c.allocated_at_order(key - 1)  # keys from 1: a token says "after key"
            if not (whole_list or self.sees_rider(rider_id)):
                return None
            return rider_id, self._shown_allocation(c, rider_id)
        return page(range(1, len(c.allocations) + 1), shown, page_size=page_size,
                    page_token=page_token, filters=["allocations", str(c.id)],
                    looks_at=looks_at)

    @staticmethod
    def _shown_allocation(c: CareCampaign, rider_id: str) -> dict[str, Any]:
        allocation = c.allocation(rider_id)
        allocation["handed_over_by"] = masking.show_to_caller(masking.NAME,
                                                              allocation["handed_over_by"])
        return allocation

    def list_campaigns(self, *, street_id: str, page_size: int, page_token: str
                       ) -> tuple[list[CampaignView], str]:
        self.views.catch_up()
        ids, token = self.views.campaigns.select({"street_id": street_id}, page_size=page_size,
                                                 page_token=page_token)
        return [self.campaign(i) for i in ids], token

    # ------------------------------------------------------------------ followers

    IDENTITY_TOPICS = (*identity_events.RIDER_STATUS_TOPICS, identity_events.ORGANISATION_CREATED)
    BADGES_TOPICS = badge_events.AWARD_TOPICS

    def follow_identity(self, upstream: UpstreamEvent, processing: ProcessingEvent) -> None:
        """Rider status decides who may claim; a suspended rider's open codes are frozen until
        reinstatement, and a rider who left loses them."""
        if upstream.topic == identity_events.ORGANISATION_CREATED:
            kind = {"STREET": "street", "MERCHANT": "merchant",
                    "BUSINESS_AREA": "business_area"}.get(upstream.state["kind"])
            if kind:
                processing.collect_events(Reference(upstream_id=str(upstream.originator_id),
                                                    kind=kind, name=upstream.state["name"],
                                                    parent_id=upstream.state["parent_id"]))
            return
        rider_id = str(upstream.originator_id)
        standing = self._standing_for_policy(rider_id)
        verified, suspended, left = identity_events.rider_flags_after(
            upstream.topic, standing.verified, standing.suspended, standing.left)
        if (verified, suspended, left) != (standing.verified, standing.suspended, standing.left):
            standing.note_status(verified=verified, suspended=suspended, left=left)
        touched: list[Any] = [standing]
        for claim_id in list(standing.open_claims):
            claim = self.get(claim_id, Claim, "claim")
            if suspended or left:
                claim.freeze()
            else:
                claim.unfreeze()
            touched.append(claim)
        processing.collect_events(*touched)

    def follow_badges(self, upstream: UpstreamEvent, processing: ProcessingEvent) -> None:
        """Badges held decide which badge-only perks a rider may claim."""
        award_id = str(upstream.originator_id)
        if upstream.topic == badge_events.BADGE_GRANTED:
            standing = self._standing_for_policy(upstream.state["rider_id"])
            standing.note_badge(award_id=award_id,
                                badge_class_id=upstream.state["badge_class_id"])
            processing.collect_events(standing)
            return
        rider_id = self.views.award_holder(award_id)
        if rider_id is not None:
            standing = self._standing_for_policy(rider_id)
            standing.forget_badge(award_id)
            processing.collect_events(standing)

    def catch_up_upstream(self) -> None:
        if self.identity_follower is not None:
            self.identity_follower.catch_up()

    # ------------------------------------------------------------------ helpers

    def _check_badge_class(self, violations: Violations, field_name: str, badge_class_id: str,
                           needed_for: str) -> None:
        """A required reference to a class badges created."""
        if not badge_class_id:
            violations.add(field_name, f"must name a badge class {needed_for}",
                           "BADGE_CLASS_REQUIRED")
        elif check_id(violations, field_name, badge_class_id) and (
                not self.badge_class_exists(badge_class_id)):
            violations.missing(field_name, "badge class", badge_class_id)

    def badge_class_exists(self, badge_class_id: str) -> bool:
        """Whether badges created the class. With no way to ask badges, UNAVAILABLE: a perk
        or a rule nobody can ever meet is never accepted blindly."""
        if self.badge_classes is None:
            raise Unavailable("badges' classes cannot be read here; retry shortly",
                              reason="UPSTREAM_UNAVAILABLE", upstream="badges")
        return self.badge_classes.exists(badge_class_id)

    def _standing(self, rider_id: str, *, catch_up: bool = True) -> RiderStanding:
        return self.followed(RiderStanding.create_id(rider_id), RiderStanding, "rider",
                             rider_id, self.catch_up_upstream if catch_up else None,
                             refresh_unless=lambda s: s.is_active)

    def _standing_for_policy(self, rider_id: str) -> RiderStanding:
        return self.current_or_new(RiderStanding.create_id(rider_id), RiderStanding,
                                   lambda: RiderStanding(rider_id=rider_id))

    def _check_business_area(self, violations: Violations, business_area_id: str,
                             street_id: str) -> None:
        """`business_area_id` must name a business area (identity's BUSINESS_AREA) of
        `street_id` (when that street is known to be right): one of another street is its
        office's to place merchants in."""
        area = self._note_reference(violations, business_area_id, "business_area_id",
                                    "business_area")
        if area is not None and street_id and area.parent_id != street_id:
            violations.add("business_area_id", "is a business area of another street than the "
                           "merchant's", BUSINESS_AREA_OF_ANOTHER_STREET)

    def _note_reference(self, violations: Violations, upstream_id: str, field: str, kind: str
                        ) -> Reference | None:
        return note_reference(self, violations, upstream_id, field, kind,
                              self.catch_up_upstream)

    def _require_rider(self, violations: Violations, rider_id: str) -> None:
        """The request's rider, looked up once nothing else is wrong with it
        (QijiApplication.require_riders); caught up with identity if it is unknown or not
        active here (identity may have verified them a moment ago)."""
        self.require_riders(violations, [("rider_id", rider_id)], RiderStanding.create_id,
                            self.catch_up_upstream, refresh_unless=lambda s: s.is_active)

    # ------------------------------------------------------------------ tenancy

    def owner_resolvers(self) -> dict[str, Callable[[str], Owners | None]]:
        return {**super().owner_resolvers(), "merchant": self._merchant_owners,
                "merchant_books": self._merchant_books_owners, "perk": self._perk_owners,
                "claim": self._claim_owners, "campaign": self._campaign_owners}

    def _merchant_owners(self, merchant_id: str) -> Owners | None:
        """A merchant is its own and its street office's; once approved it is in the city's
        public directory. Before it applied, identity's record says whose it is."""
        merchant = self.found(merchant_id, Merchant)
        if merchant is None:
            return self.directory.organisation_owners(merchant_id) if self.directory else None
        return Owners(Owners.of(merchant=merchant_id, street_office=merchant.street_id).by_role,
                      public=merchant.status is MerchantStatus.APPROVED)

    def _merchant_books_owners(self, merchant_id: str) -> Owners | None:
        """A merchant's own books (what it redeemed, for which rider, when): the merchant's and
        its street office's only, even once the merchant is in the public directory."""
        owners = self._merchant_owners(merchant_id)
        return None if owners is None else Owners(owners.by_role)

    def _perk_owners(self, perk_id: str) -> Owners | None:
        """A perk is its merchant's (and the street office's of the merchant); its draft is
        theirs alone, a published (paused, withdrawn) offer anyone's to read."""
        offer = self.found(perk_id, PerkOffer)
        if offer is None:
            return None
        owners = self._merchant_owners(offer.merchant_id) or Owners()
        return Owners(owners.by_role, public=offer.status is not PerkStatus.DRAFT)

    def _claim_owners(self, claim_id: str) -> Owners | None:
        """A claim is the rider's (their platform's and street office's) and its merchant's."""
        claim = self.found(claim_id, Claim)
        if claim is None:
            return None
        rider = (self.directory.rider_owners(claim.rider_id) if self.directory else None)
        return (rider or Owners()) | Owners.of(merchant=claim.merchant_id)

    def _campaign_owners(self, campaign_id: str) -> Owners | None:
        """A care campaign is its street office's; that it runs is no secret (who got a
        package is: each allocation is shown only to whoever may see its rider)."""
        campaign = self.found(campaign_id, CareCampaign)
        if campaign is None:
            return None
        return Owners(Owners.of(street_office=campaign.street_id).by_role, public=True)


def _check_amenities(violations: Violations, amenities: list[MerchantAmenity | None]) -> None:
    for i, amenity in enumerate(amenities):
        violations.require_given(amenity, f"amenities[{i}]", one_of(MerchantAmenity),
                                 ENUM_VALUE_REQUIRED)


def _check_items(violations: Violations, field_name: str, items: list[CareItem]
                 ) -> list[dict[str, Any]]:
    """Items and quantities (a package's contents, a sponsor's gift), each item named once."""
    violations.require(len(items) <= MAX_CARE_ITEMS, field_name,
                       f"at most {MAX_CARE_ITEMS} items", VALUE_OUT_OF_RANGE)
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        name = item.item.strip()
        check_text(violations, f"{field_name}[{i}].item", item.item, MAX_ITEM_NAME)
        if name and name in seen:
            violations.add(f"{field_name}[{i}].item", "given twice", DUPLICATE_VALUE)
        seen.add(name)
        violations.require(1 <= item.quantity <= MAX_ITEM_QUANTITY, f"{field_name}[{i}].quantity",
                           f"must be 1 to {MAX_ITEM_QUANTITY}", "QUANTITY_INVALID")
        kept.append({"item": name, "quantity": item.quantity})
    return kept
