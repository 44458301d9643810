"""Value rules of the merchants domain."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import StrEnum

# The city's local time (China keeps UTC+8 all year): "a day" for a per-rider limit is a
# calendar day in Changzhou, not in UTC.
CITY_TIME = timezone(timedelta(hours=8))
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
