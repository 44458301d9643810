"""The rider's map over the wire: a real identity and merchants process on PostgreSQL. A space
created on identity with a point from a Chinese map app (GCJ-02) reaches merchants through
identity's feed; a platform's app asks FindNearby for its rider and sees places nearest first,
each with its distance and, at a merchant, the perks that rider may claim; another platform
naming that rider is refused as if the rider did not exist."""

from __future__ import annotations

import uuid

import grpc
import pytest
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as pb

from shared.auth import add_caller
from shared.gcj02 import wgs84_to_gcj02
from tests.e2e.client import DENIED, call_error, create_organisation, new_request_id
from tests.e2e.conftest import ServiceProcess, new_rider
from tests.e2e.test_merchants_grpc import City, claim, join, published_perk, set_up_city

pytestmark = pytest.mark.e2e

CENTRE = (31.78, 119.95)  # where both shops applied (WGS-84)
METRES_PER_DEGREE = 111_195.0


def north(metres: float) -> tuple[float, float]:
    return CENTRE[0] + metres / METRES_PER_DEGREE, CENTRE[1]


@pytest.fixture(scope="module")
def city(identity: ServiceProcess, merchants: ServiceProcess) -> City:
    city = set_up_city(identity)
    join(merchants, city)
    return city


def test_a_riders_app_finds_places_nearest_first_with_their_perks(identity, merchants, city):
    gcj = wgs84_to_gcj02(*north(200))
    space = identity.client("city_admin").CreateServiceSpace(ipb.CreateServiceSpaceRequest(
        request_id=new_request_id(), street_id=city.street, name="荷睦驿站",
        address="北大街200号", amenities=[ipb.AMENITY_REST, ipb.AMENITY_DRINKING_WATER],
        opening_hours=[ipb.OpeningHours(weekday=d, opens="00:00", closes="23:59")
                       for d in range(1, 8)],
        location=ipb.Location(latitude=gcj[0], longitude=gcj[1],
                              coordinate_system=ipb.COORDINATE_SYSTEM_GCJ02))).service_space
    assert space.location.latitude == pytest.approx(north(200)[0], abs=1e-7)
    lat, lon = north(500)
    merchants.client(token=city.shop_token).UpdateMerchantPlace(pb.UpdateMerchantPlaceRequest(
        request_id=new_request_id(), merchant_id=city.shop,
        location=pb.Location(latitude=lat, longitude=lon, address="北大街500号")))
    perk = published_perk(merchants, city.shop_token, city.shop).perk_id
    used_up, fresh = new_rider(identity, city), new_rider(identity, city)
    claim(merchants, perk, used_up)

    def find(rider_id: str) -> list[pb.NearbyPlace]:
        return list(merchants.client("platform").FindNearby(pb.FindNearbyRequest(
            location=pb.Location(latitude=CENTRE[0], longitude=CENTRE[1]),
            radius_metres=1000, rider_id=rider_id)).places)

    places = find(fresh)
    assert [(p.kind, p.merchant_id or p.service_space_id) for p in places] == [
        (pb.PLACE_KIND_MERCHANT, city.other_shop),
        (pb.PLACE_KIND_SERVICE_SPACE, space.service_space_id),
        (pb.PLACE_KIND_MERCHANT, city.shop)]
    assert [p.distance_metres for p in places] == pytest.approx([0, 200, 500], abs=1.0)
    assert places[1].open_now and places[1].location.coordinate_system == \
        pb.COORDINATE_SYSTEM_WGS84
    assert [k.perk_id for k in places[2].claimable_perks] == [perk]
    assert [k.perk_id for k in find(used_up)[2].claimable_perks] == []

    # Another platform naming this rider is refused as for a rider that does not exist.
    other_platform = create_organisation(identity.client("city_admin"),
                                         ipb.ORGANISATION_KIND_PLATFORM, "Other Co").organisation_id
    rival = merchants.client(token=add_caller(
        identity.tokens_file, f"e2e-rival-{uuid.uuid4().hex[:6]}", ["platform"], other_platform))
    for rider_id in (fresh, str(uuid.uuid4())):
        refused = call_error(lambda r=rider_id: rival.FindNearby(pb.FindNearbyRequest(
            location=pb.Location(latitude=CENTRE[0], longitude=CENTRE[1]),
            radius_metres=1000, rider_id=r)))
        assert (refused.code, refused.reason) == (DENIED, "OUT_OF_SCOPE")
    # Without a rider, the map is anyone's.
    assert len(rival.FindNearby(pb.FindNearbyRequest(
        location=pb.Location(latitude=CENTRE[0], longitude=CENTRE[1]),
        radius_metres=1000)).places) == 3


def test_a_bad_request_hears_every_fault_at_once(merchants, city):
    refused = call_error(lambda: merchants.client("platform").FindNearby(pb.FindNearbyRequest(
        location=pb.Location(latitude=float("nan"), longitude=200, coordinate_system=7),
        radius_metres=1_000_000, amenities=[0, 99], kinds=[0])))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {(f, r) for f, r, _ in refused.violations} == {
        ("location.latitude", "LOCATION_INVALID"), ("location.longitude", "LOCATION_INVALID"),
        ("location.coordinate_system", "ENUM_VALUE_UNKNOWN"),
        ("radius_metres", "VALUE_OUT_OF_RANGE"), ("amenities[0]", "ENUM_VALUE_REQUIRED"),
        ("amenities[1]", "ENUM_VALUE_UNKNOWN"), ("kinds[0]", "ENUM_VALUE_REQUIRED")}
