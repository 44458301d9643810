"""merchants' events as the city's figures count them: the real merchants application acts on a
real store, and its stored events go through the statistics mappers as the read model feeds
them — so a renamed field or topic breaks these tests, not the figures in production."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from eventsourcing.domain import DomainEvent
from eventsourcing.utils import resolve_topic

from services.merchants.service import LapseJob
from services.statistics.domain import merchants_facts as m
from tests.conftest import as_actor
from tests.integration import test_merchants_app as merchants_world
from tests.integration.statistics_facts import (
    JsonMemory,
    directory_of,
    facts_fit_their_measures,
    map_log,
    measures_are_well_formed,
    values,
)
from tests.integration.test_merchants_app import (
    OFFICE,
    allocate,
    care_campaign,
    claim,
    donate,
    new_rider,
    perk,
    redeem,
    shop_actor,
)

world = merchants_world.world


@pytest.fixture
def store_env(tmp_path):
    """The mappers read the state as stored, the same bytes on either store: SQLite will do."""
    return {"QIJI_DATA_DIR": str(tmp_path / "data")}


def figures(w):
    return map_log(w["merchants"], "merchants", w["identity"])


def test_every_topic_mapped_names_an_event_class_merchants_stores():
    for topic in m.MAPPERS:
        assert issubclass(resolve_topic(topic), DomainEvent), topic
    measures_are_well_formed("merchants")


def test_friendly_merchants_approved_suspended_reinstated_and_the_stock_in_their_street(world):
    with as_actor(OFFICE):
        world["merchants"].suspend_merchant(merchant_id=world["other_shop"], reason="卫生整改")
    suspended = figures(world).of(m.FRIENDLY_MERCHANTS_SUSPENDED)[0]
    with as_actor(OFFICE):
        world["merchants"].reinstate_merchant(merchant_id=world["other_shop"], reason="整改完成")
    f = figures(world)
    facts_fit_their_measures(f)
    assert f.total(m.FRIENDLY_MERCHANTS_APPROVED) == 2
    assert (f.total(m.FRIENDLY_MERCHANTS_SUSPENDED), f.total(m.FRIENDLY_MERCHANTS_REINSTATED)) \
        == (1, 1)
    assert {x.where.street_id for x in f.of(m.FRIENDLY_MERCHANTS_APPROVED)} == {world["street"]}
    assert {x.where.merchant_id for x in f.of(m.FRIENDLY_MERCHANTS_APPROVED)} == {
        world["shop"], world["other_shop"]}
    # The stock: +1 per approval and reinstatement, -1 per suspension, at its moment.
    assert values(f.by_topic("Merchant.Suspended")) == [1, -1]
    assert f.total(m.FRIENDLY_MERCHANTS) == 2
    assert f.total(m.FRIENDLY_MERCHANTS, end=suspended.effective_at + timedelta(microseconds=1)) \
        == 1
    assert f.total(m.FRIENDLY_MERCHANTS, where=lambda w: w.merchant_id == world["shop"]) == 1


def test_a_perk_counts_once_when_first_published_not_again_after_a_pause(world):
    p = perk(world)  # created and published
    with as_actor(shop_actor(world)):
        world["merchants"].pause_perk_offer(perk_id=p)
        world["merchants"].publish_perk_offer(perk_id=p)
    [published] = figures(world).of(m.PERKS_PUBLISHED)
    assert (published.value, published.where.merchant_id, published.where.street_id) == (
        1, world["shop"], world["street"])


def test_a_claim_and_its_redemption_count_at_the_merchant_for_the_riders_platform(world):
    p = perk(world)
    claimed_at = world["clock"]()
    c = claim(world, p, new_rider(world))
    world["clock"].now += timedelta(minutes=5)
    redeem(world, c.code)
    f = figures(world)
    facts_fit_their_measures(f)
    [claimed], [redeemed] = f.of(m.PERK_CLAIMS), f.of(m.PERK_REDEMPTIONS)
    assert claimed.effective_at == claimed_at
    assert redeemed.effective_at == claimed_at + timedelta(minutes=5)
    for x in (claimed, redeemed):
        assert (x.where.street_id, x.where.merchant_id, x.where.platform_id,
                x.where.station_id) == (world["street"], world["shop"], world["platform"],
                                        world["station"])


def test_a_reversal_takes_the_redemption_back_at_its_own_moment_and_counts_itself_later(world):
    p = perk(world)
    c = claim(world, p, new_rider(world))
    redeemed_at = world["clock"]()
    redeem(world, c.code)
    before = figures(world).of(m.PERK_REDEMPTIONS)[0].recorded_at
    world["clock"].now += timedelta(minutes=40)
    with as_actor(shop_actor(world)):
        world["merchants"].reverse_redemption(claim_id=c.claim_id, reason="收银误操作")
    f = figures(world)
    redemptions = f.of(m.PERK_REDEMPTIONS)
    assert [(x.value, x.effective_at) for x in redemptions] == [(1, redeemed_at),
                                                                 (-1, redeemed_at)]
    [reversal] = f.of(m.PERK_REDEMPTION_REVERSALS)
    assert (reversal.value, reversal.effective_at) == (1, redeemed_at + timedelta(minutes=40))
    assert reversal.where == redemptions[0].where == redemptions[1].where
    # The period of the redemption as it stood before the reversal was recorded, and today.
    assert f.total(m.PERK_REDEMPTIONS, as_of=before) == 1
    assert f.total(m.PERK_REDEMPTIONS) == 0
    assert redemptions[1].recorded_at > before


def test_a_lapsed_code_counts_at_its_expiry_not_when_the_lapse_is_stored(world):
    p = perk(world, ttl=10)
    c = claim(world, p, new_rider(world))
    world["clock"].now += timedelta(minutes=25)
    assert LapseJob(world["merchants"]).run_once() == 1
    [lapsed] = figures(world).of(m.PERK_CODES_LAPSED)
    assert (lapsed.value, lapsed.effective_at, lapsed.where.merchant_id) == (
        1, c.expires_at, world["shop"])


def test_care_packages_count_in_the_campaigns_street_and_a_merchants_donation_by_merchant(
        world):
    campaign = care_campaign(world, stock=1)
    donate(world, campaign, packages=3)
    donate(world, campaign, items=(("矿泉水", 12),))  # items only: no packages counted
    rider = new_rider(world)
    allocated_at = world["clock"]()
    allocate(world, campaign, rider)
    world["clock"].now += timedelta(days=2)
    with as_actor(OFFICE):
        world["merchants"].record_hand_over(campaign_id=campaign, rider_id=rider,
                                            handed_over_by="王社工")
    f = figures(world)
    facts_fit_their_measures(f)
    [allocated], [handed] = f.of(m.CARE_PACKAGES_ALLOCATED), f.of(m.CARE_PACKAGES_HANDED_OVER)
    assert (allocated.effective_at, handed.effective_at) == (allocated_at,
                                                             allocated_at + timedelta(days=2))
    assert allocated.where == handed.where
    assert (handed.where.street_id, handed.where.platform_id, handed.where.merchant_id) == (
        world["street"], world["platform"], "")
    [donated] = f.of(m.CARE_PACKAGES_DONATED)
    assert (donated.value, donated.where.merchant_id, donated.where.street_id) == (
        3, world["shop"], world["street"])


def test_a_merchant_that_applied_before_v3_is_counted_as_one_that_applied_now(world):
    """Merchant.Applied v1 had no opening hours nor business area: the mappers read only what
    every version carries, from the state as stored (not upcast)."""
    f = figures(world)
    applied = next(e for e in f.events if e.topic.endswith("Merchant.Applied"))
    approved = next(e for e in f.events if e.topic.endswith("Merchant.Approved")
                    and e.originator_id == applied.originator_id)
    old = {k: v for k, v in applied.state.items()
           if k not in ("opening_hours", "business_area_id", "class_version")}
    memory = JsonMemory()
    directory = directory_of(world["identity"])
    assert m.MAPPERS[applied.topic](replace(applied, state=old), directory, memory) == []
    [counted, stock] = m.MAPPERS[approved.topic](approved, directory, memory)
    assert (counted.where.street_id, stock.value) == (world["street"], 1)
