"""Aggregates of the merchants domain.

A perk offer keeps the quota ledger (codes outstanding, codes redeemed, per rider); a claim is
one code's life. Every step that moves quota changes both in one atomic save, so the ledger
and the codes can never disagree, and the offer's version serialises competing claims: two
concurrent claims for the last unit cannot both be stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event
from immutables import Map

from services.merchants.domain.ledger import Code, QuotaLedger
from services.merchants.domain.values import (
    REVERSAL_WINDOW,
    CareRuleKind,
    ClaimStatus,
    Eligibility,
    LimitPeriod,
    MerchantStatus,
    PerkStatus,
    period_start,
)
from shared.errors import AlreadyExists, FailedPrecondition, NotFound
from shared.rider_status import FollowedRiderStatus
from shared.snapshots import QijiSnapshot, SnapshotForm

_NS = uuid.UUID("d2c7c1e4-5b1a-4c55-9a51-2f0f5d4b8e77")


class Merchant(Aggregate):
    """A friendly merchant (友好商户), under the id identity gave its organisation."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Approved: ClassVar[type[Any]]
        Rejected: ClassVar[type[Any]]
        Suspended: ClassVar[type[Any]]
        Reinstated: ClassVar[type[Any]]
        AmenitiesUpdated: ClassVar[type[Any]]
        PlaceUpdated: ClassVar[type[Any]]
        BusinessAreaNamed: ClassVar[type[Any]]

    @staticmethod
    def create_id(merchant_id: str, **_: Any) -> uuid.UUID:
        return uuid.UUID(merchant_id)

    class Applied(Aggregate.Created):
        # v2 added `opening_hours`: a merchant that applied before has none (hours not known)
        # until its place is updated. v3 added `business_area_id`: a merchant that applied
        # before named no business area ("").
        class_version = 3
        merchant_id: str
        name: str
        street_id: str
        category: str
        latitude: float
        longitude: float
        address: str
        amenities: list[str]
        opening_hours: list[dict[str, Any]]
        business_area_id: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["opening_hours"] = []

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["business_area_id"] = ""

    @event(Applied)
    def __init__(self, merchant_id: str, name: str, street_id: str, category: str,
                 latitude: float, longitude: float, address: str, amenities: list[str],
                 opening_hours: list[dict[str, Any]], business_area_id: str):
        self.name = name
        self.street_id = street_id
        # The business area (商圈) of its street it is in, "" for none: a friendly business
        # area's mark (identity) counts the merchants that named it.
        self.business_area_id = business_area_id
        self.category = category
        self.latitude = latitude  # WGS-84 degrees, as every stored place
        self.longitude = longitude
        self.address = address
        self.amenities = sorted(set(amenities))
        self.opening_hours = opening_hours
        self.status = MerchantStatus.APPLIED
        self.status_reason = ""

    def approve(self) -> None:
        self._require(MerchantStatus.APPLIED, "only an application can be approved")
        self._approved()

    @event("Approved")
    def _approved(self) -> None:
        self.status = MerchantStatus.APPROVED

    def reject(self, reason: str) -> None:
        self._require(MerchantStatus.APPLIED, "only an application can be rejected")
        self._rejected(reason=reason)

    @event("Rejected")
    def _rejected(self, reason: str) -> None:
        self.status = MerchantStatus.REJECTED
        self.status_reason = reason

    def suspend(self, reason: str) -> None:
        self._require(MerchantStatus.APPROVED, "only an approved merchant can be suspended")
        self._suspended(reason=reason)

    @event("Suspended")
    def _suspended(self, reason: str) -> None:
        self.status = MerchantStatus.SUSPENDED
        self.status_reason = reason

    def reinstate(self, reason: str) -> None:
        self._require(MerchantStatus.SUSPENDED, "only a suspended merchant can be reinstated")
        self._reinstated(reason=reason)

    @event("Reinstated")
    def _reinstated(self, reason: str) -> None:
        self.status = MerchantStatus.APPROVED
        self.status_reason = reason

    @event("AmenitiesUpdated")
    def update_amenities(self, amenities: list[str]) -> None:
        self.amenities = sorted(set(amenities))

    @event("PlaceUpdated")
    def update_place(self, latitude: float, longitude: float, address: str,
                     opening_hours: list[dict[str, Any]]) -> None:
        self.latitude = latitude
        self.longitude = longitude
        self.address = address
        self.opening_hours = opening_hours

    def move_to_business_area(self, business_area_id: str) -> None:
        """Names the business area the merchant is now in (checked by the caller to be one of
        its street's); naming the one it is in already changes nothing."""
        if business_area_id != self.business_area_id:
            self._business_area_named(business_area_id=business_area_id)

    @event("BusinessAreaNamed")
    def _business_area_named(self, business_area_id: str) -> None:
        self.business_area_id = business_area_id

    def require_approved(self) -> None:
        if self.status is not MerchantStatus.APPROVED:
            raise FailedPrecondition(f"the merchant is {self.status.value.lower()}",
                                     reason="MERCHANT_NOT_APPROVED")

    def _require(self, wanted: MerchantStatus, message: str) -> None:
        if self.status is not wanted:
            raise FailedPrecondition(f"{message} (it is {self.status.value})",
                                     reason=f"MERCHANT_{self.status.value}")


class PerkOffer(SnapshotForm, Aggregate):
    """A merchant's perk and its quota ledger. A perk is claimed for weeks (a quota may be a
    million), so its first read after a restart starts from a snapshot (shared/snapshots.py)."""

    # Raised whenever what the perk derives from its events changes (the ledger's indexes, a
    # field added): snapshots of another format are passed over.
    SNAPSHOT_FORMAT = 1

    class Snapshot(QijiSnapshot):
        pass

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Created: ClassVar[type[Any]]
        Published: ClassVar[type[Any]]
        Paused: ClassVar[type[Any]]
        Withdrawn: ClassVar[type[Any]]
        CodeIssued: ClassVar[type[Any]]
        CodeRedeemed: ClassVar[type[Any]]
        QuotaReturned: ClassVar[type[Any]]

    @event("Created")
    def __init__(self, merchant_id: str, title: str, kind: str, percent_off: int,
                 amount_off_fen: int, free_item: str, eligibility: str, badge_class_id: str,
                 total_quota: int, per_rider_limit: int, limit_period: str,
                 valid_from: datetime, valid_until: datetime, code_ttl_minutes: int):
        self.merchant_id = merchant_id
        self.title = title
        self.kind = kind
        self.percent_off = percent_off
        self.amount_off_fen = amount_off_fen
        self.free_item = free_item
        self.eligibility = Eligibility(eligibility)
        self.badge_class_id = badge_class_id
        self.total_quota = total_quota
        self.per_rider_limit = per_rider_limit
        self.limit_period = LimitPeriod(limit_period)
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.code_ttl_minutes = code_ttl_minutes
        self.status = PerkStatus.DRAFT
        # The quota ledger: codes handed out and not yet redeemed or returned, and redeemed.
        # A value, replaced on every change, never changed in place (ledger.py says why).
        self.ledger = QuotaLedger()

    # -- its snapshot's form (shared/snapshots.py SnapshotForm): the ledger as one row per code

    _SNAPSHOT_ENUMS: ClassVar[dict[str, type[Any]]] = {
        "eligibility": Eligibility, "limit_period": LimitPeriod, "status": PerkStatus}
    _SNAPSHOT_TIMES: ClassVar[frozenset[str]] = frozenset({"valid_from", "valid_until"})
    _SNAPSHOT_OWN: ClassVar[dict[str, Any]] = {
        "ledger": (lambda ledger, _: ledger.rows(),
                   lambda rows, _: QuotaLedger.from_rows(rows))}

    # -- life of the offer

    def publish(self) -> None:
        if self.status not in (PerkStatus.DRAFT, PerkStatus.PAUSED):
            raise FailedPrecondition(f"a {self.status.value} perk cannot be published",
                                     reason=f"PERK_{self.status.value}")
        self._published()

    @event("Published")
    def _published(self) -> None:
        self.status = PerkStatus.PUBLISHED

    def pause(self) -> None:
        if self.status is not PerkStatus.PUBLISHED:
            raise FailedPrecondition("only a published perk can be paused",
                                     reason=f"PERK_{self.status.value}")
        self._paused()

    @event("Paused")
    def _paused(self) -> None:
        self.status = PerkStatus.PAUSED

    def withdraw(self) -> None:
        if self.status is PerkStatus.WITHDRAWN:
            raise FailedPrecondition("the perk is already withdrawn", reason="PERK_WITHDRAWN")
        self._withdrawn()

    @event("Withdrawn")
    def _withdrawn(self) -> None:
        # Codes already handed out stay redeemable until they expire: the rider was promised.
        self.status = PerkStatus.WITHDRAWN

    # -- the quota ledger

    @property
    def remaining(self) -> int:
        return self.total_quota - self.ledger.in_use()

    def claims_in_period(self, rider_id: str, at: datetime) -> int:
        return self.ledger.claims_since(rider_id, period_start(self.limit_period, at))

    def expired_outstanding(self, at: datetime) -> list[str]:
        return self.ledger.expired(at)

    def check_claimable(self, rider_id: str, at: datetime, holds_badge: bool) -> None:
        """Every rule a claim must pass, in the order a rider would want to hear them."""
        if self.status is not PerkStatus.PUBLISHED:
            raise FailedPrecondition(f"the perk is {self.status.value.lower()}",
                                     reason="PERK_NOT_AVAILABLE")
        if at < self.valid_from:
            raise FailedPrecondition("the perk is not valid yet", reason="PERK_NOT_YET_VALID")
        if at >= self.valid_until:
            raise FailedPrecondition("the perk has ended", reason="PERK_ENDED")
        if self.eligibility is Eligibility.BADGE_HOLDERS and not holds_badge:
            raise FailedPrecondition("the perk is for holders of a badge the rider lacks",
                                     reason="BADGE_REQUIRED", badge_class_id=self.badge_class_id)
        if self.claims_in_period(rider_id, at) >= self.per_rider_limit:
            raise FailedPrecondition(
                f"the rider reached the limit of {self.per_rider_limit} per "
                f"{self.limit_period.value.lower()}", reason="RIDER_LIMIT_REACHED")
        if self.remaining <= 0:
            raise FailedPrecondition("the perk's quota is used up", reason="QUOTA_EXHAUSTED")

    def issue(self, claim_id: str, rider_id: str, at: datetime) -> datetime:
        expires_at = min(at + timedelta(minutes=self.code_ttl_minutes), self.valid_until)
        self._issued(claim_id=claim_id, rider_id=rider_id, at=at, expires_at=expires_at)
        return expires_at

    @event("CodeIssued")
    def _issued(self, claim_id: str, rider_id: str, at: datetime, expires_at: datetime) -> None:
        self.ledger = self.ledger.issued(claim_id, Code(rider_id, at, expires_at))

    def note_redeemed(self, claim_id: str, at: datetime) -> None:
        self._redeemed(claim_id=claim_id, at=at, remaining_after=self.remaining)

    @event("CodeRedeemed")
    def _redeemed(self, claim_id: str, at: datetime, remaining_after: int) -> None:
        # The quota after a redemption is written into the event itself, so an auditor reads
        # "the quota after each one" straight from the history.
        self.ledger = self.ledger.redeemed_code(claim_id)

    def note_returned(self, claim_id: str, why: str, at: datetime) -> None:
        """A lapsed code or a reversed redemption gives its unit of quota back."""
        if not self.ledger.holds(claim_id):
            raise NotFound("claim", claim_id)
        self._returned(claim_id=claim_id, why=why, at=at, remaining_after=self.remaining + 1)

    @event("QuotaReturned")
    def _returned(self, claim_id: str, why: str, at: datetime, remaining_after: int) -> None:
        self.ledger = self.ledger.returned(claim_id)


class Claim(Aggregate):
    """One single-use code. Its id is derived from the code's digest, so a merchant's code
    finds its claim directly; the code itself is never stored."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Issued: ClassVar[type[Any]]
        Redeemed: ClassVar[type[Any]]
        Reversed: ClassVar[type[Any]]
        Lapsed: ClassVar[type[Any]]
        Frozen: ClassVar[type[Any]]
        Unfrozen: ClassVar[type[Any]]

    @staticmethod
    def create_id(code_digest: str, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_NS, f"claim\n{code_digest}")

    @event("Issued")
    def __init__(self, code_digest: str, code_nonce: str, perk_id: str, merchant_id: str,
                 rider_id: str, claimed_at: datetime, expires_at: datetime):
        self.code_nonce = code_nonce
        self.perk_id = perk_id
        self.merchant_id = merchant_id
        self.rider_id = rider_id
        self.claimed_at = claimed_at
        self.expires_at = expires_at
        self.status = ClaimStatus.ISSUED
        self.redeemed_at: datetime | None = None
        self.reversed_at: datetime | None = None
        self.reverse_reason = ""

    @property
    def is_open(self) -> bool:
        return self.status in (ClaimStatus.ISSUED, ClaimStatus.FROZEN)

    def redeem(self, merchant_id: str, at: datetime) -> None:
        if merchant_id != self.merchant_id:
            raise FailedPrecondition("the code belongs to another merchant",
                                     reason="CODE_OF_ANOTHER_MERCHANT")
        refusals = {
            ClaimStatus.REDEEMED: ("the code was already redeemed", "CODE_ALREADY_REDEEMED"),
            ClaimStatus.REVERSED: ("the code's redemption was reversed", "CODE_REVERSED"),
            ClaimStatus.LAPSED: ("the code expired", "CODE_EXPIRED"),
            ClaimStatus.FROZEN: ("the rider's claims are frozen while they are suspended",
                                 "CLAIM_FROZEN"),
        }
        if self.status in refusals:
            message, reason = refusals[self.status]
            raise FailedPrecondition(message, reason=reason)
        if at >= self.expires_at:
            raise FailedPrecondition("the code expired", reason="CODE_EXPIRED")
        self._redeemed(at=at)

    @event("Redeemed")
    def _redeemed(self, at: datetime) -> None:
        self.status = ClaimStatus.REDEEMED
        self.redeemed_at = at

    def reverse(self, reason: str, at: datetime) -> None:
        if self.status is not ClaimStatus.REDEEMED:
            raise FailedPrecondition("only a redeemed code can be reversed",
                                     reason="CLAIM_NOT_REDEEMED")
        assert self.redeemed_at is not None
        if at - self.redeemed_at > REVERSAL_WINDOW:
            raise FailedPrecondition(
                f"a redemption can be reversed within {REVERSAL_WINDOW} only",
                reason="REVERSAL_WINDOW_CLOSED")
        self._reversed(reason=reason, at=at)

    @event("Reversed")
    def _reversed(self, reason: str, at: datetime) -> None:
        self.status = ClaimStatus.REVERSED
        self.reversed_at = at
        self.reverse_reason = reason

    def lapse(self, at: datetime) -> None:
        if not self.is_open or at < self.expires_at:
            raise FailedPrecondition("only an unredeemed, expired code lapses",
                                     reason="CLAIM_NOT_LAPSABLE")
        self._lapsed()

    @event("Lapsed")
    def _lapsed(self) -> None:
        self.status = ClaimStatus.LAPSED

    def freeze(self) -> None:
        if self.status is ClaimStatus.ISSUED:
            self._frozen()

    @event("Frozen")
    def _frozen(self) -> None:
        self.status = ClaimStatus.FROZEN

    def unfreeze(self) -> None:
        if self.status is ClaimStatus.FROZEN:
            self._unfrozen()

    @event("Unfrozen")
    def _unfrozen(self) -> None:
        self.status = ClaimStatus.ISSUED


class RiderStanding(FollowedRiderStatus, Aggregate):
    """A rider as merchants knows them: eligibility from identity's feed, badges from badges'
    feed, and their open claims (frozen when they are suspended)."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Noted: ClassVar[type[Any]]
        StatusNoted: ClassVar[type[Any]]
        BadgeNoted: ClassVar[type[Any]]
        BadgeForgotten: ClassVar[type[Any]]
        ClaimOpened: ClassVar[type[Any]]
        ClaimClosed: ClassVar[type[Any]]

    @staticmethod
    def create_id(rider_id: str, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_NS, f"standing\n{rider_id}")

    @event("Noted")
    def __init__(self, rider_id: str):
        self.rider_id = rider_id
        self.verified = False
        self.suspended = False
        self.left = False
        self.awards: dict[str, str] = {}  # award id -> badge class id
        self.open_claims: list[str] = []

    @event("StatusNoted")
    def note_status(self, verified: bool, suspended: bool, left: bool) -> None:
        self.verified, self.suspended, self.left = verified, suspended, left

    def holds_badge(self, badge_class_id: str) -> bool:
        return badge_class_id in self.awards.values()

    @event("BadgeNoted")
    def note_badge(self, award_id: str, badge_class_id: str) -> None:
        self.awards[award_id] = badge_class_id

    def forget_badge(self, award_id: str) -> None:
        if award_id in self.awards:
            self._badge_forgotten(award_id=award_id)

    @event("BadgeForgotten")
    def _badge_forgotten(self, award_id: str) -> None:
        del self.awards[award_id]

    @event("ClaimOpened")
    def claim_opened(self, claim_id: str) -> None:
        self.open_claims.append(claim_id)

    def claim_closed(self, claim_id: str) -> None:
        if claim_id in self.open_claims:
            self._claim_closed(claim_id=claim_id)

    @event("ClaimClosed")
    def _claim_closed(self, claim_id: str) -> None:
        self.open_claims.remove(claim_id)


@dataclass(frozen=True)
class RiderFacts:
    """What merchants knows of a rider when a care package's eligibility is checked: status
    from identity's feed (RiderStanding), home street and registration time from identity's
    directory, badges held from badges' feed."""

    rider_id: str
    active: bool
    home_street_id: str
    registered_at: datetime | None
    badge_class_ids: frozenset[str]


class CareEligibilityRules(Aggregate):
    """The city's set of care-package eligibility rules (one per Qiji installation, each change
    a new version): data the city admin configures, as governance's routing rules are. A
    campaign picks rules from it by name and keeps a copy with the version it was taken from,
    so that a later change never alters who qualifies for a campaign already launched."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Configured: ClassVar[type[Any]]
        Changed: ClassVar[type[Any]]

    ID = uuid.uuid5(_NS, "care-eligibility-rules")

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return CareEligibilityRules.ID

    @event("Configured")
    def __init__(self, rules: list[dict[str, Any]]):
        self.rules = [dict(r) for r in rules]

    @event("Changed")
    def change(self, rules: list[dict[str, Any]]) -> None:
        self.rules = [dict(r) for r in rules]

    def named(self, name: str) -> dict[str, Any] | None:
        return next((dict(r) for r in self.rules if r["name"] == name), None)


def _allocation_of(row: list[Any]) -> Map[str, Any]:
    """A package's allocation as CareCampaign keeps it, from its snapshot's row."""
    _, allocated_at, handed_over_at, handed_over_by, recorded_by = row
    return Map(allocated_at=datetime.fromisoformat(allocated_at),
               handed_over_at=datetime.fromisoformat(handed_over_at)
               if handed_over_at is not None else None,
               handed_over_by=handed_over_by, recorded_by=recorded_by)


def rule_refusal(rule: dict[str, Any], street_id: str, rider: RiderFacts, at: datetime
                 ) -> FailedPrecondition | None:
    """Why the rider does not meet one rule of a campaign in `street_id`, or None."""
    kind = CareRuleKind(rule["kind"])
    name = rule["name"]
    if kind is CareRuleKind.RIDER_ACTIVE and not rider.active:
        return FailedPrecondition(
            f"rule {name!r}: the rider is not active (verified, not suspended)",
            reason="RIDER_NOT_ACTIVE", rule=name)
    if kind is CareRuleKind.HOME_STREET and rider.home_street_id != street_id:
        return FailedPrecondition(
            f"rule {name!r}: the rider is not registered in the campaign's street",
            reason="RIDER_NOT_OF_STREET", rule=name)
    if kind is CareRuleKind.NEW_RIDER and (
            rider.registered_at is None
            or at - rider.registered_at > timedelta(days=int(rule["days"]))):
        return FailedPrecondition(
            f"rule {name!r}: the rider registered more than {rule['days']} days ago",
            reason="RIDER_NOT_NEW", rule=name)
    if kind is CareRuleKind.HOLDS_BADGE and rule["badge_class_id"] not in rider.badge_class_ids:
        return FailedPrecondition(f"rule {name!r}: the rider does not hold the badge",
                                  reason="BADGE_REQUIRED", rule=name,
                                  badge_class_id=rule["badge_class_id"])
    if kind is CareRuleKind.HARDSHIP:  # never stored (RULE_NOT_YET_FED): nobody is known
        return FailedPrecondition(f"rule {name!r}: no rider's hardship is known yet",
                                  reason="HARDSHIP_NOT_KNOWN", rule=name)
    return None


class CareCampaign(SnapshotForm, Aggregate):
    """A street office's care-package campaign (关爱礼包): a stock of packages, what each holds,
    who sponsored it with what, and the rules a rider must meet to receive one. A stock may be
    MAX_CARE_STOCK packages, each allocated and handed over, so its first read after a restart
    starts from a snapshot (shared/snapshots.py)."""

    # Raised whenever what the campaign derives from its events changes: snapshots of another
    # format are passed over.
    SNAPSHOT_FORMAT = 1

    class Snapshot(QijiSnapshot):
        pass

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        DonationRecorded: ClassVar[type[Any]]
        PackageAllocated: ClassVar[type[Any]]
        PackageHandedOver: ClassVar[type[Any]]

    class Launched(Aggregate.Created):
        # v2 added `contents` (items and quantities in each package), `rules` (copies of the
        # city's eligibility rules the campaign picked) and `rules_version` (the version of the
        # city's set they were copied from). A campaign launched before has no contents listed
        # and no rules: any rider who has not left may receive a package, as then.
        class_version = 2
        street_id: str
        name: str
        description: str
        stock: int
        contents: list[dict[str, Any]]
        rules: list[dict[str, Any]]
        rules_version: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["contents"] = []
            state["rules"] = []
            state["rules_version"] = 0

    @event(Launched)
    def __init__(self, street_id: str, name: str, description: str, stock: int,
                 contents: list[dict[str, Any]], rules: list[dict[str, Any]],
                 rules_version: int):
        self.street_id = street_id
        self.name = name
        self.description = description
        self.stock = stock
        self.contents = [dict(c) for c in contents]
        self.rules = [dict(r) for r in rules]
        self.rules_version = rules_version
        # Each rider's package: a value (an immutables.Map of a Map per rider), replaced on
        # every change, so that a command's copy shares it instead of copying every allocation
        # of a stock of up to MAX_CARE_STOCK; and how many were handed over, counted as they
        # are rather than walked on each read.
        self.allocations: Map[str, Map[str, Any]] = Map()
        # Who got the n-th package (0 the first): the office's list is paged in that order
        # without sorting every allocation for each page. Packages are never taken back, so
        # the orders are 0 to len(allocations) - 1.
        self.allocated_in_order: Map[int, str] = Map()
        self.handed = 0
        # Each sponsor's donations, in order: what a partner register links to "what they
        # gave". Packages donated add to the stock; items are recorded as given.
        self.donations: list[dict[str, Any]] = []

    # -- its snapshot's form (shared/snapshots.py SnapshotForm): one row per package, in the
    # order they were allocated (which rebuilds allocated_in_order too), donations' times in
    # ISO 8601

    _SNAPSHOT_JSON: ClassVar[frozenset[str]] = frozenset({"contents", "rules"})
    _SNAPSHOT_OWN: ClassVar[dict[str, Any]] = {
        "allocations": (lambda _, campaign: campaign._allocation_rows(),
                        lambda rows, _: Map({row[0]: _allocation_of(row) for row in rows})),
        "allocated_in_order": (lambda *_: None,  # the allocations' rows are in that order
                               lambda _, state: Map({order: row[0] for order, row in
                                                     enumerate(state["allocations"])})),
        "donations": (lambda donations, _: [{**d, "at": d["at"].isoformat()}
                                            for d in donations],
                      lambda donations, _: [{**d, "at": datetime.fromisoformat(d["at"])}
                                            for d in donations])}

    def _allocation_rows(self) -> list[list[Any]]:
        """[rider id, allocated at, handed over at or None, handed over by, recorded by] for
        every package, in the order they were allocated."""
        rows = []
        for order in range(len(self.allocated_in_order)):
            rider_id = self.allocated_in_order[order]
            allocation = self.allocations[rider_id]
            handed = allocation["handed_over_at"]
            rows.append([rider_id, allocation["allocated_at"].isoformat(),
                         handed.isoformat() if handed is not None else None,
                         allocation["handed_over_by"], allocation["recorded_by"]])
        return rows

    @property
    def handed_over(self) -> int:
        return self.handed

    def allocation(self, rider_id: str) -> dict[str, Any]:
        """The rider's package (KeyError: none)."""
        return dict(self.allocations[rider_id])

    def allocated_at_order(self, order: int) -> str:
        """The rider who got the package allocated `order`-th (0 the first)."""
        return self.allocated_in_order[order]

    @property
    def remaining(self) -> int:
        return self.stock - len(self.allocations)

    def check_allocatable(self, rider_id: str) -> None:
        """Whether a package may go to the rider, as far as the campaign can tell (not yet
        theirs, and one left): what allocate refuses, without allocating."""
        if rider_id in self.allocations:
            raise AlreadyExists("the rider already has a package from this campaign",
                                reason="PACKAGE_ALREADY_ALLOCATED")
        if len(self.allocations) >= self.stock:
            raise FailedPrecondition("the campaign has no packages left", reason="OUT_OF_STOCK")

    def check_eligible(self, rider: RiderFacts, at: datetime) -> None:
        """Every rule the campaign picked, in the city's order: the first the rider fails is
        the answer (FAILED_PRECONDITION with the rule's name)."""
        for rule in self.rules:
            refusal = rule_refusal(rule, self.street_id, rider, at)
            if refusal is not None:
                raise refusal

    def is_open_to(self, rider: RiderFacts, at: datetime) -> bool:
        """Whether allocate would give the rider a package now (ListCareCampaignsForRider)."""
        try:
            self.check_allocatable(rider.rider_id)
            self.check_eligible(rider, at)
        except (AlreadyExists, FailedPrecondition):
            return False
        return True

    def record_donation(self, donation_id: str, sponsor_id: str, packages: int,
                        items: list[dict[str, Any]], recorded_by: str, at: datetime) -> None:
        self._donated(donation_id=donation_id, sponsor_id=sponsor_id, packages=packages,
                      items=[dict(i) for i in items], recorded_by=recorded_by, at=at)

    @event("DonationRecorded")
    def _donated(self, donation_id: str, sponsor_id: str, packages: int,
                 items: list[dict[str, Any]], recorded_by: str, at: datetime) -> None:
        self.donations.append({"donation_id": donation_id, "sponsor_id": sponsor_id,
                               "packages": packages, "items": [dict(i) for i in items],
                               "recorded_by": recorded_by, "at": at})
        self.stock += packages

    def allocate(self, rider_id: str, at: datetime, rider: RiderFacts | None = None) -> None:
        self.check_allocatable(rider_id)
        if rider is not None:
            self.check_eligible(rider, at)
        self._allocated(rider_id=rider_id, at=at)

    @event("PackageAllocated")
    def _allocated(self, rider_id: str, at: datetime) -> None:
        # In allocated_in_order too: the map keeps no order, and the office reads its list in
        # the order it gave the packages out (times may tie, or disagree between replicas'
        # clocks).
        self.allocated_in_order = self.allocated_in_order.set(len(self.allocations), rider_id)
        self.allocations = self.allocations.set(rider_id, Map(
            allocated_at=at, handed_over_at=None, handed_over_by="", recorded_by=""))

    def hand_over(self, rider_id: str, handed_over_by: str, recorded_by: str,
                  at: datetime) -> None:
        allocation = self.allocations.get(rider_id)
        if allocation is None:
            raise NotFound("allocation", rider_id)
        if allocation["handed_over_at"] is not None:
            raise FailedPrecondition("the package was already handed over",
                                     reason="ALREADY_HANDED_OVER")
        self._handed_over(rider_id=rider_id, handed_over_by=handed_over_by,
                          recorded_by=recorded_by, at=at)

    @event("PackageHandedOver")
    def _handed_over(self, rider_id: str, handed_over_by: str, recorded_by: str,
                     at: datetime) -> None:
        allocation = self.allocations[rider_id]
        self.handed += allocation["handed_over_at"] is None
        self.allocations = self.allocations.set(rider_id, allocation.update(
            handed_over_at=at, handed_over_by=handed_over_by, recorded_by=recorded_by))

