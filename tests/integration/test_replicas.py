"""Replicas: several processes on one store, each with its own aggregate cache (the same cases
on SQLite and PostgreSQL)."""

from __future__ import annotations

from services.identity.application import IdentityApplication
from services.identity.domain.model import Rider
from services.identity.domain.values import RiderStatus
from tests.conftest import MASTER_KEY, actor, as_actor, city_tree, settings_for


def test_a_replica_reads_what_another_replica_stored_a_moment_ago(store_env):
    """Two processes (replicas) on one store, each with its own aggregate cache: a rider read
    (and so cached) on one replica and then verified on the other is read as verified on the
    first at once — the cache is checked against the store on every get."""
    one = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    two = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        rider_id = registered_rider(one)
        with as_actor(actor("platform-co", "platform")):
            assert one.rider(rider_id).status.name != "ACTIVE"  # cached on replica one
            two.verify_rider(rider_id=rider_id)
            assert one.rider(rider_id).status.name == "ACTIVE"
    finally:
        one.close()
        two.close()


def test_a_cached_aggregate_being_read_is_never_changed_under_the_reader(store_env):
    """A query renders the cached aggregate itself (no copy); when another replica's events
    arrive, they are applied to a copy that replaces it, so a reader holding the old one keeps
    a whole, consistent state instead of one changing under it."""
    one = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    two = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        rider_id = registered_rider(one)
        reading = one.view(rider_id, Rider, "rider")
        before = (reading.version, reading.status)
        with as_actor(actor("platform-co", "platform")):
            two.verify_rider(rider_id=rider_id)
        now = one.view(rider_id, Rider, "rider")
        assert now.version > before[0] and now.status == RiderStatus.ACTIVE
        assert (reading.version, reading.status) == before  # the reader's object is untouched
    finally:
        one.close()
        two.close()


def registered_rider(app: IdentityApplication) -> str:
    tree = city_tree(app)
    with as_actor(actor("platform-co", "platform")):
        return app.register_rider(
            platform_id=tree["platform"], platform_rider_id="R-1", name="骑手",
            phone="13812345678", national_id="", home_street_id=tree["street"],
            station_id=tree["station"])["rider_id"]
