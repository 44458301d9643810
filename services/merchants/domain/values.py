"""Value rules of the merchants domain."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

# The city's local time (China keeps UTC+8 all year): "a day" for a per-rider limit is a
# calendar day in Changzhou, not in UTC; opening hours are read in it too.
from shared.values import CITY_TIME

# How long after redeeming a merchant may still reverse the redemption (a till mistake).
REVERSAL_WINDOW = timedelta(minutes=60)
# A perk's codes in all: far above what one shop gives out, so only a slip of the finger (an
# extra zero) is refused, never a generous merchant.
MAX_QUOTA = 1_000_000
# A code lives at most a week: it is for the ride a rider is on, not a voucher to hoard; its
# quota comes back when it lapses, so a long life would lock quota away from other riders.
MAX_CODE_TTL_MINUTES = 7 * 24 * 60
# A percentage discount takes 1 to 100 percent off (100: the item is free).
MAX_PERCENT_OFF = 100
# A fixed discount of at most ¥10,000 (in fen): above any perk for riders, so a larger figure is
# yuan typed as fen or an extra zero, refused before riders see it.
MAX_AMOUNT_OFF_FEN = 1_000_000

# How long merchants' texts may be, in characters (TEXT_TOO_LONG above):
# a shop's, a perk's or a campaign's name, an address, a free item: one line on a rider's phone;
MAX_TEXT = 200
# a shop's category (餐饮, 便利店): a word or two, shown as a label and filtered on;
MAX_CATEGORY = 50
# a care-package rule's name (本街道骑手): a label the city picks rules by from a list;
MAX_RULE_NAME = 50
# a care campaign's description: a few paragraphs for riders and sponsors, not a document;
MAX_DESCRIPTION = 2000
# an item of a care package (矿泉水), and who handed a package over: a name, not a note.
MAX_ITEM_NAME = 100
MAX_HANDED_OVER_BY = 100
# (A reason, for suspending a merchant or reversing a redemption: shared.errors.MAX_REASON.)
# Reason of the field violation of a business area named for a merchant of another street.
BUSINESS_AREA_OF_ANOTHER_STREET = "BUSINESS_AREA_OF_ANOTHER_STREET"


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


# -- care packages (关爱礼包)


class CareRuleKind(StrEnum):
    """What a rule of the city's care-package eligibility set asks of a rider. The city names
    and parameterises its rules (shared by every campaign that picks them); the kinds are
    what merchants can check."""

    RIDER_ACTIVE = "RIDER_ACTIVE"  # verified, not suspended, not left
    HOME_STREET = "HOME_STREET"  # registered in the campaign's street (their home street)
    NEW_RIDER = "NEW_RIDER"  # registered with identity within `days` days
    HOLDS_BADGE = "HOLDS_BADGE"  # holds a badge of `badge_class_id`
    # In hardship, as governance's help requests will say. Kept as an extension point: nothing
    # feeds merchants a rider's hardship yet, so a rule of this kind is refused when the city
    # sets it (RULE_NOT_YET_FED) rather than refuse every rider of a campaign.
    HARDSHIP = "HARDSHIP"


# Rules the city may keep (each is checked for every rider a package goes to, so the set stays
# a short list a clerk can read), items a package may hold, and how new a "new rider" may be
# (ten years: the programme's whole life).
MAX_CARE_RULES = 50
MAX_CARE_ITEMS = 30
MAX_NEW_RIDER_DAYS = 3650
# Packages one campaign holds: more than the city's riders, so only a typed extra zero is
# refused; a campaign promising more than it could ever hand out is a mistake.
MAX_CARE_STOCK = 100_000
# Packages a campaign's own message lists (the first, in allocation order); the rest are paged
# (ListCarePackageAllocations), so that a campaign answers in a bounded message.
ALLOCATIONS_SHOWN = 50
# Packages one page looks at, at most: a platform with few riders among a campaign's 100,000
# pages through them a bounded piece at a time (fewer rows, even none, and a token), where
# one page would check every package's rider.
ALLOCATIONS_LOOKED_AT = 2_000
# ...and the campaign's own message, at most: a list of 50 campaigns (ListCareCampaigns, a
# rider's ListCareCampaignsForRider) shown to such a platform looks at 25,000 packages, not
# 100,000 (about 2.5 µs each, bench_campaign_size); the rest is a page token away.
ALLOCATIONS_SHOWN_LOOKED_AT = 500
# Of one item, in a package or a sponsor's donation (bottles of water, by the pallet): a bound
# against typos, not a policy.
MAX_ITEM_QUANTITY = 1_000_000
