"""The relay end to end: a real identity process on PostgreSQL, the relay as a real process
(`python -m services.relay`, positions in a schema of its own), RabbitMQ in a vhost of this
test's own, and a consumer whose durable queue is declared before anything is published.

1,000 public events (500 riders registered and verified) go out while the relay is killed
with SIGKILL twice and the broker is restarted once (`rabbitmqctl stop_app` / `start_app`):
the consumer ends with every one of the 1,000 ids, duplicates (same id) only, and no phone
number in any message. A relay stopped with SIGTERM and started again resumes from its stored
position. The sample nameko adapter (`nameko run`) records each id once."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import amqp.exceptions
import kombu
import psycopg
import pytest
from qiji.feed.v1 import public_feed_service_pb2 as public_pb
from qiji.feed.v1 import public_feed_service_pb2_grpc as public_grpc
from qiji.identity.v1 import identity_service_pb2 as ipb

from services.relay.cloudevents import CONTENT_TYPE, EXCHANGE, register_serializer
from tests.conftest import _admin_conninfo, missing_server, pg_env
from tests.e2e.client import bearer, create_city, new_request_id, phone_number
from tests.e2e.conftest import ServiceProcess, start_service
from tests.e2e.relay_harness import (
    REPO,
    Collector,
    RelayProcess,
    Vhost,
    relay_env,
    restart_broker,
)

pytestmark = pytest.mark.e2e

RIDERS = 500  # registered + verified: 1,000 public events
ENVELOPE = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"}


@pytest.fixture
def vhost() -> Iterator[Vhost]:
    try:
        v = Vhost()
    except (FileNotFoundError, subprocess.CalledProcessError) as error:
        missing_server(f"RabbitMQ (rabbitmqctl) not available: {error}")
    try:
        yield v
    finally:
        v.delete()


@pytest.fixture
def identity(postgres_db: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    server = start_service("identity", postgres_db, tmp_path / "identity",
                           extra_env={"QIJI_POSTGRES_POOL_SIZE": "2", "IDENTITY_GRPC_WORKERS": "8"})
    try:
        yield server
    finally:
        if server.running:
            server.stop()


def new_relay(identity: ServiceProcess, vhost: Vhost, tmp_path: Path) -> RelayProcess:
    schema = f"relay_{uuid.uuid4().hex[:10]}"
    env = relay_env(amqp_uri=vhost.uri, service_token=identity.tokens["service"],
                    addresses={"identity": identity.address},
                    postgres=pg_env(identity.db, schema), schema=schema,
                    data_dir=tmp_path / "relay")
    env["RELAY_POLL_SECONDS"] = "0.1"
    return RelayProcess(env=env, log_path=tmp_path / "relay.log")


def stored_position(relay: RelayProcess) -> int | None:
    with psycopg.connect(_admin_conninfo(relay.env["QIJI_POSTGRES_DBNAME"])) as conn:
        row = conn.execute(
            f'SELECT next_position FROM "{relay.env["RELAY_POSTGRES_SCHEMA"]}".relay_positions '
            "WHERE service = 'identity'").fetchone()
    return row[0] if row else None


def public_ids(identity: ServiceProcess) -> set[str]:
    """Every public event id identity's log holds, read directly from its public feed as the
    relay reads it: about every platform's riders (a platform's own read carries only its
    riders' events)."""
    stub = public_grpc.PublicFeedServiceStub(identity.channel)
    found, position = set(), 1
    while True:
        reply = stub.ReadPublicEvents(public_pb.ReadPublicEventsRequest(
            from_position=position, limit=1000, all_platforms=True),
            metadata=bearer(identity.tokens["service"]), timeout=10)
        found |= {e.event.id for e in reply.events}
        if reply.next_position > reply.last_position:
            return found
        position = reply.next_position


def rider_maker(identity: ServiceProcess, phones: list[str]):
    city = create_city(identity.client("city_admin"))
    platform = identity.client("platform")
    lock = threading.Lock()

    def make(_: int) -> None:
        """One rider of the city's platform (`make.platform`), registered and verified."""
        phone = phone_number()
        with lock:
            phones.append(phone)
        rider = platform.RegisterRider(ipb.RegisterRiderRequest(
            request_id=new_request_id(), platform_id=city["platform"],
            platform_rider_id=f"r-{uuid.uuid4().hex[:10]}", name="王五", phone=phone,
            home_street_id=city["street"], station_id=city["station"]), timeout=30
        ).rider.rider_id
        platform.VerifyRider(ipb.VerifyRiderRequest(request_id=new_request_id(),
                                                    rider_id=rider), timeout=30)
    make.platform = city["platform"]  # type: ignore[attr-defined]
    return make


def test_a_thousand_events_survive_two_relay_kills_and_a_broker_restart(
        identity: ServiceProcess, vhost: Vhost, tmp_path: Path) -> None:
    # Sees every key (the guest user): the durable queue exists before anything is published.
    collector = Collector(vhost.uri)
    relay = new_relay(identity, vhost, tmp_path)
    phones: list[str] = []
    make = rider_maker(identity, phones)
    relay.start()
    timeline: list[str] = []
    try:
        with ThreadPoolExecutor(6) as pool:
            producing = pool.map(make, range(RIDERS))
            # Kill -9 twice and restart the broker once, while events are still being stored.
            for threshold, action in ((150, "kill"), (400, "kill"), (650, "broker")):
                got = collector.wait_for(threshold, timeout=30)
                assert len(got) >= threshold, f"stalled at {len(got)}:\n{relay.log_tail()}"
                if action == "kill":
                    relay.kill()
                    timeline.append(f"kill -9 at {len(got)}")
                    relay.start()
                else:
                    took = restart_broker()
                    timeline.append(f"broker restart at {len(got)} ({took:.1f}s)")
            list(producing)
        expected = public_ids(identity)
        assert len(expected) == 2 * RIDERS
        got = collector.wait_for(len(expected), timeout=30)
        assert got == expected, (f"missing {len(expected - got)}, extra {len(got - expected)}; "
                                 f"{timeline}\n{relay.log_tail()}")

        deliveries = collector.snapshot()
        duplicates = len(deliveries) - len(got)
        print(f"\n{timeline}; {len(deliveries)} deliveries, {duplicates} duplicates dropped, "
              f"consumer reconnects {collector.reconnects}")
        raw = b"\n".join(d.raw for d in deliveries)
        for phone in phones:
            assert phone.encode() not in raw, "a phone number went over AMQP"
        for d in deliveries:
            assert set(d.body) == ENVELOPE
            assert d.body["specversion"] == "1.0" and d.body["source"] == "/qiji/identity"
            # Each rider's events go to the rider's platform alone.
            assert d.routing_key == f"platform.{make.platform}.{d.body['type']}"
            assert d.content_type == CONTENT_TYPE
            assert d.body["datacontenttype"] == "application/json"
            assert "phone" not in d.body["data"] and "name" not in d.body["data"]
        # A duplicate is the same message again: same id, same content.
        by_id: dict[str, bytes] = {}
        for d in deliveries:
            assert by_id.setdefault(d.body["id"], d.raw) == d.raw
        # Log order within the service: each rider's registration before their verification.
        first: dict[tuple[str, str], int] = {}
        for index, d in enumerate(deliveries):
            first.setdefault((d.body["subject"], d.body["type"].rsplit(".", 1)[-1]), index)
        for (subject, kind), index in first.items():
            if kind == "RiderVerified":
                assert first[(subject, "RiderRegistered")] < index

        # SIGTERM: stops at once, cleanly; the stored position is past everything.
        code, took = relay.terminate()
        assert code == 0 and took < 10, relay.log_tail()
        position = stored_position(relay)
        assert position == identity.last_position() + 1
        # Restarted, it resumes from there: only the new rider's two events go out.
        before = len(collector.snapshot())
        relay.start()
        make(0)
        assert len(collector.wait_for(len(expected) + 2, timeout=15)) == len(expected) + 2
        time.sleep(1.0)
        assert len(collector.snapshot()) == before + 2, "a restarted relay published old events"
        assert stored_position(relay) == identity.last_position() + 1
    finally:
        if relay.running:
            relay.terminate()
        collector.stop()


def test_the_sample_nameko_adapter_records_each_event_once(
        identity: ServiceProcess, vhost: Vhost, tmp_path: Path) -> None:
    db = tmp_path / "adapter.sqlite3"
    make = rider_maker(identity, [])
    platform = make.platform
    env = {**os.environ, "AMQP_URI": vhost.uri, "PLATFORM_ADAPTER_DB": str(db),
           "PLATFORM_ADAPTER_PLATFORM_ID": platform,
           "PLATFORM_ADAPTER_CHECKPOINTS": str(tmp_path / "checkpoints.jsonl"),
           "PYTHONPATH": f"{REPO}:{REPO / 'build' / 'gen'}"}
    log = open(tmp_path / "adapter.log", "wb")
    adapter = subprocess.Popen(
        [str(Path(sys.executable).parent / "nameko"), "run", "--config",
         "services/relay/sample_consumer.yaml", "services.relay.sample_consumer"],
        cwd=REPO, env=env, stdout=log, stderr=log)
    relay = new_relay(identity, vhost, tmp_path)
    try:
        # The adapter declares its queues when it starts: wait for them before publishing.
        queue = (f"evt-qiji-platform.{platform}.qiji.identity.v1.RiderVerified"
                 "--platform_adapter.rider_verified")
        deadline = time.monotonic() + 30
        while queue not in subprocess.run(
                ["rabbitmqctl", "list_queues", "-p", vhost.name, "name", "-q"],
                capture_output=True, text=True).stdout:
            assert adapter.poll() is None and time.monotonic() < deadline, (
                (tmp_path / "adapter.log").read_text())
            time.sleep(0.3)
        relay.start()
        for i in range(5):
            make(i)

        def seen() -> list[tuple[str, str]]:
            # The adapter makes its file, then its tables: in between there is nothing yet.
            if not db.exists():
                return []
            with sqlite3.connect(db) as conn:
                try:
                    return conn.execute("SELECT id, type FROM seen").fetchall()
                except sqlite3.OperationalError as error:
                    if "no such table" not in str(error):
                        raise
                    return []

        deadline = time.monotonic() + 20
        while len(seen()) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        first = seen()
        assert len(first) == 5, (tmp_path / "adapter.log").read_text()
        # The same event again (as after a relay crash): dropped by its id.
        register_serializer()
        (event_id, _), = first[:1]
        with sqlite3.connect(db) as conn:
            subject, time_ = conn.execute("SELECT subject, time FROM seen WHERE id = ?",
                                          (event_id,)).fetchone()
        again = {"specversion": "1.0", "id": event_id, "source": "/qiji/identity",
                 "type": "qiji.identity.v1.RiderVerified", "time": time_, "subject": subject,
                 "datacontenttype": "application/json",
                 "data": {"rider_id": subject, "verified_time": time_}}
        with kombu.Connection(vhost.uri) as conn:
            conn.Producer(serializer="cloudevents").publish(
                again, exchange=kombu.Exchange(EXCHANGE, type="topic", durable=True),
                routing_key=f"platform.{platform}.{again['type']}", delivery_mode=2)
        make(5)
        deadline = time.monotonic() + 20
        while len(seen()) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert len(seen()) == 6
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM riders WHERE verified_time IS NOT NULL"
                                ).fetchone()[0] == 6
        assert json.dumps(seen())  # plain values
    finally:
        if relay.running:
            relay.terminate()
        adapter.terminate()
        try:
            adapter.wait(timeout=15)
        except subprocess.TimeoutExpired:
            adapter.kill()
            adapter.wait()
        log.close()


def test_a_platforms_broker_user_receives_its_own_riders_events_and_no_other_platforms(
        identity: ServiceProcess, vhost: Vhost, tmp_path: Path) -> None:
    """Tenancy on the broker: two platform companies, each with the broker user the README
    gives one. Each binds its own riders' keys and those of events about no rider; binding a
    competitor's, or everything, is refused by RabbitMQ itself; and what reaches a platform's
    queue names none of the other's riders."""
    a, b = rider_maker(identity, []), rider_maker(identity, [])
    with kombu.Connection(vhost.uri) as conn:  # the operator's: the relay declares it too
        kombu.Exchange(EXCHANGE, type="topic", durable=True)(conn.default_channel).declare()
    users = {}
    for name, make in (("qa", a), ("qb", b)):
        user, uri = vhost.platform_user(name, make.platform)
        users[name] = (user, uri, make)
    # Its own riders, and events about no rider (the signed checkpoints).
    collectors = {name: Collector(uri, binding=f"platform.{make.platform}.#",
                                  queue=f"{user}-riders", declare_exchange=False)
                  for name, (user, uri, make) in users.items()}
    b_user, b_uri, _ = users["qb"]
    witness = Collector(b_uri, binding="qiji.#", queue=f"{b_user}-checkpoints",
                        declare_exchange=False)
    for binding in (f"platform.{a.platform}.#", "#", "platform.*.#"):
        with kombu.Connection(b_uri) as conn:
            spy = kombu.Queue(f"{b_user}-spy-{uuid.uuid4().hex[:6]}",
                              kombu.Exchange(EXCHANGE, type="topic", durable=True),
                              routing_key=binding, durable=True)(conn.default_channel)
            spy.queue_declare()  # its own queue: allowed
            with pytest.raises(amqp.exceptions.AccessRefused) as refused:
                spy.queue_bind()
        assert "topic" in str(refused.value), (binding, refused.value)
    relay = new_relay(identity, vhost, tmp_path)
    relay.start()
    try:
        for i in range(3):
            a(i)
            b(i)
        for collector in collectors.values():
            assert len(collector.wait_for(6, timeout=20)) == 6, relay.log_tail()
        time.sleep(0.5)
        for name, (_, _, make) in users.items():
            seen = collectors[name].snapshot()
            assert len({d.body["id"] for d in seen}) == 6
            assert {d.routing_key.split(".")[1] for d in seen} == {make.platform}
        theirs = {d.body["subject"] for d in collectors["qa"].snapshot()}
        assert not theirs & {d.body["subject"] for d in collectors["qb"].snapshot()}
        assert all("rider_id" not in (d.body.get("data") or {}) for d in witness.snapshot())
    finally:
        relay.terminate()
        for collector in (*collectors.values(), witness):
            collector.stop()


def test_a_batch_goes_to_the_broker_in_one_write_and_arrives_whole_and_in_order(vhost):
    """BatchPublisher writes a batch's frames to the socket at once (issue 20: one `sendall`,
    and one wake of the broker, per message cost the feed on 2 shared cores); every message
    still arrives, in order, each confirmed."""
    from services.relay.publisher import BatchPublisher
    collector = Collector(vhost.uri, binding="one.#", queue="one-write")
    publisher = BatchPublisher(vhost.uri)
    try:
        publisher.publish_batch([("one.first", {"id": "warm-up", "n": -1})])  # connected
        sock = publisher._connection.connection.transport.sock
        writes: list[int] = []
        direct = sock.sendall

        class Counting:  # the socket, its sendall counted
            def __getattr__(self, name: str) -> Any:
                return getattr(sock, name)

            def sendall(self, data: Any) -> None:
                writes.append(len(data))
                direct(data)

        transport = publisher._connection.connection.transport
        transport.sock = Counting()
        transport._write = transport.sock.sendall
        batch = [("one.event", {"id": f"m-{n}", "n": n}) for n in range(50)]
        publisher.publish_batch(batch)
        assert len(writes) == 1, writes  # fifty messages, one write
        collector.wait_for(51, timeout=30)
        got = [d.body["n"] for d in collector.snapshot()]
        assert got == list(range(-1, 50))
    finally:
        publisher.close()
        collector.stop()
