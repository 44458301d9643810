"""Value rules of the governance domain: kinds and categories of reports, deadlines, distances
and the levels a missed deadline escalates through."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.errors import Violations

# One haversine for the city: governance's duplicate check and FindNearby measure alike.
from shared.geo import EARTH_RADIUS_METRES, distance_metres


class ReportKind(StrEnum):
    ANOMALY_WARNING = "ANOMALY_WARNING"  # 异常情况预警
    EMERGENCY = "EMERGENCY"  # 突发事件直报
    PUBLIC_SENTIMENT = "PUBLIC_SENTIMENT"  # 社情民意传达


class Category(StrEnum):
    ROAD_HAZARD = "ROAD_HAZARD"
    FIRE = "FIRE"
    PUBLIC_SECURITY = "PUBLIC_SECURITY"
    PERSON_IN_NEED = "PERSON_IN_NEED"
    DISPUTE = "DISPUTE"
    ENVIRONMENT = "ENVIRONMENT"
    OTHER = "OTHER"
    # Water, power, gas and heating (水电气热): 12345's own 24-hour clock.
    UTILITIES = "UTILITIES"


class DepartmentFunction(StrEnum):
    """The functions identity gives departments; governance matches on the same strings."""

    SOCIAL_WORK = "SOCIAL_WORK"  # 社会工作
    POLITICAL_LEGAL = "POLITICAL_LEGAL"  # 政法
    PUBLIC_SECURITY = "PUBLIC_SECURITY"  # 公安
    PETITIONS = "PETITIONS"  # 信访
    # Help requests (帮扶) go to these where the city has them (HELP_ROUTES).
    LEGAL_AID = "LEGAL_AID"  # 法律援助
    TRADE_UNION = "TRADE_UNION"  # 工会


class ReportStatus(StrEnum):
    OPEN = "OPEN"
    # Linked to an open report of the same incident instead of being routed a second time.
    DUPLICATE = "DUPLICATE"
    # Closed: every assignment is done, and at least one department resolved it.
    RESOLVED = "RESOLVED"
    # Closed: every department rejected it.
    REJECTED = "REJECTED"
    # Resolved, and the street office confirmed the resolution: this counts toward badges.
    VERIFIED = "VERIFIED"
    # Closed, rated unsatisfied by the rider: back with the street office, which assigns it
    # again (AssignReport) or upholds the outcome (UpholdReportOutcome). Not VERIFIED: a
    # verification it had is withdrawn until the office upholds it.
    REOPENED = "REOPENED"


class AssignmentStatus(StrEnum):
    ROUTED = "ROUTED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    IN_PROGRESS = "IN_PROGRESS"
    RESOLVED = "RESOLVED"
    REJECTED = "REJECTED"
    # The department handed it on to another (转派); the receiving department holds a new
    # assignment. Done, for closing the report: the work is the receiver's.
    TRANSFERRED = "TRANSFERRED"


DONE = frozenset({AssignmentStatus.RESOLVED, AssignmentStatus.REJECTED,
                  AssignmentStatus.TRANSFERRED})
OPEN_ASSIGNMENT = frozenset(AssignmentStatus) - DONE


class SatisfactionRating(StrEnum):
    """The rider's rating of a closed report's outcome (满意度): the three answers of the
    city hotline's return call."""

    SATISFIED = "SATISFIED"
    BASICALLY_SATISFIED = "BASICALLY_SATISFIED"
    UNSATISFIED = "UNSATISFIED"


# The rider rates the outcome within this long after the report closed (or closed again after
# a reopening), or their help request closed: afterwards FAILED_PRECONDITION
# RATING_WINDOW_CLOSED.
RATING_WINDOW = timedelta(days=7)
# How many times an unsatisfied rating reopens one report: once. A later unsatisfied rating
# (after the reopened report closed again) is recorded, and counts, but reopens nothing: the
# street office has reviewed it already.
MAX_REOPENINGS = 1


class RejectionReason(StrEnum):
    DUPLICATE = "DUPLICATE"
    NOT_ACTIONABLE = "NOT_ACTIONABLE"


class DeadlineKind(StrEnum):
    ACKNOWLEDGE = "ACKNOWLEDGE"
    RESOLVE = "RESOLVE"


class PauseReason(StrEnum):
    """Why a department stopped its assignment's clock (the time is not counted)."""

    WAITING_FOR_RIDER = "WAITING_FOR_RIDER"  # more information, a photo, access
    WAITING_FOR_THIRD_PARTY = "WAITING_FOR_THIRD_PARTY"  # a utility company, another authority
    OTHER = "OTHER"  # said in the note


class EscalationLevel(StrEnum):
    """市—区—街三级联动: a missed deadline goes one level up the tree."""

    STREET = "STREET"
    DISTRICT = "DISTRICT"
    CITY = "CITY"


LEVELS = (EscalationLevel.STREET, EscalationLevel.DISTRICT, EscalationLevel.CITY)


def next_level(level: EscalationLevel) -> EscalationLevel:
    """One level up; the city is the top and stays the city."""
    return LEVELS[min(LEVELS.index(level) + 1, len(LEVELS) - 1)]


class PartyRole(StrEnum):
    RIDER = "RIDER"
    PROPERTY_MANAGER = "PROPERTY_MANAGER"
    MERCHANT = "MERCHANT"
    CUSTOMER = "CUSTOMER"


class MediationStatus(StrEnum):
    OPEN = "OPEN"
    AGREED = "AGREED"
    FAILED = "FAILED"


class FollowUpResult(StrEnum):
    """Whether the parties kept what they agreed, as the street office found at a follow-up
    (回访)."""

    KEPT = "KEPT"
    PARTLY_KEPT = "PARTLY_KEPT"
    BROKEN = "BROKEN"


# Until the city admin sets its own (SetMediationPolicy): a follow-up is due this many days
# after an agreement, and again as long after a follow-up that found it only partly kept.
DEFAULT_FOLLOW_UP_DAYS = 30
MAX_FOLLOW_UP_DAYS = 365
# Reasons of mediation follow-ups' field violations.
DAY_BEFORE_AGREEMENT = "DAY_BEFORE_AGREEMENT"  # a follow-up dated before the agreement it checks
REOPEN_NEEDS_BROKEN = "REOPEN_NEEDS_BROKEN"  # only a broken agreement reopens a case


class PledgeKind(StrEnum):
    PARTICIPATION = "PARTICIPATION"  # 承诺倡议: riders sign it
    CO_BUILDING = "CO_BUILDING"  # 共建倡议: organisations sign it


# The organisation kinds (identity's, as its feed spells them) that may sign the co-building
# pledge: every kind but the city, which is its author. A business area (商圈) signs through
# its street office (it has no token of its own), as a community's committee does at its
# counter: the friendly-business-area mark (友好商圈) may ask for its signature.
CO_BUILDING_SIGNER_KINDS = frozenset({"DISTRICT", "STREET", "COMMUNITY", "DEPARTMENT",
                                      "PLATFORM", "STATION", "EDUCATION_PROVIDER", "MERCHANT",
                                      "BUSINESS_AREA"})


# ---------------------------------------------------------------------------- deadlines

# The clocks (12345's service standard, 接诉即办), until the city admin sets its own in the
# routing rules: a report of kind EMERGENCY always takes the emergency clock (the EMERGENCY
# entry of the deadlines by kind), whatever its category (突发事件直报: the rider said it
# cannot wait), always around the clock; any other takes its category's clock.
# A clock runs around the clock or in the city's working calendar (domain/calendar.py), where
# its durations are working time: "7 days" is 7 working days of the default 8-hour working day
# (56 working hours), so a city with shorter working days gives more calendar days to it.
HOUR = 3600
WORKING_DAY = 8 * HOUR
# Deadlines by report kind, as the routing rules had them before deadlines went by category:
# still set and shown (callers of that contract keep working), but only EMERGENCY's is used —
# it is the emergency clock, now 2 hours to resolve (12345's standard; it was 24 hours).
DEFAULT_DEADLINES: dict[ReportKind, tuple[timedelta, timedelta]] = {
    # kind: (acknowledge within, resolve within)
    ReportKind.EMERGENCY: (timedelta(minutes=15), timedelta(hours=2)),
    ReportKind.ANOMALY_WARNING: (timedelta(hours=2), timedelta(hours=72)),
    ReportKind.PUBLIC_SENTIMENT: (timedelta(hours=24), timedelta(days=15)),
}
# Acknowledge / resolve (feedback) within, in seconds, and whether around the clock.
EMERGENCY_CLOCK = {"acknowledge": 15 * 60, "resolve": 2 * HOUR, "around_the_clock": True}
# Risks to life or property: as an emergency, 2 hours around the clock.
_RISK = EMERGENCY_CLOCK
# Water, power, gas, heating: 24 hours around the clock (a burst main does not wait for Monday).
_UTILITIES = {"acknowledge": 2 * HOUR, "resolve": 24 * HOUR, "around_the_clock": True}
# General requests: 7 working days, picked up within half a working day.
_GENERAL = {"acknowledge": 4 * HOUR, "resolve": 7 * WORKING_DAY, "around_the_clock": False}
# Complex requests: 15 working days. A dispute is complex: both sides are heard, often in a
# mediation (调处) whose sessions the parties' diaries set, and an agreement is followed up.
_COMPLEX = {"acknowledge": WORKING_DAY, "resolve": 15 * WORKING_DAY, "around_the_clock": False}
DEFAULT_CATEGORY_CLOCKS: dict[Category, dict[str, Any]] = {
    Category.FIRE: _RISK, Category.PUBLIC_SECURITY: _RISK, Category.PERSON_IN_NEED: _RISK,
    Category.UTILITIES: _UTILITIES,
    Category.ROAD_HAZARD: _GENERAL, Category.ENVIRONMENT: _GENERAL, Category.OTHER: _GENERAL,
    Category.DISPUTE: _COMPLEX,
}
# When an AtRisk event is stored: this share of a clock has run (1 to 99 per cent).
DEFAULT_AT_RISK_PERCENT = 80
MAX_ACKNOWLEDGE_WITHIN = timedelta(days=7)
MAX_RESOLVE_WITHIN = timedelta(days=90)


def default_deadline_seconds() -> dict[str, dict[str, int]]:
    return {kind.value: {"acknowledge": int(ack.total_seconds()),
                         "resolve": int(res.total_seconds())}
            for kind, (ack, res) in DEFAULT_DEADLINES.items()}


def default_clocks() -> dict[str, dict[str, Any]]:
    """Every category's clock, by category name: the stored form of the routing rules'
    category clocks."""
    return {c.value: dict(clock) for c, clock in DEFAULT_CATEGORY_CLOCKS.items()}


def clock_policy(deadlines: dict[str, dict[str, int]], clocks: dict[str, dict[str, Any]],
                 at_risk_percent: int, kind: str, category: str) -> dict[str, Any]:
    """The clock policy of a report of `kind` and `category`: the emergency clock for kind
    EMERGENCY (always around the clock), else its category's."""
    if kind == ReportKind.EMERGENCY.value:
        chosen = {**deadlines[kind], "around_the_clock": True}
    else:
        chosen = clocks[category]
    return {"acknowledge": chosen["acknowledge"], "resolve": chosen["resolve"],
            "around_the_clock": chosen["around_the_clock"], "at_risk_percent": at_risk_percent}


def check_deadline(violations: Violations, field: str, acknowledge: timedelta | None,
                   resolve: timedelta | None) -> None:
    """A deadline policy's durations. Each is stored, and shown back, in whole seconds: a
    fraction of a second is refused (DURATION_NOT_WHOLE_SECONDS) rather than dropped, so that
    the table a caller reads back is the one it set; 0.5 s is not silently 0."""
    for name, value in (("acknowledge_within", acknowledge), ("resolve_within", resolve)):
        if value is not None and value % timedelta(seconds=1):
            violations.add(f"{field}.{name}", "must be whole seconds (no fraction of a second)",
                           "DURATION_NOT_WHOLE_SECONDS")
    if acknowledge is None or acknowledge <= timedelta(0):
        violations.add(f"{field}.acknowledge_within", "must be a positive duration",
                       "DURATION_NOT_POSITIVE")
    elif acknowledge > MAX_ACKNOWLEDGE_WITHIN:
        violations.add(f"{field}.acknowledge_within", "at most 7 days", "DURATION_TOO_LONG")
    if resolve is None or resolve <= timedelta(0):
        violations.add(f"{field}.resolve_within", "must be a positive duration",
                       "DURATION_NOT_POSITIVE")
    elif resolve > MAX_RESOLVE_WITHIN:
        violations.add(f"{field}.resolve_within", "at most 90 days", "DURATION_TOO_LONG")
    elif acknowledge is not None and resolve <= acknowledge:
        violations.add(f"{field}.resolve_within", "must be longer than acknowledge_within",
                       "RESOLVE_WITHIN_NOT_AFTER_ACKNOWLEDGE_WITHIN")


# ---------------------------------------------------------------------------- places

@dataclass(frozen=True)
class Location:
    """Where a report was made: the street (an identity organisation) and WGS84 degrees."""

    street_id: str
    latitude: float
    longitude: float


# Two reports of one category this close in space and time are taken for one incident.
DUPLICATE_WITHIN_METRES = 200.0
DUPLICATE_WITHIN = timedelta(hours=2)


def latitude_band_degrees(metres: float) -> float:
    """How far in latitude two points `metres` apart can be: never more than the arc along a
    meridian, so a search may skip everything outside this band."""
    return math.degrees(metres / EARTH_RADIUS_METRES)


def same_incident(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """The distance in metres when reports `a` and `b` (category, latitude, longitude,
    observed_at) describe one incident; None when they do not."""
    if a["category"] != b["category"]:
        return None
    if abs(a["observed_at"] - b["observed_at"]) > DUPLICATE_WITHIN:
        return None
    metres = distance_metres(a["latitude"], a["longitude"], b["latitude"], b["longitude"])
    return metres if metres <= DUPLICATE_WITHIN_METRES else None


# ---------------------------------------------------------------------------- text

MAX_TEXT = 2000
MAX_NOTE = 500
MAX_NAME = 100
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_REF = 500
MAX_RULES = 200
# The parties of one mediation case. A mediation between more than twenty parties is a
# collective dispute, which the city handles otherwise; and a bound keeps what one request can
# ask of the store in check: each party's name is sealed under a data key of its own, and the
# riders among them are looked up (the riders last, once nothing else is wrong: see
# QijiApplication.require_riders) — twenty at most, in one catch-up with identity.
MAX_PARTIES = 20
# A report may be observed a little "in the future" of our clock: phones' clocks drift.
CLOCK_SKEW = timedelta(minutes=5)
# What a rider saw is reported while it can still be acted on: an observation older than this
# is no report of the city as it is (and a time from 1970 is a phone's clock, not a sighting).
MAX_OBSERVATION_AGE = timedelta(days=30)


# Where a report goes when no rule of the city admin's table matches it (or there is no table
# yet): the social-work department that runs the programme, and petitions, at the level
# nearest the report's street. A rider's report is never refused for want of a rule.
FALLBACK_RULE: dict[str, Any] = {
    "name": "fallback (no rule matched)", "kind": "", "category": "", "street_id": "",
    "department_functions": ["SOCIAL_WORK", "PETITIONS"], "department_ids": []}
# Failing that, the department nearest the street whatever its function: every function a
# department may have (a city whose only department is a legal-aid centre still hears a report).
ANY_DEPARTMENT_RULE: dict[str, Any] = {
    "name": "fallback (nearest department)", "kind": "", "category": "", "street_id": "",
    "department_functions": ["SOCIAL_WORK", "PETITIONS", "POLITICAL_LEGAL", "PUBLIC_SECURITY",
                             "LEGAL_AID", "TRADE_UNION"],
    "department_ids": []}


# ---------------------------------------------------------------------------- help (帮扶)


class HelpKind(StrEnum):
    """What a rider asks help with (难了有帮扶、忧了有人听)."""

    HARDSHIP = "HARDSHIP"  # 生活困难
    LEGAL_AID = "LEGAL_AID"  # 法律援助
    PSYCHOLOGICAL = "PSYCHOLOGICAL"  # 心理疏导
    WORK_INJURY = "WORK_INJURY"  # 工伤
    LABOUR_DISPUTE = "LABOUR_DISPUTE"  # 劳动争议 (wages, contracts)
    OTHER = "OTHER"


class HelpChannel(StrEnum):
    """Where the rider asked for help, and so where they hear and rate its outcome. At the
    street office's counter, the platform never hears of it: a rider may ask there about a
    dispute with the platform itself."""

    PLATFORM = "PLATFORM"  # in the platform's app
    STREET_OFFICE = "STREET_OFFICE"  # at the home street office's counter


class HelpStatus(StrEnum):
    # Routed to its departments; some have not given their outcome yet.
    OPEN = "OPEN"
    # Every department routed or referred to has given its outcome.
    CLOSED = "CLOSED"


class HelpAssignmentStatus(StrEnum):
    ROUTED = "ROUTED"
    # A caseworker took the case: this answers the acknowledgement deadline.
    CASEWORKER_ASSIGNED = "CASEWORKER_ASSIGNED"
    # The department gave the rider its outcome: this answers the outcome deadline.
    OUTCOME_GIVEN = "OUTCOME_GIVEN"


class ContactChannel(StrEnum):
    """How a caseworker reached the rider, or how the rider prefers to be reached."""

    PHONE = "PHONE"
    IN_PERSON = "IN_PERSON"  # at the service space or the office
    HOME_VISIT = "HOME_VISIT"  # 上门
    ONLINE = "ONLINE"  # the platform's app, a messenger


# Which department functions a help request goes to, by kind, until the city admin sets its
# own (SetHelpRouting): those of them with a department near the rider's home street. Social
# work takes every case no department of those functions exists for: it runs the programme,
# and a rider in difficulty is never turned away for want of a legal-aid centre or a trade
# union in their district (HELP_FALLBACK, not configurable).
DEFAULT_HELP_FUNCTIONS: dict[HelpKind, tuple[DepartmentFunction, ...]] = {
    HelpKind.HARDSHIP: (DepartmentFunction.SOCIAL_WORK,),
    HelpKind.PSYCHOLOGICAL: (DepartmentFunction.SOCIAL_WORK,),
    HelpKind.OTHER: (DepartmentFunction.SOCIAL_WORK,),
    HelpKind.LEGAL_AID: (DepartmentFunction.LEGAL_AID,),
    HelpKind.WORK_INJURY: (DepartmentFunction.TRADE_UNION, DepartmentFunction.LEGAL_AID),
    HelpKind.LABOUR_DISPUTE: (DepartmentFunction.TRADE_UNION, DepartmentFunction.LEGAL_AID),
}
HELP_FALLBACK = (DepartmentFunction.SOCIAL_WORK,)

# Each department's clocks on a help request: a caseworker within a day (someone listens),
# an outcome within 7 days (a general request of the 12345 standard), 15 for what needs a
# legal or an injury procedure (its complex requests). Seconds, as the routing rules keep
# report deadlines ({"acknowledge", "resolve"}), so that due times come from one function.
DEFAULT_HELP_DEADLINES: dict[HelpKind, dict[str, int]] = {
    kind: {"acknowledge": int(timedelta(hours=24).total_seconds()),
           "resolve": int(timedelta(days=days).total_seconds())}
    for kind, days in ((HelpKind.HARDSHIP, 7), (HelpKind.PSYCHOLOGICAL, 7),
                       (HelpKind.OTHER, 7), (HelpKind.LEGAL_AID, 15),
                       (HelpKind.WORK_INJURY, 15), (HelpKind.LABOUR_DISPUTE, 15))}


def default_help_routing() -> dict[str, dict[str, Any]]:
    """The routing of every kind as stored (kind -> {"functions", "acknowledge", "resolve"}):
    what applies until the city admin sets its own, and for kinds it leaves out."""
    return {kind.value: {"functions": [f.value for f in DEFAULT_HELP_FUNCTIONS[kind]],
                         **DEFAULT_HELP_DEADLINES[kind]} for kind in HelpKind}


def help_alternatives(functions: list[str]) -> tuple[tuple[str, ...], ...]:
    """What a kind's routing tries, in order: its functions, then social work."""
    first = tuple(functions)
    fallback = tuple(f.value for f in HELP_FALLBACK)
    return (first,) if first == fallback else (first, fallback)


def help_due_times(at: datetime, clocks: dict[str, int]) -> dict[str, datetime]:
    """When a department given a help request at `at`, under a kind's `clocks`
    ({"acknowledge", "resolve"} seconds), must name a caseworker (ACKNOWLEDGE) and give its
    outcome (RESOLVE). The one place help clocks are computed (routing and referral alike):
    around the clock for now (a rider in trouble is not made to wait for Monday)."""
    return {DeadlineKind.ACKNOWLEDGE.value: at + timedelta(seconds=clocks["acknowledge"]),
            DeadlineKind.RESOLVE.value: at + timedelta(seconds=clocks["resolve"])}


MAX_HELP_TEXT = 2000
