"""RegisterRider over gRPC into PostgreSQL, beside raw psycopg single-row inserts.

Both sides commit one transaction per operation on the same server in the same run; the raw
side writes a row of the same size as a stored Registered event."""

from __future__ import annotations

import os
import uuid

import psycopg
from psycopg_pool import ConnectionPool
from qiji.identity.v1 import identity_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2_grpc as rpc

from bench.common import (
    PG,
    WRITE_GOAL,
    dial,
    median_of,
    print_table,
    running_services,
    scratch_database,
    throughput,
)
from tests.city import build_city, over_stub

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PER_ROUND = int(os.environ.get("BENCH_OPS", "300"))
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,8,32").split(",")]
ROW_BYTES = 1200  # about the size of a Registered event with its sealed fields and metadata


def main() -> None:
    with scratch_database() as db, running_services(
            ["identity"], db, {"bench-admin": ["city_admin"], "bench-platform": ["platform"]}
    ) as (addresses, tokens):
        channel = dial(addresses["identity"])
        stub = rpc.IdentityServiceStub(channel)
        admin = [("authorization", f"Bearer {tokens['bench-admin']}")]
        tree = _tree(stub, admin)
        platform = [("authorization",
                     f"Bearer {tokens.act_for('bench-platform', tree['platform'])}")]

        def register(_: int) -> None:
            stub.RegisterRider(pb.RegisterRiderRequest(
                request_id=str(uuid.uuid4()), platform_id=tree["platform"],
                platform_rider_id=uuid.uuid4().hex, name="骑手", phone="13812345678",
                home_street_id=tree["street"], station_id=tree["station"]),
                metadata=platform, timeout=30)

        register(0)  # warm: connections, caches, prepared statements
        with psycopg.connect(dbname=db, autocommit=True, **PG) as conn:
            conn.execute("CREATE TABLE raw_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA)")
        pool = ConnectionPool(conninfo=psycopg.conninfo.make_conninfo(dbname=db, **PG),
                              min_size=max(CONCURRENCY), max_size=max(CONCURRENCY),
                              kwargs={"autocommit": True}, open=True)
        payload = os.urandom(ROW_BYTES)

        def raw_insert(_: int) -> None:
            with pool.connection() as conn:
                conn.execute("INSERT INTO raw_rows (payload) VALUES (%s)", (payload,))

        rows = []
        for clients in CONCURRENCY:
            ours = median_of(ROUNDS, lambda _r, c=clients: throughput(register, PER_ROUND, c))
            raw = median_of(ROUNDS, lambda _r, c=clients: throughput(raw_insert, PER_ROUND, c))
            rows.append((f"RegisterRider over gRPC, {clients} client(s)", ours, raw))
        pool.close()
        channel.close()
    print_table(f"identity write path (PostgreSQL; median of {ROUNDS} rounds of {PER_ROUND}; "
                f"raw = psycopg one-row INSERT per transaction)", rows,
                goal=WRITE_GOAL)


def _tree(stub: rpc.IdentityServiceStub, md: list[tuple[str, str]]) -> dict[str, str]:
    city = build_city(over_stub(stub, md))
    return {"street": city.street, "platform": city.platform, "station": city.station}


if __name__ == "__main__":
    main()
