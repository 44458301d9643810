"""The working calendar and the arithmetic of clocks that count in it: pure, no store, no clock.

A deadline clock runs either around the clock (plain time: an emergency does not wait for
Monday) or in the city's working calendar: working hours on working days, in the city's time
(CITY_TIME). A working day is a working weekday that is not a public holiday, or an adjusted
working day (调休: a weekend date the State Council's holiday notice makes a working day).
The calendar counts from midnight of the city's day: a span "09:00"–"17:00" of 2026-10-09 is
09:00–17:00 China Standard Time that day.

Both kinds of clock answer the same two questions: the instant N seconds of their time after
an instant (`add`), and how many seconds of their time lie between two instants (`between`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from typing import Any, Protocol

from shared.errors import DUPLICATE_VALUE, FIELD_REQUIRED, VALUE_OUT_OF_RANGE, Violations
from shared.values import CITY_TIME, parse_day

# Reasons of a calendar's field violations (SetWorkingCalendar).
TIME_OF_DAY_INVALID = "TIME_OF_DAY_INVALID"  # not HH:MM from 00:00 to 24:00
SPAN_END_NOT_AFTER_START = "SPAN_END_NOT_AFTER_START"
SPANS_OVERLAP = "SPANS_OVERLAP"
NO_WORKING_HOURS = "NO_WORKING_HOURS"  # a working day of 0 hours
NO_WORKING_WEEKDAYS = "NO_WORKING_WEEKDAYS"
TOO_MANY_SPANS = "TOO_MANY_SPANS"
TOO_MANY_DATES = "TOO_MANY_DATES"
HOLIDAY_AND_WORKING_DAY = "HOLIDAY_AND_WORKING_DAY"  # one date both off and adjusted to work
ADJUSTED_DAY_ALREADY_WORKING = "ADJUSTED_DAY_ALREADY_WORKING"  # 调休 on a working weekday

MAX_SPANS = 6
# Each list: a few years of a city's holidays and adjusted days (China has about 30 a year).
MAX_DATES = 400
_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]|24:00")
DAY = timedelta(days=1)


class Clock(Protocol):
    @property
    def around_the_clock(self) -> bool: ...

    def add(self, start: datetime, seconds: float) -> datetime: ...

    def between(self, start: datetime, end: datetime) -> timedelta: ...


@dataclass(frozen=True)
class AroundTheClock:
    """Plain time: every second counts."""

    around_the_clock: bool = True

    def add(self, start: datetime, seconds: float) -> datetime:
        return start + timedelta(seconds=seconds)

    def between(self, start: datetime, end: datetime) -> timedelta:
        return max(end - start, timedelta(0))


AROUND_THE_CLOCK = AroundTheClock()


def minutes_of(text: str) -> int:
    """Minutes since midnight of an "HH:MM" already checked (24:00 is 1440)."""
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class WorkingCalendar:
    """Working hours (spans of minutes since midnight, sorted, not overlapping), working ISO
    weekdays (1 Monday … 7 Sunday), public holidays and adjusted working days."""

    spans: tuple[tuple[int, int], ...]
    weekdays: frozenset[int]
    holidays: frozenset[date] = field(default_factory=frozenset)
    working_days: frozenset[date] = field(default_factory=frozenset)
    around_the_clock: bool = False

    @staticmethod
    def of(state: dict[str, Any]) -> WorkingCalendar:
        """From the stored form (`stored_calendar`)."""
        return WorkingCalendar(
            spans=tuple(sorted((minutes_of(s["start"]), minutes_of(s["end"]))
                               for s in state["spans"])),
            weekdays=frozenset(state["weekdays"]),
            holidays=frozenset(date.fromisoformat(d) for d in state["holidays"]),
            working_days=frozenset(date.fromisoformat(d) for d in state["working_days"]))

    def is_working_day(self, day: date) -> bool:
        if day in self.working_days:
            return True
        return day.isoweekday() in self.weekdays and day not in self.holidays

    def _day_spans(self, day: date) -> list[tuple[datetime, datetime]]:
        if not self.is_working_day(day):
            return []
        midnight = datetime.combine(day, time(0), CITY_TIME)
        return [(midnight + timedelta(minutes=s), midnight + timedelta(minutes=e))
                for s, e in self.spans]

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant at which `seconds` of working time have passed since `start`: counting
        starts at `start` if it is in working hours, else at the next working hour. A clock
        that ends exactly at the close of a span ends there (17:00, not the next morning)."""
        remaining = timedelta(seconds=seconds)
        if remaining <= timedelta(0):
            return start
        day = start.astimezone(CITY_TIME).date()
        # Terminates: a calendar has at least one working weekday and span, and at most
        # MAX_DATES holidays; the bound only guards against a calendar never checked.
        for _ in range(366 * 50):
            for span_start, span_end in self._day_spans(day):
                if span_end <= start:
                    continue
                begin = max(span_start, start)
                available = span_end - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
            day += DAY
        raise ValueError("the calendar has no working time")

    def between(self, start: datetime, end: datetime) -> timedelta:
        """Working time in [start, end); nothing when end is not after start."""
        total = timedelta(0)
        if end <= start:
            return total
        day = start.astimezone(CITY_TIME).date()
        last = end.astimezone(CITY_TIME).date()
        while day <= last:
            for span_start, span_end in self._day_spans(day):
                begin, finish = max(span_start, start), min(span_end, end)
                if finish > begin:
                    total += finish - begin
            day += DAY
        return total


DEFAULT_CALENDAR_STATE: dict[str, Any] = {
    "spans": [{"start": "09:00", "end": "17:00"}], "weekdays": [1, 2, 3, 4, 5],
    "holidays": [], "working_days": []}
DEFAULT_CALENDAR = WorkingCalendar.of(DEFAULT_CALENDAR_STATE)


def stored_calendar(violations: Violations, spans: list[tuple[str, str]],
                    weekdays: Iterable[int], holidays: list[str], working_days: list[str]
                    ) -> dict[str, Any]:
    """The calendar as it is stored, with everything wrong with the request added to
    `violations` (field paths as the request names them: `working_hours[i].start`, ...)."""
    weekdays = list(weekdays)
    if not spans:
        violations.add("working_hours", "a working day needs at least one span of working "
                       "hours (a day of 0 hours counts no clock down)", NO_WORKING_HOURS)
    elif len(spans) > MAX_SPANS:
        violations.add("working_hours", f"at most {MAX_SPANS} spans", TOO_MANY_SPANS)
    good: list[tuple[int, int, int]] = []
    for i, (start, end) in enumerate(spans):
        bad = False
        for name, value in (("start", start), ("end", end)):
            if not _TIME.fullmatch(value):
                violations.add(f"working_hours[{i}].{name}", "must be HH:MM, 00:00 to 24:00",
                               TIME_OF_DAY_INVALID)
                bad = True
        if bad:
            continue
        if minutes_of(end) <= minutes_of(start):
            violations.add(f"working_hours[{i}].end", "must be after start",
                           SPAN_END_NOT_AFTER_START)
            continue
        good.append((minutes_of(start), minutes_of(end), i))
    good.sort()
    for (_, previous_end, _), (next_start, _, i) in pairwise(good):
        if next_start < previous_end:
            violations.add(f"working_hours[{i}]", "overlaps another span", SPANS_OVERLAP)
    if not weekdays:
        violations.add("working_weekdays", "name at least one working weekday",
                       NO_WORKING_WEEKDAYS)
    for i, weekday in enumerate(weekdays):
        if not 1 <= weekday <= 7:
            violations.add(f"working_weekdays[{i}]", "an ISO weekday: 1 (Monday) to 7 (Sunday)",
                           VALUE_OUT_OF_RANGE)
        elif weekday in weekdays[:i]:
            violations.add(f"working_weekdays[{i}]", "given twice", DUPLICATE_VALUE)
    days: dict[str, list[date | None]] = {}
    for name, texts in (("holidays", holidays), ("adjusted_working_days", working_days)):
        if len(texts) > MAX_DATES:
            violations.add(name, f"at most {MAX_DATES} dates", TOO_MANY_DATES)
        parsed: list[date | None] = []
        for i, text in enumerate(texts):
            if not text:
                violations.add(f"{name}[{i}]", "a date, YYYY-MM-DD", FIELD_REQUIRED)
                parsed.append(None)
                continue
            day = parse_day(violations, f"{name}[{i}]", text)
            if day is not None and day in parsed:
                violations.add(f"{name}[{i}]", "given twice", DUPLICATE_VALUE)
            parsed.append(day)
        days[name] = parsed
    off = {d for d in days["holidays"] if d is not None}
    for i, day in enumerate(days["adjusted_working_days"]):
        if day is None:
            continue
        if day in off:
            violations.add(f"adjusted_working_days[{i}]", "is also a holiday: a date is either "
                           "off or worked", HOLIDAY_AND_WORKING_DAY)
        elif day.isoweekday() in weekdays:
            violations.add(f"adjusted_working_days[{i}]", "falls on a working weekday already: "
                           "an adjusted working day (调休) is a day otherwise off",
                           ADJUSTED_DAY_ALREADY_WORKING)
    return {"spans": [{"start": s, "end": e} for s, e in
                      sorted(spans, key=lambda p: (p[0], p[1]))],
            "weekdays": sorted(set(weekdays)),
            "holidays": sorted(d.isoformat() for d in off),
            "working_days": sorted(d.isoformat() for d in days["adjusted_working_days"]
                                   if d is not None)}
