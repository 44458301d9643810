"""The event feed: how fast events stored reach a consumer, through the relay over AMQP and
through the gateway's StreamEvents, beside raw kombu and raw LISTEN/NOTIFY in the same run.

A real identity process and a real platform gateway on PostgreSQL; the relay runs as
`python -m services.relay` (positions on PostgreSQL; RELAY_POLL_SECONDS 0.1, its fallback poll);
a kombu consumer on a durable queue takes what it publishes.

1. Throughput: N events stored first (riders registered and verified over gRPC), then the relay
   started; measured from the first delivery to the last (relay start-up left out), beside raw
   kombu publishing the same messages with a confirm each (what nameko's dispatcher did).
2. Latency at a steady rate: a writer in a process of its own appends at BENCH_FEED_RATE events/s
   (1,000) for BENCH_FEED_SECONDS (5): each commit suspends and reinstates one of the riders
   (BENCH_FEED_PER_COMMIT events, 2, in one transaction), through the identity application as a
   second replica would (so the service hears of it by its store's NOTIFY, not in-process).
   Latency is each event's CloudEvents `time` (set in the writer, before its commit) to its
   receipt, by the kombu consumer (through the relay) and by a gRPC client streaming the
   platform's StreamEvents (through the gateway), both at once. Baselines at the same rate and
   batch, writers in a process of their own too: raw kombu (publish with a confirm → consume)
   and raw LISTEN/NOTIFY (a row inserted with a NOTIFY in its transaction → a listener)."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import grpc
import kombu
import psycopg
from qiji.identity.v1 import identity_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2_grpc as rpc
from qiji.platform.v1 import platform_feed_service_pb2 as feed_pb
from qiji.platform.v1 import platform_feed_service_pb2_grpc as feed_rpc

from bench.common import (
    PG,
    children_cpu,
    dial,
    print_table,
    running_services,
    scratch_database,
    throughput,
)
from services.relay.cloudevents import EXCHANGE, register_serializer
from tests.city import build_city, over_stub
from tests.e2e.relay_harness import Collector, RelayProcess, Vhost, relay_env

EVENTS = int(os.environ.get("BENCH_EVENTS", "2000"))
RATE = int(os.environ.get("BENCH_FEED_RATE", "1000"))
SECONDS = float(os.environ.get("BENCH_FEED_SECONDS", "5"))
PER_COMMIT = int(os.environ.get("BENCH_FEED_PER_COMMIT", "2"))
# Also read identity's public feed with long polls, straight (no relay, no gateway): where the
# time goes.
PROBE = bool(os.environ.get("BENCH_FEED_PROBE"))
STEADY_TYPES = ["qiji.identity.v1.RiderSuspended", "qiji.identity.v1.RiderReinstated"]


def _tree(stub: rpc.IdentityServiceStub, md: list) -> dict[str, str]:
    city = build_city(over_stub(stub, md))
    return {"street": city.street, "platform": city.platform, "station": city.station}


def _percentiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return q[49], q[98]


def _stored_time(body: dict) -> float:
    return datetime.fromisoformat(body["time"].replace("Z", "+00:00")).timestamp()


def _paced(rate: float, seconds: float, per_commit: int, commit: Callable[[int], None]) -> int:
    """Calls `commit(i)` on a fixed schedule, `per_commit` events each, `rate` events/s in all
    (late calls catch up: the rate holds over the run); returns the events written."""
    interval = per_commit / rate
    commits = int(rate * seconds / per_commit)
    started = time.monotonic()
    for i in range(commits):
        delay = started + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        commit(i)
    return commits * per_commit


def _write_qiji(env: dict[str, str], rider_ids: list[str], rate: float, seconds: float,
                per_commit: int) -> None:
    """The steady writer, in a process of its own: identity's application on the service's own
    store (another replica of it), each commit a rider suspended and reinstated."""
    os.environ.update(env)
    from services.identity.application import IdentityApplication
    from services.identity.domain.model import Rider
    from shared.config import load_settings
    from shared.personal_data import load_master_key
    from tests.conftest import actor, as_actor

    settings = load_settings("identity")
    app = IdentityApplication(settings, load_master_key(settings.master_key, "", create=False))
    with as_actor(actor("city", "city_admin")):
        riders = [app.get(r, Rider, "rider") for r in rider_ids]

        def commit(i: int) -> None:
            rider = riders[i % len(riders)]
            for n in range(per_commit):
                (rider.suspend if n % 2 == 0 else rider.reinstate)("bench")
            if per_commit % 2:
                rider.reinstate("bench")  # every rider stays active for the next round
            t = time.perf_counter()
            app.save(rider)
            saves.append((time.perf_counter() - t) * 1e3)

        saves: list[float] = []
        _paced(rate, seconds, per_commit, commit)
        print("writer save ms p50/p99", _percentiles(saves), flush=True)
    app.close()


def _in_process(target: Callable[..., None], *args: Any) -> SpawnProcess:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process


class StreamClient:
    """A platform's StreamEvents in a thread: every event received, with its receipt time."""

    def __init__(self, address: str, token: str, types: list[str]):
        self.received: list[tuple[Any, float]] = []
        self._call = feed_rpc.PlatformFeedServiceStub(dial(address)).StreamEvents(
            feed_pb.StreamEventsRequest(types=types),
            metadata=[("authorization", f"Bearer {token}")])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for message in self._call:
                self.received.append((message.event.event, time.time()))
        except grpc.RpcError:
            pass  # cancelled at the end

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._call.cancel()


class LongPollClient:
    """The service's public feed read in a loop with max_wait (what the relay's watch and reads
    cost without the relay): each event with its receipt time."""

    def __init__(self, address: str, token: str):
        from google.protobuf.duration_pb2 import Duration
        from qiji.feed.v1 import public_feed_service_pb2 as ppb
        from qiji.feed.v1 import public_feed_service_pb2_grpc as prpc
        self.received: list[tuple[Any, float]] = []
        self._stub = prpc.PublicFeedServiceStub(dial(address))
        self._md = [("authorization", f"Bearer {token}")]
        self._pb = ppb
        self._wait = Duration(seconds=2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        position = self._stub.ReadPublicEvents(self._pb.ReadPublicEventsRequest(
            from_position=1 << 40), metadata=self._md).last_position + 1
        while not self._stopping.is_set():
            reply = self._stub.ReadPublicEvents(self._pb.ReadPublicEventsRequest(
                from_position=position, limit=200, all_platforms=True, max_wait=self._wait),
                metadata=self._md, timeout=10)
            now = time.time()
            self.received += [(e.event, now) for e in reply.events]
            position = reply.next_position

    def stop(self) -> None:
        self._stopping.set()


def main() -> None:
    vhost = Vhost("qiji_bench")
    workdir = Path(tempfile.mkdtemp(prefix="qiji-bench-feed-"))
    master_key = base64.b64encode(os.urandom(32)).decode()
    try:
        with scratch_database() as db, running_services(
                ["identity", "platform"], db,
                {"bench-admin": ["city_admin"], "bench-platform": ["platform"],
                 "bench-relay": ["service"]}, extra_env={"QIJI_MASTER_KEY": master_key}
        ) as (addresses, tokens):
            stub = rpc.IdentityServiceStub(dial(addresses["identity"]))
            admin = [("authorization", f"Bearer {tokens['bench-admin']}")]
            tree = _tree(stub, admin)
            platform_token = tokens.act_for("bench-platform", tree["platform"])
            platform = [("authorization", f"Bearer {platform_token}")]
            rider_ids: list[str] = []

            def rider(_: int) -> None:
                rider_id = stub.RegisterRider(pb.RegisterRiderRequest(
                    request_id=str(uuid.uuid4()), platform_id=tree["platform"],
                    platform_rider_id=uuid.uuid4().hex, name="骑手", phone="13812345678",
                    home_street_id=tree["street"], station_id=tree["station"]),
                    metadata=platform, timeout=30).rider.rider_id
                stub.VerifyRider(pb.VerifyRiderRequest(request_id=str(uuid.uuid4()),
                                                       rider_id=rider_id),
                                 metadata=platform, timeout=30)
                rider_ids.append(rider_id)

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
                stream = StreamClient(addresses["platform"], platform_token, STEADY_TYPES)
                poller = (LongPollClient(addresses["identity"], tokens["bench-relay"])
                          if PROBE else None)
                time.sleep(1.0)  # the stream caught up (nothing of these types yet) and idle
                before = len(got)
                writer_env = {"QIJI_PERSISTENCE": "postgres", "QIJI_POSTGRES_DBNAME": db,
                              "QIJI_POSTGRES_HOST": PG["host"], "QIJI_MASTER_KEY": master_key,
                              "QIJI_DATA_DIR": str(workdir)}
                cpu_before = children_cpu()
                writer = _in_process(_write_qiji, writer_env, rider_ids, RATE, SECONDS,
                                     PER_COMMIT)
                writer.join()
                written = int(RATE * SECONDS / PER_COMMIT) * PER_COMMIT
                collector.wait_for(before + written, timeout=60)
                stream.wait_for(written, timeout=60)
                cpu_after = children_cpu()
                print("CPU ms per event in the steady run: " + ", ".join(
                    f"{name} {(cpu_after[name] - cpu_before.get(name, 0)) / written * 1e3:.3f}"
                    for name in sorted(cpu_after) if name in cpu_before))
                stream.stop()
                if poller is not None:
                    poller.stop()
                    poll_lat = [(received - event.attributes["time"].ce_timestamp.ToNanoseconds()
                                 / 1e9) * 1e3 for event, received in poller.received
                                if event.type in STEADY_TYPES]
                    p50, p99 = _percentiles(poll_lat)
                    print(f"identity's public feed, long polled: p50 {p50:.1f} ms, "
                          f"p99 {p99:.1f} ms")
                steady = [d for d in collector.snapshot()[before:]
                          if d.body["type"] in STEADY_TYPES]
                relay_lat = [(d.received - _stored_time(d.body)) * 1e3 for d in steady]
                stream_lat = [(received - event.attributes["time"].ce_timestamp.ToNanoseconds()
                               / 1e9) * 1e3 for event, received in stream.received]
            finally:
                relay.terminate()
            collector.stop()
            print(f"steady: {written} written, {len(relay_lat)} through the relay, "
                  f"{len(stream_lat)} through StreamEvents")
            _relay_cycles(workdir / "relay.log")

        raw_rate = _raw_throughput(vhost.uri, EVENTS, got[0].raw)
        kombu_lat = _raw_kombu_latency(vhost.uri, got[0].raw)
        notify_lat = _raw_notify_latency()
        p50, p99 = _percentiles(relay_lat)
        k50, k99 = _percentiles(kombu_lat)
        s50, s99 = _percentiles(stream_lat)
        n50, n99 = _percentiles(notify_lat)
        print_table(f"Event feed over AMQP ({EVENTS} events, one service, 1 relay)", [
            ("stored -> consumed through the relay", relay_rate, raw_rate)], "events/s")
        print_table(f"commit -> consumer latency at {RATE} events/s, {PER_COMMIT} per commit "
                    "(raw: kombu publish -> consume; LISTEN/NOTIFY commit -> listener)", [
                        ("relay -> kombu consumer p50", p50, k50),
                        ("relay -> kombu consumer p99", p99, k99),
                        ("StreamEvents -> gRPC client p50", s50, n50),
                        ("StreamEvents -> gRPC client p99", s99, n99)], "ms")
    finally:
        vhost.delete()


def _relay_cycles(log_path: Path) -> None:
    """Where the relay's cycles went in the steady run (its `relay.published` lines of fewer
    than a whole batch: the catch-up before it is left out): read, publish (the batch sent, the
    next read ahead, the confirms awaited) and the position handed to the store, in ms."""
    cycles = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"relay.published"' in line:
            entry = json.loads(line[line.index("{"):])
            if entry["events"] < 200:
                cycles.append(entry)
    if len(cycles) < 2:
        return
    parts = {name: _percentiles([c[name] for c in cycles])
             for name in ("read_ms", "publish_ms", "store_ms")}
    print(f"relay cycles: {len(cycles)}, "
          f"{statistics.mean(c['events'] for c in cycles):.1f} events each; p50/p99 ms: "
          + ", ".join(f"{name[:-3]} {p50:.1f}/{p99:.1f}" for name, (p50, p99) in parts.items()))


def _raw_throughput(uri: str, total: int, body: bytes) -> float:
    """kombu straight: persistent messages of the same size, publisher confirms, one at a time
    (as nameko's dispatcher did), to a durable queue, consumed by the same kind of consumer."""
    register_serializer()
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
    collector.stop()
    return rate


def _publish_raw(uri: str, body: bytes, rate: float, seconds: float, per_commit: int) -> None:
    register_serializer()
    event = json.loads(body)
    exchange = kombu.Exchange(EXCHANGE, type="topic", durable=True)
    with kombu.Connection(uri, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer(serializer="cloudevents")

        def commit(i: int) -> None:
            for n in range(per_commit):
                producer.publish({**event, "id": f"lat-{i}-{n}", "time": time.time()},
                                 exchange=exchange, routing_key="rawlat.event", delivery_mode=2)

        _paced(rate, seconds, per_commit, commit)


def _raw_kombu_latency(uri: str, body: bytes) -> list[float]:
    """The same messages published at the same rate (a confirm each), publish → consume."""
    collector = Collector(uri, binding="rawlat.#", queue="bench-raw-latency")
    _in_process(_publish_raw, uri, body, RATE, SECONDS, PER_COMMIT).join()
    written = int(RATE * SECONDS / PER_COMMIT) * PER_COMMIT
    collector.wait_for(written, timeout=60)
    latencies = [(d.received - d.body["time"]) * 1e3 for d in collector.snapshot()]
    collector.stop()
    return latencies


def _insert_notify(conninfo: str, rate: float, seconds: float, per_commit: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        def commit(i: int) -> None:
            with conn.transaction():
                for _ in range(per_commit):
                    conn.execute("INSERT INTO bench_log (state) VALUES (%s)",
                                 (os.urandom(300),))
                conn.execute("SELECT pg_notify('bench_log', %s)", (repr(time.time()),))

        _paced(rate, seconds, per_commit, commit)


def _raw_notify_latency() -> list[float]:
    """Rows inserted at the same rate and batch, a NOTIFY in each transaction (payload: the
    time before it), heard by a listener: commit → listener, each row counted."""
    with scratch_database() as db:
        conninfo = psycopg.conninfo.make_conninfo(dbname=db, **PG)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_log (id bigserial PRIMARY KEY, state bytea)")
            conn.execute("LISTEN bench_log")
            writer = _in_process(_insert_notify, conninfo, RATE, SECONDS, PER_COMMIT)
            latencies: list[float] = []
            expected = int(RATE * SECONDS / PER_COMMIT)
            for notify in conn.notifies(timeout=SECONDS + 30, stop_after=expected):
                latencies += [(time.time() - float(notify.payload)) * 1e3] * PER_COMMIT
            writer.join()
    return latencies


if __name__ == "__main__":
    main()
