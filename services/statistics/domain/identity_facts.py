"""What identity's events count as in the city's figures: riders registered, verified,
suspended, leaving and active (a stock), the careers riders made (站长, 志愿者, 社区社工), and
the riders the service spaces served (到访人次)."""

from __future__ import annotations

from datetime import date, datetime

from services.statistics.domain.facts import (
    PLACE_DIMENSIONS,
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
    rider_where,
)
from services.statistics.domain.periods import day_start

SERVICE = "identity"
_MODEL = "services.identity.domain.model"
RIDER_REGISTERED = f"{_MODEL}:Rider.Registered"
RIDER_VERIFIED = f"{_MODEL}:Rider.Verified"
RIDER_SUSPENDED = f"{_MODEL}:Rider.Suspended"
RIDER_REINSTATED = f"{_MODEL}:Rider.Reinstated"
RIDER_LEFT = f"{_MODEL}:Rider.Left"
MILESTONE_RECORDED = f"{_MODEL}:Rider.CareerMilestoneRecorded"
SPACE_USE_STARTED = f"{_MODEL}:SpaceUseDay.Started"
SPACE_USE_RECORDED = f"{_MODEL}:SpaceUseDay.UseRecorded"

_D = Dimension
# A milestone may be taken at a community (a community social worker).
CAREER_DIMENSIONS = RIDER_DIMENSIONS | {_D.COMMUNITY}

# The milestones (identity's CareerMilestoneKind) and the measure each counts in.
MILESTONE_MEASURES = {
    "STATION_MASTER": "riders_became_station_master",
    "VOLUNTEER": "riders_became_volunteer",
    "COMMUNITY_SOCIAL_WORKER": "riders_became_social_worker",
}

MEASURES: tuple[Measure, ...] = (
    Measure("riders_registered", "注册骑手", "人", SERVICE, RIDER_DIMENSIONS,
            "Riders registered in the period, at the moment identity registered them; by "
            "home street, station and platform.",
            "统计期内新注册的骑手人数，以完成注册的时间计入当期；按骑手常住街道、所属站点和"
            "平台统计。"),
    Measure("riders_verified", "平台认证骑手", "人", SERVICE, RIDER_DIMENSIONS,
            "Riders the platform verified in the period, at the moment of verification.",
            "统计期内经平台认证的骑手人数，以认证时间计入当期。"),
    Measure("riders_suspended", "暂停骑手", "人次", SERVICE, RIDER_DIMENSIONS,
            "Suspensions of riders in the period (a rider suspended twice counts twice).",
            "统计期内骑手被暂停的人次，以暂停时间计入当期；同一骑手被暂停两次计两人次。"),
    Measure("riders_left", "退出骑手", "人", SERVICE, RIDER_DIMENSIONS,
            "Riders who left the programme in the period.",
            "统计期内退出本项目的骑手人数，以退出时间计入当期。"),
    Measure("riders_active", "在岗骑手", "人", SERVICE, RIDER_DIMENSIONS,
            "Riders active at the period's end: verified, and neither suspended nor left "
            "(a stock: every verification, suspension, reinstatement and leaving before the "
            "end).",
            "期末在岗的骑手人数（存量）：已经平台认证，且未被暂停、未退出的骑手；由期末以前的"
            "每一次认证、暂停、恢复和退出累计得出。", kind=MeasureKind.STOCK),
    Measure("riders_became_station_master", "成长为站长", "人", SERVICE, CAREER_DIMENSIONS,
            "Riders who became a station master (站长), at the moment the milestone took "
            "effect; by the rider's home street.",
            "统计期内成长为站长的骑手人数，以该成长节点生效的时间计入当期；按骑手常住街道"
            "统计。"),
    Measure("riders_became_volunteer", "成为志愿者", "人", SERVICE, CAREER_DIMENSIONS,
            "Riders who became volunteers (志愿者), at the moment the milestone took effect; "
            "at the community or street it names, else the rider's home street.",
            "统计期内成为志愿者的骑手人数，以该成长节点生效的时间计入当期；计入节点登记的"
            "社区或街道，未登记的计入骑手常住街道。"),
    Measure("riders_became_social_worker", "成为社区社工", "人", SERVICE, CAREER_DIMENSIONS,
            "Riders who became community social workers (社区社工), at the moment the "
            "milestone took effect; at the community it names.",
            "统计期内成为社区社工的骑手人数，以该成长节点生效的时间计入当期；计入节点登记的"
            "社区。"),
    Measure("space_riders_served", "服务空间服务骑手", "人次", SERVICE, PLACE_DIMENSIONS,
            "Uses of the service spaces' amenities by riders (歇脚, 充电, 饮水...) recorded for "
            "each day, counted on that day; by the space's street.",
            "骑手使用服务空间设施（歇脚、充电、饮水等）的人次，按所登记的服务日期计入当期"
            "（次日补登的仍计入服务当日）；按服务空间所在街道统计。"),
)

# What identity's memory keeps of a rider: whether active, verified (for riders_active).
_RIDER = "rider"
_SPACE_DAY = "space_use_day"
ACTIVE, REGISTERED, SUSPENDED, LEFT = "ACTIVE", "REGISTERED", "SUSPENDED", "LEFT"


def _fact(measure: str, value: int, event: Event, where: Where,
          effective_at: datetime | None = None) -> Fact:
    return Fact(measure=measure, value=value, effective_at=effective_at or event.recorded_at,
                recorded_at=event.recorded_at, where=where)


def _status_change(event: Event, directory: Directory, memory: Memory, to: str,
                   verified: bool | None = None, effective_at: datetime | None = None
                   ) -> list[Fact]:
    """The rider's status moves to `to`: ±1 rider active if it enters or leaves ACTIVE."""
    known = memory.get(_RIDER, event.originator_id) or {"status": REGISTERED,
                                                        "verified": False}
    was = known["status"]
    now_verified = known["verified"] if verified is None else verified
    memory.put(_RIDER, event.originator_id, {"status": to, "verified": now_verified})
    delta = (to == ACTIVE) - (was == ACTIVE)
    if not delta:
        return []
    return [_fact("riders_active", delta, event, rider_where(directory, event.originator_id),
                  effective_at)]


def registered(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    memory.put(_RIDER, event.originator_id, {"status": REGISTERED, "verified": False})
    s = event.state
    where = Where(street_id=s["home_street_id"], station_id=s.get("station_id") or "",
                  platform_id=s["platform_id"])
    return [_fact("riders_registered", 1, event, where)]


def verified(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    at = event.state.get("at") or event.recorded_at
    known = memory.get(_RIDER, event.originator_id) or {"status": REGISTERED}
    # Verification activates a registered rider; a suspended one stays suspended.
    to = ACTIVE if known["status"] == REGISTERED else known["status"]
    return [_fact("riders_verified", 1, event, rider_where(directory, event.originator_id), at),
            *_status_change(event, directory, memory, to, verified=True, effective_at=at)]


def suspended(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    return [_fact("riders_suspended", 1, event, rider_where(directory, event.originator_id)),
            *_status_change(event, directory, memory, SUSPENDED)]


def reinstated(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    known = memory.get(_RIDER, event.originator_id) or {"verified": False}
    return _status_change(event, directory, memory,
                          ACTIVE if known.get("verified") else REGISTERED)


def left(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    return [_fact("riders_left", 1, event, rider_where(directory, event.originator_id)),
            *_status_change(event, directory, memory, LEFT)]


def milestone(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    s = event.state
    measure = MILESTONE_MEASURES.get(str(s["kind"]))
    if measure is None:
        return []
    # Where the rider took it up, when it names a place: a community or a street.
    place = directory.organisation(s.get("organisation_id") or "")
    kind = str(place.kind) if place is not None else ""
    where = rider_where(directory, event.originator_id,
                        community_id=s["organisation_id"] if kind == "COMMUNITY" else "",
                        street_id=s["organisation_id"] if kind == "STREET" else "")
    return [_fact(measure, 1, event, where, s.get("effective_at"))]


def space_use_started(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    memory.put(_SPACE_DAY, event.originator_id,
               {"space": event.state["service_space_id"], "day": event.state["day"]})
    return []


def space_used(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    day = memory.get(_SPACE_DAY, event.originator_id)
    if day is None:
        return []
    street = directory.service_space_street(day["space"]) or ""
    # Counted on the day it was recorded for (a day's tally may be entered the day after).
    return [_fact("space_riders_served", int(event.state["count"]), event,
                  Where(street_id=street), day_start(date.fromisoformat(day["day"])))]


# topic -> mapper
MAPPERS: dict[str, Mapper] = {
    RIDER_REGISTERED: registered,
    RIDER_VERIFIED: verified,
    RIDER_SUSPENDED: suspended,
    RIDER_REINSTATED: reinstated,
    RIDER_LEFT: left,
    MILESTONE_RECORDED: milestone,
    SPACE_USE_STARTED: space_use_started,
    SPACE_USE_RECORDED: space_used,
}
