"""merchants' public event contract for outside consumers: perks claimed, redeemed and
reversed, care packages allocated and handed over to a rider. A code never leaves Qiji (only its
claim id does), nor does a reversal's free text, nor the name of whoever handed a package
over."""

from __future__ import annotations

from typing import Any

from shared.public_feed import Fact, Mapped, PublicCatalogue, PublicType

CLAIM_ISSUED = "services.merchants.domain.model:Claim.Issued"
CLAIM_REDEEMED = "services.merchants.domain.model:Claim.Redeemed"
CLAIM_REVERSED = "services.merchants.domain.model:Claim.Reversed"


def _claim_data(app: Any, fact: Fact) -> dict[str, Any]:
    claim = app.current(fact.originator_id)
    return {"claim_id": str(fact.originator_id), "rider_id": claim.rider_id,
            "perk_id": claim.perk_id, "merchant_id": claim.merchant_id}


def _claimed(app: Any, fact: Fact) -> Mapped:
    data = {**_claim_data(app, fact), "claimed_time": fact.event.claimed_at,
            "expire_time": fact.event.expires_at}
    return Mapped(data["rider_id"], data)


def _redeemed(app: Any, fact: Fact) -> Mapped:
    data = {**_claim_data(app, fact), "redeemed_time": fact.event.at}
    return Mapped(data["rider_id"], data)


def _reversed(app: Any, fact: Fact) -> Mapped:
    data = {**_claim_data(app, fact), "reversed_time": fact.event.at}
    return Mapped(data["rider_id"], data)


PACKAGE_ALLOCATED = "services.merchants.domain.model:CareCampaign.PackageAllocated"
PACKAGE_HANDED_OVER = "services.merchants.domain.model:CareCampaign.PackageHandedOver"


def _package(time_field: str) -> Any:
    """A rider's care package, for their platform: which campaign (and its street)."""
    def build(app: Any, fact: Fact) -> Mapped:
        campaign = app.current(fact.originator_id)
        rider_id = fact.event.rider_id
        return Mapped(rider_id, {"campaign_id": str(fact.originator_id), "rider_id": rider_id,
                                 "street_id": campaign.street_id, time_field: fact.event.at})
    return build


CATALOGUE = PublicCatalogue("merchants", [
    PublicType("qiji.merchants.v1.PerkClaimed", CLAIM_ISSUED,
               ("claim_id", "rider_id", "perk_id", "merchant_id", "claimed_time",
                "expire_time"), _claimed),
    PublicType("qiji.merchants.v1.PerkRedeemed", CLAIM_REDEEMED,
               ("claim_id", "rider_id", "perk_id", "merchant_id", "redeemed_time"), _redeemed),
    PublicType("qiji.merchants.v1.RedemptionReversed", CLAIM_REVERSED,
               ("claim_id", "rider_id", "perk_id", "merchant_id", "reversed_time"), _reversed),
    PublicType("qiji.merchants.v1.CarePackageAllocated", PACKAGE_ALLOCATED,
               ("campaign_id", "rider_id", "street_id", "allocated_time"),
               _package("allocated_time")),
    PublicType("qiji.merchants.v1.CarePackageHandedOver", PACKAGE_HANDED_OVER,
               ("campaign_id", "rider_id", "street_id", "handed_over_time"),
               _package("handed_over_time")),
])
