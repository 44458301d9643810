"""Value rules of the merchants domain."""

from __future__ import annotations

import re
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


def wire(value: StrEnum) -> str:
    """A value as callers see it on the wire, with its enum's buf prefix:
    `PerkKind.FREE_ITEM` is `PERK_KIND_FREE_ITEM` (each domain enum is named as its proto
    enum, grpc_api maps one onto the other)."""
    return _wire_prefix(type(value)) + value.value


def one_of(enum: type[StrEnum]) -> str:
    """"must be one of A, B" in the wire's names, for a field left UNSPECIFIED."""
    return "must be one of " + ", ".join(wire(v) for v in enum)


def _wire_prefix(enum: type[StrEnum]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.__name__).upper() + "_"
