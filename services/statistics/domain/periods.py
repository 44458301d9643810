"""The city's periods: a range of time widened to whole days, ISO weeks or months in the city's
time (China Standard Time, UTC+8), cut into periods with the labels the city's reports use.

Days are counted as proleptic ordinals (date.toordinal()) of the city's calendar: the read
model keys its daily rollup by them, and integer days compare and bucket the same in SQLite and
PostgreSQL."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from shared.errors import Violations
from shared.values import CITY_TIME

DAY, WEEK, MONTH, WHOLE_RANGE = "DAY", "WEEK", "MONTH", "WHOLE_RANGE"
GRANULARITIES = (DAY, WEEK, MONTH, WHOLE_RANGE)
# The longest range asked for: a year by day (a leap day included), five years otherwise.
MAX_DAYS_BY_DAY = 366
MAX_DAYS_OTHERWISE = 5 * 365 + 2

# Reasons of the range's field violations.
RANGE_INVALID = "RANGE_INVALID"
RANGE_TOO_LONG = "RANGE_TOO_LONG"


def city_day(at: datetime) -> date:
    """The calendar day `at` falls on in the city."""
    return at.astimezone(CITY_TIME).date()


def day_number(at: datetime) -> int:
    """The city's day `at` falls on, as an ordinal."""
    return city_day(at).toordinal()


def day_start(day: date | int) -> datetime:
    """Midnight of a city day, as an aware datetime in the city's time."""
    d = date.fromordinal(day) if isinstance(day, int) else day
    return datetime.combine(d, time(0), CITY_TIME)


@dataclass(frozen=True)
class Period:
    """[start, end) in the city's time; `first_day` and `end_day` the same as day ordinals
    (end exclusive)."""

    start: datetime
    end: datetime
    label: str
    first_day: int
    end_day: int


def _period_start(granularity: str, d: date) -> date:
    if granularity == WEEK:
        return d - timedelta(days=d.weekday())
    if granularity == MONTH:
        return d.replace(day=1)
    return d


def _next_start(granularity: str, d: date) -> date:
    """The start of the period after the one starting on `d`."""
    if granularity == WEEK:
        return d + timedelta(days=7)
    if granularity == MONTH:
        return date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    return d + timedelta(days=1)


def _label(granularity: str, first: date, end: date) -> str:
    if granularity == DAY:
        return first.isoformat()
    if granularity == WEEK:
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    if granularity == MONTH:
        return f"{first.year}-{first.month:02d}"
    return f"{first.isoformat()}/{end.isoformat()}"


def widen(granularity: str, start: datetime, end: datetime) -> tuple[date, date]:
    """[start, end) widened to whole periods: the first day of the first period and the day
    after the last one (a range ending exactly at midnight ends there)."""
    first = _period_start(granularity, city_day(start))
    last_day = city_day(end)
    if day_start(last_day) < end.astimezone(CITY_TIME):
        last_day += timedelta(days=1)  # `end` falls inside a day: the whole day is in
    if granularity == WHOLE_RANGE:
        return first, max(last_day, first + timedelta(days=1))
    stop = _period_start(granularity, last_day)
    if stop < last_day:
        stop = _next_start(granularity, stop)
    return first, max(stop, _next_start(granularity, first))


def periods(granularity: str, start: datetime, end: datetime) -> list[Period]:
    """The periods covering [start, end) in order, widened to whole periods."""
    first, stop = widen(granularity, start, end)
    if granularity == WHOLE_RANGE:
        return [Period(day_start(first), day_start(stop), _label(WHOLE_RANGE, first, stop),
                       first.toordinal(), stop.toordinal())]
    found = []
    d = first
    while d < stop:
        after = _next_start(granularity, d)
        found.append(Period(day_start(d), day_start(after), _label(granularity, d, after),
                            d.toordinal(), after.toordinal()))
        d = after
    return found


def check_range(violations: Violations, granularity: str, start: datetime,
                end: datetime) -> None:
    """What is wrong with a range asked for (said of `end_time`): not after its start, or
    longer than a year by day / five years otherwise. A granularity it does not know is said
    by the caller."""
    if end <= start:
        violations.add("end_time", "must be after start_time", RANGE_INVALID)
        return
    if granularity == DAY and end - start > timedelta(days=MAX_DAYS_BY_DAY):
        violations.add("end_time", "a range covers at most a year (366 days) by day",
                       RANGE_TOO_LONG)
    elif end - start > timedelta(days=MAX_DAYS_OTHERWISE):
        violations.add("end_time", f"a range covers at most five years ({MAX_DAYS_OTHERWISE} "
                       "days) by week, month or as one range", RANGE_TOO_LONG)


def bucket(cut: Sequence[Period], day: int) -> int | None:
    """The index of the period holding `day` (an ordinal), or None outside them all."""
    if not cut or day < cut[0].first_day or day >= cut[-1].end_day:
        return None
    return bisect.bisect_right([p.first_day for p in cut], day) - 1
