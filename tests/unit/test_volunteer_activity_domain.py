"""A volunteer activity on its own: its plan's rules, places, the sign-up deadline, revision,
cancellation and attendance."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.badges.domain.activities import (
    VolunteerActivity,
    VolunteerActivityKind,
    attended_shift,
    check_plan,
    shift_id_of,
)
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Violations

NOW = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
START = NOW + timedelta(days=2)


def a_plan(v=None, **given):
    fields = dict(title="社区防汛值守", description="", kind=VolunteerActivityKind.EMERGENCY_DUTY,
                  starts_at=START, ends_at=START + timedelta(hours=2, minutes=30),
                  service_space_id="", address="北大街18号", places=3,
                  sign_up_deadline=START - timedelta(hours=12), now=NOW)
    return check_plan(v if v is not None else Violations(), **{**fields, **given})


def an_activity(**given) -> VolunteerActivity:
    return VolunteerActivity.publish(community_id="c", street_id="s", plan=a_plan(**given),
                                     published_by="desk")


def faults(**given):
    v = Violations()
    assert a_plan(v, **given) is None
    return {(f.field, f.reason) for f in v.items}


def test_a_plan_is_refused_with_every_fault_at_once():
    assert faults(title="", places=1001, ends_at=START + timedelta(hours=25),
                  sign_up_deadline=START + timedelta(minutes=1), address="") == {
        ("title", "FIELD_REQUIRED"), ("places", "VALUE_OUT_OF_RANGE"),
        ("end_time", "VALUE_OUT_OF_RANGE"), ("sign_up_deadline", "DEADLINE_AFTER_START"),
        ("service_space_id", "PLACE_REQUIRED")}
    assert faults(starts_at=NOW, ends_at=NOW + timedelta(hours=1),
                  sign_up_deadline=NOW - timedelta(hours=1)) == {
        ("start_time", "TIME_IN_THE_PAST"), ("sign_up_deadline", "TIME_IN_THE_PAST")}
    assert faults(starts_at=NOW + timedelta(days=400),
                  ends_at=NOW + timedelta(days=400, hours=1)) == {
        ("start_time", "VALUE_OUT_OF_RANGE")}


def test_a_revision_may_keep_a_deadline_that_has_passed_but_not_set_one():
    passed = NOW - timedelta(hours=1)
    assert a_plan(sign_up_deadline=passed, unchanged_deadline=passed) is not None
    assert faults(sign_up_deadline=passed, unchanged_deadline=passed + timedelta(minutes=1)
                  ) == {("sign_up_deadline", "TIME_IN_THE_PAST")}


def test_places_are_never_exceeded_and_a_withdrawal_frees_one():
    a = an_activity(places=2)
    a.sign_up("r1", NOW)
    a.sign_up("r2", NOW)
    with pytest.raises(FailedPrecondition) as full:
        a.sign_up("r3", NOW)
    assert full.value.reason == "ACTIVITY_FULL"
    assert not a.open_for_sign_up(NOW)
    a.withdraw("r1", NOW)
    assert (a.places_left, a.open_for_sign_up(NOW)) == (1, True)
    a.sign_up("r3", NOW)
    with pytest.raises(AlreadyExists):
        a.sign_up("r3", NOW)


def test_the_deadline_closes_sign_up_and_withdrawal():
    a = an_activity()
    a.sign_up("r1", NOW)
    deadline = a.sign_up_deadline
    for act in (lambda: a.sign_up("r2", deadline), lambda: a.withdraw("r1", deadline)):
        with pytest.raises(FailedPrecondition) as error:
            act()
        assert error.value.reason == "SIGN_UP_CLOSED"
    with pytest.raises(NotFound):
        a.withdraw("nobody", NOW)


def test_revision_keeps_places_for_those_signed_up_and_stops_at_the_start():
    a = an_activity()
    a.sign_up("r1", NOW)
    a.sign_up("r2", NOW)
    with pytest.raises(FailedPrecondition) as error:
        a.revise(a_plan(places=1), NOW)
    assert error.value.reason == "PLACES_BELOW_SIGN_UPS"
    a.revise(a_plan(places=2, address="荷悦体育公园"), NOW)
    assert (a.address, a.places_left, a.places_taken) == ("荷悦体育公园", 0, 2)
    with pytest.raises(FailedPrecondition) as started:
        a.revise(a_plan(), START)
    assert started.value.reason == "ACTIVITY_STARTED"


def test_cancelling_cancels_the_places_held_and_names_those_riders():
    a = an_activity()
    a.sign_up("r1", NOW)
    a.sign_up("r2", NOW)
    a.withdraw("r2", NOW)
    assert a.cancel("暴雨", NOW) == ["r1"]
    assert (a.status, a.places_taken, a.status_of("r2").value) == ("CANCELLED", 0, "WITHDRAWN")
    names = [type(e).__name__ for e in a.collect_events()]
    assert names[-2:] == ["Cancelled", "SignUpCancelled"]
    with pytest.raises(FailedPrecondition) as again:
        a.cancel("再取消", NOW)
    assert again.value.reason == "ACTIVITY_CANCELLED"


def test_a_cancellation_tells_the_riders_in_the_order_they_signed_up():
    a = an_activity(places=20)
    riders = [f"r{n:02d}" for n in (7, 3, 15, 0, 11, 9, 1, 14, 5, 12)]
    for n, rider in enumerate(riders):
        a.sign_up(rider, NOW + timedelta(minutes=n))
    assert a.cancel("暴雨", NOW + timedelta(hours=1)) == riders
    cancelled = [e.rider_id for e in a.collect_events() if type(e).__name__ == "SignUpCancelled"]
    assert cancelled == riders


def test_attendance_from_the_start_once_within_the_activitys_length():
    a = an_activity()
    a.sign_up("r1", NOW)
    a.sign_up("r2", NOW)
    a.withdraw("r2", NOW)
    assert a.length_hours == Decimal("2.50")
    with pytest.raises(FailedPrecondition) as early:
        a.record_attendance("r1", Decimal(2), "shift", START - timedelta(seconds=1))
    assert early.value.reason == "ACTIVITY_NOT_STARTED"
    with pytest.raises(InvalidArgument) as too_long:
        a.record_attendance("r1", Decimal("2.75"), "shift", START)
    assert too_long.value.violations[0].reason == "HOURS_ABOVE_ACTIVITY_LENGTH"
    with pytest.raises(FailedPrecondition) as withdrawn:
        a.record_attendance("r2", Decimal(1), "shift", START)
    assert withdrawn.value.reason == "SIGN_UP_WITHDRAWN"
    a.record_attendance("r1", Decimal("2.5"), "shift", START)
    with pytest.raises(AlreadyExists) as twice:
        a.record_attendance("r1", Decimal(1), "shift", START)
    assert twice.value.reason == "ATTENDANCE_ALREADY_RECORDED"
    # Attendance holds the place: the activity took place, and is not cancelled.
    assert a.places_taken == 1
    with pytest.raises(FailedPrecondition) as cancel:
        a.cancel("误操作", START)
    assert cancel.value.reason == "ATTENDANCE_RECORDED"


def test_an_attendance_makes_one_shift_per_rider_and_activity():
    a = an_activity()
    shift = attended_shift(a, "r1", Decimal(2))
    assert shift.id == shift_id_of(str(a.id), "r1") == attended_shift(a, "r1", Decimal(1)).id
    assert shift.id != attended_shift(a, "r2", Decimal(2)).id
    assert (shift.community_id, shift.activity, shift.started_at, shift.status) == (
        "c", "社区防汛值守", START, "LOGGED")
