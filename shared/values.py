"""Shared value parsing and checks: numbers that arrive as text in requests (hours) are read
strictly; places are WGS84 degrees; opening hours have one shape and one rule for every kind of
place (service spaces in identity, merchants in merchants); calendar days are the city's."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any

from shared import gcj02
from shared.errors import (
    DUPLICATE_VALUE,
    LOCATION_INVALID,
    TIME_INVALID,
    VALUE_OUT_OF_RANGE,
    Violations,
)

# The city's local time: China Standard Time, UTC+8 all year (Asia/Shanghai has kept no
# daylight saving since 1991), so a fixed offset needs no time-zone database on the host.
# Opening hours are read in it.
CITY_TIME = timezone(timedelta(hours=8))

# ASCII digits, at most two decimals: Decimal() alone would take "1_5" as 15, full-width
# digits, surrounding spaces, and 30 decimals that round away to a quarter.
_DECIMAL = re.compile(r"[0-9]{1,6}(\.[0-9]{1,2})?")


def parse_hours(violations: Violations, field: str, text: str, *, maximum: Decimal,
                quarters: bool = True, allow_zero: bool = False) -> Decimal | None:
    """Hours such as "1.5": exact, so transcripts and volunteer totals add up."""
    if not _DECIMAL.fullmatch(text):
        violations.add(field, "must be a number of hours such as 1.5", "HOURS_INVALID")
        return None
    hours = Decimal(text)
    if (hours == 0 and not allow_zero) or hours > maximum:
        violations.add(field, f"must be {'0' if allow_zero else 'more than 0'} to {maximum}",
                       VALUE_OUT_OF_RANGE)
        return None
    if quarters and (hours * 4) % 1 != 0:
        violations.add(field, "must be a multiple of a quarter hour", "HOURS_NOT_QUARTER_HOURS")
        return None
    return hours


def check_coordinates(violations: Violations, field: str, latitude: float,
                      longitude: float) -> None:
    """`field`.latitude and `field`.longitude in WGS84 degrees; NaN fails both comparisons and
    so is refused too."""
    if not -90.0 <= latitude <= 90.0:
        violations.add(f"{field}.latitude", "must be WGS84 degrees from -90 to 90",
                       LOCATION_INVALID)
    if not -180.0 <= longitude <= 180.0:
        violations.add(f"{field}.longitude", "must be WGS84 degrees from -180 to 180",
                       LOCATION_INVALID)


# ---------------------------------------------------------------------------- coordinates


class CoordinateSystem(StrEnum):
    """The datum a caller's coordinates are in. Qiji stores and answers WGS-84; Chinese map
    SDKs (Amap, Tencent, Baidu in its GCJ mode) give GCJ-02, which is converted on input."""

    WGS84 = "WGS84"
    GCJ02 = "GCJ02"


def to_wgs84(system: CoordinateSystem, latitude: float, longitude: float
             ) -> tuple[float, float]:
    """A checked point (check_coordinates) in `system`, as WGS-84 degrees."""
    if system is CoordinateSystem.GCJ02:
        return gcj02.gcj02_to_wgs84(latitude, longitude)
    return latitude, longitude


@dataclass(frozen=True)
class GeoPoint:
    """A point as a request gives it. `system` None: the entry point could not read the datum
    (its violation is said already)."""

    latitude: float
    longitude: float
    system: CoordinateSystem | None = CoordinateSystem.WGS84


def wgs84_location(violations: Violations, field: str, point: GeoPoint
                   ) -> dict[str, float] | None:
    """The point as stored, {"latitude", "longitude"} in WGS-84 degrees, or None when it is
    refused (its violations added under `field`): out of range, NaN or infinite."""
    check_coordinates(violations, field, point.latitude, point.longitude)
    if violations.about(f"{field}.latitude") or violations.about(f"{field}.longitude") or \
            point.system is None:
        return None
    latitude, longitude = to_wgs84(point.system, point.latitude, point.longitude)
    return {"latitude": latitude, "longitude": longitude}


# ---------------------------------------------------------------------------- opening hours

# Reasons of opening hours' field violations.
CLOSES_NOT_AFTER_OPENS = "CLOSES_NOT_AFTER_OPENS"
# "HH:MM", 24-hour, two digits each; fullmatch only ("$" would take a trailing newline).
HOUR_MINUTE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def check_opening_hours(violations: Violations, hours: Sequence[Mapping[str, Any]],
                        field: str = "opening_hours") -> None:
    """A place's week: each entry {weekday 1 (Monday) to 7, opens "HH:MM", closes "HH:MM"},
    opens before closes on the same day, each weekday at most once. A weekday not listed is a
    day the place is closed. The one rule of every kind of place."""
    seen = set()
    for i, h in enumerate(hours):
        at = f"{field}[{i}]"
        if not 1 <= h["weekday"] <= 7:
            violations.add(f"{at}.weekday", "must be 1 (Monday) to 7 (Sunday)",
                           VALUE_OUT_OF_RANGE)
        opens_ok = bool(HOUR_MINUTE.fullmatch(h["opens"]))
        closes_ok = bool(HOUR_MINUTE.fullmatch(h["closes"]))
        if not opens_ok:
            violations.add(f"{at}.opens", "must be HH:MM, 00:00 to 23:59", TIME_INVALID)
        if not closes_ok:
            violations.add(f"{at}.closes", "must be HH:MM, 00:00 to 23:59", TIME_INVALID)
        if opens_ok and closes_ok and h["opens"] >= h["closes"]:
            violations.add(f"{at}.closes", "must be later than opens", CLOSES_NOT_AFTER_OPENS)
        if h["weekday"] in seen:
            violations.add(f"{at}.weekday",
                           f"weekday {h['weekday']} given twice: one entry per weekday",
                           DUPLICATE_VALUE)
        seen.add(h["weekday"])


def sorted_hours(hours: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Checked opening hours as stored: plain dicts in weekday order."""
    return sorted(({"weekday": int(h["weekday"]), "opens": str(h["opens"]),
                    "closes": str(h["closes"])} for h in hours), key=lambda h: h["weekday"])


def is_open_at(hours: Sequence[Mapping[str, Any]], at: datetime) -> bool:
    """Open at `at` (any time zone; judged in the city's time): the day's entry holds it,
    opens inclusive, closes exclusive. No entry for the day, or no hours at all, is closed."""
    local = at.astimezone(CITY_TIME)
    now = f"{local.hour:02d}:{local.minute:02d}"
    return any(h["weekday"] == local.isoweekday() and h["opens"] <= now < h["closes"]
               for h in hours)


# ---------------------------------------------------------------------------- calendar days

# Reasons of calendar days' field violations.
DAY_INVALID = "DAY_INVALID"  # not a day written YYYY-MM-DD
DAY_IN_THE_FUTURE = "DAY_IN_THE_FUTURE"  # after today in the city's time
PERIOD_REVERSED = "PERIOD_REVERSED"  # from_day after to_day
PERIOD_TOO_LONG = "PERIOD_TOO_LONG"
# ASCII digits only, fullmatch: date.fromisoformat alone would also take "20260301" and
# "2026-W09-7", two more spellings of one day.
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def city_day(at: datetime) -> date:
    """The calendar day `at` falls on in the city (China Standard Time)."""
    return at.astimezone(CITY_TIME).date()


def parse_day(violations: Violations, field: str, text: str) -> date | None:
    """A calendar day written YYYY-MM-DD; None when `text` is empty (not given) or is no such
    day, which is then added to `violations`."""
    if not text:
        return None
    try:
        if _DAY.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    violations.add(field, f"{text!r} is not a calendar day written YYYY-MM-DD", DAY_INVALID)
    return None


def check_period(violations: Violations, start: date | None, end: date | None, *,
                 max_days: int, from_field: str = "from_day", to_field: str = "to_day") -> None:
    """A period of whole days, both ends included: start not after end, at most `max_days`
    long. An end not known (None: not readable) is not judged."""
    if start is None or end is None:
        return
    if start > end:
        violations.add(from_field, f"must not be after {to_field} ({end.isoformat()})",
                       PERIOD_REVERSED)
    elif (end - start).days + 1 > max_days:
        violations.add(to_field, f"the period is at most {max_days} days, "
                       f"{from_field} and {to_field} included", PERIOD_TOO_LONG)
