"""Replicas: several processes on one store, each with its own aggregate cache (the same cases
on SQLite and PostgreSQL)."""

from __future__ import annotations

from services.identity.application import IdentityApplication
from services.identity.domain.model import Rider
from services.identity.domain.values import RiderStatus
from shared.context import RequestContext, acting_as
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


def registered_rider(app: IdentityApplication, tree: dict[str, str] | None = None,
                     platform_rider_id: str = "R-1") -> str:
    tree = tree or city_tree(app)
    with as_actor(actor("platform-co", "platform")):
        return app.register_rider(
            platform_id=tree["platform"], platform_rider_id=platform_rider_id, name="骑手",
            phone="13812345678", national_id="", home_street_id=tree["street"],
            station_id=tree["station"])["rider_id"]


def test_a_request_asks_the_store_once_however_many_cached_aggregates_it_reads(postgres_env):
    """On PostgreSQL a cached aggregate is checked against one shared look at the log per
    request (shared/store/cache.py LogWatermark), not a `SELECT 1` per aggregate read; and a
    request that begins after another replica's command still reads what it stored."""
    one = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    two = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    try:
        tree = city_tree(one)
        riders = [registered_rider(one, tree, f"R-{n}") for n in range(3)]
        asked: list[str] = []
        recorder = one.recorder
        per_aggregate, look = recorder.has_events_after, recorder.changes_after
        recorder.has_events_after = lambda *a: asked.append("aggregate") or per_aggregate(*a)
        recorder.changes_after = lambda *a: asked.append("log") or look(*a)
        platform = actor("platform-co", "platform")
        with acting_as(RequestContext(actor=platform, caught_up=set())):
            assert [one.rider(r).status.name for r in riders] == ["REGISTERED"] * 3
        assert asked.count("aggregate") == 0 and asked.count("log") <= 1
        with as_actor(platform):
            two.verify_rider(rider_id=riders[1])
        with acting_as(RequestContext(actor=platform, caught_up=set())):
            assert [one.rider(r).status.name for r in riders] == ["REGISTERED", "ACTIVE",
                                                                  "REGISTERED"]
    finally:
        one.close()
        two.close()


def test_an_older_copy_cached_after_a_newer_one_was_marked_is_checked_again(postgres_env):
    """Marks name the version they vouch for: a slow reader caching an older copy after a
    command cached and marked a newer one is not taken as current."""
    one = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    try:
        rider_id = registered_rider(one)
        old = one.view(rider_id, Rider, "rider")
        with as_actor(actor("platform-co", "platform")):
            one.verify_rider(rider_id=rider_id)  # caches and marks the newer version
        one.repository.cache.put(old.id, old)  # the slow reader's older copy lands last
        assert one.view(rider_id, Rider, "rider").status == RiderStatus.ACTIVE
    finally:
        one.close()


def test_looks_at_the_log_keep_a_connection_of_their_own_and_recover_when_it_breaks(
        postgres_env):
    """The shared looks at the log (shared/store/recorder.py `changes_after`) run on a
    connection of their own, not a pooled one per look; when it breaks (a restart, a dropped
    link) the next look connects again and still sees another replica's write; it closes with
    the application."""
    import psycopg

    from tests.conftest import PG

    one = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    two = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    try:
        rider_id = registered_rider(one)
        platform = actor("platform-co", "platform")

        def read() -> str:
            with acting_as(RequestContext(actor=platform, caught_up=set())):
                return one.rider(rider_id).status.name

        # The first look asks the log's head; the second reads what changed since, on the
        # looks' own connection, made then.
        assert read() == "REGISTERED" and read() == "REGISTERED"
        datastore = one.recorder.datastore
        pooled, taken = datastore.get_connection, []
        datastore.get_connection = lambda: taken.append(1) or pooled()
        for _ in range(5):
            assert read() == "REGISTERED"
        assert taken == [], "a look took a pooled connection"
        own = one.recorder._look_conn
        assert own is not None and not own.closed
        with psycopg.connect(dbname=postgres_env["QIJI_POSTGRES_DBNAME"], autocommit=True,
                             **{k: v for k, v in PG.items() if k != "dbname"}) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (own.info.backend_pid,))
        with as_actor(platform):
            two.verify_rider(rider_id=rider_id)
        assert read() == "ACTIVE"  # the broken look was retried on a fresh connection
        assert one.recorder._look_conn is not own
        fresh = one.recorder._look_conn
    finally:
        one.close()
        two.close()
    assert fresh is not None and fresh.closed
