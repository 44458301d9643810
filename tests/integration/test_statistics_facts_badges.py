"""badges' events as the city's figures count them: the real badges application confirms
volunteer service and awards, revokes and expires badges on a real store, and its stored
events go through the statistics mappers as the read model feeds them."""

# badges' own world is imported, not copied: each test naming it reads to ruff as a
# redefinition.
# ruff: noqa: F811

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from eventsourcing.domain import DomainEvent
from eventsourcing.utils import resolve_topic

from services.statistics.domain import badges_facts as b
from services.statistics.domain import catalogue
from tests.conftest import as_actor
from tests.integration.statistics_facts import (
    facts_fit_their_measures,
    map_log,
    measures_are_well_formed,
    values,
)
from tests.integration.test_badges_app import (  # noqa: F401 - `world` is a fixture
    ADMIN,
    OFFICE,
    PLATFORM,
    badge,
    criteria,
    new_rider,
    world,
)
from tests.integration.test_volunteer_activities import attend, publish, sign_up


@pytest.fixture
def store_env(tmp_path):
    """The mappers read the state as stored, the same bytes on either store: SQLite will do."""
    return {"QIJI_DATA_DIR": str(tmp_path / "data")}


def figures(w):
    return map_log(w["badges"], "badges", w["identity"])


def log_shift(w, rider, hours, started_at):
    with as_actor(PLATFORM):
        return w["badges"].log_volunteer_service(
            rider_id=rider, community_id=w["community"], activity="帮助独居老人",
            started_at=started_at, hours=hours)["shift_id"]


def grant(w, rider, badge_class_id):
    with as_actor(ADMIN):
        return w["badges"].grant_badge(
            rider_id=rider, badge_class_id=badge_class_id, reason="开业仪式表彰",
            evidence=[{"reference": "ceremony", "narrative": "荷悦体育公园授勋"}])["award_id"]


def test_every_topic_mapped_names_an_event_class_badges_stores():
    for topic in b.MAPPERS:
        assert issubclass(resolve_topic(topic), DomainEvent), topic
    assert catalogue.measures()[b.VOLUNTEER_HOURS_CONFIRMED].scale == b.HOURS_SCALE
    measures_are_well_formed("badges")


def test_confirmed_hours_count_on_the_day_served_at_the_confirming_community(world):
    rider = new_rider(world)
    served = world["clock"]() - timedelta(days=3)
    shift = log_shift(world, rider, "2.5", served)
    log_shift(world, rider, "4", served)  # never confirmed
    rejected = log_shift(world, rider, "1", served)
    with as_actor(OFFICE):
        world["badges"].reject_volunteer_service(shift_id=rejected, reason="重复登记")
    before = figures(world)
    assert before.of(b.VOLUNTEER_HOURS_CONFIRMED) == []
    with as_actor(OFFICE):
        world["badges"].confirm_volunteer_service(shift_id=shift)
    f = figures(world)
    facts_fit_their_measures(f)
    [hours], [shifts] = f.of(b.VOLUNTEER_HOURS_CONFIRMED), f.of(b.VOLUNTEER_SHIFTS_CONFIRMED)
    assert (hours.value, shifts.value) == (250, 1)
    assert catalogue.measures()[b.VOLUNTEER_HOURS_CONFIRMED].value(hours.value) == Decimal("2.5")
    assert hours.effective_at == shifts.effective_at == served
    assert (hours.where.community_id, hours.where.street_id, hours.where.platform_id,
            hours.where.station_id) == (world["community"], "", world["platform"],
                                        world["station"])
    # Confirmed three days after it was served: that day's figure as it stood before the
    # confirmation had none of it; today's has it (the difference is the late record).
    day = dict(start=served - timedelta(hours=1), end=served + timedelta(hours=1))
    last_before = max(e.recorded_at for e in before.events)
    assert f.total(b.VOLUNTEER_HOURS_CONFIRMED, as_of=last_before, **day) == 0
    assert f.total(b.VOLUNTEER_HOURS_CONFIRMED, **day) == 250


def test_attendance_of_an_activity_counts_its_length_exactly_to_the_hundredth(world):
    """80 minutes are 1.33 h as badges records them (cut to the hundredth): 133 hundredths
    add up exactly where minutes (79.8) would not."""
    rider = new_rider(world)
    starts = world["clock"].now + timedelta(days=2)
    activity_id = publish(world, starts_at=starts, ends_at=starts + timedelta(minutes=80))
    sign_up(world, activity_id, rider)
    world["clock"].now += timedelta(days=2, hours=2)
    attend(world, activity_id, rider)
    [hours] = figures(world).of(b.VOLUNTEER_HOURS_CONFIRMED)
    assert (hours.value, hours.effective_at, hours.where.community_id) == (
        133, starts, world["community"])


def test_a_revocation_counts_when_it_happens_and_leaves_the_award_in_its_period(world):
    rider = new_rider(world)
    golden = badge(world, min_volunteer_hours="100")  # awarded by hand here
    awarded_at = world["clock"]()
    award = grant(world, rider, golden)
    world["clock"].now += timedelta(days=40)
    with as_actor(ADMIN):
        world["badges"].revoke_award(award_id=award, reason="违规")
    f = figures(world)
    facts_fit_their_measures(f)
    [awarded], [revoked] = f.of(b.BADGES_AWARDED), f.of(b.BADGES_REVOKED)
    assert (awarded.value, awarded.effective_at) == (1, awarded_at)
    assert (revoked.value, revoked.effective_at) == (1, awarded_at + timedelta(days=40))
    assert [(x.value, x.effective_at) for x in f.of(b.BADGES_IN_FORCE)] == [
        (1, awarded_at), (-1, awarded_at + timedelta(days=40))]
    assert awarded.where == revoked.where
    assert (awarded.where.street_id, awarded.where.platform_id) == (world["street"],
                                                                   world["platform"])
    # The award's month keeps its award today; the stock falls only from the revocation on.
    month = dict(start=awarded_at - timedelta(days=1), end=awarded_at + timedelta(days=1))
    assert f.total(b.BADGES_AWARDED, **month) == 1
    assert f.total(b.BADGES_IN_FORCE, end=month["end"]) == 1
    assert f.total(b.BADGES_IN_FORCE) == 0
    assert values(f.by_topic("Award.Revoked")) == [1, -1]


def test_an_expiry_counts_at_the_awards_expiry_moment(world):
    rider = new_rider(world)
    with as_actor(ADMIN):
        one_day = world["badges"].create_badge_class(
            name="青蜂骑士", description="", image_url="", issuer_id=world["city"],
            criteria=criteria(min_volunteer_hours="100"), validity_days=1)["badge_class_id"]
    award = grant(world, rider, one_day)
    expires_at = world["badges"].award(award).expires_at
    world["clock"].now += timedelta(days=3)
    assert world["badges"].expire_due() == 1
    f = figures(world)
    [expired] = f.of(b.BADGES_EXPIRED)
    assert (expired.value, expired.effective_at) == (1, expires_at)
    assert values(f.of(b.BADGES_IN_FORCE)) == [1, -1]
    assert f.of(b.BADGES_IN_FORCE)[1].effective_at == expires_at
    assert f.total(b.BADGES_AWARDED) == 1
