"""The event feed over AMQP: events/s from stored to consumed through the relay, and
append-to-consume latency (p50 / p99), beside a raw kombu publish (with confirms) / consume
loop on the same broker in the same run.

A real identity process on PostgreSQL stores the events (riders registered and verified); the
relay runs as `python -m services.relay` (positions on PostgreSQL); a kombu consumer on a
durable queue takes them. Throughput: N events stored first, then the relay started; measured
from the first delivery to the last (relay start-up left out). Latency: one rider at a time,
from the event's stored time (its CloudEvents `time`) to the consumer's receipt; the relay
polls an idle log every RELAY_POLL_SECONDS (0.1 here, 0.2 by default), which bounds it."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import kombu
from qiji.identity.v1 import identity_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2_grpc as rpc

from bench.common import PG, dial, print_table, running_services, scratch_database, throughput
from services.relay.cloudevents import EXCHANGE, register_serializer
from tests.city import build_city, over_stub
from tests.e2e.relay_harness import Collector, RelayProcess, Vhost, relay_env

EVENTS = int(os.environ.get("BENCH_EVENTS", "2000"))
LATENCY_SAMPLES = int(os.environ.get("BENCH_LATENCY_SAMPLES", "100"))


def _tree(stub: rpc.IdentityServiceStub, md: list) -> dict[str, str]:
    city = build_city(over_stub(stub, md))
    return {"street": city.street, "platform": city.platform, "station": city.station}


def _percentiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return q[49], q[98]


def _stored_time(body: dict) -> float:
    return datetime.fromisoformat(body["time"].replace("Z", "+00:00")).timestamp()


def main() -> None:
    vhost = Vhost("qiji_bench")
    workdir = Path(tempfile.mkdtemp(prefix="qiji-bench-feed-"))
    try:
        with scratch_database() as db, running_services(
                ["identity"], db, {"bench-admin": ["city_admin"],
                                   "bench-platform": ["platform"], "bench-relay": ["service"]}
        ) as (addresses, tokens):
            stub = rpc.IdentityServiceStub(dial(addresses["identity"]))
            admin = [("authorization", f"Bearer {tokens['bench-admin']}")]
            tree = _tree(stub, admin)
            platform = [("authorization",
                         f"Bearer {tokens.act_for('bench-platform', tree['platform'])}")]

            def rider(_: int) -> None:
                rider_id = stub.RegisterRider(pb.RegisterRiderRequest(
                    request_id=str(uuid.uuid4()), platform_id=tree["platform"],
                    platform_rider_id=uuid.uuid4().hex, name="骑手", phone="13812345678",
                    home_street_id=tree["street"], station_id=tree["station"]),
                    metadata=platform, timeout=30).rider.rider_id
                stub.VerifyRider(pb.VerifyRiderRequest(request_id=str(uuid.uuid4()),
                                                       rider_id=rider_id),
                                 metadata=platform, timeout=30)

            collector = Collector(vhost.uri, queue="bench-relay")
            throughput(rider, EVENTS // 2, 8)  # stored before the relay starts
            schema = f"relay_{uuid.uuid4().hex[:8]}"
            env = relay_env(amqp_uri=vhost.uri, service_token=tokens["bench-relay"],
                            addresses={"identity": addresses["identity"]},
                            postgres={"QIJI_PERSISTENCE": "postgres",
                                      "QIJI_POSTGRES_DBNAME": db,
                                      "QIJI_POSTGRES_HOST": PG["host"]},
                            schema=schema, data_dir=workdir)
            env["RELAY_POLL_SECONDS"] = "0.1"
            relay = RelayProcess(env=env, log_path=workdir / "relay.log")
            relay.start()
            try:
                collector.wait_for(EVENTS, timeout=300)
                got = collector.snapshot()
                assert len({d.body["id"] for d in got}) >= EVENTS, relay.log_tail()
                relay_rate = (len(got) - 1) / (got[-1].received - got[0].received)
                # Latency: one rider (two events) at a time, the relay idle in between.
                before = len(got)
                for i in range(LATENCY_SAMPLES // 2):
                    rider(i)
                    collector.wait_for(before + 2 * (i + 1), timeout=10)
                    time.sleep(0.05)
                latest = collector.snapshot()[before:]
                relay_lat = [(d.received - _stored_time(d.body)) * 1e6 for d in latest]
            finally:
                relay.terminate()
            collector.stop()

        raw_rate, raw_lat = _raw(vhost.uri, EVENTS, LATENCY_SAMPLES, got[0].raw)
        p50, p99 = _percentiles(relay_lat)
        r50, r99 = _percentiles(raw_lat)
        print_table(f"Event feed over AMQP ({EVENTS} events, one service, 1 relay)", [
            ("stored -> consumed through the relay", relay_rate, raw_rate)], "events/s")
        print_table("append -> consume latency", [
            ("p50", p50, r50), ("p99", p99, r99)], "µs")
    finally:
        vhost.delete()


def _raw(uri: str, total: int, samples: int, body: bytes) -> tuple[float, list[float]]:
    """kombu straight: persistent messages of the same size, publisher confirms, one at a time
    (as the relay does), to a durable queue, consumed by the same kind of consumer."""
    register_serializer()
    import json
    event = json.loads(body)
    collector = Collector(uri, binding="raw.#", queue="bench-raw")
    exchange = kombu.Exchange(EXCHANGE, type="topic", durable=True)
    with kombu.Connection(uri, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer(serializer="cloudevents")
        started = time.time()
        for i in range(total):
            producer.publish({**event, "id": f"raw-{i}"}, exchange=exchange,
                             routing_key="raw.event", delivery_mode=2)
        collector.wait_for(total, timeout=120)
        rate = total / (collector.snapshot()[-1].received - started)
        latencies = []
        for i in range(samples):
            sent = time.time()
            producer.publish({**event, "id": f"lat-{i}"}, exchange=exchange,
                             routing_key="raw.event", delivery_mode=2)
            collector.wait_for(total + i + 1, timeout=10)
            latencies.append((collector.snapshot()[-1].received - sent) * 1e6)
            time.sleep(0.01)
    collector.stop()
    return rate, latencies


if __name__ == "__main__":
    main()
