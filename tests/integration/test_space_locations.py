"""Service spaces on the map (identity): a location given in either datum is stored in WGS-84,
moved by an update, and a space stored before locations existed still reads, without one."""

from __future__ import annotations

import uuid

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from services.identity.application import IdentityApplication
from services.identity.domain.model import ServiceSpace
from shared.errors import InvalidArgument
from shared.gcj02 import wgs84_to_gcj02
from shared.geo import distance_metres
from shared.values import CoordinateSystem, GeoPoint
from tests.conftest import MASTER_KEY, actor, as_actor, city_tree, settings_for, stored_state

ADMIN = actor("city", "city_admin")
HEYUE = (31.7791, 119.9461)  # WGS-84


@pytest.fixture
def app(store_env):
    application = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    yield application
    application.close()


def open_space(app, street, location=None, **more):
    with as_actor(ADMIN):
        made = app.create_service_space(street_id=street, name="荷睦驿站", address="北大街18号",
                                        amenities=[], opening_hours=[], location=location,
                                        **more)
    return app.service_space(made["service_space_id"])


def test_a_gcj02_location_from_a_map_app_is_stored_as_wgs84(app):
    street = city_tree(app)["street"]
    gcj = wgs84_to_gcj02(*HEYUE)
    space = open_space(app, street, GeoPoint(*gcj, CoordinateSystem.GCJ02))
    assert distance_metres(space.location["latitude"], space.location["longitude"],
                           *HEYUE) < 0.01
    assert open_space(app, street, GeoPoint(*HEYUE)).location == {
        "latitude": HEYUE[0], "longitude": HEYUE[1]}


def test_an_update_moves_a_space_and_one_without_a_location_leaves_it(app):
    street = city_tree(app)["street"]
    space = open_space(app, street)
    assert space.location is None
    with as_actor(ADMIN):
        app.update_service_space(service_space_id=space.service_space_id, amenities=[],
                                 opening_hours=[], location=GeoPoint(*HEYUE))
        app.update_service_space(service_space_id=space.service_space_id, amenities=[],
                                 opening_hours=[{"weekday": 1, "opens": "08:00",
                                                 "closes": "20:00"}])
    moved = app.service_space(space.service_space_id)
    assert moved.location == {"latitude": HEYUE[0], "longitude": HEYUE[1]}
    assert moved.opening_hours == [{"weekday": 1, "opens": "08:00", "closes": "20:00"}]


def test_every_fault_of_a_location_in_one_answer_and_nothing_stored(app):
    street = city_tree(app)["street"]
    before = app.last_position()
    with pytest.raises(InvalidArgument) as refused, as_actor(ADMIN):
        app.create_service_space(street_id=street, name="x", address="y", amenities=[],
                                 opening_hours=[{"weekday": 9, "opens": "08:00",
                                                 "closes": "07:00"}],
                                 location=GeoPoint(float("nan"), 181.0))
    assert {(v.field, v.reason) for v in refused.value.violations} == {
        ("location.latitude", "LOCATION_INVALID"), ("location.longitude", "LOCATION_INVALID"),
        ("opening_hours[0].weekday", "VALUE_OUT_OF_RANGE"),
        ("opening_hours[0].closes", "CLOSES_NOT_AFTER_OPENS")}
    assert app.last_position() == before


def test_a_space_opened_before_locations_existed_reads_without_one(app):
    # Stored as version 1 of the event wrote it: no location, no class_version.
    space_id = uuid.uuid4()
    topic = get_topic(ServiceSpace.Opened)
    state = {"street_id": str(uuid.uuid4()), "name": "老驿站", "address": "北大街",
             "amenities": ["REST"], "opening_hours": [],
             "originator_topic": get_topic(ServiceSpace),
             "timestamp": "2026-01-01T00:00:00+00:00"}
    event = app.mapper.to_domain_event(StoredEvent(
        originator_id=space_id, originator_version=1, topic=topic,
        state=stored_state(space_id, 1, topic, state)))
    space = event.mutate(None)
    assert space.location is None and space.name == "老驿站"
