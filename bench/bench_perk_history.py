"""ClaimPerk and RedeemCode on a perk with a long history: does a command cost more the more
often the perk was claimed before?

A perk's quota may be as large as a million (MAX_QUOTA), and a popular one is claimed for weeks.
Every claim and every redemption reads the perk's quota ledger and changes it, so whatever a
command does with the whole ledger (copy it, count a rider's claims in it) grows with every
claim ever made. The other merchants benches use fresh perks each round and cannot see it.

One perk, claimed again and again in one process (the guarded handlers called directly,
tests/inprocess.py, on PostgreSQL; no gRPC, so the figure is the command's own cost): at each
history size (BENCH_PERK_HISTORY, claims already made, half of them redeemed), the CPU per
ClaimPerk and per RedeemCode over BENCH_OPS calls, beside the same on a perk with no history
measured at the same moment (the same process, caches and tables): the baseline. Goal: a ratio
near 1. The codes are redeemed oldest first: once more claims than the aggregate cache holds
(QIJI_AGGREGATE_CACHE_SIZE, 20,000) came after a code, its claim is read back from the store,
which the ratio shows too (RedeemCode 1.44x at 36,000 claims, 0.99x with the cache at 200,000).

Then the perk's first read after a restart (its cache emptied): a GetPerkOffer alone, beside
the raw fetch of the same rows (psycopg, binary, no checks or decoding) — a first read must
read every event, so this one grows with the history; its ratio says what reading each costs —
and 8 GetPerkOffers at once, beside one alone (goal ≤ 1.5: the callers share one read; each
read all of the events before).

    .venv/bin/python -m bench.bench_perk_history"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

from qiji.merchants.v1 import merchants_service_pb2 as mpb

from bench.common import Figure, record
from bench.inprocess import first_reads, qiji_on_postgres
from tests.inprocess import InProcessQiji
from tests.tenancy_world import Tenant, build, rid, ts

CALLS = int(os.environ.get("BENCH_OPS", "200"))
HISTORY = [int(h) for h in os.environ.get("BENCH_PERK_HISTORY", "1000,5000").split(",")]
RIDERS = 100  # each may claim the perk many times a day (per_rider_limit), as a canteen's
READERS = 8  # callers asking for the perk at once after a restart


def main() -> list[Figure]:
    with qiji_on_postgres() as q:
        return run(q)


class Perk:
    """One perk, claimed in turn by the riders (each may claim it many times a day, as a
    canteen's), with the codes it handed out waiting to be redeemed."""

    def __init__(self, q: InProcessQiji, t: Tenant, riders: list[str], quota: int):
        self.q, self.t, self.riders = q, t, riders
        now = datetime.now(UTC)
        self.id = q.ok("merchants", "CreatePerkOffer", mpb.CreatePerkOfferRequest(
            request_id=rid(), merchant_id=t.merchant, title="骑手食堂",
            kind=mpb.PERK_KIND_FREE_ITEM, free_item="一份午餐",
            eligibility=mpb.ELIGIBILITY_ANY_VERIFIED_RIDER, total_quota=quota,
            per_rider_limit=quota, limit_period=mpb.LIMIT_PERIOD_DAY,
            valid_from_time=ts(now - timedelta(hours=1)),
            valid_until_time=ts(now + timedelta(days=30)), code_ttl_minutes=240),
            t.tokens["merchant"]).perk_offer.perk_id
        q.ok("merchants", "PublishPerkOffer", mpb.PublishPerkOfferRequest(
            request_id=rid(), perk_id=self.id), t.tokens["merchant"])
        self.claims = 0
        self.codes: list[str] = []

    def claim(self) -> None:
        self.codes.append(self.q.ok("merchants", "ClaimPerk", mpb.ClaimPerkRequest(
            request_id=rid(), perk_id=self.id,
            rider_id=self.riders[self.claims % len(self.riders)]),
            self.t.tokens["platform"]).claim.code)
        self.claims += 1

    def redeem(self) -> None:
        self.q.ok("merchants", "RedeemCode", mpb.RedeemCodeRequest(
            request_id=rid(), merchant_id=self.t.merchant, code=self.codes.pop(0)),
            self.t.tokens["merchant"])


def timed(command: Callable[[], None]) -> float:
    """CPU per call, µs."""
    started = time.process_time()
    for _ in range(CALLS):
        command()
    return (time.process_time() - started) / CALLS * 1e6


def run(q: InProcessQiji) -> list[Figure]:
    t = build(q).tenants["a"]
    riders = t.verified_riders(q, RIDERS, "H", 137_0000_0000)
    quota = max(HISTORY) + 4 * CALLS * (len(HISTORY) + 2)
    old = Perk(q, t, riders, quota)
    # Warm (caches, prepared statements) on a perk of its own.
    warm = Perk(q, t, riders, quota)
    warm.claim()
    warm.redeem()
    print(f"(aggregate cache: {q.apps['merchants'].settings.aggregate_cache_size:,} per service)")
    print(f"{'claims before':>14}{'ClaimPerk CPU':>16}{'new perk':>11}{'ratio':>7}"
          f"{'RedeemCode CPU':>17}{'new perk':>11}{'ratio':>7}", flush=True)
    figures = []
    for history in HISTORY:
        started = time.perf_counter()
        while old.claims < history:  # half the history redeemed: both sides of the ledger
            old.claim()
            if old.claims % 2 == 0:
                old.redeem()
        seconds = time.perf_counter() - started
        at = old.claims
        # The baseline: a perk with no history, measured at the same moment (the same
        # process, caches and tables), so that only the perk's own history differs.
        new = Perk(q, t, riders, quota)
        claim, new_claim = timed(old.claim), timed(new.claim)
        redeem, new_redeem = timed(old.redeem), timed(new.redeem)
        print(f"  (the history to {at:,} claims took {seconds:.1f} s)", flush=True)
        print(f"{at:>14,}{claim:>13,.0f} µs{new_claim:>8,.0f} µs{claim / new_claim:>7.2f}"
              f"{redeem:>14,.0f} µs{new_redeem:>8,.0f} µs{redeem / new_redeem:>7.2f}",
              flush=True)
        first = first_reads(q, "merchants", old.id, partial(
            q.ok, "merchants", "GetPerkOffer", mpb.GetPerkOfferRequest(perk_id=old.id),
            t.tokens["merchant"]), READERS)
        print(f"  first read after a restart: {first.alone:,.1f} ms alone (raw fetch of its "
              f"{first.rows:,} events {first.raw:,.1f} ms: {first.alone / first.raw:.1f}×); "
              f"{READERS} at once {first.at_once:,.1f} ms ({first.at_once / first.alone:.2f}× "
              "one alone)", flush=True)
        figures += [
            Figure(f"GetPerkOffer, first read after a restart, perk claimed {at:,} times",
                   first.alone, first.raw, "ms", baseline_name="raw fetch of its rows"),
            Figure(f"{READERS} GetPerkOffers at once, first read, perk claimed {at:,} times",
                   first.at_once, first.alone, "ms", concurrency=READERS,
                   baseline_name="one alone", goal=1.5),
            Figure(f"ClaimPerk CPU on a perk claimed {at:,} times", claim, new_claim, "µs",
                   baseline_name="on a new perk", goal=1.5),
            Figure(f"RedeemCode CPU on a perk claimed {at:,} times", redeem, new_redeem,
                   "µs", baseline_name="on a new perk", goal=1.5)]
    record(figures)
    return figures


if __name__ == "__main__":
    main()
