"""merchants', badges' and governance's facts through the whole read model (tests/inprocess.py
services, the statistics store on both databases): a reversed redemption as the day stood
before the reversal and today, volunteer hours confirmed late joining the day they were
served, and a help request asked at the street office's counter that no platform's figures
ever show."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.governance.domain.values import HelpKind
from services.identity.domain.values import OrganisationKind
from services.merchants.domain.values import Eligibility, LimitPeriod, MerchantAmenity, PerkKind
from services.statistics.application import WHOLE_RANGE, FigureQuery, Viewer
from services.statistics.domain.facts import Dimension
from services.statistics.domain.periods import city_day, day_start
from tests.conftest import actor, as_actor
from tests.integration import test_statistics_app as statistics_world
from tests.integration.test_statistics_app import ADMIN, EVERYTHING, Clock, figures, rider

city = statistics_world.city


def platform(w: dict[str, Any], name: str = "骑迹外卖"):
    return actor("platform", "platform", organisation_id=w[name])


def office(w: dict[str, Any]):
    return actor("hehuachi-office", "street_office", organisation_id=w["荷花池街道"])


def days(first: datetime, last: datetime, measure: str, dimension: Dimension,
         **fields: Any) -> FigureQuery:
    """One period from the city's day of `first` to the day after `last`'s."""
    return FigureQuery(measure=measure, dimension=dimension, granularity=WHOLE_RANGE,
                       start=day_start(city_day(first) - timedelta(days=1)),
                       end=day_start(city_day(last) + timedelta(days=2)), **fields)


def as_of_and_today(stats, q: FigureQuery, viewer: Viewer = EVERYTHING
                    ) -> dict[str, tuple[Decimal, Decimal | None]]:
    return {r.key_label: (r.value, r.current_value) for r in stats.query(q, viewer).rows}


def test_a_reversed_redemption_stays_in_the_day_as_it_stood_and_leaves_it_today(city):
    w, stats, merchants = city, city["stats"], city["q"].apps["merchants"]
    clock = Clock()
    merchants.clock = clock  # type: ignore[attr-defined]
    with as_actor(ADMIN):
        shop = w["q"].apps["identity"].create_organisation(
            kind=OrganisationKind.MERCHANT, name="荷花池面馆", parent_id=w["荷花池街道"],
            department_function=None)["organisation_id"]
    shop_actor = actor("shop", "merchant", organisation_id=shop)
    with as_actor(shop_actor):
        merchants.apply_merchant(merchant_id=shop, name="荷花池面馆", street_id=w["荷花池街道"],
                                 category="restaurant", latitude=31.78, longitude=119.95,
                                 address="北大街", amenities=[MerchantAmenity.DRINKING_WATER])
    with as_actor(office(w)):
        merchants.approve_merchant(merchant_id=shop)
    with as_actor(shop_actor):
        perk = merchants.create_perk_offer(
            merchant_id=shop, title="骑手免费饮水", kind=PerkKind.FREE_ITEM, percent_off=0,
            amount_off_fen=0, free_item="一瓶水", eligibility=Eligibility.ANY_VERIFIED_RIDER,
            badge_class_id="", total_quota=10, per_rider_limit=1, limit_period=LimitPeriod.DAY,
            valid_from=clock.now - timedelta(hours=1), valid_until=clock.now + timedelta(days=30),
            code_ttl_minutes=30)["perk_id"]
        merchants.publish_perk_offer(perk_id=perk)
    r = rider(w)
    w["q"].sync()
    with as_actor(platform(w)):
        claim = merchants.claim(merchants.claim_perk(perk_id=perk, rider_id=r)["claim_id"])
    with as_actor(shop_actor):
        merchants.redeem_code(merchant_id=shop, code=claim.code)
    stats.catch_up()
    before_reversal = datetime.now(UTC)
    clock.now += timedelta(minutes=20)
    with as_actor(shop_actor):
        merchants.reverse_redemption(claim_id=claim.claim_id, reason="收银误操作")
    stats.catch_up()

    q = days(clock.now, clock.now, "perk_redemptions", Dimension.MERCHANT)
    assert as_of_and_today(stats, replace(q, as_of=before_reversal)) == {
        "荷花池面馆": (Decimal(1), Decimal(0))}
    assert figures(stats, q) == {"荷花池面馆": 0}
    assert figures(stats, days(clock.now, clock.now, "perk_redemption_reversals",
                               Dimension.STREET)) == {"荷花池街道": 1}
    assert figures(stats, days(clock.now, clock.now, "friendly_merchants",
                               Dimension.DISTRICT)) == {"钟楼区": 1}
    claims = days(clock.now, clock.now, "perk_claims", Dimension.CITY)
    assert figures(stats, claims, Viewer(merchant_id=shop)) == {"荷花池面馆": 1}
    assert figures(stats, claims, Viewer(platform_id=w["骑迹外卖"])) == {"骑迹外卖": 1}
    assert figures(stats, claims, Viewer(platform_id=w["别家外卖"])) == {}


def test_hours_confirmed_late_join_the_day_served_at_the_community_and_its_district(city):
    w, stats, badges = city, city["stats"], city["q"].apps["badges"]
    r = rider(w)
    w["q"].sync()
    served = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    with as_actor(platform(w)):
        shift = badges.log_volunteer_service(
            rider_id=r, community_id=w["北大街社区"], activity="帮助独居老人", started_at=served,
            hours="2.5")["shift_id"]
    stats.catch_up()
    before_confirmation = datetime.now(UTC)
    with as_actor(actor("beidajie", "community", organisation_id=w["北大街社区"])):
        badges.confirm_volunteer_service(shift_id=shift)
    stats.catch_up()

    q = FigureQuery("volunteer_hours_confirmed", Dimension.COMMUNITY, WHOLE_RANGE,
                    day_start(city_day(served)), day_start(city_day(served) + timedelta(days=1)),
                    as_of=before_confirmation)
    assert as_of_and_today(stats, q) == {"北大街社区": (Decimal(0), Decimal("2.5"))}
    assert figures(stats, replace(q, as_of=None, dimension=Dimension.DISTRICT)) == {
        "钟楼区": Decimal("2.5")}
    assert figures(stats, replace(q, as_of=None, measure="volunteer_shifts_confirmed"),
                   Viewer(community_ids=frozenset({w["北大街社区"]}))) == {"北大街社区": 1}


def test_a_help_request_asked_at_the_counter_is_the_streets_figure_never_the_platforms(city):
    w, stats, governance = city, city["stats"], city["q"].apps["governance"]
    r = rider(w)
    w["q"].sync()
    for who in (platform(w), office(w)):
        with as_actor(who, rpc="RequestHelp"):
            governance.request_help(rider_id=r, kind=HelpKind.LABOUR_DISPUTE,
                                    text="老板拖欠工资")
    stats.catch_up()
    now = datetime.now(UTC)
    asked = days(now, now, "help_requests_asked", Dimension.CITY)
    assert figures(stats, asked) == {"常州市": 2}
    assert figures(stats, asked, Viewer(street_ids=frozenset({w["荷花池街道"]}))) == {
        "荷花池街道": 2}
    assert figures(stats, asked, Viewer(platform_id=w["骑迹外卖"])) == {"骑迹外卖": 1}
    by_platform = days(now, now, "help_requests_asked", Dimension.PLATFORM)
    assert figures(stats, by_platform) == {"骑迹外卖": 1, "未归属": 1}
    assert figures(stats, days(now, now, "help_requests_asked", Dimension.STATION)) == {
        "荷花池站": 1, "未归属": 1}
