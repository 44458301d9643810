"""The kernel's rules of places: coordinates and their datum, opening hours, distance and order."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest

from shared.errors import Violations
from shared.gcj02 import gcj02_to_wgs84, outside_china, wgs84_to_gcj02
from shared.geo import PointIndex, PointSet, distance_metres
from shared.values import (
    CoordinateSystem,
    check_coordinates,
    check_opening_hours,
    is_open_at,
    to_wgs84,
)

# The point pairs eviltransform publishes with its tests (WGS-84, then GCJ-02).
PUBLISHED = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # Shanghai
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # Shenzhen
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # Beijing
]


@pytest.mark.parametrize(("wlat", "wlon", "glat", "glon"), PUBLISHED)
def test_wgs84_to_gcj02_matches_the_published_pairs(wlat, wlon, glat, glon):
    lat, lon = wgs84_to_gcj02(wlat, wlon)
    assert lat == pytest.approx(glat, abs=1e-9) and lon == pytest.approx(glon, abs=1e-9)


@pytest.mark.parametrize(("wlat", "wlon", "glat", "glon"), PUBLISHED)
def test_a_gcj02_point_from_a_chinese_map_app_comes_back_within_a_centimetre(wlat, wlon, glat,
                                                                              glon):
    lat, lon = to_wgs84(CoordinateSystem.GCJ02, glat, glon)
    assert distance_metres(lat, lon, wlat, wlon) < 0.01


def test_the_gcj02_offset_in_changzhou_is_hundreds_of_metres_and_undone():
    heyue = (31.7791, 119.9461)  # near Heyue Sports Park, WGS-84
    gcj = wgs84_to_gcj02(*heyue)
    assert 200 < distance_metres(*gcj, *heyue) < 1000
    back = gcj02_to_wgs84(*gcj)
    assert distance_metres(*back, *heyue) < 0.01


def test_outside_china_gcj02_is_wgs84():
    assert outside_china(51.5, -0.12)
    assert to_wgs84(CoordinateSystem.GCJ02, 51.5, -0.12) == (51.5, -0.12)
    assert to_wgs84(CoordinateSystem.WGS84, 31.0, 120.0) == (31.0, 120.0)


@pytest.mark.parametrize(("lat", "lon", "fields"), [
    (90.0001, 0.0, ["p.latitude"]),
    (-91.0, 181.0, ["p.latitude", "p.longitude"]),
    (math.nan, 0.0, ["p.latitude"]),
    (0.0, math.inf, ["p.longitude"]),
    (-math.inf, -math.nan, ["p.latitude", "p.longitude"]),
    (90.0, -180.0, []),
])
def test_coordinates_out_of_range_nan_or_infinite_are_refused(lat, lon, fields):
    v = Violations()
    check_coordinates(v, "p", lat, lon)
    assert [x.field for x in v.items] == fields
    assert all(x.reason == "LOCATION_INVALID" for x in v.items)


def test_opening_hours_one_rule_for_every_place():
    v = Violations()
    check_opening_hours(v, [{"weekday": 8, "opens": "8:00", "closes": "18:00"},
                            {"weekday": 1, "opens": "18:00", "closes": "08:00"},
                            {"weekday": 1, "opens": "08:00", "closes": "24:00"}], "place.hours")
    assert [(x.field, x.reason) for x in v.items] == [
        ("place.hours[0].weekday", "VALUE_OUT_OF_RANGE"),
        ("place.hours[0].opens", "TIME_INVALID"),
        ("place.hours[1].closes", "CLOSES_NOT_AFTER_OPENS"),
        ("place.hours[2].closes", "TIME_INVALID"),
        ("place.hours[2].weekday", "DUPLICATE_VALUE")]


def test_open_now_is_judged_in_the_citys_time():
    hours = [{"weekday": 1, "opens": "08:00", "closes": "18:00"}]
    # Monday 2026-06-01 08:00 in Changzhou is Monday 00:00 UTC.
    assert is_open_at(hours, datetime(2026, 6, 1, 0, 0, tzinfo=UTC))
    assert not is_open_at(hours, datetime(2026, 5, 31, 23, 59, tzinfo=UTC))  # 07:59 there
    assert not is_open_at(hours, datetime(2026, 6, 1, 10, 0, tzinfo=UTC))  # 18:00: closed
    assert not is_open_at(hours, datetime(2026, 6, 2, 2, 0, tzinfo=UTC))  # Tuesday
    assert not is_open_at([], datetime(2026, 6, 1, 2, 0, tzinfo=UTC))  # hours unknown


def test_the_index_finds_exactly_the_points_within_the_radius_nearest_first():
    rng = random.Random(7)
    centre = (31.78, 119.95)
    points = [(f"p{i}", centre[0] + rng.uniform(-0.2, 0.2), centre[1] + rng.uniform(-0.2, 0.2))
              for i in range(2000)]
    index = PointIndex(points)
    for radius in (50.0, 800.0, 5000.0, 20000.0):
        found = index.within(*centre, radius)
        brute = sorted((distance_metres(*centre, lat, lon), k) for k, lat, lon in points
                       if distance_metres(*centre, lat, lon) <= radius)
        assert [k for _, k in found] == [k for _, k in brute]
        assert [d for d, _ in found] == pytest.approx([d for d, _ in brute], abs=1e-6)


def test_the_index_works_across_the_antimeridian_and_at_a_pole():
    index = PointIndex([("east", 0.0, 179.999), ("west", 0.0, -179.999), ("pole", 89.9999, 0.0),
                        ("far", 0.0, 0.0)])
    assert sorted(k for _, k in index.within(0.0, 180.0, 200.0)) == ["east", "west"]
    assert [k for _, k in index.within(90.0, 123.0, 50.0)] == ["pole"]


def test_a_point_set_rebuilds_its_index_when_a_place_moves():
    places = PointSet()
    places.put("a", 31.78, 119.95)
    before = places.index()
    assert [k for _, k in before.within(31.78, 119.95, 10)] == ["a"]
    places.put("a", 31.80, 119.95)  # about 2.2 km north
    assert places.index().within(31.78, 119.95, 10) == []
    assert [k for _, k in before.within(31.78, 119.95, 10)] == ["a"]  # the old one is intact
    (d, _), = places.index().within(31.78, 119.95, 3000)
    assert d == pytest.approx(2224, abs=5)


@pytest.mark.parametrize("service", ["identity", "merchants"])
def test_the_coordinate_system_is_named_and_valued_on_the_wire_as_in_the_kernel(service):
    # CoordinateSystem lives in shared/values.py, out of reach of test_wire_names' scan.
    from qiji.identity.v1 import identity_service_pb2
    from qiji.merchants.v1 import merchants_service_pb2

    from shared.wire import unspecified, wire_name
    proto = {"identity": identity_service_pb2,
             "merchants": merchants_service_pb2}[service].DESCRIPTOR.enum_types_by_name[
        "CoordinateSystem"]
    assert [v.name for v in proto.values] == [unspecified(CoordinateSystem)] + [
        wire_name(c) for c in CoordinateSystem]
