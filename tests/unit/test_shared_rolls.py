"""A training session's enrolments, a volunteer activity's sign-ups and a care campaign's
allocations grow with their history (a session holds up to 500 riders and those who withdrew,
an activity 1,000, a campaign up to 100,000 packages), and every enrolment, sign-up and
allocation is decided on a command's copy of them. They are held
as values (immutables.Map), so the copy shares them instead of copying each rider's entry; the
counts the rules ask for are kept as entries change, not recounted. Whatever the order of
enrolments, withdrawals, check-ins, results and hand-overs, the counts are what a recount of
the entries gives, and nothing a command's copy changes reaches the cached original."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.badges.domain import activities
from services.badges.domain.activities import VolunteerActivity, VolunteerActivityKind, check_plan
from services.merchants.domain.model import CareCampaign
from services.training.domain.model import TrainingSession
from services.training.domain.values import HOLDS_A_PLACE, CompletionResult, EnrolmentStatus
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Violations
from shared.store.cache import copy_aggregate

T0 = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
BEFORE, DURING = T0 - timedelta(days=1), T0 + timedelta(minutes=30)
RIDERS = [f"r{n}" for n in range(6)]


def a_session(capacity: int) -> TrainingSession:
    return TrainingSession(course_id="c", service_space_id="s", starts_at=T0,
                           ends_at=T0 + timedelta(hours=2), capacity=capacity, pair={})


# What a step's refusal may be: the rule refused it, and nothing changed.
REFUSED = (AlreadyExists, FailedPrecondition, NotFound, InvalidArgument)


def each_step(aggregate: Any, table: dict[str, Callable[[Any, str], Any]],
              steps: list[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Takes the steps on `aggregate` one by one (a refused one changes nothing), pausing after
    each, with the step taken, for the caller to check what must hold."""
    for step, rider in steps:
        try:
            table[step](aggregate, rider)
        except REFUSED:
            pass
        yield step, rider


def steps_from(table: dict[str, Any], most: int) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Up to `most` steps of `table`, each taken for one of the riders."""
    return st.lists(st.tuples(st.sampled_from(sorted(table)), st.sampled_from(RIDERS)),
                    max_size=most)


def recount(session: TrainingSession) -> int:
    return sum(1 for e in session.enrolments.values()
               if EnrolmentStatus(e["status"]) in HOLDS_A_PLACE)


SESSION_STEPS = {
    "enrol": lambda s, r: s.enrol(r, BEFORE),
    "withdraw": lambda s, r: s.withdraw(r, BEFORE),
    "cancel": lambda s, r: s.cancel_enrolment(r, "停岗"),
    "check_in": lambda s, r: s.check_in(r, DURING),
    "no_show": lambda s, r: s.record_no_show(r, DURING),
    "pass": lambda s, r: s.record_completion(r, CompletionResult.PASSED, 90, DURING),
    "fail": lambda s, r: s.record_completion(r, CompletionResult.FAILED, 40, DURING),
}


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 4), steps=steps_from(SESSION_STEPS, 40))
def test_a_sessions_places_taken_are_what_a_recount_of_its_roll_gives(
        capacity: int, steps: list[tuple[str, str]]) -> None:
    session = a_session(capacity)
    for _ in each_step(session, SESSION_STEPS, steps):
        assert session.places_taken == recount(session) <= capacity
    rebuilt = None
    for stored in session.collect_events():
        rebuilt = stored.mutate(rebuilt)
    assert isinstance(rebuilt, TrainingSession)
    assert (rebuilt.enrolments, rebuilt.places_taken) == (session.enrolments,
                                                          session.places_taken)


def test_a_rider_enrolling_again_after_withdrawing_starts_a_new_enrolment() -> None:
    session = a_session(2)
    session.enrol("r1", BEFORE - timedelta(hours=2))
    session.withdraw("r1", BEFORE)
    session.enrol("r1", BEFORE)
    assert dict(session.enrolments["r1"]) == {
        "status": "ENROLLED", "enrolled_at": BEFORE, "score": None, "reason": ""}
    assert session.places_taken == 1


def cached_and_copied(aggregate: Any, add: Any, riders: int) -> tuple[Any, Any]:
    """`aggregate` after `add`ing `riders` riders, as the cache holds it, and a command's copy."""
    for n in range(riders):
        add(aggregate, f"r{n}")
    aggregate.collect_events()
    return aggregate, copy_aggregate(aggregate)


def test_a_commands_copy_of_a_session_shares_its_roll_and_keeps_its_changes() -> None:
    cached, copy = cached_and_copied(a_session(500), lambda s, r: s.enrol(r, BEFORE), 400)
    assert copy.enrolments is cached.enrolments  # shared: no entry is copied
    copy.enrol("new", BEFORE)
    copy.withdraw("r1", BEFORE)
    copy.cancel_enrolment("r2", "停岗")
    assert (copy.places_taken, copy.enrolments["r1"]["status"]) == (399, "WITHDRAWN")
    assert cached.places_taken == 400 and "new" not in cached.enrolments
    assert {cached.enrolments[r]["status"] for r in ("r1", "r2")} == {"ENROLLED"}
    assert cached.enrolments["r2"]["reason"] == ""


def a_campaign(stock: int) -> CareCampaign:
    return CareCampaign(street_id="st", name="夏日关爱礼包", description="", stock=stock,
                        contents=[{"item": "矿泉水", "quantity": 6}], rules=[],
                        rules_version=0)


CAMPAIGN_STEPS = {
    "allocate": lambda c, r: c.allocate(r, T0),
    "hand_over": lambda c, r: c.hand_over(r, "王社工", "office", T0 + timedelta(hours=1)),
}


@settings(max_examples=200, deadline=None)
@given(stock=st.integers(1, 5), steps=steps_from(CAMPAIGN_STEPS, 30))
def test_a_campaigns_handed_over_count_and_order_are_what_a_recount_gives(
        stock: int, steps: list[tuple[str, str]]) -> None:
    campaign = a_campaign(stock)
    allocated: list[str] = []  # the order the packages went out, as the steps took them
    for step, rider in each_step(campaign, CAMPAIGN_STEPS, steps):
        if step == "allocate" and rider not in allocated and rider in campaign.allocations:
            allocated.append(rider)
        handed: list[Any] = [a for a in campaign.allocations.values()
                             if a["handed_over_at"] is not None]
        assert campaign.handed_over == len(handed)
        assert campaign.remaining == stock - len(campaign.allocations) >= 0
        # The order the office pages through: every package once, as it went out.
        assert [campaign.allocated_at_order(i) for i in range(len(allocated))] == allocated


def test_a_commands_copy_of_a_campaign_shares_its_allocations_and_keeps_its_changes() -> None:
    cached, copy = cached_and_copied(a_campaign(1_000), lambda c, r: c.allocate(r, T0), 600)
    assert copy.allocations is cached.allocations
    assert copy.allocated_in_order is cached.allocated_in_order
    copy.allocate("new", T0)
    copy.hand_over("r1", "王社工", "office", T0 + timedelta(hours=1))
    assert (copy.remaining, copy.handed_over) == (399, 1)
    assert copy.allocations["r1"]["handed_over_by"] == "王社工"
    assert (cached.remaining, cached.handed_over) == (400, 0)
    assert cached.allocations["r1"]["handed_over_at"] is None and "new" not in cached.allocations
    assert copy.allocated_at_order(600) == "new" and len(cached.allocated_in_order) == 600


def an_activity(places: int) -> VolunteerActivity:
    now = T0 - timedelta(days=3)
    plan = check_plan(Violations(), title="社区防汛值守", description="",
                      kind=VolunteerActivityKind.EMERGENCY_DUTY, starts_at=T0,
                      ends_at=T0 + timedelta(hours=2), service_space_id="", address="北大街18号",
                      places=places, sign_up_deadline=T0 - timedelta(hours=12), now=now)
    assert plan is not None
    return VolunteerActivity.publish(community_id="c", street_id="s", plan=plan,
                                     published_by="desk")


ACTIVITY_STEPS = {
    "sign_up": lambda a, r: a.sign_up(r, BEFORE),
    "withdraw": lambda a, r: a.withdraw(r, BEFORE),
    "attend": lambda a, r: a.record_attendance(r, Decimal("1.5"), f"shift-{r}", DURING),
    "cancel": lambda a, r: a.cancel("暴雨", BEFORE),
}


@settings(max_examples=200, deadline=None)
@given(places=st.integers(1, 4), steps=steps_from(ACTIVITY_STEPS, 30))
def test_an_activitys_places_taken_are_what_a_recount_of_its_sign_ups_gives(
        places: int, steps: list[tuple[str, str]]) -> None:
    activity = an_activity(places)
    for _ in each_step(activity, ACTIVITY_STEPS, steps):
        recount = sum(1 for s in activity.sign_ups.values()
                      if s["status"] in activities.HOLDS_A_PLACE)
        assert activity.places_taken == recount <= places


def test_a_commands_copy_of_an_activity_shares_its_sign_ups_and_keeps_its_changes() -> None:
    cached, copy = cached_and_copied(an_activity(1_000), lambda a, r: a.sign_up(r, BEFORE), 700)
    assert copy.sign_ups is cached.sign_ups
    copy.sign_up("new", BEFORE)
    copy.withdraw("r1", BEFORE)
    assert (copy.places_taken, copy.sign_ups["r1"]["status"]) == (700, "WITHDRAWN")
    assert cached.places_taken == 700 and cached.sign_ups["r1"]["status"] == "SIGNED_UP"
    assert cached.sign_ups["r1"]["withdrawn_at"] is None and "new" not in cached.sign_ups
