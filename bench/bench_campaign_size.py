"""AllocateCarePackage and GetCareCampaign on a campaign that has given out many packages: does
a call cost more, and answer with more, the more packages went out before it?

A care campaign's stock may be 100,000 (MAX_CARE_STOCK), and its street office allocates one
package per call, at a till. Whatever each answer does with every package allocated so far
(render it, send it back) grows with the campaign: bench_perk_history's question, asked of the
answer rather than of the command.

One campaign, allocated to rider after rider in one process (the guarded handlers called
directly, tests/inprocess.py, on PostgreSQL; no gRPC, so the figure is the service's own
cost): at each size (BENCH_CAMPAIGN_SIZES, packages already allocated), the CPU per
AllocateCarePackage and per GetCareCampaign over BENCH_OPS calls, and the size of each answer,
beside the same on a new campaign measured at the same moment (the same process, caches and
tables): the baseline. Goal: a ratio near 1. A gRPC client takes at most 4 MiB a message by
default (grpc.max_receive_message_length): an answer past it reaches the office's till as
RESOURCE_EXHAUSTED, though its package was allocated.

Then the campaign's first read after a restart (its cache emptied): a GetCareCampaign alone,
beside the raw fetch of the same rows, READERS at once beside one alone (they share one read),
and one alone with the campaign's snapshots deleted (every event read, as before campaigns
took snapshots).

    .venv/bin/python -m bench.bench_campaign_size"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Any

from qiji.merchants.v1 import merchants_service_pb2 as mpb

from bench.common import Figure, record
from bench.inprocess import first_reads, qiji_on_postgres
from tests.inprocess import InProcessQiji
from tests.tenancy_world import Tenant, build, rid

CALLS = int(os.environ.get("BENCH_OPS", "200"))
SIZES = [int(s) for s in os.environ.get("BENCH_CAMPAIGN_SIZES", "1000,10000").split(",")]
GRPC_MESSAGE_LIMIT = 4 * 1024 * 1024
READERS = 8  # the office's tills and the riders' apps asking for it at once after a restart


def main() -> list[Figure]:
    with qiji_on_postgres() as q:
        return run(q)


class Campaign:
    """One campaign of the tenant's street office, allocating to the riders in turn."""

    def __init__(self, q: InProcessQiji, t: Tenant, riders: list[str], stock: int):
        self.q, self.t, self.riders = q, t, riders
        self.office = t.tokens["street_office"]
        self.id = q.ok("merchants", "CreateCareCampaign", mpb.CreateCareCampaignRequest(
            request_id=rid(), street_id=t.street, name="冬日关爱礼包", stock=stock),
            self.office).campaign.campaign_id
        self.allocated = 0
        self.answer_bytes = 0

    def allocate(self) -> None:
        answer = self.q.ok("merchants", "AllocateCarePackage", mpb.AllocateCarePackageRequest(
            request_id=rid(), campaign_id=self.id, rider_id=self.riders[self.allocated]),
            self.office)
        self.allocated += 1
        self.answer_bytes = answer.ByteSize()

    def get(self, token: str = "") -> None:
        answer = self.q.ok("merchants", "GetCareCampaign", mpb.GetCareCampaignRequest(
            campaign_id=self.id), token or self.office)
        self.answer_bytes = answer.ByteSize()


def timed(campaign: Campaign, command: Any) -> tuple[float, int]:
    """CPU per call (µs), and the last answer's size (bytes)."""
    started = time.process_time()
    for _ in range(CALLS):
        command()
    return (time.process_time() - started) / CALLS * 1e6, campaign.answer_bytes


def run(q: InProcessQiji) -> list[Figure]:
    world = build(q)
    t = world.tenants["a"]
    # A platform none of whose riders got a package: its page looks at the most packages
    # (paging's looks_at bound) and finds none of them its own.
    stranger = world.tenants["b"].tokens["platform"]
    needed = max(SIZES) + CALLS * len(SIZES)
    started = time.perf_counter()
    riders = t.verified_riders(q, needed, "C", 139_0000_0000)
    print(f"  ({needed:,} riders registered in {time.perf_counter() - started:.0f} s)",
          flush=True)
    old = Campaign(q, t, riders, needed)
    # Warm (caches, prepared statements) on a campaign of its own.
    warm = Campaign(q, t, riders, CALLS)
    warm.allocate()
    warm.get()
    print(f"{'packages':>10}{'Allocate CPU':>15}{'new':>9}{'ratio':>7}{'answer':>11}"
          f"{'Get CPU':>12}{'new':>9}{'ratio':>7}{'answer':>11}", flush=True)
    figures = []
    for size in SIZES:
        started = time.perf_counter()
        while old.allocated < size:
            old.allocate()
        seconds = time.perf_counter() - started
        at = old.allocated
        # The baseline: a new campaign, measured at the same moment, giving its packages to
        # the first riders (one package per rider and campaign, not per rider).
        new = Campaign(q, t, riders, CALLS)
        allocate, allocate_bytes = timed(old, old.allocate)
        new_allocate, new_allocate_bytes = timed(new, new.allocate)
        get, get_bytes = timed(old, old.get)
        new_get, _ = timed(new, new.get)
        get_stranger, _ = timed(old, partial(old.get, stranger))
        new_get_stranger, _ = timed(new, partial(new.get, stranger))
        print(f"  (allocating up to {at:,} packages took {seconds:.1f} s)", flush=True)
        print(f"{at:>10,}{allocate:>12,.0f} µs{new_allocate:>6,.0f} µs"
              f"{allocate / new_allocate:>7.2f}{allocate_bytes:>11,}{get:>9,.0f} µs"
              f"{new_get:>6,.0f} µs{get / new_get:>7.2f}{get_bytes:>11,}", flush=True)
        print(f"{'':>10}  GetCareCampaign as another platform: {get_stranger:,.0f} µs, on the new "
              f"campaign {new_get_stranger:,.0f} µs ({get_stranger / new_get_stranger:.2f})",
              flush=True)
        first = first_reads(q, "merchants", old.id, old.get, READERS, without_snapshot=True)
        print(f"{'':>10}  first read after a restart: {first.alone:,.1f} ms alone (raw fetch "
              f"of its {first.rows:,} events {first.raw:,.1f} ms), {READERS} at once "
              f"{first.at_once:,.1f} ms; without its snapshot {first.without_snapshot:,.1f} ms",
              flush=True)
        if allocate_bytes > GRPC_MESSAGE_LIMIT:
            print(f"  an answer of {allocate_bytes:,} bytes is past a gRPC client's default "
                  f"limit ({GRPC_MESSAGE_LIMIT:,}): the till sees RESOURCE_EXHAUSTED",
                  flush=True)
        figures += [
            Figure(f"AllocateCarePackage CPU, {at:,} packages out", allocate, new_allocate,
                   "µs", baseline_name="on a new campaign", goal=1.5),
            Figure(f"AllocateCarePackage answer, {at:,} packages out", allocate_bytes,
                   new_allocate_bytes, "bytes", baseline_name="on a new campaign"),
            Figure(f"GetCareCampaign CPU, {at:,} packages out", get, new_get, "µs",
                   baseline_name="on a new campaign", goal=1.5),
            Figure(f"GetCareCampaign CPU as a platform with no package there, {at:,} out",
                   get_stranger, new_get_stranger, "µs", baseline_name="on a new campaign"),
            Figure(f"GetCareCampaign, first read after a restart, {at:,} packages out",
                   first.alone, first.raw, "ms", baseline_name="raw fetch of its rows"),
            Figure(f"{READERS} GetCareCampaigns at once, first read, {at:,} packages out",
                   first.at_once, first.alone, "ms", concurrency=READERS,
                   baseline_name="one alone", goal=1.5),
            Figure(f"GetCareCampaign, first read with no snapshot, {at:,} packages out",
                   first.without_snapshot or 0.0, first.alone, "ms",
                   baseline_name="from its snapshot")]
    record(figures)
    return figures


if __name__ == "__main__":
    main()
