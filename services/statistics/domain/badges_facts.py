"""What badges's events count as in the city's figures: its measures and a mapper per topic.

Volunteer service (爱心公益) counts when a community confirms it (logged and never confirmed, or
rejected, counts nothing), in the period of the day it was served, not the day it was
confirmed: a shift of 30 March confirmed on 3 April joins March then, and shows as the
difference between March as reported on 1 April and March today. It is counted at the
confirming community (the store places the community in its street).

A badge revoked or expired was still awarded: the award stays in the period it was made
(badges_awarded is never reduced), and the revocation or the expiry counts at its own moment
(badges_revoked, badges_expired). How many badges riders hold at a moment is the stock
badges_in_force: +1 at the award, −1 at the revocation or the expiry. So "March as it stood
on 1 April" and "March today" differ by late records only, never because a badge of March was
revoked in June — June's figures say that. An award grown into the next badge of its ladder
(青蜂 → 金蜂) stays in force: its credential still verifies."""

from __future__ import annotations

from decimal import Decimal

from services.badges import events as topics
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
    measure_maker,
)
from services.statistics.domain.mapping import (
    fact,
    hundredths,
    kept_moment,
    kept_where,
    moment,
    moment_kept,
    rider_where,
    where_kept,
)

SERVICE = "badges"

VOLUNTEER_HOURS_CONFIRMED = "volunteer_hours_confirmed"
VOLUNTEER_SHIFTS_CONFIRMED = "volunteer_shifts_confirmed"
BADGES_AWARDED = "badges_awarded"
BADGES_REVOKED = "badges_revoked"
BADGES_EXPIRED = "badges_expired"
BADGES_IN_FORCE = "badges_in_force"

# Hours are kept in hundredths of an hour: the precision badges records them in.
HOURS_SCALE = 100

_D = Dimension
_AT_COMMUNITY = frozenset({_D.CITY, _D.DISTRICT, _D.STREET, _D.COMMUNITY, _D.STATION,
                           _D.PLATFORM})
_OF_RIDER = RIDER_DIMENSIONS


_measure = measure_maker(SERVICE)


MEASURES: tuple[Measure, ...] = (
    _measure(VOLUNTEER_HOURS_CONFIRMED, "志愿服务时长", "小时", _AT_COMMUNITY,
             "Hours of volunteer service (爱心公益) a community confirmed, in the period of the "
             "day the service started (not of the confirmation), at the confirming community, "
             "with the rider's platform and station. Logged service never confirmed, or "
             "rejected, counts nothing. Exact to the hundredth of an hour.",
             "经社区确认的志愿服务（爱心公益）时长，按服务开始当日（而非确认日）计入当期；"
             "按确认的社区统计，并计骑手的平台和站点。已登记但未经确认或被驳回的服务不计。"
             "精确到0.01小时。",
             scale=HOURS_SCALE),
    _measure(VOLUNTEER_SHIFTS_CONFIRMED, "志愿服务人次", "人次", _AT_COMMUNITY,
             "Volunteer shifts a community confirmed (one rider's one stretch of service, "
             "logged or recorded as attendance at an activity), in the period of the day the "
             "service started, at the confirming community.",
             "经社区确认的志愿服务人次（一名骑手的一段服务，含自行登记的服务和参加活动的签到"
             "记录），按服务开始当日计入当期；按确认的社区统计。"),
    _measure(BADGES_AWARDED, "授予徽章", "枚", _OF_RIDER,
             "Badges (金蜂骑士, 青蜂骑士...) awarded to riders, automatically or by an official, "
             "at the moment of the award, in the rider's home street with their platform and "
             "station. A later revocation or expiry does not take it back here: it counts in "
             "badges_revoked or badges_expired when it happens.",
             "授予骑手的徽章（金蜂骑士、青蜂骑士等）枚数，含系统自动授予和工作人员授予，以"
             "授予时间计入当期；按骑手常住街道、所属平台和站点统计。此后撤销或到期的，不在本项"
             "扣减，分别在发生时计入“撤销徽章”“到期徽章”。"),
    _measure(BADGES_REVOKED, "撤销徽章", "枚", _OF_RIDER,
             "Awards an official revoked, at the moment of the revocation, where the award "
             "was counted.",
             "工作人员撤销的徽章枚数，以撤销时间计入当期；计入原授予所计的街道、平台和站点。"),
    _measure(BADGES_EXPIRED, "到期徽章", "枚", _OF_RIDER,
             "Awards that reached the end of their validity, at their expiry moment, where "
             "the award was counted.",
             "有效期届满的徽章枚数，以到期时间计入当期；计入原授予所计的街道、平台和站点。"),
    _measure(BADGES_IN_FORCE, "有效徽章", "枚", _OF_RIDER,
             "Awards in force at the end of the period: awarded, neither revoked nor expired "
             "by then (an award grown into the next badge of its ladder stays in force), "
             "where the award was counted.",
             "期末仍有效的徽章枚数（存量）：已授予、到期末既未撤销也未到期的；晋升为同一序列"
             "下一级徽章的，原徽章仍计为有效；计入原授予所计的街道、平台和站点。",
             MeasureKind.STOCK),
)

_SHIFT, _AWARD = "shift", "award"


# ---------------------------------------------------------------------------- volunteer service


def shift_logged(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    s = event.state
    memory.put(_SHIFT, event.originator_id, {
        "rider_id": s["rider_id"], "community_id": s["community_id"],
        "started_at": kept_moment(s["started_at"]), "hours": str(s["hours"])})
    return []


def shift_confirmed(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    shift = memory.get(_SHIFT, event.originator_id)
    if not shift:
        return []  # a confirmation of nothing logged: badges never stores one
    where = rider_where(directory, str(shift["rider_id"]),
                        community_id=str(shift["community_id"]))
    served = moment_kept(str(shift["started_at"]), event.recorded_at)
    return [fact(VOLUNTEER_HOURS_CONFIRMED, event, served, where,
                 hundredths(Decimal(str(shift["hours"])))),
            fact(VOLUNTEER_SHIFTS_CONFIRMED, event, served, where)]


# ---------------------------------------------------------------------------- awards


def award_granted(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    s = event.state
    where = rider_where(directory, s["rider_id"])
    expires_at = s.get("expires_at")
    memory.put(_AWARD, event.originator_id, {
        "where": kept_where(where),
        "expires_at": kept_moment(expires_at) if expires_at else ""})
    at = moment(event, "awarded_at")
    return [fact(BADGES_AWARDED, event, at, where), fact(BADGES_IN_FORCE, event, at, where)]


def award_revoked(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    where = where_kept((memory.get(_AWARD, event.originator_id) or {}).get("where"))
    at = moment(event, "at")
    return [fact(BADGES_REVOKED, event, at, where),
            fact(BADGES_IN_FORCE, event, at, where, -1)]


def award_expired(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    award = memory.get(_AWARD, event.originator_id) or {}
    where = where_kept(award.get("where"))
    # It expired at its expiry moment; the job stores that a little (or, after an outage, a
    # lot) later.
    at = moment_kept(str(award.get("expires_at") or ""), event.recorded_at)
    return [fact(BADGES_EXPIRED, event, at, where),
            fact(BADGES_IN_FORCE, event, at, where, -1)]


MAPPERS: dict[str, Mapper] = {
    topics.SHIFT_LOGGED: shift_logged,
    topics.SHIFT_CONFIRMED: shift_confirmed,
    topics.BADGE_GRANTED: award_granted,
    topics.BADGE_REVOKED: award_revoked,
    topics.BADGE_EXPIRED: award_expired,
}
