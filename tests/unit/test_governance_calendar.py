"""The working calendar on its own: adding working time to an instant, counting it between two
instants, and what the city admin may not set. China Standard Time throughout (the city's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.governance.domain.calendar import (
    AROUND_THE_CLOCK,
    DEFAULT_CALENDAR,
    WorkingCalendar,
    stored_calendar,
)
from shared.errors import Violations
from shared.values import CITY_TIME

HOUR = 3600


def cst(*args: int) -> datetime:
    return datetime(*args, tzinfo=CITY_TIME)


def calendar(spans, weekdays, holidays, working_days) -> WorkingCalendar:
    violations = Violations()
    state = stored_calendar(violations, spans, weekdays, holidays, working_days)
    assert not violations.items, violations.items
    return WorkingCalendar.of(state)


# 2026: National Day holiday 1-8 October (Thursday to Thursday), with Sunday 27 September and
# Saturday 10 October worked instead (调休). Working hours with a lunch break.
NATIONAL_DAY = calendar([("09:00", "12:00"), ("13:30", "17:30")], [1, 2, 3, 4, 5],
                        [f"2026-10-0{d}" for d in range(1, 9)], ["2026-09-27", "2026-10-10"])


def test_the_default_calendar_is_monday_to_friday_nine_to_five():
    friday_4pm = cst(2026, 6, 5, 16, 0)
    # One hour left on Friday, the rest from Monday 09:00: the weekend does not count.
    assert DEFAULT_CALENDAR.add(friday_4pm, 3 * HOUR) == cst(2026, 6, 8, 11, 0)
    assert DEFAULT_CALENDAR.between(friday_4pm, cst(2026, 6, 8, 11, 0)) == timedelta(hours=3)
    # Reported on a Saturday night: the clock starts on Monday morning.
    assert DEFAULT_CALENDAR.add(cst(2026, 6, 6, 22, 0), HOUR) == cst(2026, 6, 8, 10, 0)
    # A clock that ends as the office closes ends there, not the next morning.
    assert DEFAULT_CALENDAR.add(cst(2026, 6, 5, 9, 0), 8 * HOUR) == cst(2026, 6, 5, 17, 0)


def test_a_lunch_break_and_the_evening_do_not_count():
    tuesday_11am = cst(2026, 6, 9, 11, 0)
    assert NATIONAL_DAY.add(tuesday_11am, 2 * HOUR) == cst(2026, 6, 9, 14, 30)
    assert NATIONAL_DAY.add(cst(2026, 6, 9, 17, 0), HOUR) == cst(2026, 6, 10, 9, 30)


def test_public_holidays_are_skipped_and_adjusted_working_days_are_worked():
    # Sunday 27 September is worked (调休): a clock started on Saturday runs from Sunday 09:00.
    assert NATIONAL_DAY.add(cst(2026, 9, 26, 10, 0), HOUR) == cst(2026, 9, 27, 10, 0)
    # Wednesday 30 September, 17:00: half an hour left; then nothing until Friday 9 October
    # (1-8 October are the holiday).
    assert NATIONAL_DAY.add(cst(2026, 9, 30, 17, 0), HOUR) == cst(2026, 10, 9, 9, 30)
    # Saturday 10 October is worked too.
    assert NATIONAL_DAY.add(cst(2026, 10, 9, 17, 0), HOUR) == cst(2026, 10, 10, 9, 30)
    # The whole holiday counts nothing.
    assert NATIONAL_DAY.between(cst(2026, 10, 1, 0, 0), cst(2026, 10, 9, 0, 0)) == timedelta(0)


def test_the_calendar_reads_every_instant_in_the_citys_time():
    # 01:00 UTC is 09:00 in the city: the first working hour.
    at = datetime(2026, 6, 8, 1, 0, tzinfo=UTC)
    assert DEFAULT_CALENDAR.add(at, HOUR) == datetime(2026, 6, 8, 2, 0, tzinfo=UTC)


def test_around_the_clock_is_plain_time():
    at = cst(2026, 6, 6, 23, 0)  # a Saturday night
    assert AROUND_THE_CLOCK.add(at, 2 * HOUR) == cst(2026, 6, 7, 1, 0)
    assert AROUND_THE_CLOCK.between(at, at - timedelta(hours=1)) == timedelta(0)


# A Monday-to-Friday calendar with a lunch break, two holidays and an adjusted working day.
SOME_CALENDAR = calendar([("09:00", "12:00"), ("13:30", "17:30")], [1, 2, 3, 4, 5],
                         ["2026-06-10", "2026-06-11"], ["2026-06-13"])
instants = st.datetimes(min_value=datetime(2026, 6, 1), max_value=datetime(2026, 7, 1),
                        timezones=st.just(CITY_TIME))
seconds = st.integers(min_value=0, max_value=30 * 8 * HOUR)


@settings(max_examples=200, deadline=None)
@given(start=instants, amount=seconds, calendar=st.sampled_from(
    [DEFAULT_CALENDAR, SOME_CALENDAR, NATIONAL_DAY]))
def test_adding_working_time_then_counting_it_gives_it_back(start, amount, calendar):
    end = calendar.add(start, amount)
    assert end >= start
    assert calendar.between(start, end) == timedelta(seconds=amount)


@settings(max_examples=200, deadline=None)
@given(start=instants, first=seconds, second=seconds)
def test_adding_in_two_steps_is_adding_once(start, first, second):
    calendar = SOME_CALENDAR
    assert calendar.add(calendar.add(start, first), second) == calendar.add(
        start, first + second)


@settings(max_examples=200, deadline=None)
@given(a=instants, b=instants, c=instants)
def test_working_time_adds_up_over_consecutive_intervals(a, b, c):
    a, b, c = sorted((a, b, c))
    calendar = SOME_CALENDAR
    assert calendar.between(a, b) + calendar.between(b, c) == calendar.between(a, c)
    assert calendar.between(a, c) <= c - a


# ---------------------------------------------------------------------------- bad calendars


def faults(spans=(("09:00", "17:00"),), weekdays=(1, 2, 3, 4, 5), holidays=(),
           working_days=()) -> set[tuple[str, str]]:
    violations = Violations()
    stored_calendar(violations, list(spans), list(weekdays), list(holidays),
                    list(working_days))
    return {(v.field, v.reason) for v in violations.items}


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"spans": ()}, {("working_hours", "NO_WORKING_HOURS")}),
    ({"spans": (("09:00", "09:00"),)}, {("working_hours[0].end", "SPAN_END_NOT_AFTER_START")}),
    ({"spans": (("17:00", "09:00"),)}, {("working_hours[0].end", "SPAN_END_NOT_AFTER_START")}),
    ({"spans": (("9:00", "25:00"),)}, {("working_hours[0].start", "TIME_OF_DAY_INVALID"),
                                       ("working_hours[0].end", "TIME_OF_DAY_INVALID")}),
    ({"spans": (("13:00", "18:00"), ("09:00", "13:30"))},
     {("working_hours[0]", "SPANS_OVERLAP")}),
    ({"spans": tuple((f"0{h}:00", f"0{h}:30") for h in range(7))},
     {("working_hours", "TOO_MANY_SPANS")}),
    ({"weekdays": ()}, {("working_weekdays", "NO_WORKING_WEEKDAYS")}),
    ({"weekdays": (1, 8, 1)}, {("working_weekdays[1]", "VALUE_OUT_OF_RANGE"),
                               ("working_weekdays[2]", "DUPLICATE_VALUE")}),
    ({"holidays": ("2026-02-30", "2026-10-01", "2026-10-01", "")},
     {("holidays[0]", "DAY_INVALID"), ("holidays[2]", "DUPLICATE_VALUE"),
      ("holidays[3]", "FIELD_REQUIRED")}),
    ({"holidays": ("2026-09-27",), "working_days": ("2026-09-27",)},
     {("adjusted_working_days[0]", "HOLIDAY_AND_WORKING_DAY")}),
    ({"working_days": ("2026-09-29",)},  # a Tuesday
     {("adjusted_working_days[0]", "ADJUSTED_DAY_ALREADY_WORKING")}),
    ({"holidays": tuple(f"2026-01-01+{i}" for i in range(401))},
     {("holidays", "TOO_MANY_DATES")}),
])
def test_a_calendar_that_makes_no_sense_is_refused_field_by_field(kwargs, expected):
    found = faults(**kwargs)
    if kwargs.get("holidays") and len(kwargs["holidays"]) > 400:
        # Every one of those is a bad date too; what matters is the list's own fault.
        found = {f for f in found if not f[0].startswith("holidays[")}
    assert found == expected


def test_touching_spans_are_fine_and_are_stored_in_order():
    violations = Violations()
    state = stored_calendar(violations, [("13:30", "17:30"), ("09:00", "13:30")], [5, 1],
                            ["2026-10-02", "2026-10-01"], [])
    assert not violations.items
    assert state == {"spans": [{"start": "09:00", "end": "13:30"},
                               {"start": "13:30", "end": "17:30"}],
                     "weekdays": [1, 5], "holidays": ["2026-10-01", "2026-10-02"],
                     "working_days": []}
