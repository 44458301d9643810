"""The merchants service as its callers meet it: a real merchants process following a real
identity process's feed over gRPC, both on PostgreSQL (a schema each), one tokens file with a
token per city-wide role, merchant tokens acting for their merchant (the organisation identity
gave them), street office tokens for their street, the module's platform token for the city's
platform, and a `service` token for merchants' followers.

Every caller acting for one organisation reaches only what it owns: another merchant's perk,
code or books, another street's merchant or campaign, a rider of another platform (or one that
does not exist) are PERMISSION_DENIED OUT_OF_SCOPE, and lists show only the caller's own rows.

Cross-service consistency: a merchants command naming a rider, street or merchant it has not
heard of yet reads identity's feed first, so the set-up below needs no sleeps. Only merchants'
*reaction* to identity's events (a suspension freezing a rider's open codes) runs in the
background follower, which polls identity's feed every half second: that test polls
(`eventually`) for up to 10 s. `caught_up` forces merchants to apply everything identity has
stored so far, through the same catch-up path, before a test compares merchants' log positions.

badges is not built yet: merchants' badges follower is pointed at a port nobody listens on and
just backs off, as it would in production until badges is deployed."""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as pb

from shared.auth import add_caller
from tests.e2e.client import (
    DENIED,
    EXISTS,
    INVALID,
    NOT_FOUND,
    PRECONDITION,
    Bad,
    at,
    call_error,
    create_city,
    create_organisation,
    details_of,
    new_request_id,
    on,
    state,
)
from tests.e2e.conftest import ServiceProcess, caught_up, eventually, new_rider

pytestmark = pytest.mark.e2e

DOMAIN = "merchants.qiji"
MODEL = "services.merchants.domain.model"
CLAIM_ISSUED = f"{MODEL}:Claim.Issued"
CLAIM_REDEEMED = f"{MODEL}:Claim.Redeemed"
CLAIM_FROZEN = f"{MODEL}:Claim.Frozen"
CLAIM_UNFROZEN = f"{MODEL}:Claim.Unfrozen"
# What a rider shows at the till: 16 characters of Crockford's base32 in groups of four.
CODE_SHAPE = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}")

RANDOM_ID = str(uuid.uuid4())


# ---------------------------------------------------------------------------- identity's side


@dataclass(frozen=True)
class City:
    """What identity knows before merchants is used, and the tokens of its merchants and its
    street office (in the tokens file both processes read). The module's `platform` caller acts
    for `platform`."""

    city: str
    district: str
    street: str
    platform: str
    station: str
    shop: str
    other_shop: str
    shop_token: str
    other_shop_token: str
    office_token: str  # the street office of `street`


def set_up_city(identity: ServiceProcess, *, tag: str = "") -> City:
    """city_admin builds 常州市/钟楼区/荷花池街道, two MERCHANT organisations under the street, a
    platform and its station (the module's platform caller acts for it from here on); the
    merchants and the street office get tokens of their own."""
    admin = identity.client("city_admin")
    return merchants_of_a_street(identity, create_city(admin), tag=tag)


def set_up_street(identity: ServiceProcess, city: City, name: str) -> City:
    """Another street of `city`'s district, with two merchants of its own and its own street
    office; its riders ride for `city`'s platform, from `city`'s station."""
    street = create_organisation(identity.client("city_admin"), ipb.ORGANISATION_KIND_STREET,
                                 name, city.district).organisation_id
    return merchants_of_a_street(identity, {
        "city": city.city, "district": city.district, "street": street,
        "platform": city.platform, "station": city.station})


def merchants_of_a_street(identity: ServiceProcess, tree: dict[str, str], *, tag: str = ""
                          ) -> City:
    admin = identity.client("city_admin")
    street = tree["street"]
    shop = create_organisation(admin, ipb.ORGANISATION_KIND_MERCHANT, "荷花池面馆",
                               street).organisation_id
    other = create_organisation(admin, ipb.ORGANISATION_KIND_MERCHANT, "北大街便利店",
                                street).organisation_id
    tokens_file = identity.tokens_file
    tag = tag or uuid.uuid4().hex[:6]
    return City(
        **tree, shop=shop, other_shop=other,
        shop_token=add_caller(tokens_file, f"e2e-shop-{tag}", ["merchant"], shop),
        other_shop_token=add_caller(tokens_file, f"e2e-other-shop-{tag}", ["merchant"], other),
        office_token=add_caller(tokens_file, f"e2e-hehuachi-office-{tag}", ["street_office"],
                                street))


def new_riders(identity: ServiceProcess, city: City, count: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda _: new_rider(identity, city), range(count)))


# ---------------------------------------------------------------------------- merchants' side


def apply_request(merchant_id: str, street_id: str, **fields: Any) -> pb.ApplyMerchantRequest:
    values: dict[str, Any] = {
        "request_id": new_request_id(), "merchant_id": merchant_id, "name": "荷花池面馆",
        "street_id": street_id, "category": "restaurant",
        "location": pb.Location(latitude=31.78, longitude=119.95, address="钟楼区北大街8号"),
        "amenities": [pb.MERCHANT_AMENITY_DRINKING_WATER, pb.MERCHANT_AMENITY_CHARGING]}
    values.update(fields)
    return pb.ApplyMerchantRequest(**values)


def join(merchants: ServiceProcess, city: City) -> None:
    """Both merchants apply with their own tokens; the street office approves them."""
    office = merchants.client(token=city.office_token)
    for merchant_id, token in ((city.shop, city.shop_token),
                               (city.other_shop, city.other_shop_token)):
        merchants.client(token=token).ApplyMerchant(apply_request(merchant_id, city.street))
        office.ApproveMerchant(pb.ApproveMerchantRequest(request_id=new_request_id(),
                                                         merchant_id=merchant_id))


def perk_request(merchant_id: str, **fields: Any) -> pb.CreatePerkOfferRequest:
    """A FREE_ITEM perk "骑手免费饮水" for any verified rider, valid from an hour ago for 30 days,
    quota 5, one per rider per day, codes redeemable for two hours."""
    values: dict[str, Any] = {
        "request_id": new_request_id(), "merchant_id": merchant_id, "title": "骑手免费饮水",
        "kind": pb.PERK_KIND_FREE_ITEM, "free_item": "一瓶矿泉水",
        "eligibility": pb.ELIGIBILITY_ANY_VERIFIED_RIDER, "total_quota": 5,
        "per_rider_limit": 1, "limit_period": pb.LIMIT_PERIOD_DAY,
        "valid_from_time": at(-timedelta(hours=1)), "valid_until_time": at(timedelta(days=30)),
        "code_ttl_minutes": 120}
    values.update(fields)
    return pb.CreatePerkOfferRequest(**values)


def published_perk(merchants: ServiceProcess, token: str, merchant_id: str, **fields: Any
                   ) -> pb.PerkOffer:
    owner = merchants.client(token=token)
    offer = owner.CreatePerkOffer(perk_request(merchant_id, **fields)).perk_offer
    return owner.PublishPerkOffer(pb.PublishPerkOfferRequest(
        request_id=new_request_id(), perk_id=offer.perk_id)).perk_offer


def claim(merchants: ServiceProcess, perk_id: str, rider_id: str, **kw: Any
          ) -> pb.ClaimPerkResponse:
    return merchants.client("platform").ClaimPerk(pb.ClaimPerkRequest(
        request_id=new_request_id(), perk_id=perk_id, rider_id=rider_id), **kw)


def redeem_request(merchant_id: str, code: str) -> pb.RedeemCodeRequest:
    return pb.RedeemCodeRequest(request_id=new_request_id(), merchant_id=merchant_id, code=code)


def get_claim(merchants: ServiceProcess, claim_id: str) -> pb.Claim:
    return merchants.client("platform").GetClaim(pb.GetClaimRequest(claim_id=claim_id)).claim


def get_perk(merchants: ServiceProcess, perk_id: str) -> pb.PerkOffer:
    return merchants.client("auditor").GetPerkOffer(pb.GetPerkOfferRequest(perk_id=perk_id)
                                                 ).perk_offer


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def city(identity: ServiceProcess, merchants: ServiceProcess) -> City:
    """A city whose two merchants have joined (applied and been approved)."""
    city = set_up_city(identity)
    join(merchants, city)
    return city


@dataclass(frozen=True)
class Scene:
    """Perks, codes, riders and a care campaign in every state the bad-input table needs."""

    city: City
    far_office_token: str  # the street office of another street of the city
    other_platform_token: str  # a platform competing with the city's
    perk: str  # the shop's, published, quota 100, one per rider per day
    full_perk: str  # the shop's, quota 1, taken
    limited_rider: str  # claimed `perk` today: at their limit
    fresh_rider: str  # verified, claimed nothing
    unverified: str
    open_claim: str  # the shop's code, issued to `limited_rider`, not redeemed
    open_code: str
    redeemed_code: str
    redeemed_claim: str  # the shop's, redeemed
    campaign: str  # stock 1, allocated to `limited_rider`
    perks_page_token: str


@pytest.fixture(scope="module")
def scene(identity: ServiceProcess, merchants: ServiceProcess, city: City) -> Scene:
    limited, fresh, filler, redeemer = new_riders(identity, city, 4)
    unverified = new_rider(identity, city, verify=False)
    perk = published_perk(merchants, city.shop_token, city.shop, total_quota=100).perk_id
    full_perk = published_perk(merchants, city.shop_token, city.shop, total_quota=1).perk_id
    opened = claim(merchants, perk, limited).claim
    claim(merchants, full_perk, filler)
    spent = claim(merchants, perk, redeemer).claim
    merchants.client(token=city.shop_token).RedeemCode(redeem_request(city.shop, spent.code))
    office = merchants.client(token=city.office_token)
    campaign = office.CreateCareCampaign(pb.CreateCareCampaignRequest(
        request_id=new_request_id(), street_id=city.street, name="夏日关爱礼包",
        description="清凉包：藿香正气水、毛巾、矿泉水", stock=1)).campaign.campaign_id
    office.AllocateCarePackage(pb.AllocateCarePackageRequest(
        request_id=new_request_id(), campaign_id=campaign, rider_id=limited))
    token = merchants.client("auditor").ListPerkOffers(pb.ListPerkOffersRequest(
        page_size=1)).next_page_token
    assert token
    far_street = create_organisation(identity.client("city_admin"),
                                     ipb.ORGANISATION_KIND_STREET, "北港街道",
                                     city.district).organisation_id
    far_office = add_caller(identity.tokens_file, f"e2e-far-office-{uuid.uuid4().hex[:6]}",
                            ["street_office"], far_street)
    other_platform = create_organisation(identity.client("city_admin"),
                                         ipb.ORGANISATION_KIND_PLATFORM, "飞毛腿外卖"
                                         ).organisation_id
    other_platform_token = add_caller(identity.tokens_file,
                                      f"e2e-other-platform-{uuid.uuid4().hex[:6]}", ["platform"],
                                      other_platform)
    return Scene(city=city, far_office_token=far_office,
                 other_platform_token=other_platform_token, perk=perk, full_perk=full_perk,
                 limited_rider=limited, fresh_rider=fresh, unverified=unverified,
                 open_claim=opened.claim_id, open_code=opened.code, redeemed_code=spent.code,
                 redeemed_claim=spent.claim_id, campaign=campaign, perks_page_token=token)


# ---------------------------------------------------------------------------- bad input


def token_of(s: Scene, who: str, merchants: ServiceProcess) -> str:
    """The token of a bad-input case's caller: a role (the module's caller of that role: the
    city's platform and street office), or "shop" / "other_shop" / "office" / "far_office"
    for the scene's own tokens."""
    scoped = {"shop": s.city.shop_token, "other_shop": s.city.other_shop_token,
              "office": s.city.office_token, "far_office": s.far_office_token,
              "other_platform": s.other_platform_token}
    return scoped[who] if who in scoped else merchants.tokens[who]


def offer(**fields: Any) -> Callable[[Scene], Any]:
    """A CreatePerkOffer request by the shop (times are taken when the case runs)."""
    def make(s: Scene) -> Any:
        values = {k: (v(s) if callable(v) else v) for k, v in fields.items()}
        values.setdefault("merchant_id", s.city.shop)
        return perk_request(**values)
    return make


def percent(n: int) -> dict[str, Any]:
    return {"kind": pb.PERK_KIND_PERCENT_DISCOUNT, "percent_off": n, "free_item": ""}


def application(**fields: Any) -> Callable[[Scene], Any]:
    def make(s: Scene) -> Any:
        values = {k: (v(s) if callable(v) else v) for k, v in fields.items()}
        values.setdefault("merchant_id", s.city.shop)
        return apply_request(street_id=values.pop("street_id", s.city.street), **values)
    return make


BAD_INPUT: dict[str, Bad] = {
    # -- perk offers
    "CreatePerkOffer-percent-off-0": Bad(
        "CreatePerkOffer", "shop", offer(**percent(0)), INVALID, field="percent_off",
        reason="PERCENT_OFF_INVALID"),
    "CreatePerkOffer-percent-off-101": Bad(
        "CreatePerkOffer", "shop", offer(**percent(101)), INVALID, field="percent_off"),
    "CreatePerkOffer-total-quota-0": Bad(
        "CreatePerkOffer", "shop", offer(total_quota=0), INVALID, field="total_quota",
        reason="QUOTA_INVALID"),
    "CreatePerkOffer-valid-until-before-valid-from": Bad(
        "CreatePerkOffer", "shop",
        offer(valid_from_time=lambda _: at(timedelta(days=2)),
              valid_until_time=lambda _: at(timedelta(days=1))),
        INVALID, field="valid_until_time", reason="VALID_UNTIL_BEFORE_VALID_FROM"),
    "CreatePerkOffer-without-kind": Bad(
        "CreatePerkOffer", "shop", offer(kind=pb.PERK_KIND_UNSPECIFIED), INVALID, field="kind",
        reason="ENUM_VALUE_REQUIRED"),
    "CreatePerkOffer-unknown-kind": Bad(
        "CreatePerkOffer", "shop", offer(kind=99), INVALID, field="kind",
        reason="ENUM_VALUE_UNKNOWN"),
    # A filter of a number the contract does not define is refused, not "any status".
    "ListPerkOffers-unknown-status": Bad(
        "ListPerkOffers", "city_admin", on(pb.ListPerkOffersRequest, status=99), INVALID,
        field="status", reason="ENUM_VALUE_UNKNOWN"),
    "CreatePerkOffer-badge-holders-without-badge-class": Bad(
        "CreatePerkOffer", "shop", offer(eligibility=pb.ELIGIBILITY_BADGE_HOLDERS),
        INVALID, field="badge_class_id", reason="BADGE_CLASS_REQUIRED"),
    "CreatePerkOffer-code-ttl-0": Bad(
        "CreatePerkOffer", "city_admin", offer(code_ttl_minutes=0),
        INVALID, field="code_ttl_minutes"),
    "CreatePerkOffer-unknown-merchant": Bad(
        "CreatePerkOffer", "city_admin", offer(merchant_id=RANDOM_ID),
        NOT_FOUND, reason="MERCHANT_NOT_FOUND"),
    "CreatePerkOffer-for-another-merchant": Bad(
        "CreatePerkOffer", "other_shop", offer(), DENIED, reason="OUT_OF_SCOPE"),
    "CreatePerkOffer-for-an-unknown-merchant-by-a-merchant": Bad(
        "CreatePerkOffer", "shop", offer(merchant_id=RANDOM_ID), DENIED, reason="OUT_OF_SCOPE"),
    "PublishPerkOffer-already-published": Bad(
        "PublishPerkOffer", "shop", on(pb.PublishPerkOfferRequest, perk_id=lambda s: s.perk),
        PRECONDITION, reason="PERK_PUBLISHED"),
    "PausePerkOffer-another-merchants-perk": Bad(
        "PausePerkOffer", "other_shop", on(pb.PausePerkOfferRequest, perk_id=lambda s: s.perk),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetPerkOffer-unknown": Bad(
        "GetPerkOffer", "auditor", on(pb.GetPerkOfferRequest, perk_id=RANDOM_ID),
        NOT_FOUND, reason="PERK_NOT_FOUND"),
    # To a caller acting for one organisation, an unknown perk is one it may not reach (AIP-211).
    "GetPerkOffer-unknown-to-a-platform": Bad(
        "GetPerkOffer", "platform", on(pb.GetPerkOfferRequest, perk_id=RANDOM_ID),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetPerkOffer-not-a-uuid": Bad(
        "GetPerkOffer", "auditor", on(pb.GetPerkOfferRequest, perk_id="not-a-uuid"),
        INVALID, field="perk_id"),
    # AIP-158: a page size above the maximum is coerced to it; only a negative one is refused.
    "ListPerkOffers-page-size-negative": Bad(
        "ListPerkOffers", "auditor", on(pb.ListPerkOffersRequest, page_size=-1),
        INVALID, field="page_size"),
    "ListPerkOffers-page-token-of-other-filters": Bad(
        "ListPerkOffers", "auditor",
        on(pb.ListPerkOffersRequest, status=pb.PERK_STATUS_DRAFT,
           page_token=lambda s: s.perks_page_token), INVALID, field="page_token"),
    # -- merchants
    "ApplyMerchant-latitude-91": Bad(
        "ApplyMerchant", "shop",
        application(location=pb.Location(latitude=91, longitude=119.95)),
        INVALID, field="location.latitude"),
    "ApplyMerchant-unknown-merchant": Bad(
        "ApplyMerchant", "street_office", application(merchant_id=RANDOM_ID),
        NOT_FOUND, reason="MERCHANT_NOT_FOUND"),
    "ApplyMerchant-street-is-a-merchant": Bad(
        "ApplyMerchant", "shop", application(street_id=lambda s: s.city.other_shop),
        INVALID, field="street_id", reason="ORGANISATION_KIND_NOT_ALLOWED"),
    "ApplyMerchant-twice": Bad(
        "ApplyMerchant", "shop", application(), EXISTS, reason="MERCHANT_ALREADY_APPLIED"),
    "ApproveMerchant-already-approved": Bad(
        "ApproveMerchant", "office",
        on(pb.ApproveMerchantRequest, merchant_id=lambda s: s.city.shop),
        PRECONDITION, reason="MERCHANT_APPROVED"),
    "SuspendMerchant-by-another-streets-office": Bad(
        "SuspendMerchant", "far_office",
        on(pb.SuspendMerchantRequest, merchant_id=lambda s: s.city.shop, reason="投诉"),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetMerchant-unknown": Bad(
        "GetMerchant", "auditor", on(pb.GetMerchantRequest, merchant_id=RANDOM_ID),
        NOT_FOUND, reason="MERCHANT_NOT_FOUND"),
    "GetMerchant-not-a-uuid": Bad(
        "GetMerchant", "platform", on(pb.GetMerchantRequest, merchant_id="x"),
        INVALID, field="merchant_id"),
    # -- codes
    "RedeemCode-unknown-code": Bad(
        "RedeemCode", "shop",
        on(pb.RedeemCodeRequest, merchant_id=lambda s: s.city.shop, code="0000-0000-0000-0000"),
        NOT_FOUND, reason="CODE_NOT_FOUND"),
    "RedeemCode-malformed-code": Bad(
        "RedeemCode", "shop",
        on(pb.RedeemCodeRequest, merchant_id=lambda s: s.city.shop, code="ABC-123"),
        INVALID, field="code", reason="CODE_MALFORMED"),
    "RedeemCode-letter-outside-the-alphabet": Bad(
        "RedeemCode", "shop",
        on(pb.RedeemCodeRequest, merchant_id=lambda s: s.city.shop, code="UUUU-UUUU-UUUU-UUUU"),
        INVALID, field="code"),
    "RedeemCode-already-redeemed": Bad(
        "RedeemCode", "shop",
        on(pb.RedeemCodeRequest, merchant_id=lambda s: s.city.shop,
           code=lambda s: s.redeemed_code), PRECONDITION, reason="CODE_ALREADY_REDEEMED"),
    # Another merchant's code is, at this counter, no code at all: the answer must not tell the
    # till that it is a valid code.
    "RedeemCode-another-merchants-code": Bad(
        "RedeemCode", "other_shop",
        on(pb.RedeemCodeRequest, merchant_id=lambda s: s.city.other_shop,
           code=lambda s: s.open_code), NOT_FOUND, reason="CODE_NOT_FOUND"),
    "RedeemCode-as-another-merchant": Bad(
        "RedeemCode", "other_shop",
        on(pb.RedeemCodeRequest, merchant_id=lambda s: s.city.shop,
           code=lambda s: s.open_code), DENIED, reason="OUT_OF_SCOPE"),
    "RedeemCode-merchant-not-a-uuid": Bad(
        "RedeemCode", "shop",
        on(pb.RedeemCodeRequest, merchant_id="shop", code=lambda s: s.open_code),
        INVALID, field="merchant_id"),
    "ReverseRedemption-of-an-unredeemed-claim": Bad(
        "ReverseRedemption", "shop",
        on(pb.ReverseRedemptionRequest, claim_id=lambda s: s.open_claim, reason="收银误操作"),
        PRECONDITION, reason="CLAIM_NOT_REDEEMED"),
    "ReverseRedemption-without-reason": Bad(
        "ReverseRedemption", "shop",
        on(pb.ReverseRedemptionRequest, claim_id=lambda s: s.open_claim),
        INVALID, field="reason"),
    "ListRedemptions-of-nothing": Bad(
        "ListRedemptions", "auditor", on(pb.ListRedemptionsRequest),
        INVALID, field="merchant_id"),
    "ListRedemptions-of-an-unknown-perk": Bad(
        "ListRedemptions", "auditor", on(pb.ListRedemptionsRequest, perk_id=RANDOM_ID),
        NOT_FOUND, reason="PERK_NOT_FOUND"),
    "ListRedemptions-of-an-unknown-merchant": Bad(
        "ListRedemptions", "auditor", on(pb.ListRedemptionsRequest, merchant_id=RANDOM_ID),
        NOT_FOUND, reason="MERCHANT_NOT_FOUND"),
    # -- claims
    "ClaimPerk-over-quota": Bad(
        "ClaimPerk", "platform",
        on(pb.ClaimPerkRequest, perk_id=lambda s: s.full_perk, rider_id=lambda s: s.fresh_rider),
        PRECONDITION, reason="QUOTA_EXHAUSTED"),
    "ClaimPerk-over-the-per-rider-limit": Bad(
        "ClaimPerk", "platform",
        on(pb.ClaimPerkRequest, perk_id=lambda s: s.perk, rider_id=lambda s: s.limited_rider),
        PRECONDITION, reason="RIDER_LIMIT_REACHED"),
    "ClaimPerk-unverified-rider": Bad(
        "ClaimPerk", "street_office",
        on(pb.ClaimPerkRequest, perk_id=lambda s: s.perk, rider_id=lambda s: s.unverified),
        PRECONDITION, reason="RIDER_NOT_ACTIVE"),
    # Only a rider's platform or street office claims for them; a rider nobody registered is
    # no rider of the caller's (AIP-211).
    "ClaimPerk-unknown-rider": Bad(
        "ClaimPerk", "platform",
        on(pb.ClaimPerkRequest, perk_id=lambda s: s.perk, rider_id=RANDOM_ID),
        DENIED, reason="OUT_OF_SCOPE"),
    "ClaimPerk-unknown-perk": Bad(
        "ClaimPerk", "platform",
        on(pb.ClaimPerkRequest, perk_id=RANDOM_ID, rider_id=lambda s: s.fresh_rider),
        NOT_FOUND, reason="PERK_NOT_FOUND"),
    "ClaimPerk-rider-not-a-uuid": Bad(
        "ClaimPerk", "platform",
        on(pb.ClaimPerkRequest, perk_id=lambda s: s.perk, rider_id="R-1"),
        INVALID, field="rider_id"),
    "GetClaim-unknown": Bad(
        "GetClaim", "auditor", on(pb.GetClaimRequest, claim_id=RANDOM_ID),
        NOT_FOUND, reason="CLAIM_NOT_FOUND"),
    # A competing platform neither claims for the city's platform's rider nor reads its claim.
    "ClaimPerk-for-another-platforms-rider": Bad(
        "ClaimPerk", "other_platform",
        on(pb.ClaimPerkRequest, perk_id=lambda s: s.perk, rider_id=lambda s: s.fresh_rider),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetClaim-of-another-platforms-rider": Bad(
        "GetClaim", "other_platform", on(pb.GetClaimRequest, claim_id=lambda s: s.open_claim),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetClaim-a-perk-id": Bad(
        "GetClaim", "city_admin", on(pb.GetClaimRequest, claim_id=lambda s: s.perk),
        NOT_FOUND, reason="CLAIM_NOT_FOUND"),
    "GetClaim-a-perk-id-by-a-platform": Bad(
        "GetClaim", "platform", on(pb.GetClaimRequest, claim_id=lambda s: s.perk),
        DENIED, reason="OUT_OF_SCOPE"),
    "ListPerksForRider-unknown-rider": Bad(
        "ListPerksForRider", "city_admin",
        on(pb.ListPerksForRiderRequest, rider_id=RANDOM_ID), NOT_FOUND, reason="RIDER_NOT_FOUND"),
    "ListPerksForRider-unknown-rider-by-a-platform": Bad(
        "ListPerksForRider", "platform",
        on(pb.ListPerksForRiderRequest, rider_id=RANDOM_ID), DENIED, reason="OUT_OF_SCOPE"),
    # -- care packages
    "AllocateCarePackage-twice": Bad(
        "AllocateCarePackage", "office",
        on(pb.AllocateCarePackageRequest, campaign_id=lambda s: s.campaign,
           rider_id=lambda s: s.limited_rider), EXISTS, reason="PACKAGE_ALREADY_ALLOCATED"),
    "AllocateCarePackage-beyond-stock": Bad(
        "AllocateCarePackage", "office",
        on(pb.AllocateCarePackageRequest, campaign_id=lambda s: s.campaign,
           rider_id=lambda s: s.fresh_rider), PRECONDITION, reason="OUT_OF_STOCK"),
    "AllocateCarePackage-by-another-streets-office": Bad(
        "AllocateCarePackage", "far_office",
        on(pb.AllocateCarePackageRequest, campaign_id=lambda s: s.campaign,
           rider_id=lambda s: s.fresh_rider), DENIED, reason="OUT_OF_SCOPE"),
    # A stock of 0 is a campaign whose packages all come from sponsors (RecordCareDonation);
    # a negative one is nonsense.
    "CreateCareCampaign-stock-negative": Bad(
        "CreateCareCampaign", "office",
        on(pb.CreateCareCampaignRequest, street_id=lambda s: s.city.street, name="关爱礼包",
           stock=-1),
        INVALID, field="stock"),
    "RecordHandOver-not-allocated": Bad(
        "RecordHandOver", "office",
        on(pb.RecordHandOverRequest, campaign_id=lambda s: s.campaign,
           rider_id=lambda s: s.fresh_rider, handed_over_by="王社工"),
        NOT_FOUND, reason="ALLOCATION_NOT_FOUND"),
    # -- request ids
    "ClaimPerk-request-id-too-long": Bad(
        "ClaimPerk", "platform",
        on(pb.ClaimPerkRequest, request_id="r" * 129, perk_id=lambda s: s.perk,
           rider_id=lambda s: s.fresh_rider), INVALID, field="request_id"),
}


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_a_bad_request_gets_a_precise_error_and_writes_nothing(
        identity: ServiceProcess, merchants: ServiceProcess, scene: Scene, case: Bad) -> None:
    caller = merchants.client(token=token_of(scene, case.who, merchants))
    request = case.request(scene)
    caught_up(merchants)  # nothing of identity's is still to be applied in the background
    before = merchants.last_position()
    case.refused(caller, request, DOMAIN)
    assert merchants.last_position() == before, "a refused request wrote events"


def test_a_perk_offer_with_five_problems_gets_five_field_violations_over_the_wire(
        merchants: ServiceProcess, scene: Scene) -> None:
    """What an integrator in any language decodes from the trailer: ONE INVALID_ARGUMENT whose
    BadRequest lists every fault, each with its reason (issue 23)."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    caller = merchants.client(token=token_of(scene, "shop", merchants))
    request = perk_request(scene.city.shop, title="", kind=pb.PERK_KIND_UNSPECIFIED,
                           total_quota=0, eligibility=pb.ELIGIBILITY_BADGE_HOLDERS,
                           badge_class_id="", valid_from_time=at(timedelta(days=2)),
                           valid_until_time=at(timedelta(days=1)))
    with pytest.raises(grpc.RpcError) as error:
        caller.CreatePerkOffer(request)
    assert error.value.code() == INVALID
    status = rpc_status.from_call(error.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
        elif detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
    assert [(v.field, v.reason) for v in bad.field_violations] == [
        ("title", "FIELD_REQUIRED"), ("kind", "ENUM_VALUE_REQUIRED"),
        ("badge_class_id", "BADGE_CLASS_REQUIRED"), ("total_quota", "QUOTA_INVALID"),
        ("valid_until_time", "VALID_UNTIL_BEFORE_VALID_FROM")]
    assert "PERK_KIND_FREE_ITEM" in bad.field_violations[1].description
    assert info.reason == "INVALID_ARGUMENT"


def test_an_unreadable_time_and_an_unknown_kind_come_with_the_other_faults_in_one_answer(
        merchants: ServiceProcess, scene: Scene) -> None:
    """Before, a valid_from_time past 9999-12-31 was refused alone, before the command looked
    at anything else, and kind 99 was refused as if it were PERK_KIND_UNSPECIFIED."""
    from google.protobuf.timestamp_pb2 import Timestamp

    caller = merchants.client(token=token_of(scene, "shop", merchants))
    before = merchants.last_position()
    refused = call_error(lambda: caller.CreatePerkOffer(perk_request(
        scene.city.shop, title="", kind=99, total_quota=0,
        valid_from_time=Timestamp(seconds=10**12))))
    assert (refused.code, refused.reason) == (INVALID, "INVALID_ARGUMENT"), refused
    assert sorted((f, r) for f, r, _ in refused.violations) == [
        ("kind", "ENUM_VALUE_UNKNOWN"), ("title", "FIELD_REQUIRED"),
        ("total_quota", "QUOTA_INVALID"), ("valid_from_time", "TIME_INVALID")], refused
    kind = next(d for f, _, d in refused.violations if f == "kind")
    assert kind.startswith("99 is not a PerkKind") and "PERK_KIND_FREE_ITEM" in kind
    assert merchants.last_position() == before


def test_a_merchants_redemptions_are_its_own_and_its_street_offices_only(
        merchants: ServiceProcess, scene: Scene) -> None:
    """What a merchant redeemed, for which rider and when, is its business: another merchant
    (though the first is in the public directory) or another street's office asking for it is
    shown none of it, by merchant or by perk."""
    def listed(who: str, **by: str) -> list[str]:
        caller = merchants.client(token=token_of(scene, who, merchants))
        return [r.claim_id for r in caller.ListRedemptions(
            pb.ListRedemptionsRequest(**by)).redemptions]
    for by in ({"merchant_id": scene.city.shop}, {"perk_id": scene.perk}):
        for who in ("shop", "office", "auditor"):
            assert scene.redeemed_claim in listed(who, **by), (who, by)
        for who in ("other_shop", "far_office"):
            assert listed(who, **by) == [], (who, by)


# ---------------------------------------------------------------------------- the story


def test_a_merchant_joins_and_a_rider_gets_free_water_with_a_single_use_code(
        identity: ServiceProcess, merchants: ServiceProcess, city: City) -> None:
    # identity: a street of its own in the city, with two merchants; the city's platform
    # registers and verifies riders living there.
    city = set_up_street(identity, city, "五星街道")
    rider_id, colleague = new_rider(identity, city), new_rider(identity, city)

    # merchants, at once: the merchant applies with its own token, the street office approves.
    shop = merchants.client(token=city.shop_token)
    applied = shop.ApplyMerchant(apply_request(city.shop, city.street)).merchant
    assert (applied.merchant_id, applied.street_id, applied.status) == (
        city.shop, city.street, pb.MERCHANT_STATUS_APPLIED)
    approved = merchants.client(token=city.office_token).ApproveMerchant(
        pb.ApproveMerchantRequest(request_id=new_request_id(), merchant_id=city.shop)).merchant
    assert (approved.status, approved.version) == (pb.MERCHANT_STATUS_APPROVED,
                                                   applied.version + 1)
    platform = merchants.client("platform")
    on_the_map = platform.ListMerchants(pb.ListMerchantsRequest(
        street_id=city.street, amenities=[pb.MERCHANT_AMENITY_DRINKING_WATER])).merchants
    assert [m.merchant_id for m in on_the_map] == [city.shop]

    # The merchant offers free water: 5 bottles, one per rider per day.
    drafted = shop.CreatePerkOffer(perk_request(city.shop)).perk_offer
    assert (drafted.status, drafted.title, drafted.free_item) == (
        pb.PERK_STATUS_DRAFT, "骑手免费饮水", "一瓶矿泉水")
    offer = shop.PublishPerkOffer(pb.PublishPerkOfferRequest(
        request_id=new_request_id(), perk_id=drafted.perk_id)).perk_offer
    assert (offer.status, offer.remaining_quota, offer.total_quota) == (
        pb.PERK_STATUS_PUBLISHED, 5, 5)

    # The platform's app shows the rider what is open to them and claims it.
    open_now = platform.ListPerksForRider(pb.ListPerksForRiderRequest(
        rider_id=rider_id, street_id=city.street)).perk_offers
    assert [p.perk_id for p in open_now] == [offer.perk_id]
    claimed = claim(merchants, offer.perk_id, rider_id)
    code = claimed.claim.code
    assert CODE_SHAPE.fullmatch(code) and len(code) == 19, code
    assert (claimed.claim.status, claimed.claim.rider_id, claimed.claim.merchant_id,
            claimed.remaining_quota) == (pb.CLAIM_STATUS_ISSUED, rider_id, city.shop, 4)
    assert claimed.claim.expire_time.ToDatetime() > claimed.claim.claim_time.ToDatetime()
    after_claim = platform.ListPerksForRider(pb.ListPerksForRiderRequest(
        rider_id=rider_id, street_id=city.street)).perk_offers
    assert after_claim == [], "one per rider per day: nothing left for this rider today"
    still_open = platform.ListPerksForRider(pb.ListPerksForRiderRequest(
        rider_id=colleague)).perk_offers
    assert offer.perk_id in [p.perk_id for p in still_open]

    # At the till the code is typed in lower case with spaces: still the code.
    typed = code.lower().replace("-", " ")
    redeemed = shop.RedeemCode(redeem_request(city.shop, typed))
    assert redeemed.claim.claim_id == claimed.claim.claim_id
    assert redeemed.claim.status == pb.CLAIM_STATUS_REDEEMED
    assert redeemed.claim.code == "", "the merchant is never shown the rider's code"
    assert (redeemed.perk_offer.remaining_quota, redeemed.perk_offer.redeemed_count,
            redeemed.perk_offer.outstanding_codes) == (4, 1, 0)
    seen = shop.GetPerkOffer(pb.GetPerkOfferRequest(perk_id=offer.perk_id)).perk_offer
    assert (seen.remaining_quota, seen.redeemed_count) == (4, 1)
    rows = shop.ListRedemptions(pb.ListRedemptionsRequest(merchant_id=city.shop)).redemptions
    assert [(r.claim_id, r.perk_id, r.rider_id, r.remaining_quota_after, r.reversed)
            for r in rows] == [(claimed.claim.claim_id, offer.perk_id, rider_id, 4, False)]

    # A till mistake, reversed within the window: the bottle goes back into the quota.
    reversed_ = shop.ReverseRedemption(pb.ReverseRedemptionRequest(
        request_id=new_request_id(), claim_id=claimed.claim.claim_id, reason="收银误操作"))
    assert (reversed_.claim.status, reversed_.remaining_quota) == (pb.CLAIM_STATUS_REVERSED, 5)
    assert reversed_.claim.reverse_reason == "收银误操作" and reversed_.claim.code == ""
    seen = shop.GetPerkOffer(pb.GetPerkOfferRequest(perk_id=offer.perk_id)).perk_offer
    assert (seen.remaining_quota, seen.redeemed_count, seen.outstanding_codes) == (5, 0, 0)
    rows = shop.ListRedemptions(pb.ListRedemptionsRequest(perk_id=offer.perk_id)).redemptions
    # The redemption, and the quota it gave back when reversed (what `qiji audit perk` shows).
    assert [(r.remaining_quota_after, r.reversed, r.remaining_quota_after_reversal)
            for r in rows] == [(4, True, 5)]
    assert rows[0].reverse_time.ToDatetime() >= rows[0].redeem_time.ToDatetime()

    # The code is the rider's: the platform that claimed it sees it, a merchant never does.
    refused = call_error(lambda: shop.GetClaim(pb.GetClaimRequest(
        claim_id=claimed.claim.claim_id)))
    assert refused.code == DENIED and code not in refused.message, refused
    mine = get_claim(merchants, claimed.claim.claim_id)
    assert (mine.code, mine.status) == (code, pb.CLAIM_STATUS_REVERSED)

    # ... and it is nowhere in merchants' log, in any form.
    stored = merchants.client("service").all_events()
    assert any(e.originator_id == claimed.claim.claim_id for e in stored)
    for form in {code, code.replace("-", ""), typed}:
        assert not [e.topic for e in stored if form.encode() in e.state], form


# ---------------------------------------------------------------------------- across services


def test_a_suspended_riders_open_code_is_frozen_until_reinstated_exactly_once(
        identity: ServiceProcess, merchants: ServiceProcess, city: City) -> None:
    rider_id = new_rider(identity, city)
    offer = published_perk(merchants, city.shop_token, city.shop)
    issued = claim(merchants, offer.perk_id, rider_id).claim
    claim_id, code = issued.claim_id, issued.code

    identity.client("street_office").SuspendRider(ipb.SuspendRiderRequest(
        request_id=new_request_id(), rider_id=rider_id, reason="投诉核查中"))
    eventually(lambda: get_claim(merchants, claim_id).status == pb.CLAIM_STATUS_FROZEN,
               "the suspended rider's code frozen")
    refused = call_error(lambda: merchants.client(token=city.shop_token).RedeemCode(
        redeem_request(city.shop, code)))
    assert (refused.code, refused.reason) == (PRECONDITION, "CLAIM_FROZEN"), refused
    assert get_perk(merchants, offer.perk_id).outstanding_codes == 1  # still the rider's

    def frozen_events() -> list[feed_pb.StoredEvent]:
        return [e for e in merchants.events(CLAIM_FROZEN) if e.originator_id == claim_id]
    assert len(frozen_events()) == 1
    caught_up(merchants)
    written = merchants.last_position()

    # merchants restarts (SIGTERM); the rider is reinstated on identity while it is down.
    merchants.stop()
    try:
        identity.client("street_office").ReinstateRider(ipb.ReinstateRiderRequest(
            request_id=new_request_id(), rider_id=rider_id, reason="核查完毕"))
    finally:
        merchants.start()

    eventually(lambda: get_claim(merchants, claim_id).status == pb.CLAIM_STATUS_ISSUED,
               "the reinstated rider's code issued again after the restart")
    caught_up(merchants)
    assert len(frozen_events()) == 1, "an identity event was applied twice after the restart"
    unfrozen = [e for e in merchants.events(CLAIM_UNFROZEN) if e.originator_id == claim_id]
    assert len(unfrozen) == 1
    # Since the restart: the reinstatement's own effects only (the rider's standing, the claim).
    new = merchants.client("service").read_events(from_position=written + 1, limit=100).events
    assert sorted(e.topic.rsplit(":", 1)[1] for e in new) == [
        "Claim.Unfrozen", "RiderStanding.StatusNoted"], [e.topic for e in new]

    redeemed = merchants.client(token=city.shop_token).RedeemCode(redeem_request(city.shop, code))
    assert redeemed.claim.status == pb.CLAIM_STATUS_REDEEMED
    assert redeemed.perk_offer.redeemed_count == 1


# ---------------------------------------------------------------------------- concurrency


def test_two_hundred_concurrent_claims_on_a_quota_of_fifty_give_fifty_codes_then_one_redeems(
        identity: ServiceProcess, merchants: ServiceProcess, city: City) -> None:
    riders = new_riders(identity, city, 200)
    caught_up(merchants)  # the race is about the quota, not about learning of the riders
    offer = published_perk(merchants, city.other_shop_token, city.other_shop, total_quota=50)
    barrier = threading.Barrier(len(riders))

    def attempt(rider_id: str) -> tuple[str, pb.Claim | None]:
        client = merchants.client("platform")
        request = pb.ClaimPerkRequest(request_id=new_request_id(), perk_id=offer.perk_id,
                                      rider_id=rider_id)
        barrier.wait(timeout=30)
        try:
            return "OK", client.ClaimPerk(request, timeout=60).claim
        except grpc.RpcError as error:
            details = details_of(error)
            return f"{details.code.name} {details.reason}", None

    with ThreadPoolExecutor(max_workers=len(riders)) as pool:
        results = list(pool.map(attempt, riders))
    outcomes = Counter(outcome for outcome, _ in results)
    assert outcomes == {"OK": 50, "FAILED_PRECONDITION QUOTA_EXHAUSTED": 150}, outcomes
    claims = [c for _, c in results if c is not None]
    assert len({c.code for c in claims}) == 50
    assert len({c.rider_id for c in claims}) == 50
    seen = get_perk(merchants, offer.perk_id)
    assert (seen.remaining_quota, seen.outstanding_codes) == (0, 50)
    issued = [e for e in merchants.events(CLAIM_ISSUED)
              if state(e)["perk_id"] == offer.perk_id]
    assert len(issued) == 50

    # Twenty tills redeem one code at the same moment: it is redeemed once.
    code, claim_id = claims[0].code, claims[0].claim_id
    till_barrier = threading.Barrier(20)

    def redeem_once(_: int) -> str:
        till = merchants.client(token=city.other_shop_token)
        request = redeem_request(city.other_shop, code)
        till_barrier.wait(timeout=30)
        try:
            till.RedeemCode(request, timeout=60)
        except grpc.RpcError as error:
            details = details_of(error)
            return f"{details.code.name} {details.reason}"
        return "OK"

    with ThreadPoolExecutor(max_workers=20) as pool:
        tills = Counter(pool.map(redeem_once, range(20)))
    assert tills == {"OK": 1, "FAILED_PRECONDITION CODE_ALREADY_REDEEMED": 19}, tills
    assert len([e for e in merchants.events(CLAIM_REDEEMED)
                if e.originator_id == claim_id]) == 1
    seen = get_perk(merchants, offer.perk_id)
    assert (seen.remaining_quota, seen.outstanding_codes, seen.redeemed_count) == (0, 49, 1)


# ---------------------------------------------------------------------------- idempotency


def test_a_retried_claim_answers_the_first_answer_and_writes_nothing_also_after_a_restart(
        identity: ServiceProcess, merchants: ServiceProcess, city: City) -> None:
    rider_id, other = new_rider(identity, city), new_rider(identity, city)
    offer = published_perk(merchants, city.shop_token, city.shop)
    caught_up(merchants)
    request = pb.ClaimPerkRequest(request_id=new_request_id(), perk_id=offer.perk_id,
                                  rider_id=rider_id)
    first = merchants.client("platform").ClaimPerk(request)
    assert first.claim.code and first.remaining_quota == 4
    written = merchants.last_position()

    again = merchants.client("platform").ClaimPerk(request)
    assert again == first
    assert merchants.last_position() == written

    changed = pb.ClaimPerkRequest()
    changed.CopyFrom(request)
    changed.rider_id = other
    details = call_error(lambda: merchants.client("platform").ClaimPerk(changed))
    assert details.code == INVALID and "request_id" in details.fields, details
    assert merchants.last_position() == written

    merchants.restart()
    assert merchants.client("platform").ClaimPerk(request) == first
    assert merchants.last_position() == written
    seen = get_perk(merchants, offer.perk_id)
    assert (seen.remaining_quota, seen.outstanding_codes) == (4, 1)
    assert len([e for e in merchants.events(CLAIM_ISSUED)
                if state(e)["perk_id"] == offer.perk_id]) == 1

    # The till's retry of a redemption (its first answer lost on the way) is the same success,
    # not CODE_ALREADY_REDEEMED.
    till = merchants.client(token=city.shop_token)
    redemption = redeem_request(city.shop, first.claim.code)
    redeemed = till.RedeemCode(redemption)
    written = merchants.last_position()
    assert till.RedeemCode(redemption) == redeemed
    assert merchants.last_position() == written
    assert redeemed.perk_offer.redeemed_count == 1
