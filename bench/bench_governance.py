"""governance over gRPC into PostgreSQL, each figure beside a raw baseline from the same run.

- SubmitReport: reads the rider, the rules and the open incidents nearby (duplicate check),
  then stores Submitted + Routed + the request record in one transaction. Beside it, in the same
  rounds in turn: the CRUD twin (bench/twin.py: the report inserted by one SQL statement with
  its duplicate check), called by the same clients, and a one-row INSERT per transaction.
- ListDepartmentQueue: one page of 50 of a department's open assignments ordered by deadline,
  from the in-memory view. Raw: the same page from an indexed table (ORDER BY due LIMIT 50).
- View rebuild (what every start and the deadline scheduler's first pass pay): governance's
  whole log replayed into its views. Raw: SELECT of every stored event's bytes."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import count
from statistics import median

import grpc
import psycopg
from psycopg_pool import ConnectionPool
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.governance.v1 import governance_service_pb2_grpc as grpc_gov
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as grpc_identity

from bench.common import (
    PG,
    Callers,
    dial,
    median_of,
    print_table,
    print_twin_table,
    running_services,
    scratch_database,
    throughput,
)
from bench.twin import alternate, dial_twin, running_twin
from services.governance.application import GovernanceApplication
from shared.config import load_settings
from tests.city import build_city, over_stub

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PER_ROUND = int(os.environ.get("BENCH_OPS", "200"))
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,8").split(",")]
ROW_BYTES = 1500  # about a Submitted event with its text, attachments and metadata
# Reports 300 m apart never count as duplicates of each other (the window is 200 m).
STEP_DEGREES = 300 / 111_195


@dataclass
class World:
    """identity and governance with a city, 8 riders and one routing rule (all reports to the
    police): what bench_governance and bench_read measure against."""

    ichan: grpc.Channel
    gchan: grpc.Channel
    identity: grpc_identity.IdentityServiceStub
    governance: grpc_gov.GovernanceServiceStub
    admin: list[tuple[str, str]]
    platform: list[tuple[str, str]]
    tree: dict[str, str]
    riders: list[str]


def world(addresses: dict[str, str], tokens: Callers) -> World:
    ichan, gchan = dial(addresses["identity"]), dial(addresses["governance"])
    identity = grpc_identity.IdentityServiceStub(ichan)
    governance = grpc_gov.GovernanceServiceStub(gchan)
    admin = [("authorization", f"Bearer {tokens['bench-admin']}")]
    tree = _tree(identity, admin)
    platform = [("authorization", f"Bearer {tokens.act_for('bench-platform', tree['platform'])}")]
    riders = _riders(identity, platform, tree, 8)
    governance.SetRoutingRules(gpb.SetRoutingRulesRequest(
        request_id=str(uuid.uuid4()), rules=[gpb.RoutingRule(
            name="all", department_functions=[gpb.DEPARTMENT_FUNCTION_PUBLIC_SECURITY])]),
        metadata=admin)
    return World(ichan, gchan, identity, governance, admin, platform, tree, riders)


def main() -> None:
    with scratch_database() as db, running_services(
            ["identity", "governance"], db,
            {"bench-admin": ["city_admin"], "bench-platform": ["platform"]}
    ) as (addresses, tokens), running_twin(db, tokens.tokens_file) as twin_address:
        w = world(addresses, tokens)
        ichan, gchan, governance = w.ichan, w.gchan, w.governance
        twin_chan = dial_twin(twin_address)
        twin = grpc_gov.GovernanceServiceStub(twin_chan)
        admin, platform, tree, riders = w.admin, w.platform, w.tree, w.riders
        spot = count()

        def submit_to(target: grpc_gov.GovernanceServiceStub) -> Callable[[int], None]:
            def submit(i: int) -> None:
                request = gpb.SubmitReportRequest(
                    request_id=str(uuid.uuid4()), rider_id=riders[i % len(riders)],
                    kind=gpb.REPORT_KIND_ANOMALY_WARNING, category=gpb.CATEGORY_ROAD_HAZARD,
                    location=gpb.Location(street_id=tree["street"],
                                          latitude=20 + next(spot) * STEP_DEGREES,
                                          longitude=120),
                    text="井盖缺失，夜间电动车易摔倒" * 4, attachment_refs=["oss://b/1.jpg"])
                reply = target.SubmitReport(request, metadata=platform, timeout=60)
                assert reply.report.status == gpb.REPORT_STATUS_OPEN, "a report was linked"
            return submit

        submit, submit_twin = submit_to(governance), submit_to(twin)
        submit(0)  # warm: connections, caches, the follower's catch-up
        submit_twin(0)
        with psycopg.connect(dbname=db, autocommit=True, **PG) as conn:
            conn.execute("CREATE TABLE raw_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA)")
            conn.execute("CREATE TABLE raw_queue (id BIGSERIAL PRIMARY KEY, department TEXT,"
                         " due TIMESTAMPTZ, payload BYTEA)")
            conn.execute("CREATE INDEX ON raw_queue (department, due)")
        pool = ConnectionPool(conninfo=psycopg.conninfo.make_conninfo(dbname=db, **PG),
                              min_size=max(CONCURRENCY), max_size=max(CONCURRENCY),
                              kwargs={"autocommit": True}, open=True)
        payload = os.urandom(ROW_BYTES)

        def raw_insert(_: int) -> None:
            with pool.connection() as conn:
                conn.execute("INSERT INTO raw_rows (payload) VALUES (%s)", (payload,))

        twinned: list[tuple[str, float, float, float]] = []
        for clients in CONCURRENCY:
            got = alternate(ROUNDS, {
                "qiji": partial(throughput, submit, PER_ROUND, clients),
                "twin": partial(throughput, submit_twin, PER_ROUND, clients),
                "raw": partial(throughput, raw_insert, PER_ROUND, clients)})
            twinned.append((f"SubmitReport, {clients} client(s)",
                            median(got["qiji"]), median(got["twin"]), median(got["raw"])))
        rows = []

        total = 1 + PER_ROUND * ROUNDS * len(CONCURRENCY)
        now = datetime.now(UTC)
        with psycopg.connect(dbname=db, autocommit=True, **PG) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO raw_queue (department, due, payload) VALUES (%s,%s,%s)",
                            [(tree["police"], now + timedelta(seconds=i), payload)
                             for i in range(total)])

        def queue_page(_: int) -> None:
            page = governance.ListDepartmentQueue(gpb.ListDepartmentQueueRequest(
                department_id=tree["police"], page_size=50), metadata=admin, timeout=30)
            assert len(page.entries) == 50

        def raw_page(_: int) -> None:
            with pool.connection() as conn:
                found = conn.execute("SELECT id, due, payload FROM raw_queue WHERE department ="
                                     " %s ORDER BY due LIMIT 50", (tree["police"],)).fetchall()
                assert len(found) == 50

        for clients in CONCURRENCY:
            ours = median_of(ROUNDS, partial(throughput, queue_page, PER_ROUND, clients))
            raw = median_of(ROUNDS, partial(throughput, raw_page, PER_ROUND, clients))
            rows.append((f"ListDepartmentQueue ({total} open), {clients} cl.", ours, raw))

        events, ours, raw = _rebuild(db, tokens.master_key)
        rows.append((f"view rebuild, {events} events", ours, raw))
        pool.close()
        ichan.close()
        gchan.close()
        twin_chan.close()
    print_twin_table(f"governance SubmitReport (PostgreSQL; median of {ROUNDS} rounds of "
                     f"{PER_ROUND}; twin = bench/twin.py, raw = psycopg one-row INSERT per "
                     "transaction)", twinned)
    print_table(f"governance (PostgreSQL; median of {ROUNDS} rounds of {PER_ROUND}; "
                "rebuild in events/s)", rows)


def _rebuild(db: str, master_key: bytes) -> tuple[int, float, float]:
    """Replays governance's log into fresh views in this process, against reading the same
    rows raw; events per second, median of the rounds. Under the services' master key: under
    another, every event fails its MAC and the views stop at the first (the figure was once
    taken so, measuring a rebuild that read one event)."""
    settings = load_settings("governance", {
        "QIJI_PERSISTENCE": "postgres", "QIJI_POSTGRES_DBNAME": db,
        "QIJI_POSTGRES_HOST": PG["host"], "QIJI_DATA_DIR": tempfile.mkdtemp()})
    app = GovernanceApplication(settings, master_key)
    events = app.last_position()
    app.close()

    def replay() -> float:
        started = time.perf_counter()
        fresh = GovernanceApplication(settings, master_key)  # its views rebuild at start
        elapsed = time.perf_counter() - started
        fresh.close()
        return events / elapsed

    def raw_read() -> float:
        started = time.perf_counter()
        with psycopg.connect(dbname=db, **PG) as conn:
            conn.execute("SELECT state FROM governance.governance_events").fetchall()
        return events / (time.perf_counter() - started)

    return events, median_of(ROUNDS, replay), median_of(ROUNDS, raw_read)


def _tree(stub: grpc_identity.IdentityServiceStub, md: list[tuple[str, str]]
          ) -> dict[str, str]:
    city = build_city(over_stub(stub, md))
    city.add("police", "DEPARTMENT", "钟楼公安分局", "district", "PUBLIC_SECURITY")
    return {part: city[part] for part in ("street", "platform", "station", "police")}


def _riders(stub: grpc_identity.IdentityServiceStub, md: list[tuple[str, str]],
            tree: dict[str, str], n: int) -> list[str]:
    riders = []
    for _ in range(n):
        rider = stub.RegisterRider(ipb.RegisterRiderRequest(
            request_id=str(uuid.uuid4()), platform_id=tree["platform"],
            platform_rider_id=uuid.uuid4().hex, name="骑手", phone="13812345678",
            home_street_id=tree["street"], station_id=tree["station"]), metadata=md).rider
        stub.VerifyRider(ipb.VerifyRiderRequest(request_id=str(uuid.uuid4()),
                                                rider_id=rider.rider_id), metadata=md)
        riders.append(rider.rider_id)
    return riders


if __name__ == "__main__":
    main()
