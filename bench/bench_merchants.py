"""ClaimPerk and RedeemCode over gRPC into PostgreSQL, beside raw psycopg single-row transactions.

A claim reads the perk offer (its quota ledger), the merchant and the rider's standing, and
stores four events in one transaction (the offer's CodeIssued, the standing's ClaimOpened, the
claim's Issued, the request record); a redemption stores the claim's Redeemed, the offer's
CodeRedeemed and the standing's ClaimClosed. Both queue per perk inside the process
(`serialise_on`) and settle collisions between replicas on the offer's version, so they are
measured (a) spread over many perks of several merchants, as in a city, and (b) all on one perk
— the hot spot of a perk everyone claims the moment it opens. Each round uses fresh perks, and
no rider claims twice in a round, so that no figure is a per-rider limit or a quota running out.

Each figure is beside the CRUD twin (bench/twin.py: the quota check and the claim in one SQL
statement, the redemption a conditional UPDATE) on perks of the same count and quota, called by
the same clients with the same metadata, and a raw one-row INSERT, all in the same rounds in turn.

Run: `.venv/bin/python -m bench.bench_merchants` (BENCH_ROUNDS, BENCH_OPS, BENCH_CLIENTS,
BENCH_PERKS to size it)."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any

import grpc
import psycopg
from psycopg_pool import ConnectionPool
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as irpc
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.merchants.v1 import merchants_service_pb2_grpc as mrpc

from bench.common import (
    PG,
    dial,
    print_twin_table,
    running_services,
    scratch_database,
    store_size,
    throughput,
)
from bench.twin import alternate, dial_twin, running_twin, seed_perks
from shared.auth import add_caller, hash_token
from tests.city import build_city, over_stub

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PER_ROUND = int(os.environ.get("BENCH_OPS", "200"))
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,8,32").split(",")]
SPREAD_PERKS = int(os.environ.get("BENCH_PERKS", "50"))
MERCHANT_COUNT = 5
ROW_BYTES = 900  # about the size of one of the events a claim stores
SETUP_WORKERS = 16

Metadata = list[tuple[str, str]]


def bearer(token: str) -> Metadata:
    return [("authorization", f"Bearer {token}")]


def main() -> None:
    riders_needed = max(PER_ROUND, max(CONCURRENCY)) + 1
    with scratch_database() as db, running_services(
            ["identity", "merchants"], db,
            {"bench-admin": ["city_admin"], "bench-platform": ["platform"],
             "bench-office": ["street_office"]}
    ) as (addresses, tokens), running_twin(db, tokens.tokens_file) as twin_address:
        ichan = dial(addresses["identity"])
        mchan = dial(addresses["merchants"])
        identity, merchants = irpc.IdentityServiceStub(ichan), mrpc.MerchantsServiceStub(mchan)
        twin_chan = dial_twin(twin_address)
        twin = mrpc.MerchantsServiceStub(twin_chan)
        admin = bearer(tokens["bench-admin"])
        tree = _tree(identity, admin)
        platform = bearer(tokens.act_for("bench-platform", tree["platform"]))
        office = bearer(tokens.act_for("bench-office", tree["street"]))
        # Each merchant acts with a token of its own, scoped to its organisation, in the tokens
        # file both services read (it is re-read when it changes).
        tokens_file = _tokens_file_holding(tokens["bench-admin"])
        tills = [bearer(add_caller(tokens_file, f"bench-merchant-{i}", ["merchant"], m))
                 for i, m in enumerate(tree["merchants"])]
        for merchant_id, till in zip(tree["merchants"], tills, strict=True):
            merchants.ApplyMerchant(mpb.ApplyMerchantRequest(
                request_id=str(uuid.uuid4()), merchant_id=merchant_id, name="友好商户",
                street_id=tree["street"], category="restaurant",
                location=mpb.Location(latitude=31.78, longitude=119.95, address="北大街"),
                amenities=[mpb.MERCHANT_AMENITY_DRINKING_WATER]), metadata=till)
            merchants.ApproveMerchant(mpb.ApproveMerchantRequest(
                request_id=str(uuid.uuid4()), merchant_id=merchant_id), metadata=office)
        print(f"registering and verifying {riders_needed} riders ...", flush=True)
        riders = _riders(identity, platform, tree, riders_needed)
        # merchants learns of them all now (asked about a rider it does not know, it catches up
        # with identity's feed first), not inside the first timed claims.
        try:
            # As the city admin: to a platform, a rider that is not its own is out of scope.
            merchants.ListPerksForRider(mpb.ListPerksForRiderRequest(
                rider_id=str(uuid.uuid4())), metadata=admin, timeout=120)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
        rider_offset = itertools.count()

        def new_perks(count: int, quota: int) -> list[tuple[str, int]]:
            """`count` published perks (perk id, merchant index), round-robin over merchants."""
            def one(i: int) -> tuple[str, int]:
                m = i % len(tills)
                request = mpb.CreatePerkOfferRequest(
                    request_id=str(uuid.uuid4()), merchant_id=tree["merchants"][m],
                    title="骑手免费饮水", kind=mpb.PERK_KIND_FREE_ITEM, free_item="一瓶水",
                    eligibility=mpb.ELIGIBILITY_ANY_VERIFIED_RIDER, total_quota=quota,
                    per_rider_limit=1, limit_period=mpb.LIMIT_PERIOD_DAY, code_ttl_minutes=240)
                request.valid_from_time.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
                request.valid_until_time.FromDatetime(datetime.now(UTC) + timedelta(days=7))
                perk_id = merchants.CreatePerkOffer(request, metadata=tills[m]).perk_offer.perk_id
                merchants.PublishPerkOffer(mpb.PublishPerkOfferRequest(
                    request_id=str(uuid.uuid4()), perk_id=perk_id), metadata=tills[m])
                return perk_id, m
            with ThreadPoolExecutor(SETUP_WORKERS) as pool:
                return list(pool.map(one, range(count)))

        def new_twin_perks(count: int, quota: int) -> list[tuple[str, int]]:
            """The same on the twin: rows of its perks table (not timed)."""
            perks = [(str(uuid.uuid4()), i % len(tills)) for i in range(count)]
            seed_perks(db, [(p, tree["merchants"][m], quota) for p, m in perks])
            return perks

        def claim_op(perks: list[tuple[str, int]], out: list[tuple[int, str]] | None = None,
                     target: mrpc.MerchantsServiceStub = merchants) -> Callable[[int], None]:
            """Operation i claims perk i (mod the perks) for a rider no other operation of this
            batch uses; with `out`, keeps (merchant index, code) for redeeming later."""
            first = next(rider_offset) * PER_ROUND

            def claim(i: int) -> None:
                perk_id, m = perks[i % len(perks)]
                reply = target.ClaimPerk(mpb.ClaimPerkRequest(
                    request_id=str(uuid.uuid4()), perk_id=perk_id,
                    rider_id=riders[(first + i) % len(riders)]), metadata=platform, timeout=120)
                if out is not None:
                    out.append((m, reply.claim.code))
            return claim

        def measure_claims(perk_count: int, clients: int, twinned: bool = False) -> float:
            make, target = (new_twin_perks, twin) if twinned else (new_perks, merchants)
            perks = make(perk_count, PER_ROUND // perk_count + 1)
            return throughput(claim_op(perks, target=target), PER_ROUND, clients)

        def measure_redemptions(perk_count: int, clients: int, twinned: bool = False) -> float:
            make, target = (new_twin_perks, twin) if twinned else (new_perks, merchants)
            perks = make(perk_count, PER_ROUND // perk_count + 1)
            codes: list[tuple[int, str]] = []
            with ThreadPoolExecutor(SETUP_WORKERS) as pool:  # not timed: the codes to redeem
                list(pool.map(claim_op(perks, codes, target), range(PER_ROUND)))

            def redeem(i: int) -> None:
                m, code = codes[i]
                target.RedeemCode(mpb.RedeemCodeRequest(
                    request_id=str(uuid.uuid4()), merchant_id=tree["merchants"][m], code=code),
                    metadata=tills[m], timeout=120)
            return throughput(redeem, PER_ROUND, clients)

        # Warm: connections, caches, prepared statements, on both paths.
        warm: list[tuple[int, str]] = []
        claim_op(new_perks(1, quota=1), warm)(0)
        merchants.RedeemCode(mpb.RedeemCodeRequest(
            request_id=str(uuid.uuid4()), merchant_id=tree["merchants"][warm[0][0]],
            code=warm[0][1]), metadata=tills[warm[0][0]])
        twin_warm: list[tuple[int, str]] = []
        claim_op(new_twin_perks(1, quota=1), twin_warm, twin)(0)
        twin.RedeemCode(mpb.RedeemCodeRequest(
            request_id=str(uuid.uuid4()), merchant_id=tree["merchants"][twin_warm[0][0]],
            code=twin_warm[0][1]), metadata=tills[twin_warm[0][0]])

        with psycopg.connect(dbname=db, autocommit=True, **PG) as conn:
            conn.execute("CREATE TABLE raw_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA)")
        pool = ConnectionPool(conninfo=psycopg.conninfo.make_conninfo(dbname=db, **PG),
                              min_size=max(CONCURRENCY), max_size=max(CONCURRENCY),
                              kwargs={"autocommit": True}, open=True)
        payload = os.urandom(ROW_BYTES)

        def raw_insert(_: int) -> None:
            with pool.connection() as conn:
                conn.execute("INSERT INTO raw_rows (payload) VALUES (%s)", (payload,))

        rows: list[tuple[str, float, float, float]] = []
        for clients in CONCURRENCY:
            print(f"measuring at {clients} client(s) ...", flush=True)
            measures: dict[str, Callable[[], float]] = {
                "raw": partial(throughput, raw_insert, PER_ROUND, clients)}
            figures = [(f"{name}, {label}, {clients} client(s)", name, n)
                       for name in ("ClaimPerk", "RedeemCode")
                       for label, n in ((f"{SPREAD_PERKS} perks", SPREAD_PERKS),
                                        ("one perk", 1))]
            for figure, name, n in figures:
                measure = measure_claims if name == "ClaimPerk" else measure_redemptions
                for twinned in (False, True):
                    measures[f"{figure}{twinned}"] = partial(measure, n, clients, twinned)
            got = alternate(ROUNDS, measures)
            rows.extend((figure, median(got[f"{figure}False"]), median(got[f"{figure}True"]),
                         median(got["raw"])) for figure, _name, _n in figures)
        pool.close()
        ichan.close()
        mchan.close()
        twin_chan.close()
        stored, events = store_size(db, "merchants")
    print_twin_table(f"merchants claims and redemptions (PostgreSQL; median of {ROUNDS} rounds "
                     f"of {PER_ROUND}; twin = bench/twin.py, raw = psycopg one-row INSERT per "
                     f"transaction)", rows)
    print(f"\nmerchants' schema after the run: {stored:,} B (every table, index and TOAST) for "
          f"{events:,} events, {stored / max(1, events):,.0f} B per stored event")


def _tokens_file_holding(token: str) -> Path:
    """The tokens file running_services made for this run: the one holding `token`'s hash."""
    wanted = hash_token(token)
    for path in Path(tempfile.gettempdir()).glob("qiji-bench-*/tokens.json"):
        try:
            callers = json.loads(path.read_text()).get("callers", [])
        except (OSError, ValueError):
            continue
        if any(c.get("token_sha256") == wanted for c in callers):
            return path
    raise RuntimeError("the tokens file of this run was not found")


def _tree(stub: irpc.IdentityServiceStub, md: Metadata) -> dict[str, Any]:
    city = build_city(over_stub(stub, md))
    shops = [city.add(f"merchant{i}", "MERCHANT", f"友好商户{i}", "street")
             for i in range(MERCHANT_COUNT)]
    return {"street": city.street, "platform": city.platform, "station": city.station,
            "merchants": shops}


def _riders(stub: irpc.IdentityServiceStub, md: Metadata, tree: dict[str, Any],
            count: int) -> list[str]:
    def one(_: int) -> str:
        rider = stub.RegisterRider(ipb.RegisterRiderRequest(
            request_id=str(uuid.uuid4()), platform_id=tree["platform"],
            platform_rider_id=uuid.uuid4().hex, name="骑手", phone="13812345678",
            home_street_id=tree["street"], station_id=tree["station"]), metadata=md).rider
        stub.VerifyRider(ipb.VerifyRiderRequest(request_id=str(uuid.uuid4()),
                                                rider_id=rider.rider_id), metadata=md)
        return rider.rider_id
    with ThreadPoolExecutor(SETUP_WORKERS) as pool:
        return list(pool.map(one, range(count)))


if __name__ == "__main__":
    main()
