"""What checking every upstream event costs the readers that act on or publish events — its
MAC, and its place among its aggregate's versions (shared/continuity.py, checked by the feed
the reader reads) — for a follower (training following identity, its real policy, each
reaction stored with its tracking record) and the relay's read-map-publish path (identity's
public feed through the relay's loop, the publish a no-op so that the relay's own work is all
that is timed: over a real broker each message waits for a confirm, and the check's share is
smaller still).

Each figure is beside the same reader with the checks turned off (the MAC check replaced by
`True` and the place check by "in place", in this process only: a switch that exists nowhere
in Qiji), measured in the same run, alternating, median of BENCH_ROUNDS rounds; PostgreSQL,
identity's log of riders registered and verified (BENCH_INTEGRITY_RIDERS riders, two events
each, plus request records)."""

from __future__ import annotations

import base64
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from unittest.mock import patch

import psycopg
from eventsourcing.application import LRUCache

from bench.common import PG, Figure, print_figures, scratch_database
from tests.city import build_city, in_application

if TYPE_CHECKING:  # imported where used at run time, as the functions below do
    from services.identity.application import IdentityApplication

RIDERS = int(os.environ.get("BENCH_INTEGRITY_RIDERS", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MASTER_KEY = bytes(range(32))


def env_for(db: str, schema: str) -> dict[str, str]:
    return {"QIJI_PERSISTENCE": "postgres", "QIJI_POSTGRES_DBNAME": db,
            "QIJI_POSTGRES_HOST": PG["host"], "QIJI_POSTGRES_SCHEMA": schema,
            "QIJI_DATA_DIR": "/tmp/qiji-bench-integrity",
            "QIJI_AUDIT_SIGNING_KEY": base64.b64encode(bytes(32)).decode()}


def load(identity: IdentityApplication) -> None:
    from shared.context import Actor, RequestContext, acting_as

    admin = Actor("bench-city", frozenset({"city_admin"}))
    platform = Actor("bench-platform", frozenset({"platform"}))
    city = build_city(in_application(identity))
    street, company, station = city.street, city.platform, city.station
    for n in range(RIDERS):
        with acting_as(RequestContext(actor=platform, request_id=f"r-{n}")):
            rider = identity.register_rider(
                platform_id=company, platform_rider_id=f"R{n}", name=f"骑手{n}",
                phone=f"138{n:08d}", national_id="", home_street_id=street,
                station_id=station)["rider_id"]
        with acting_as(RequestContext(actor=admin, request_id=f"v-{n}")):
            identity.verify_rider(rider_id=rider)


@contextmanager
def checks(identity: IdentityApplication, on: bool) -> Iterator[None]:
    """Every integrity check as Qiji makes it, or (off) none: the MAC taken as good and every
    event as in its place."""
    from shared import continuity
    from shared.grpc import public_feed
    if on:
        yield
        return
    # Each put back on leaving: the MAC's class method, the modules' own out_of_place.
    with (patch.object(identity.event_mac, "check", lambda *_: True),
          patch.object(continuity, "out_of_place", lambda *_: None),
          patch.object(public_feed, "out_of_place", lambda *_: None)):
        yield


def follow(identity: IdentityApplication, db: str, checked: bool) -> float:
    """Upstream events per second through training's follower of identity (a new training
    store each time)."""
    from services.training.application import TrainingApplication
    from shared.config import load_settings
    from shared.followers import Follower, LocalFeed

    training = TrainingApplication(load_settings("training", env_for(
        db, f"training_{uuid.uuid4().hex[:8]}")), MASTER_KEY)
    try:
        follower = Follower(training, LocalFeed(identity), training.follow_identity,
                            topics=TrainingApplication.IDENTITY_TOPICS)
        if not checked:
            follower._check = lambda *_: True
        with checks(identity, checked):
            started = time.perf_counter()
            done = follower.run_once()
            return done / (time.perf_counter() - started)
    finally:
        training.close()


def relay(identity: IdentityApplication, checked: bool) -> tuple[float, int]:
    """Log positions per second through the relay's loop (identity's public feed read, mapped
    and handed to a publish that does nothing); and how many events it published."""
    from services.identity.public_events import CATALOGUE
    from services.relay.relay import Relay
    from shared.grpc.upstream import LocalUpstream

    class Positions:
        def load(self) -> dict[str, int]:
            return {}

        def save(self, service: str, next_position: int) -> None:
            pass

        def close(self) -> None:
            pass

    published = []
    with checks(identity, checked):  # the mapper's MAC check too: nothing checked at all
        loop = Relay({"identity": LocalUpstream(identity, CATALOGUE)}, Positions(),
                     lambda type_name, event: published.append(type_name), batch=200)
        state = loop.services["identity"]
        # Every round from a cold cache (the store's AggregateCache reads it each time).
        identity.repository.cache = LRUCache(maxsize=20000)
        started = time.perf_counter()
        while state.next_position <= identity.last_position():
            loop.run_once(state)
        seconds = time.perf_counter() - started
    return identity.last_position() / seconds, len(published)


def main() -> list[Figure]:
    import structlog

    from services.identity.application import IdentityApplication
    from shared.config import load_settings
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with scratch_database() as db:
        # Loaded without waiting for each commit's fsync (identity's connections only: it
        # only reads afterwards); training, which writes its reactions while timed, connects
        # later with the server's default.
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
            conn.execute(f'ALTER DATABASE "{db}" SET synchronous_commit = off')
        identity = IdentityApplication(load_settings("identity", env_for(db, "identity")),
                                       MASTER_KEY)
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
            conn.execute(f'ALTER DATABASE "{db}" RESET synchronous_commit')
        print(f"loading {RIDERS:,} riders (registered and verified) into identity ...",
              flush=True)
        started = time.perf_counter()
        load(identity)
        events = identity.last_position()
        print(f"  {events:,} events in {time.perf_counter() - started:.0f} s", flush=True)
        results: dict[str, list[float]] = {k: [] for k in
                                           ("follow", "follow_off", "relay", "relay_off")}
        published = 0
        for _ in range(ROUNDS):
            results["follow"].append(follow(identity, db, True))
            results["follow_off"].append(follow(identity, db, False))
            rate, published = relay(identity, True)
            results["relay"].append(rate)
            results["relay_off"].append(relay(identity, False)[0])
        identity.close()
    median = {k: statistics.median(v) for k, v in results.items()}
    figures = [
        Figure(f"follower (training <- identity), {events:,} events, MAC and place checked",
               median["follow"], median["follow_off"], "events/s",
               baseline_name="same, checks off"),
        Figure(f"relay loop (identity, {published:,} published), MAC and place checked",
               median["relay"], median["relay_off"], "events/s",
               baseline_name="same, checks off"),
    ]
    print_figures(f"the integrity checks' cost to the readers ({events:,} identity events, "
                  f"median of {ROUNDS} alternating rounds)", figures)
    return figures


if __name__ == "__main__":
    main()
