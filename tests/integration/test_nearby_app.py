"""The rider's map (FindNearby), on SQLite and PostgreSQL: what a rider looking for a place to
rest sees — the nearest first, how far each is, what is open now, and the perks they may claim
there."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.identity.domain.values import Amenity, OrganisationKind
from services.merchants.domain.values import PlaceAmenity, PlaceKind
from shared.errors import InvalidArgument, NotFound
from shared.gcj02 import wgs84_to_gcj02
from shared.values import CoordinateSystem, GeoPoint
from tests.conftest import actor, as_actor
from tests.integration.test_merchants_app import (  # noqa: F401 - fixtures and helpers
    OFFICE,
    claim,
    new_rider,
    perk,
    shop_actor,
    world,
)

ADMIN = actor("city", "city_admin")
CENTRE = (31.78, 119.95)
AT_CENTRE = GeoPoint(*CENTRE)
METRES_PER_DEGREE = 111_195.0  # of latitude, on the mean sphere
# Monday 1 June 2026, 10:00 in Changzhou.
MONDAY_TEN = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
ALL_WEEK = [{"weekday": d, "opens": "08:00", "closes": "20:00"} for d in range(1, 8)]
EVENINGS = [{"weekday": d, "opens": "17:00", "closes": "23:00"} for d in range(1, 8)]


def north(metres: float) -> tuple[float, float]:
    return CENTRE[0] + metres / METRES_PER_DEGREE, CENTRE[1]


@pytest.fixture
def town(world):  # noqa: F811 - the fixture imported above
    """The shop 300 m north, open evenings only; the other shop 1.5 km north, all week; a
    service space 100 m north, all week; one stored with no location."""
    w = world
    w["clock"].now = MONDAY_TEN
    m = w["merchants"]
    for key, metres, hours in (("shop", 300, EVENINGS), ("other_shop", 1500, ALL_WEEK)):
        with as_actor(shop_actor(w, key)):
            m.update_merchant_place(merchant_id=w[key], location=GeoPoint(*north(metres)),
                                    address=f"北大街{metres}号", opening_hours=hours)
    with as_actor(ADMIN):
        space = w["identity"].create_service_space(
            street_id=w["street"], name="荷睦驿站", address="北大街100号",
            amenities=[Amenity.REST, Amenity.DRINKING_WATER, Amenity.CHARGING],
            opening_hours=ALL_WEEK, location=GeoPoint(*north(100)))["service_space_id"]
        w["identity"].create_service_space(street_id=w["street"], name="无址驿站", address="某处",
                                           amenities=[Amenity.REST], opening_hours=ALL_WEEK)
    w["space"] = space
    return w


def nearby(w, *, location=AT_CENTRE, radius=2000.0, amenities=(), open_now=False,
           kinds=(), rider_id="", page_size=0, page_token="", who=None):
    with as_actor(who or actor("platform-co", "platform", organisation_id=w["platform"])):
        return w["merchants"].find_nearby(
            location=location, radius_metres=radius, amenities=list(amenities),
            open_now=open_now, kinds=list(kinds), rider_id=rider_id, page_size=page_size,
            page_token=page_token)


def test_places_come_nearest_first_with_their_distance_in_metres(town):
    found, token = nearby(town)
    assert [(n.place.kind, n.place.name) for n in found] == [
        (PlaceKind.SERVICE_SPACE, "荷睦驿站"), (PlaceKind.MERCHANT, "店"),
        (PlaceKind.MERCHANT, "店")]
    assert [n.place.ident for n in found[1:]] == [town["shop"], town["other_shop"]]
    assert [n.distance_metres for n in found] == pytest.approx([100, 300, 1500], abs=1.0)
    assert token == ""
    # The space stored without a location is not on the map.
    assert "无址驿站" not in {n.place.name for n in found}


def test_a_radius_leaves_out_what_lies_beyond_it(town):
    found, _ = nearby(town, radius=1000.0)
    assert [round(n.distance_metres) for n in found] == [100, 300]


def test_open_now_leaves_out_a_shop_that_opens_in_the_evening(town):
    everything, _ = nearby(town)
    assert [n.open_now for n in everything] == [True, False, True]
    open_now, _ = nearby(town, open_now=True)
    assert [n.place.ident for n in open_now] == [town["space"], town["other_shop"]]


def test_amenities_and_kinds_filter(town):
    water, _ = nearby(town, amenities=[PlaceAmenity.CHARGING])
    assert [n.place.ident for n in water] == [town["space"]]
    shops, _ = nearby(town, kinds=[PlaceKind.MERCHANT])
    assert [n.place.ident for n in shops] == [town["shop"], town["other_shop"]]


def test_a_point_from_a_chinese_map_app_finds_the_same_places(town):
    gcj = GeoPoint(*wgs84_to_gcj02(*CENTRE), CoordinateSystem.GCJ02)
    found, _ = nearby(town, location=gcj)
    assert [n.distance_metres for n in found] == pytest.approx([100, 300, 1500], abs=1.0)


def test_pages_follow_the_distance_order(town):
    first, token = nearby(town, page_size=2)
    second, last = nearby(town, page_size=2, page_token=token)
    assert [n.place.ident for n in first + second] == [
        town["space"], town["shop"], town["other_shop"]]
    assert last == ""
    with pytest.raises(InvalidArgument) as refused:
        nearby(town, page_size=2, page_token=token, radius=900.0)
    assert refused.value.violations[0].reason == "PAGE_TOKEN_FILTERS_CHANGED"


def test_a_suspended_merchant_leaves_the_map_and_comes_back_when_reinstated(town):
    m = town["merchants"]
    with as_actor(OFFICE):
        m.suspend_merchant(merchant_id=town["shop"], reason="卫生检查")
    assert town["shop"] not in {n.place.ident for n in nearby(town)[0]}
    with as_actor(OFFICE):
        m.reinstate_merchant(merchant_id=town["shop"], reason="整改完成")
    assert town["shop"] in {n.place.ident for n in nearby(town)[0]}


def test_a_rider_sees_the_perks_they_may_claim_and_not_one_they_used_up(town):
    once_a_day = perk(town, limit=1)
    other = perk(town, limit=5)
    used_up, fresh = new_rider(town), new_rider(town)
    claim(town, once_a_day, used_up)
    by_rider = {}
    for rider in (used_up, fresh):
        found, _ = nearby(town, rider_id=rider)
        by_rider[rider] = {n.place.ident: [p.perk_id for p in n.claimable_perks] for n in found}
    assert by_rider[fresh][town["shop"]] == [once_a_day, other]
    assert by_rider[used_up][town["shop"]] == [other]
    assert by_rider[fresh][town["space"]] == [] and by_rider[fresh][town["other_shop"]] == []
    # Without a rider, no perks are listed at all.
    assert all(not n.claimable_perks for n in nearby(town)[0])


def test_an_unverified_rider_is_offered_nothing(town):
    perk(town)
    found, _ = nearby(town, rider_id=new_rider(town, verify=False))
    assert all(not n.claimable_perks for n in found)


def test_every_fault_in_one_answer_and_nothing_written(town):
    before = town["merchants"].last_position()
    with pytest.raises(InvalidArgument) as refused:
        nearby(town, location=GeoPoint(91.0, float("nan")), radius=1_000_000.0,
               amenities=[None], kinds=[None], page_size=-1, who=ADMIN)
    assert {(v.field, v.reason) for v in refused.value.violations} == {
        ("location.latitude", "LOCATION_INVALID"), ("location.longitude", "LOCATION_INVALID"),
        ("radius_metres", "VALUE_OUT_OF_RANGE"), ("amenities[0]", "ENUM_VALUE_REQUIRED"),
        ("kinds[0]", "ENUM_VALUE_REQUIRED"), ("page_size", "PAGE_SIZE_NEGATIVE")}
    for radius in (0.0, -5.0, 50_000.1):
        with pytest.raises(InvalidArgument):
            nearby(town, radius=radius)
    assert len(nearby(town, radius=50_000.0)[0]) == 3
    assert town["merchants"].last_position() == before


def test_an_unknown_rider_is_not_found_to_the_city(town):
    with pytest.raises(NotFound) as missing:
        nearby(town, rider_id="00000000-0000-4000-8000-000000000000", who=ADMIN)
    assert missing.value.reason == "RIDER_NOT_FOUND"


def test_a_merchant_applying_with_gcj02_and_hours_is_stored_in_wgs84(town):
    w = town
    with as_actor(ADMIN):
        merchant = w["identity"].create_organisation(
            kind=OrganisationKind.MERCHANT, name="新店", parent_id=w["street"],
            department_function=None)["organisation_id"]
    w["follower"].run_once()
    with as_actor(actor("m", "merchant", organisation_id=merchant)):
        w["merchants"].apply_merchant(
            merchant_id=merchant, name="新店", street_id=w["street"], category="cafe",
            latitude=wgs84_to_gcj02(*north(700))[0], longitude=wgs84_to_gcj02(*north(700))[1],
            address="北大街700号", amenities=[], coordinate_system=CoordinateSystem.GCJ02,
            opening_hours=ALL_WEEK)
    shown = w["merchants"].merchant(merchant)
    assert (shown.latitude, shown.longitude) == pytest.approx(north(700), abs=1e-7)
    assert shown.opening_hours == ALL_WEEK
    with as_actor(OFFICE):
        w["merchants"].approve_merchant(merchant_id=merchant)
    assert [round(n.distance_metres) for n in nearby(w)[0]] == [100, 300, 700, 1500]
