"""The city's periods: a range widened to whole days, ISO weeks or months in China Standard
Time, cut without gaps or overlaps, labelled as the city's reports label them."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.statistics.domain.periods import (
    DAY,
    GRANULARITIES,
    MONTH,
    RANGE_INVALID,
    RANGE_TOO_LONG,
    WEEK,
    WHOLE_RANGE,
    bucket,
    check_range,
    city_day,
    day_start,
    periods,
)
from shared.errors import Violations
from shared.values import CITY_TIME

moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31),
                       timezones=st.just(UTC))
spans = st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=400))


@given(moments, spans, st.sampled_from(GRANULARITIES))
def test_periods_cover_the_range_without_gaps_and_no_more_than_whole_periods(start, span,
                                                                             granularity):
    end = start + span
    cut = periods(granularity, start, end)
    assert cut[0].start <= start and cut[-1].end >= end
    # No more than needed: the first holds the start, the last the end's last instant.
    assert start < cut[0].end and cut[-1].start < end
    for before, after in itertools.pairwise(cut):
        assert before.end == after.start and before.end_day == after.first_day
    for p in cut:
        local = p.start.astimezone(CITY_TIME)
        assert (local.hour, local.minute, local.second) == (0, 0, 0)
        assert p.first_day == local.date().toordinal() and p.first_day < p.end_day
        if granularity == WEEK:
            assert local.weekday() == 0 and p.end_day - p.first_day == 7
        if granularity == MONTH:
            assert local.day == 1
        if granularity == DAY:
            assert p.end_day - p.first_day == 1
    assert len({p.label for p in cut}) == len(cut)
    assert (len(cut) == 1) or granularity != WHOLE_RANGE


@given(moments, spans, st.sampled_from(GRANULARITIES), st.data())
def test_each_day_of_the_range_falls_in_the_period_that_holds_it(start, span, granularity,
                                                                 data):
    cut = periods(granularity, start, start + span)
    day = data.draw(st.integers(cut[0].first_day - 3, cut[-1].end_day + 3))
    found = bucket(cut, day)
    if cut[0].first_day <= day < cut[-1].end_day:
        assert found is not None and cut[found].first_day <= day < cut[found].end_day
    else:
        assert found is None


def test_labels_are_the_citys():
    start = datetime(2026, 3, 5, 1, 0, tzinfo=CITY_TIME)
    end = datetime(2026, 3, 6, tzinfo=CITY_TIME)
    assert [p.label for p in periods(DAY, start, end)] == ["2026-03-05"]
    assert [p.label for p in periods(WEEK, start, end)] == ["2026-W10"]
    assert [p.label for p in periods(MONTH, start, end)] == ["2026-03"]
    march = periods(WHOLE_RANGE, datetime(2026, 3, 1, tzinfo=CITY_TIME),
                    datetime(2026, 4, 1, tzinfo=CITY_TIME))
    assert [p.label for p in march] == ["2026-03-01/2026-04-01"]
    # ISO weeks: 2026-12-31 is in 2026-W53, 2027-01-04 starts 2027-W01.
    new_year = periods(WEEK, datetime(2026, 12, 31, tzinfo=CITY_TIME),
                       datetime(2027, 1, 5, tzinfo=CITY_TIME))
    assert [p.label for p in new_year] == ["2026-W53", "2027-W01"]


def test_a_day_is_the_citys_day_not_utcs():
    # 23:30 UTC on 4 March is 07:30 on 5 March in the city.
    at = datetime(2026, 3, 4, 23, 30, tzinfo=UTC)
    assert city_day(at) == date(2026, 3, 5)
    assert [p.label for p in periods(DAY, at, at + timedelta(minutes=1))] == ["2026-03-05"]
    assert day_start(date(2026, 3, 5)) == datetime(2026, 3, 4, 16, 0, tzinfo=UTC)


def test_a_range_ending_at_midnight_ends_there():
    cut = periods(DAY, datetime(2026, 3, 1, tzinfo=CITY_TIME),
                  datetime(2026, 3, 3, tzinfo=CITY_TIME))
    assert [p.label for p in cut] == ["2026-03-01", "2026-03-02"]


def problems(granularity: str, start: datetime, end: datetime) -> list[str]:
    violations = Violations()
    check_range(violations, granularity, start, end)
    return [v.reason for v in violations.items]


def test_a_range_must_end_after_it_starts_and_not_be_too_long():
    at = datetime(2026, 3, 1, tzinfo=CITY_TIME)
    assert problems(DAY, at, at) == [RANGE_INVALID]
    assert problems(DAY, at, at + timedelta(days=367)) == [RANGE_TOO_LONG]
    assert problems(DAY, at, at + timedelta(days=366)) == []
    assert problems(MONTH, at, at + timedelta(days=5 * 365)) == []
    assert problems(WEEK, at, at + timedelta(days=6 * 365)) == [RANGE_TOO_LONG]
