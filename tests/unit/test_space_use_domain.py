"""Visits (到访): the rules of recording amenity use at a service space, and the days they fall
on, on the domain alone. Counts only: nothing here names a rider."""

from datetime import UTC, date, datetime

import pytest

from services.identity.domain.model import ServiceSpace, SpaceUseDay, check_use
from services.identity.domain.values import MAX_USES_PER_CALL, Amenity
from shared.errors import FailedPrecondition, Violations
from shared.values import check_period, city_day, parse_day

TODAY = date(2026, 6, 5)
OPENED = date(2026, 3, 1)


def faults(**given: object) -> dict[str, str]:
    rule = {"amenity": Amenity.REST, "count": 1, "day": TODAY, "today": TODAY,
            "opened_on": OPENED, **given}
    violations = Violations()
    check_use(violations, **rule)  # type: ignore[arg-type]
    return {v.field: v.reason for v in violations.items}


def test_a_use_of_a_named_amenity_on_a_day_the_space_was_open_is_fine():
    assert faults() == {}
    assert faults(day=OPENED, count=MAX_USES_PER_CALL) == {}


def test_every_fault_of_a_recording_is_told_at_once():
    assert faults(amenity=None, count=0, day=date(2026, 6, 6)) == {
        "amenity": "ENUM_VALUE_REQUIRED", "count": "VALUE_OUT_OF_RANGE",
        "day": "DAY_IN_THE_FUTURE"}


@pytest.mark.parametrize("count", [0, -1, MAX_USES_PER_CALL + 1])
def test_a_count_outside_one_to_the_maximum_is_refused(count):
    assert faults(count=count) == {"count": "VALUE_OUT_OF_RANGE"}


def test_use_before_the_space_opened_is_refused():
    assert faults(day=date(2026, 2, 28)) == {"day": "DAY_BEFORE_SPACE_OPENED"}


def test_the_day_is_the_citys_not_utcs():
    # 17:00 UTC on 5 June is 01:00 on 6 June in the city.
    assert city_day(datetime(2026, 6, 5, 17, 0, tzinfo=UTC)) == date(2026, 6, 6)


@pytest.mark.parametrize("text", ["2026-02-30", "20260301", "2026-W09-7", "2026-3-1",
                                  "２０２６-03-01", "2026-03-01\n", "yesterday"])
def test_only_a_real_day_written_yyyy_mm_dd_is_a_day(text):
    violations = Violations()
    assert parse_day(violations, "day", text) is None
    assert [(v.field, v.reason) for v in violations.items] == [("day", "DAY_INVALID")]


def test_an_empty_day_is_not_given_and_no_fault():
    violations = Violations()
    assert parse_day(violations, "day", "") is None
    assert not violations


@pytest.mark.parametrize(("start", "end", "reason"), [
    (date(2026, 6, 5), date(2026, 6, 4), ("from_day", "PERIOD_REVERSED")),
    (date(2025, 6, 4), date(2026, 6, 5), ("to_day", "PERIOD_TOO_LONG")),
    (date(2025, 6, 5), date(2026, 6, 5), None),  # 366 days, both ends included
    (date(2026, 6, 5), date(2026, 6, 5), None),
])
def test_a_period_runs_forward_for_at_most_its_maximum(start, end, reason):
    violations = Violations()
    check_period(violations, start, end, max_days=366)
    assert [(v.field, v.reason) for v in violations.items] == ([reason] if reason else [])


def test_one_space_and_day_is_one_aggregate_and_another_day_another():
    assert SpaceUseDay.create_id("s1", "2026-06-05") == SpaceUseDay.create_id("s1", "2026-06-05")
    assert SpaceUseDay.create_id("s1", "2026-06-05") != SpaceUseDay.create_id("s1", "2026-06-06")
    assert SpaceUseDay.create_id("s1", "2026-06-05") != SpaceUseDay.create_id("s2", "2026-06-05")


def test_uses_add_up_by_amenity_and_replay_to_the_same_counts():
    day = SpaceUseDay(service_space_id="s1", day="2026-06-05")
    day.record_use(Amenity.REST, 3)
    day.record_use(Amenity.CHARGING, 2)
    day.record_use(Amenity.REST, 4)
    assert day.counts == {"REST": 7, "CHARGING": 2}
    events = day.collect_events()
    replayed = None
    for e in events:
        replayed = e.mutate(replayed)
    assert replayed is not None and replayed.counts == day.counts
    assert [type(e).__name__ for e in events] == ["Started", "UseRecorded", "UseRecorded",
                                                  "UseRecorded"]
    # Counts only: no event carries anything about who used the space.
    assert {k for e in events for k in vars(e)} <= {
        "originator_id", "originator_version", "timestamp", "originator_topic",
        "service_space_id", "day", "amenity", "count"}


def test_an_amenity_the_space_does_not_offer_is_a_failed_precondition():
    space = ServiceSpace(street_id="st", name="驿站", address="路1号",
                         amenities=["REST", "CHARGING"], opening_hours=[], location=None)
    space.require_offers(Amenity.CHARGING)
    with pytest.raises(FailedPrecondition) as error:
        space.require_offers(Amenity.DRINKING_WATER)
    assert error.value.reason == "AMENITY_NOT_OFFERED"
    assert "AMENITY_REST, AMENITY_CHARGING" in error.value.message
