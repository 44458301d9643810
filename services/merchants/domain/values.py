"""Value rules of the merchants domain."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

# The city's local time (China keeps UTC+8 all year): "a day" for a per-rider limit is a
# calendar day in Changzhou, not in UTC; opening hours are read in it too.
from shared.values import CITY_TIME

# How long after redeeming a merchant may still reverse the redemption (a till mistake).
REVERSAL_WINDOW = timedelta(minutes=60)
MAX_QUOTA = 1_000_000
MAX_CODE_TTL_MINUTES = 7 * 24 * 60


class MerchantStatus(StrEnum):
    APPLIED = "APPLIED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    SUSPENDED = "SUSPENDED"


class MerchantAmenity(StrEnum):
    DRINKING_WATER = "DRINKING_WATER"
    CHARGING = "CHARGING"
    REST = "REST"
    TOILET = "TOILET"
    MICROWAVE = "MICROWAVE"


class PlaceKind(StrEnum):
    SERVICE_SPACE = "SERVICE_SPACE"  # 服务空间 / 驿站, identity's
    MERCHANT = "MERCHANT"  # 友好商户


class PlaceAmenity(StrEnum):
    """What a place on the rider's map offers: a service space's amenities and a merchant's,
    by the same names (a merchant offers only the first five)."""

    DRINKING_WATER = "DRINKING_WATER"
    CHARGING = "CHARGING"
    REST = "REST"
    TOILET = "TOILET"
    MICROWAVE = "MICROWAVE"
    FIRST_AID = "FIRST_AID"
    REPAIR_TOOLS = "REPAIR_TOOLS"
    SHELTER = "SHELTER"


# How far FindNearby looks at most: a rider's ride, not the province.
MAX_NEARBY_RADIUS_METRES = 50_000.0


class PerkKind(StrEnum):
    PERCENT_DISCOUNT = "PERCENT_DISCOUNT"
    FIXED_DISCOUNT = "FIXED_DISCOUNT"
    FREE_ITEM = "FREE_ITEM"


class Eligibility(StrEnum):
    ANY_VERIFIED_RIDER = "ANY_VERIFIED_RIDER"
    BADGE_HOLDERS = "BADGE_HOLDERS"


class LimitPeriod(StrEnum):
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


class PerkStatus(StrEnum):
    DRAFT = "DRAFT"
    PUBLISHED = "PUBLISHED"
    PAUSED = "PAUSED"
    WITHDRAWN = "WITHDRAWN"


class ClaimStatus(StrEnum):
    ISSUED = "ISSUED"
    REDEEMED = "REDEEMED"
    REVERSED = "REVERSED"
    LAPSED = "LAPSED"
    FROZEN = "FROZEN"


def period_start(period: LimitPeriod, at: datetime) -> datetime:
    """Start of the day, week (Monday) or month containing `at`, in the city's time."""
    local = at.astimezone(CITY_TIME).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is LimitPeriod.WEEK:
        local -= timedelta(days=local.weekday())
    elif period is LimitPeriod.MONTH:
        local = local.replace(day=1)
    return local
