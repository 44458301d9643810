"""Value rules of the identity domain: enumerations and the checks of personal data formats."""

from __future__ import annotations

import re
from enum import StrEnum


class OrganisationKind(StrEnum):
    CITY = "CITY"
    DISTRICT = "DISTRICT"
    STREET = "STREET"  # 街道
    COMMUNITY = "COMMUNITY"  # 社区
    DEPARTMENT = "DEPARTMENT"
    PLATFORM = "PLATFORM"
    STATION = "STATION"  # 站点
    EDUCATION_PROVIDER = "EDUCATION_PROVIDER"
    MERCHANT = "MERCHANT"
    # 商圈: a business area of a street, named by its merchants; its street office acts for it
    # (it has no token of its own), as for a community.
    BUSINESS_AREA = "BUSINESS_AREA"


class DepartmentFunction(StrEnum):
    SOCIAL_WORK = "SOCIAL_WORK"  # 社会工作
    POLITICAL_LEGAL = "POLITICAL_LEGAL"  # 政法
    PUBLIC_SECURITY = "PUBLIC_SECURITY"  # 公安
    PETITIONS = "PETITIONS"  # 信访
    LEGAL_AID = "LEGAL_AID"  # 法律援助
    TRADE_UNION = "TRADE_UNION"  # 工会


# Which kinds of organisation may be the parent of each kind (None: may stand without a parent).
# City → district → street → community (市—区—街三级联动); the rest stand beside the tree.
PARENT_KINDS: dict[OrganisationKind, frozenset[OrganisationKind | None]] = {
    OrganisationKind.CITY: frozenset({None}),
    OrganisationKind.DISTRICT: frozenset({OrganisationKind.CITY}),
    OrganisationKind.STREET: frozenset({OrganisationKind.DISTRICT}),
    OrganisationKind.COMMUNITY: frozenset({OrganisationKind.STREET}),
    OrganisationKind.DEPARTMENT: frozenset(
        {OrganisationKind.CITY, OrganisationKind.DISTRICT, OrganisationKind.STREET}),
    OrganisationKind.PLATFORM: frozenset({None}),
    OrganisationKind.STATION: frozenset({OrganisationKind.PLATFORM}),
    OrganisationKind.EDUCATION_PROVIDER: frozenset({None, OrganisationKind.CITY}),
    OrganisationKind.MERCHANT: frozenset({None, OrganisationKind.STREET}),
    OrganisationKind.BUSINESS_AREA: frozenset({OrganisationKind.STREET}),
}


class PartnerCategory(StrEnum):
    """What kind of body a partner (合作伙伴) bringing resources to the programme (多方资源) is."""

    UNIVERSITY = "UNIVERSITY"  # 高校
    ENTERPRISE = "ENTERPRISE"  # 企业
    GOVERNMENT_BODY = "GOVERNMENT_BODY"  # 政府部门
    INDUSTRY_ASSOCIATION = "INDUSTRY_ASSOCIATION"  # 行业协会
    CHAMBER_OF_COMMERCE = "CHAMBER_OF_COMMERCE"  # 商会


class OfferKind(StrEnum):
    """What a partner offers the programme."""

    COURSES = "COURSES"  # lessons and teachers for the curriculum
    PLACES = "PLACES"  # places on its own programmes, or premises lent to the programme
    PERKS = "PERKS"  # discounts and free items for riders
    DONATIONS = "DONATIONS"  # goods or money, e.g. care packages


# The organisations that may carry a partner profile: those whose contributions the services
# already record under their organisation id (a course's provider, a perk's merchant), and
# the government's own departments and the platform company. A university, an enterprise,
# an association or a chamber that teaches is an EDUCATION_PROVIDER (DOMAIN.md).
PARTNER_ORGANISATION_KINDS = frozenset({
    OrganisationKind.EDUCATION_PROVIDER, OrganisationKind.MERCHANT,
    OrganisationKind.DEPARTMENT, OrganisationKind.PLATFORM})
# At most this many offers on one profile: a partner's list, not a catalogue.
MAX_OFFERS = 20


class Amenity(StrEnum):
    REST = "REST"  # 歇脚
    CHARGING = "CHARGING"  # 充电
    DRINKING_WATER = "DRINKING_WATER"  # 饮水
    TOILET = "TOILET"
    MICROWAVE = "MICROWAVE"
    FIRST_AID = "FIRST_AID"
    REPAIR_TOOLS = "REPAIR_TOOLS"
    SHELTER = "SHELTER"


class RiderStatus(StrEnum):
    REGISTERED = "REGISTERED"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    LEFT = "LEFT"


class CareerMilestoneKind(StrEnum):
    STATION_MASTER = "STATION_MASTER"  # 站长
    VOLUNTEER = "VOLUNTEER"  # 志愿者
    COMMUNITY_SOCIAL_WORKER = "COMMUNITY_SOCIAL_WORKER"  # 社区社工


class ConsentScope(StrEnum):
    NAME = "NAME"
    PHONE = "PHONE"
    NATIONAL_ID = "NATIONAL_ID"


# Reasons of the identity domain's field violations (BadRequest.FieldViolation.reason).
PARENT_REQUIRED = "PARENT_REQUIRED"  # this kind of organisation stands under a parent
PARENT_NOT_ALLOWED = "PARENT_NOT_ALLOWED"  # this kind of organisation has no parent
PARENT_KIND_NOT_ALLOWED = "PARENT_KIND_NOT_ALLOWED"  # a parent, of a kind this kind may not have
# (An organisation of another kind than a field takes is shared/errors.py's
# ORGANISATION_KIND_NOT_ALLOWED, as in every service.)
STATION_OF_ANOTHER_PLATFORM = "STATION_OF_ANOTHER_PLATFORM"
DEPARTMENT_FUNCTION_REQUIRED = "DEPARTMENT_FUNCTION_REQUIRED"
DEPARTMENT_FUNCTION_NOT_ALLOWED = "DEPARTMENT_FUNCTION_NOT_ALLOWED"
PHONE_INVALID = "PHONE_INVALID"
NATIONAL_ID_INVALID = "NATIONAL_ID_INVALID"
PLATFORM_RIDER_ID_INVALID = "PLATFORM_RIDER_ID_INVALID"
DAY_BEFORE_SPACE_OPENED = "DAY_BEFORE_SPACE_OPENED"  # use recorded for a day the space was not
# open yet (a day too late is shared/values.py's DAY_IN_THE_FUTURE)
# Reason of the FAILED_PRECONDITION of use of an amenity the space does not offer.
AMENITY_NOT_OFFERED = "AMENITY_NOT_OFFERED"

# At most this many uses of one amenity in one RecordSpaceUse: a day's tally at a busy space
# fits in one call, a slip of the finger (5000 for 500) does not.
MAX_USES_PER_CALL = 500
# The longest period a read of space use covers: a year, a leap day included.
MAX_USE_PERIOD_DAYS = 366

MAX_NAME_LENGTH = 100
MAX_TEXT_LENGTH = 500
# Matched with fullmatch and ASCII classes only: "$" would accept a trailing newline and "\d"
# full-width digits, and either would give one rider two spellings of one number.
PLATFORM_RIDER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Mainland China mobile numbers: 11 digits starting 13–19.
MOBILE_PHONE = re.compile(r"1[3-9][0-9]{9}")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def is_mobile_phone(phone: str) -> bool:
    return MOBILE_PHONE.fullmatch(phone) is not None


def is_national_id(value: str) -> bool:
    """Resident identity card number (GB 11643-1999): 17 digits and an ISO 7064 check character."""
    if len(value) != 18 or not (value[:17].isascii() and value[:17].isdigit()):
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return value[17].upper() == _ID_CHECK[total % 11]
