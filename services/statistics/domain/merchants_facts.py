"""What merchants's events count as in the city's figures: its measures and a mapper per topic.

Friendly merchants (友好商户) are counted in their street; a perk, a claim and a redemption at
their merchant's street with the merchant, and with the platform and station of the rider who
claimed; a care package (关爱礼包) in its campaign's street, with the rider's platform and
station. Only fields every stored version of an event carries are read (Merchant.Applied v1
has `street_id`, CareCampaign.Launched v1 too), so old events count as new ones do.

A reversed redemption (a till mistake, reversible within the hour) never happened as far as
the figures go: it takes 1 back from the redemptions at the redemption's own moment, and
counts 1 reversal at its own. "March as it stood on 1 April" keeps a redemption of 31 March
23:50 reversed at 00:20 on 1 April; today's March does not — the difference is the reversal."""

from __future__ import annotations

from typing import Any

from services.merchants import events as topics
from services.statistics.domain.facts import (
    RIDER_DIMENSIONS,
    Dimension,
    Directory,
    Event,
    Fact,
    Mapper,
    Measure,
    MeasureKind,
    Memory,
    Where,
    measure_maker,
)
from services.statistics.domain.mapping import (
    fact,
    kept_moment,
    kept_where,
    moment,
    moment_kept,
    rider_where,
    where_kept,
)

SERVICE = "merchants"

FRIENDLY_MERCHANTS_APPROVED = "friendly_merchants_approved"
FRIENDLY_MERCHANTS_SUSPENDED = "friendly_merchants_suspended"
FRIENDLY_MERCHANTS_REINSTATED = "friendly_merchants_reinstated"
FRIENDLY_MERCHANTS = "friendly_merchants"
PERKS_PUBLISHED = "perks_published"
PERK_CLAIMS = "perk_claims"
PERK_REDEMPTIONS = "perk_redemptions"
PERK_REDEMPTION_REVERSALS = "perk_redemption_reversals"
PERK_CODES_LAPSED = "perk_codes_lapsed"
CARE_PACKAGES_ALLOCATED = "care_packages_allocated"
CARE_PACKAGES_HANDED_OVER = "care_packages_handed_over"
CARE_PACKAGES_DONATED = "care_packages_donated"

_D = Dimension
_MERCHANT_PLACE = frozenset({_D.CITY, _D.DISTRICT, _D.STREET, _D.MERCHANT})
_AT_MERCHANT_FOR_RIDER = _MERCHANT_PLACE | {_D.STATION, _D.PLATFORM}
_CAMPAIGN_FOR_RIDER = RIDER_DIMENSIONS


_measure = measure_maker(SERVICE)


MEASURES: tuple[Measure, ...] = (
    _measure(FRIENDLY_MERCHANTS_APPROVED, "新增友好商户", "家", _MERCHANT_PLACE,
             "Merchants the street office approved as friendly merchants (友好商户), in the "
             "merchant's street, when the approval was stored. A reinstatement after a "
             "suspension is not a new approval (friendly_merchants_reinstated).",
             "经街道办审核通过的友好商户家数，以审核通过记录在案的时间计入当期；按商户所在"
             "街道统计。暂停后恢复的不算新增（见“恢复友好商户”）。"),
    _measure(FRIENDLY_MERCHANTS_SUSPENDED, "暂停友好商户", "家", _MERCHANT_PLACE,
             "Friendly merchants suspended, in the merchant's street, when the suspension was "
             "stored.",
             "被暂停的友好商户家数，以暂停记录在案的时间计入当期；按商户所在街道统计。"),
    _measure(FRIENDLY_MERCHANTS_REINSTATED, "恢复友好商户", "家", _MERCHANT_PLACE,
             "Suspended friendly merchants reinstated, in the merchant's street, when the "
             "reinstatement was stored.",
             "暂停后恢复的友好商户家数，以恢复记录在案的时间计入当期；按商户所在街道统计。"),
    _measure(FRIENDLY_MERCHANTS, "友好商户数", "家", _MERCHANT_PLACE,
             "Friendly merchants in good standing at the end of the period, in their street: "
             "each approval and reinstatement adds one, each suspension takes one away, at "
             "the moment it was stored. An application or a rejection counts nothing.",
             "期末正常经营的友好商户家数（存量），按所在街道统计：每次审核通过或恢复加一家，"
             "每次暂停减一家，以记录在案的时间为准；提出申请或申请被驳回均不计。",
             MeasureKind.STOCK),
    _measure(PERKS_PUBLISHED, "发布优惠项目", "项", _MERCHANT_PLACE,
             "Perk offers their merchant published for riders, counted once, when first "
             "published (publishing again after a pause is the same perk), with the merchant "
             "in its street.",
             "商户面向骑手发布的优惠项目数，以首次发布的时间计入当期，每项只计一次（暂停后再次"
             "发布仍是同一项目）；按商户及其所在街道统计。"),
    _measure(PERK_CLAIMS, "优惠领取", "次", _AT_MERCHANT_FOR_RIDER,
             "Perk codes riders claimed, at the moment of the claim, with the perk's merchant "
             "in its street and the platform and station of the rider who claimed. A code "
             "that later lapses or is redeemed stays a claim.",
             "骑手领取优惠码的次数，以领取时间计入当期；按优惠项目所属商户及其所在街道、领取"
             "骑手的平台和站点统计。领取后过期或已核销的，仍计为领取。"),
    _measure(PERK_REDEMPTIONS, "优惠核销", "次", _AT_MERCHANT_FOR_RIDER,
             "Perk codes the merchant redeemed, at the moment of the redemption, with the "
             "merchant in its street and the rider's platform and station. A redemption "
             "reversed later is taken back at the redemption's own moment (the reversal is "
             "recorded later: the period's figure as it stood before the reversal still holds "
             "it).",
             "商户核销优惠码的次数，以核销时间计入当期；按商户及其所在街道、骑手的平台和站点"
             "统计。事后撤销的核销，从核销当时所在的期间扣除（撤销记录在后：按撤销以前的时点"
             "查看，该期数字仍含这次核销）。"),
    _measure(PERK_REDEMPTION_REVERSALS, "核销撤销", "次", _AT_MERCHANT_FOR_RIDER,
             "Redemptions the merchant reversed (a till mistake, within an hour), at the "
             "moment of the reversal, where the redemption was counted.",
             "商户撤销核销的次数（如收银失误，须在一小时内撤销），以撤销时间计入当期；计入原"
             "核销所计的商户、街道、平台和站点。"),
    _measure(PERK_CODES_LAPSED, "优惠码过期未用", "个", _AT_MERCHANT_FOR_RIDER,
             "Claimed codes never redeemed before they expired, at their expiry moment, "
             "where the claim was counted; their quota went back to the perk.",
             "骑手已领取、但到期前未核销的优惠码个数，以到期时间计入当期；计入原领取所计的"
             "商户、街道、平台和站点。过期优惠码的名额退回该优惠项目。"),
    _measure(CARE_PACKAGES_ALLOCATED, "关爱礼包分配", "份", _CAMPAIGN_FOR_RIDER,
             "Care packages (关爱礼包) allocated to riders, at the moment of allocation, in "
             "the campaign's street, with the rider's platform and station.",
             "分配给骑手的关爱礼包份数，以分配时间计入当期；按关爱活动所在街道、骑手的平台和"
             "站点统计。"),
    _measure(CARE_PACKAGES_HANDED_OVER, "关爱礼包发放", "份", _CAMPAIGN_FOR_RIDER,
             "Care packages handed over to their rider, at the moment the hand-over was "
             "recorded as made, in the campaign's street, with the rider's platform and "
             "station.",
             "已交到骑手手中的关爱礼包份数，以登记发放完成的时间计入当期；按关爱活动所在街道、"
             "骑手的平台和站点统计。"),
    _measure(CARE_PACKAGES_DONATED, "爱心捐赠礼包", "份", _MERCHANT_PLACE,
             "Whole packages sponsors donated to care campaigns (adding to their stock), at "
             "the moment of the donation, in the campaign's street; by merchant when the "
             "sponsor is a friendly merchant. Donations of items only count nothing here.",
             "爱心单位向关爱活动捐赠的整份礼包数（计入活动库存），以捐赠时间计入当期；按关爱"
             "活动所在街道统计，捐赠方是友好商户的也可按商户统计。只捐赠物品的不计入本项。"),
)

# Memory kinds (per log: merchants').
_MERCHANT, _PERK, _CLAIM, _CAMPAIGN = "merchant", "perk", "claim", "campaign"


def _merchant_street(merchant_id: str, directory: Directory, memory: Memory) -> str:
    """The merchant's street as it applied (identity's parent of the merchant organisation
    when merchants never heard of it: they are the same street, apply_merchant checks)."""
    kept = memory.get(_MERCHANT, merchant_id)
    if kept:
        return str(kept["street_id"])
    org = directory.organisation(merchant_id)
    return (org.parent_id or "") if org is not None else ""


# ---------------------------------------------------------------------------- merchants


def merchant_applied(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    memory.put(_MERCHANT, event.originator_id, {"street_id": event.state["street_id"]})
    return []


def _merchant_standing(measure: str, stock: int) -> Mapper:
    def mapper(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
        where = Where(street_id=_merchant_street(event.originator_id, directory, memory),
                      merchant_id=event.originator_id)
        return [fact(measure, event, event.recorded_at, where),
                fact(FRIENDLY_MERCHANTS, event, event.recorded_at, where, stock)]
    mapper.__name__ = f"merchant_{measure}"
    return mapper


merchant_approved = _merchant_standing(FRIENDLY_MERCHANTS_APPROVED, +1)
merchant_suspended = _merchant_standing(FRIENDLY_MERCHANTS_SUSPENDED, -1)
merchant_reinstated = _merchant_standing(FRIENDLY_MERCHANTS_REINSTATED, +1)


# ---------------------------------------------------------------------------- perks


def perk_created(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    memory.put(_PERK, event.originator_id,
               {"merchant_id": event.state["merchant_id"], "published": False})
    return []


def perk_published(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    perk = dict(memory.get(_PERK, event.originator_id) or {})
    if perk.get("published"):
        return []  # published again after a pause: the same perk
    memory.put(_PERK, event.originator_id, {**perk, "published": True})
    merchant_id = str(perk.get("merchant_id", ""))
    where = Where(street_id=_merchant_street(merchant_id, directory, memory) if merchant_id
                  else "", merchant_id=merchant_id)
    return [fact(PERKS_PUBLISHED, event, event.recorded_at, where)]


# ---------------------------------------------------------------------------- claims


def claim_issued(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    s = event.state
    merchant_id = s["merchant_id"]
    where = rider_where(directory, s["rider_id"],
                        street_id=_merchant_street(merchant_id, directory, memory),
                        merchant_id=merchant_id)
    memory.put(_CLAIM, event.originator_id, {
        "where": kept_where(where), "expires_at": kept_moment(s["expires_at"]),
        "redeemed_at": ""})
    return [fact(PERK_CLAIMS, event, moment(event, "claimed_at"), where)]


def _claim(event: Event, memory: Memory) -> dict[str, Any]:
    return dict(memory.get(_CLAIM, event.originator_id) or {})


def claim_redeemed(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    claim = _claim(event, memory)
    at = moment(event, "at")
    memory.put(_CLAIM, event.originator_id, {**claim, "redeemed_at": kept_moment(at)})
    return [fact(PERK_REDEMPTIONS, event, at, where_kept(claim.get("where")))]


def claim_reversed(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    claim = _claim(event, memory)
    where = where_kept(claim.get("where"))
    at = moment(event, "at")
    redeemed_at = moment_kept(claim.get("redeemed_at"), at)
    memory.put(_CLAIM, event.originator_id, {**claim, "redeemed_at": ""})
    return [fact(PERK_REDEMPTIONS, event, redeemed_at, where, -1),
            fact(PERK_REDEMPTION_REVERSALS, event, at, where)]


def claim_lapsed(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    claim = _claim(event, memory)
    # The code lapsed when it expired; the lapse is stored when it is next noticed.
    expired = moment_kept(claim.get("expires_at"), event.recorded_at)
    return [fact(PERK_CODES_LAPSED, event, expired, where_kept(claim.get("where")))]


# ---------------------------------------------------------------------------- care packages


def campaign_launched(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    memory.put(_CAMPAIGN, event.originator_id, {"street_id": event.state["street_id"]})
    return []


def _campaign_street(event: Event, memory: Memory) -> str:
    return str((memory.get(_CAMPAIGN, event.originator_id) or {}).get("street_id", ""))


def _package(measure: str) -> Mapper:
    def mapper(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
        where = rider_where(directory, event.state["rider_id"],
                            street_id=_campaign_street(event, memory))
        return [fact(measure, event, moment(event, "at"), where)]
    mapper.__name__ = f"package_{measure}"
    return mapper


package_allocated = _package(CARE_PACKAGES_ALLOCATED)
package_handed_over = _package(CARE_PACKAGES_HANDED_OVER)


def donation_recorded(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    packages = int(event.state.get("packages") or 0)
    if packages <= 0:
        return []
    sponsor = directory.organisation(event.state["sponsor_id"])
    where = Where(street_id=_campaign_street(event, memory),
                  merchant_id=event.state["sponsor_id"]
                  if sponsor is not None and sponsor.kind == "MERCHANT" else "")
    return [fact(CARE_PACKAGES_DONATED, event, moment(event, "at"), where, packages)]


MAPPERS: dict[str, Mapper] = {
    topics.MERCHANT_APPLIED: merchant_applied,
    topics.MERCHANT_APPROVED: merchant_approved,
    topics.MERCHANT_SUSPENDED: merchant_suspended,
    topics.MERCHANT_REINSTATED: merchant_reinstated,
    topics.PERK_CREATED: perk_created,
    topics.PERK_PUBLISHED: perk_published,
    topics.CLAIM_ISSUED: claim_issued,
    topics.CLAIM_REDEEMED: claim_redeemed,
    topics.CLAIM_REVERSED: claim_reversed,
    topics.CLAIM_LAPSED: claim_lapsed,
    topics.CAMPAIGN_LAUNCHED: campaign_launched,
    topics.PACKAGE_ALLOCATED: package_allocated,
    topics.PACKAGE_HANDED_OVER: package_handed_over,
    topics.CARE_DONATION_RECORDED: donation_recorded,
}
