"""Replicas: several processes on one store, each with its own aggregate cache (the same cases
on SQLite and PostgreSQL)."""

from __future__ import annotations

from services.identity.application import IdentityApplication
from services.identity.domain.values import OrganisationKind
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for


def test_a_replica_reads_what_another_replica_stored_a_moment_ago(store_env):
    """Two processes (replicas) on one store, each with its own aggregate cache: a rider read
    (and so cached) on one replica and then verified on the other is read as verified on the
    first at once — the cache is checked against the store on every get."""
    one = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    two = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        with as_actor(actor("city", "city_admin")):
            def org(app, kind, name, parent=""):
                return app.create_organisation(kind=kind, name=name, parent_id=parent,
                                               department_function=None)["organisation_id"]
            city = org(one, OrganisationKind.CITY, "常州市")
            street = org(one, OrganisationKind.STREET, "荷花池街道",
                         org(one, OrganisationKind.DISTRICT, "钟楼区", city))
            platform = org(one, OrganisationKind.PLATFORM, "Platform Co")
            station = org(one, OrganisationKind.STATION, "Hehuachi station", platform)
        with as_actor(actor("platform-co", "platform")):
            rider_id = one.register_rider(
                platform_id=platform, platform_rider_id="R-1", name="骑手",
                phone="13812345678", national_id="", home_street_id=street,
                station_id=station)["rider_id"]
            assert one.rider(rider_id).status.name != "ACTIVE"  # cached on replica one
            two.verify_rider(rider_id=rider_id)
            assert one.rider(rider_id).status.name == "ACTIVE"
    finally:
        one.close()
        two.close()
