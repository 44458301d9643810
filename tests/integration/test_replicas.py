"""Replicas: several processes on one store, each with its own aggregate cache (the same cases
on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from services.identity.application import IdentityApplication
from services.identity.domain.model import Rider
from services.identity.domain.values import RiderStatus
from shared.context import RequestContext, acting_as
from tests.conftest import MASTER_KEY, actor, as_actor, city_tree, settings_for


@contextmanager
def replicas(env: dict[str, str]) -> Iterator[tuple[IdentityApplication, IdentityApplication]]:
    """Two replicas of identity on one store, closed at the end."""
    one = IdentityApplication(settings_for("identity", env), MASTER_KEY)
    two = IdentityApplication(settings_for("identity", env), MASTER_KEY)
    try:
        yield one, two
    finally:
        one.close()
        two.close()


def test_a_replica_reads_what_another_replica_stored_a_moment_ago(store_env):
    """Two processes (replicas) on one store, each with its own aggregate cache: a rider read
    (and so cached) on one replica and then verified on the other is read as verified on the
    first at once — the cache is checked against the store on every get."""
    with replicas(store_env) as (one, two):
        rider_id = registered_rider(one)
        with as_actor(actor("platform-co", "platform")):
            assert one.rider(rider_id).status.name != "ACTIVE"  # cached on replica one
            two.verify_rider(rider_id=rider_id)
            assert one.rider(rider_id).status.name == "ACTIVE"


def test_a_cached_aggregate_being_read_is_never_changed_under_the_reader(store_env):
    """A query renders the cached aggregate itself (no copy); when another replica's events
    arrive, they are applied to a copy that replaces it, so a reader holding the old one keeps
    a whole, consistent state instead of one changing under it."""
    with replicas(store_env) as (one, two):
        rider_id = registered_rider(one)
        reading = one.view(rider_id, Rider, "rider")
        before = (reading.version, reading.status)
        with as_actor(actor("platform-co", "platform")):
            two.verify_rider(rider_id=rider_id)
        now = one.view(rider_id, Rider, "rider")
        assert now.version > before[0] and now.status == RiderStatus.ACTIVE
        assert (reading.version, reading.status) == before  # the reader's object is untouched


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
    with replicas(postgres_env) as (one, two):
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

    with replicas(postgres_env) as (one, two):
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
    assert fresh is not None and fresh.closed


def test_an_aggregate_found_absent_is_not_asked_for_again_until_the_log_says_it_exists(
        postgres_env):
    """A singleton never made (the city's calendar) is read on every command: once the store
    said it is absent, a later request that has looked at the log does not ask again — yet
    it is found as soon as another replica makes it (its event is in the next look)."""
    with replicas(postgres_env) as (one, two):
        tree = city_tree(one)
        rider_id = registered_rider(one, tree)
        later_id = Rider.create_id(platform_id=tree["platform"], platform_rider_id="R-later")
        asked: list[str] = []
        cache, recorder = one.aggregates, one.recorder
        per_aggregate, events = cache._newer_than, recorder.select_events
        # What is asked of the store about `later_id` alone (the rider read to look at the
        # log may be asked about too, its mark predating the watermark's first look).
        cache._newer_than = lambda i, v: (i == later_id and asked.append("exists")) or \
            per_aggregate(i, v)
        def select_events(*a: Any, **k: Any) -> Any:
            if (a[0] if a else k.get("originator_id")) == later_id:
                asked.append("events")
            return events(*a, **k)
        recorder.select_events = select_events
        platform = actor("platform-co", "platform")

        def request() -> bool:
            with acting_as(RequestContext(actor=platform, caught_up=set())):
                one.view(rider_id, Rider, "rider")  # a cached read: the request's look
                return one.exists(later_id)
        assert request() is False
        assert asked == ["exists"]  # asked once...
        assert request() is False and request() is False
        assert asked == ["exists"]  # ...and known since
        with as_actor(platform):
            registered_rider(two, tree, "R-later")
        assert request() is True  # the look saw its event: asked again, and found
        with acting_as(RequestContext(actor=platform, caught_up=set())):
            one.view(rider_id, Rider, "rider")
            assert one.view(later_id, Rider, "rider").version >= 1


def test_a_request_that_lost_to_a_copy_of_itself_answers_the_copys_answer(postgres_env):
    """A request's reads answer as of its first look at the log; but once its decision fails
    (the rider it registers exists), it asks whether a copy of itself committed meanwhile on
    another replica — as of now. Here the request had even seen the copy's record absent
    before the copy committed: it still answers the copy's answer, not ALREADY_EXISTS."""
    from services.identity.domain.model import Organisation
    from shared.idempotency import RequestRecord

    with replicas(postgres_env) as (one, two):
        tree = city_tree(one)
        platform = actor("platform-co", "platform")

        def in_request() -> RequestContext:
            return RequestContext(actor=platform, rpc="RegisterRider", request_id="r-1",
                                  caught_up=set())
        record_id = RequestRecord.create_id(platform.principal, "RegisterRider", "r-1")

        def register(app: IdentityApplication) -> Any:
            return app.register_rider(
                platform_id=tree["platform"], platform_rider_id="R-copy", name="骑手",
                phone="13812345678", national_id="", home_street_id=tree["street"],
                station_id=tree["station"])
        with acting_as(in_request()):
            one.view(tree["platform"], Organisation, "organisation")  # the request's look
            assert not one.exists(record_id)  # not committed yet by anyone
            with acting_as(in_request()):  # the copy in flight, on the other replica
                first = register(two)
            assert register(one) == first


def test_a_replica_that_opened_a_riders_data_shows_none_once_another_replica_erased_it(
        postgres_env):
    """Crypto-shredding across replicas: a replica that opened a rider's fields holds the
    rider's data key in its key cache; once another replica erases the rider, the first must
    show nothing of them either (the erasure's event says so), not open them with its copy of
    a key the store no longer has."""
    admin = actor("city", "city_admin")
    with replicas(postgres_env) as (one, two):
        rider_id = registered_rider(one)

        def read() -> Any:
            with acting_as(RequestContext(actor=admin, caught_up=set())):
                return one.rider(rider_id)
        assert read().phone == "13812345678"  # opened: its key now in one's cache
        with as_actor(admin):
            two.erase_rider_personal_data(rider_id=rider_id, reason="本人申请删除")
        shown = read()
        assert shown.personal_data_erased
        assert (shown.name, shown.phone) == ("[erased]", "[erased]")
        assert read().phone == "[erased]"
        # And nothing of theirs opens from one's cache any more.
        assert one.vault.open(rider_id, one.view(rider_id, Rider, "rider").sealed_phone) \
            == "[erased]"


def _slow_full_reads(app: IdentityApplication, ident: Any) -> tuple[list[int], Any, Any]:
    """Counts the reads of all of `ident`'s events (a load, not a catch-up) and holds the
    first such read, once its rows are in, until `go` is set: (reads, loaded, go)."""
    import threading
    reads: list[int] = []
    loaded, go = threading.Event(), threading.Event()
    select = app.recorder.select_events

    def select_events(*a: Any, **k: Any) -> Any:
        rows = select(*a, **k)
        if (a[0] if a else k.get("originator_id")) == ident and k.get("gt") is None:
            reads.append(len(rows))
            if len(reads) == 1:
                loaded.set()
                go.wait(10)
        return rows
    app.recorder.select_events = select_events  # type: ignore[method-assign]
    return reads, loaded, go


def test_readers_of_an_aggregate_not_yet_cached_share_one_read_of_its_events(store_env):
    """After a restart a popular aggregate (a perk claimed for weeks: thousands of events) is
    asked for by many callers at once. One of them reads its events; the others wait for that
    read instead of each reading all of them again (8 at once cost 8 times one's CPU)."""
    import threading
    import time
    with replicas(store_env) as (one, two):
        tree = city_tree(two)
        rider_id = registered_rider(two, tree)  # stored by two: not in one's cache
        reads, loaded, go = _slow_full_reads(one, Rider.create_id(
            platform_id=tree["platform"], platform_rider_id="R-1"))
        platform = actor("platform-co", "platform")
        seen: list[str] = []

        def reader() -> None:
            with acting_as(RequestContext(actor=platform, caught_up=set())):
                seen.append(one.rider(rider_id).status.name)
        readers = [threading.Thread(target=reader) for _ in range(6)]
        for r in readers:
            r.start()
        assert loaded.wait(10)
        time.sleep(0.3)  # the other five come while the first read is held
        go.set()
        for r in readers:
            r.join(10)
        assert seen == ["REGISTERED"] * 6
        assert len(reads) == 1


def test_a_reader_that_waited_for_anothers_read_still_sees_what_was_stored_after_it_began(
        store_env):
    """Sharing a read must not share its age: a request that began after another replica's
    command, and waited for a read of the aggregate that began before that command, answers
    with what the command stored, as it would have alone."""
    import threading
    import time
    with replicas(store_env) as (one, two):
        tree = city_tree(two)
        rider_id = registered_rider(two, tree)
        reads, loaded, go = _slow_full_reads(one, Rider.create_id(
            platform_id=tree["platform"], platform_rider_id="R-1"))
        platform = actor("platform-co", "platform")
        seen: dict[str, str] = {}

        def reader(name: str) -> None:
            with acting_as(RequestContext(actor=platform, caught_up=set())):
                seen[name] = one.rider(rider_id).status.name
        first = threading.Thread(target=reader, args=("first",))
        first.start()
        assert loaded.wait(10)  # the first read has the rider's events, as registered
        with as_actor(platform):
            two.verify_rider(rider_id=rider_id)
        later = threading.Thread(target=reader, args=("later",))
        later.start()  # begins after the verification committed
        time.sleep(0.3)
        assert later.is_alive(), "the later request waits for the read in flight"
        go.set()
        first.join(10)
        later.join(10)
        assert seen == {"first": "REGISTERED", "later": "ACTIVE"}
        assert len(reads) == 1
