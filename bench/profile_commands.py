"""Where a command's CPU goes, in one process, without the network: the five benchmarked
commands (RegisterRider, ClaimPerk, EnrolRider, SubmitReport, RedeemCode) called through their
guarded handlers (tests/inprocess.py) on PostgreSQL, one after another from one thread. Prints
the CPU per command (process time ÷ calls) and, with PROFILE=<command>, the cProfile of that
command's calls sorted by PROFILE_SORT (tottime). For finding the cost of the command itself;
the throughput figures are the benches'.

    .venv/bin/python -m bench.profile_commands            # CPU per command
    PROFILE=ClaimPerk .venv/bin/python -m bench.profile_commands"""

from __future__ import annotations

import cProfile
import os
import pstats
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.training.v1 import training_service_pb2 as tpb

from bench.inprocess import qiji_on_postgres
from tests.inprocess import InProcessQiji
from tests.tenancy_world import build, rid, ts

CALLS = int(os.environ.get("BENCH_OPS", "300"))
PROFILE = os.environ.get("PROFILE", "")
SORT = os.environ.get("PROFILE_SORT", "tottime")


def main() -> None:
    with qiji_on_postgres() as q:
        run(q)


def run(q: InProcessQiji) -> None:
    world = build(q)
    t = world.tenants["a"]
    platform, merchant = t.tokens["platform"], t.tokens["merchant"]
    provider = t.tokens["education_provider"]
    now = datetime.now(UTC)
    riders = t.verified_riders(q, 2 * CALLS + 10, "S", 138_0000_0000)
    perks = []
    for _ in range(50):
        perk = q.ok("merchants", "CreatePerkOffer", mpb.CreatePerkOfferRequest(
            request_id=rid(), merchant_id=t.merchant, title="免费饮水",
            kind=mpb.PERK_KIND_FREE_ITEM, free_item="一瓶水",
            eligibility=mpb.ELIGIBILITY_ANY_VERIFIED_RIDER, total_quota=CALLS,
            per_rider_limit=1, limit_period=mpb.LIMIT_PERIOD_DAY,
            valid_from_time=ts(now - timedelta(hours=1)),
            valid_until_time=ts(now + timedelta(days=30)), code_ttl_minutes=240),
            merchant).perk_offer.perk_id
        q.ok("merchants", "PublishPerkOffer", mpb.PublishPerkOfferRequest(
            request_id=rid(), perk_id=perk), merchant)
        perks.append(perk)
    sessions = []
    for i in range(50):
        starts = now + timedelta(days=1, hours=i)
        sessions.append(q.ok("training", "ScheduleSession", tpb.ScheduleSessionRequest(
            request_id=rid(), course_id=t.course, service_space_id=t.space,
            start_time=ts(starts), end_time=ts(starts + timedelta(minutes=50)),
            capacity=CALLS), provider).session.session_id)
    codes: list[str] = []

    def register(i: int) -> None:
        q.ok("identity", "RegisterRider", ipb.RegisterRiderRequest(
            request_id=rid(), platform_id=t.platform, platform_rider_id=f"P{i}",
            name=f"骑手{i}", phone=f"139{i:08d}", home_street_id=t.street,
            station_id=t.station), platform)

    def claim(i: int) -> None:
        codes.append(q.ok("merchants", "ClaimPerk", mpb.ClaimPerkRequest(
            request_id=rid(), perk_id=perks[i % len(perks)], rider_id=riders[i]),
            platform).claim.code)

    def redeem(i: int) -> None:
        q.ok("merchants", "RedeemCode", mpb.RedeemCodeRequest(
            request_id=rid(), merchant_id=t.merchant, code=codes[i]), merchant)

    def enrol(i: int) -> None:
        q.ok("training", "EnrolRider", tpb.EnrolRiderRequest(
            request_id=rid(), session_id=sessions[i % len(sessions)], rider_id=riders[i]),
            platform)

    def report(i: int) -> None:
        q.ok("governance", "SubmitReport", gpb.SubmitReportRequest(
            request_id=rid(), rider_id=riders[i], kind=gpb.REPORT_KIND_ANOMALY_WARNING,
            category=gpb.CATEGORY_ROAD_HAZARD, text="路口井盖缺失" * 10,
            location=gpb.Location(street_id=t.street, latitude=31.0 + i * 0.003,
                                  longitude=119.95),
            observe_time=ts(now - timedelta(minutes=5))), platform)

    commands: dict[str, Callable[[int], None]] = {
        "RegisterRider": register, "ClaimPerk": claim, "RedeemCode": redeem,
        "EnrolRider": enrol, "SubmitReport": report}
    # Warm each path (caches, prepared statements) on calls past the measured ones.
    for name, command in commands.items():
        if name == "RedeemCode":
            continue
        command(CALLS + 5)
    codes.clear()
    for name, command in commands.items():
        profiler = cProfile.Profile(time.process_time) \
            if name == PROFILE or PROFILE == "all" else None
        started = time.process_time()
        wall = time.perf_counter()
        if profiler:
            profiler.enable()
        for i in range(CALLS):
            command(i)
        if profiler:
            profiler.disable()
        cpu = time.process_time() - started
        print(f"{name:14s} {cpu / CALLS * 1e6:8.0f} µs CPU/call "
              f"({(time.perf_counter() - wall) / CALLS * 1e6:.0f} µs wall)", flush=True)
        if profiler and PROFILE == "all":
            summarise(pstats.Stats(profiler))
        elif profiler:
            stats = pstats.Stats(profiler).sort_stats(SORT)
            stats.print_stats(int(os.environ.get("PROFILE_LINES", "45")))
            callers = os.environ.get("PROFILE_CALLERS")
            if callers:
                stats.print_callers(callers)


# The parts of a command worth watching, by function: (file ending, function name).
PARTS = [("shared/grpc/guard.py", "handle"), ("shared/application.py", "_execute"),
         ("shared/application.py", "decide"), ("store/application.py", "save"),
         ("eventsourcing/application.py", "collect_events"),
         ("eventsourcing/persistence.py", "put"), ("store/recorder.py", "insert_events"),
         ("shared/application.py", "to_stored_event"), ("integrity.py", "seal_state"),
         ("shared/application.py", "of"), ("store/cache.py", "_current"),
         ("store/cache.py", "writable"), ("copy.py", "deepcopy"),
         ("store/cache.py", "look"), ("eventsourcing/persistence.py", "get"),
         ("shared/views.py", "catch_up"), ("personal_data.py", "seal"),
         ("psycopg/cursor.py", "execute"), ("psycopg_pool/pool.py", "connection"),
         ("shared/application.py", "_parts"), ("eventsourcing/persistence.py", "encode"),
         ("store/transcoding.py", "encode"), ("audit.py", ""),
         ("eventsourcing/domain.py", "_create"), ("eventsourcing/domain.py", "trigger_event")]


def summarise(stats: pstats.Stats) -> None:
    """Cumulative CPU per call of the PARTS, and how many times each ran per call."""
    raw = stats.stats  # type: ignore[attr-defined]
    for ending, function in PARTS:
        found = [(k, v) for k, v in raw.items()
                 if k[0].endswith(ending) and (not function or k[2] == function)]
        if not found:
            continue
        calls = sum(v[1] for _, v in found)
        cum = sum(v[3] for _, v in found) if function else sum(v[2] for _, v in found)
        print(f"    {ending}:{function or '*'} {cum / CALLS * 1e6:7.0f} µs "
              f"×{calls / CALLS:.1f}")


if __name__ == "__main__":
    main()
