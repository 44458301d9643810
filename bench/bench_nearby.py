"""FindNearby in-process: 10,000 places (service spaces and approved merchants, two perks each
merchant) and 100,000 riders, beside a brute-force numpy haversine over every place, measured
in the same run on the same query points.

How the state is built (to save time; say so when quoting): in one process, with the
application objects on SQLite files in a scratch directory, not over gRPC. Service spaces are
stored on identity as ServiceSpace aggregates and reach merchants through identity's feed
(LocalFeed), as in a deployment; merchants, their perks and riders' standings (what merchants
knows of a rider: verified, and a badge for one in ten) are stored on merchants directly, in
batches, instead of through identity's registration and the follower. Then BENCH_NEARBY_CLAIMS
riders claim a perk through ClaimPerk's own path (claim_perk), so that some riders are at their
limit where they ask. Places are spread over Changzhou's built-up area (about 35 × 33 km).

What is timed: `MerchantsApplication.find_nearby` as a request runs it (a fresh request context
each call, so each catches up with merchants' log and identity's feed), radius 1 km, for a
random rider at a random point — so each answer evaluates claim eligibility, by the rule
ClaimPerk applies, for that rider at every merchant found — and once without a rider. Not
over gRPC: the guard and the wire add what bench_read measures for any get RPC.

Baselines (same run, same points): "brute force" — numpy haversine from the point to all
places, keep those within the radius, sort; "index only" — the cKDTree ball query and the
haversine of the few it returns (shared/geo.PointIndex.within), over both kinds.

Run: `.venv/bin/python -m bench.bench_nearby` (BENCH_NEARBY_PLACES, BENCH_NEARBY_RIDERS,
BENCH_NEARBY_CLAIMS, BENCH_NEARBY_QUERIES to size it)."""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from bench.common import Figure, print_figures
from services.identity.application import IdentityApplication
from services.identity.domain.model import ServiceSpace
from services.merchants.application import MerchantsApplication
from services.merchants.domain.model import Merchant, PerkOffer, RiderStanding
from services.merchants.nearby import ServiceSpaceMap
from shared.config import load_settings
from shared.context import Actor, RequestContext, acting_as
from shared.followers import LocalFeed
from shared.geo import haversine_metres
from shared.values import GeoPoint

PLACES = int(os.environ.get("BENCH_NEARBY_PLACES", "10000"))
RIDERS = int(os.environ.get("BENCH_NEARBY_RIDERS", "100000"))
CLAIMS = int(os.environ.get("BENCH_NEARBY_CLAIMS", "2000"))
QUERIES = int(os.environ.get("BENCH_NEARBY_QUERIES", "2000"))
RADIUS = 1000.0
BATCH = 1000
# Changzhou's built-up area, WGS-84.
SOUTH, NORTH, WEST, EAST = 31.62, 31.92, 119.78, 120.15
ADMIN = Actor(principal="bench", roles=frozenset({"city_admin"}))
AMENITIES = ["DRINKING_WATER", "CHARGING", "REST", "TOILET", "MICROWAVE"]
WEEK = [{"weekday": d, "opens": "07:00", "closes": "22:00"} for d in range(1, 8)]


def request() -> RequestContext:
    return RequestContext(actor=ADMIN, rpc="FindNearby", caught_up=set())


def save_in_batches(app, aggregates) -> None:
    batch = []
    for a in aggregates:
        batch.append(a)
        if len(batch) == BATCH:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    rng = random.Random(16)
    key = os.urandom(32)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="qiji-bench-nearby-") as tmp:
        env = {"QIJI_DATA_DIR": tmp}
        identity = IdentityApplication(load_settings("identity", env), key)
        merchants = MerchantsApplication(load_settings("merchants", env), key, clock=lambda: now)
        merchants.space_map = ServiceSpaceMap(LocalFeed(identity))
        street = str(uuid.uuid4())
        badge = str(uuid.uuid4())
        started = time.perf_counter()
        with acting_as(request()):
            spaces = PLACES // 2
            save_in_batches(identity, (ServiceSpace(
                street_id=street, name=f"驿站{i}", address=f"路{i}号",
                amenities=rng.sample(["REST", "CHARGING", "DRINKING_WATER", "TOILET",
                                      "SHELTER"], 3), opening_hours=WEEK,
                location={"latitude": rng.uniform(SOUTH, NORTH),
                          "longitude": rng.uniform(WEST, EAST)}) for i in range(spaces)))
            shops = []
            for i in range(PLACES - spaces):
                m = Merchant(merchant_id=str(uuid.uuid4()), name=f"店{i}", street_id=street,
                             category="restaurant", latitude=rng.uniform(SOUTH, NORTH),
                             longitude=rng.uniform(WEST, EAST), address=f"街{i}号",
                             amenities=rng.sample(AMENITIES, 2), opening_hours=WEEK,
                             business_area_id="")
                m.approve()
                shops.append(m)
            save_in_batches(merchants, shops)

            def offer(merchant_id: str, badge_only: bool) -> PerkOffer:
                p = PerkOffer(merchant_id=merchant_id, title="骑手免费饮水", kind="FREE_ITEM",
                              percent_off=0, amount_off_fen=0, free_item="一瓶水",
                              eligibility="BADGE_HOLDERS" if badge_only else "ANY_VERIFIED_RIDER",
                              badge_class_id=badge if badge_only else "", total_quota=100_000,
                              per_rider_limit=1, limit_period="DAY",
                              valid_from=now - timedelta(days=1),
                              valid_until=now + timedelta(days=30), code_ttl_minutes=120)
                p.publish()
                return p
            perks = [offer(str(m.id), badge_only) for m in shops for badge_only in (False, True)]
            save_in_batches(merchants, perks)
            riders = [str(uuid.uuid4()) for _ in range(RIDERS)]

            def standing(i: int, rider_id: str) -> RiderStanding:
                s = RiderStanding(rider_id=rider_id)
                s.note_status(verified=True, suspended=False, left=False)
                if i % 10 == 0:
                    s.note_badge(award_id=str(uuid.uuid4()), badge_class_id=badge)
                return s
            save_in_batches(merchants, (standing(i, r) for i, r in enumerate(riders)))
            built = time.perf_counter() - started
            claimers = rng.sample(riders, min(CLAIMS, RIDERS))
            open_perks = [p for p in perks if p.eligibility.value == "ANY_VERIFIED_RIDER"]
            for rider_id in claimers:
                merchants.claim_perk(perk_id=str(rng.choice(open_perks).id), rider_id=rider_id)
        claimed = time.perf_counter() - started - built
        print(f"state: {spaces} spaces, {PLACES - spaces} merchants, {len(perks)} perks, "
              f"{RIDERS} riders stored in {built:.0f} s; {len(claimers)} claims in "
              f"{claimed:.0f} s (SQLite, in-process)")

        points = [(rng.uniform(SOUTH + 0.02, NORTH - 0.02), rng.uniform(WEST + 0.02, EAST - 0.02))
                  for _ in range(QUERIES)]
        askers = [rng.choice(claimers) if i % 2 else rng.choice(riders) for i in range(QUERIES)]
        with acting_as(request()):  # warm: the views' first catch-up builds them
            merchants.find_nearby(location=GeoPoint(*points[0]),
                                             radius_metres=RADIUS, amenities=[],
                                             open_now=False, kinds=[], rider_id=askers[0],
                                             page_size=0, page_token="")

        found_counts: list[int] = []

        def find(i: int, rider: bool = True) -> None:
            with acting_as(request()):
                found, _ = merchants.find_nearby(
                    location=GeoPoint(*points[i]), radius_metres=RADIUS, amenities=[],
                    open_now=False, kinds=[], rider_id=askers[i] if rider else "",
                    page_size=0, page_token="")
            found_counts.append(len(found))

        lats = np.array([p.latitude for p in merchants.views.merchant_places._places.values()]
                        + [p.latitude for p in merchants.space_map.layer._places.values()])
        lons = np.array([p.longitude for p in merchants.views.merchant_places._places.values()]
                        + [p.longitude for p in merchants.space_map.layer._places.values()])

        def brute(i: int) -> None:
            d = haversine_metres(points[i][0], points[i][1], lats, lons)
            within = np.nonzero(d <= RADIUS)[0]
            within[np.argsort(d[within], kind="stable")].tolist()

        layers = (merchants.views.merchant_places, merchants.space_map.layer)

        def index_only(i: int) -> None:
            for layer in layers:
                layer.points.index().within(points[i][0], points[i][1], RADIUS)

        with_rider = timed(find, QUERIES)
        places_seen = statistics.mean(found_counts)
        without_rider = timed(lambda i: find(i, rider=False), QUERIES)
        raw = timed(brute, QUERIES)
        index = timed(index_only, QUERIES)
        (rp50, rp99), (np50, np99) = percentiles(with_rider), percentiles(without_rider)
        (bp50, bp99), (ip50, ip99) = percentiles(raw), percentiles(index)
        print(f"{QUERIES} queries, radius {RADIUS:.0f} m: {places_seen:.1f} places per answer "
              f"(page size 50)")
        print_figures("FindNearby, in-process (ms per query)", [
            Figure("FindNearby with rider p50", rp50, bp50, "ms", 1, "brute-force haversine"),
            Figure("FindNearby with rider p99", rp99, bp99, "ms", 1, "brute-force haversine"),
            Figure("FindNearby without rider p50", np50, bp50, "ms", 1,
                   "brute-force haversine"),
            Figure("FindNearby without rider p99", np99, bp99, "ms", 1,
                   "brute-force haversine"),
            Figure("cKDTree index only p50", ip50, bp50, "ms", 1, "brute-force haversine"),
            Figure("cKDTree index only p99", ip99, bp99, "ms", 1, "brute-force haversine"),
        ])
        merchants.close()
        identity.close()


if __name__ == "__main__":
    main()
