"""RegisterRider over gRPC into PostgreSQL, beside its CRUD twin and raw psycopg single-row inserts.

All three commit one transaction per operation on the same server in the same run, round by
round in turn: the twin (bench/twin.py) is a bare grpcio service inserting the rider row by SQL,
called by the same client with the same metadata; the raw side writes a row of the same size as
a stored Registered event from this process."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from functools import partial
from statistics import median

import psycopg
from psycopg_pool import ConnectionPool
from qiji.identity.v1 import identity_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2_grpc as rpc

from bench.common import (
    PG,
    dial,
    print_twin_table,
    running_services,
    scratch_database,
    throughput,
)
from bench.twin import alternate, dial_twin, running_twin
from tests.city import build_city, over_stub

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PER_ROUND = int(os.environ.get("BENCH_OPS", "300"))
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,8,32").split(",")]
ROW_BYTES = 1200  # about the size of a Registered event with its sealed fields and metadata


def main() -> None:
    with scratch_database() as db, running_services(
            ["identity"], db, {"bench-admin": ["city_admin"], "bench-platform": ["platform"]}
    ) as (addresses, tokens), running_twin(db, tokens.tokens_file) as twin_address:
        channel = dial(addresses["identity"])
        stub = rpc.IdentityServiceStub(channel)
        twin_channel = dial_twin(twin_address)
        twin = rpc.IdentityServiceStub(twin_channel)
        admin = [("authorization", f"Bearer {tokens['bench-admin']}")]
        tree = _tree(stub, admin)
        platform = [("authorization",
                     f"Bearer {tokens.act_for('bench-platform', tree['platform'])}")]

        def register_on(target: rpc.IdentityServiceStub) -> Callable[[int], None]:
            def register(_: int) -> None:
                target.RegisterRider(pb.RegisterRiderRequest(
                    request_id=str(uuid.uuid4()), platform_id=tree["platform"],
                    platform_rider_id=uuid.uuid4().hex, name="骑手", phone="13812345678",
                    home_street_id=tree["street"], station_id=tree["station"]),
                    metadata=platform, timeout=30)
            return register

        register, register_twin = register_on(stub), register_on(twin)
        for _ in range(8):  # warm: connections, caches, prepared statements
            register(0)
            register_twin(0)
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
            got = alternate(ROUNDS, {
                "qiji": partial(throughput, register, PER_ROUND, clients),
                "twin": partial(throughput, register_twin, PER_ROUND, clients),
                "raw": partial(throughput, raw_insert, PER_ROUND, clients)})
            rows.append((f"RegisterRider over gRPC, {clients} client(s)",
                         median(got["qiji"]), median(got["twin"]), median(got["raw"])))
        pool.close()
        channel.close()
        twin_channel.close()
    print_twin_table(f"identity write path (PostgreSQL; median of {ROUNDS} rounds of {PER_ROUND}"
                     f"; twin = bench/twin.py, raw = psycopg one-row INSERT per transaction)",
                     rows)


def _tree(stub: rpc.IdentityServiceStub, md: list[tuple[str, str]]) -> dict[str, str]:
    city = build_city(over_stub(stub, md))
    return {"street": city.street, "platform": city.platform, "station": city.station}


if __name__ == "__main__":
    main()
