"""A service's gets and commands run on a quick lane of their own, and its health checks on a
probe lane (shared/grpc/lanes.py): long polls of its public feed that fill every thread of the
wide pool hold up none of them, and gets stuck on a store that hangs hold up no liveness probe.
With one pool for everything (`QIJI_GRPC_QUICK_WORKERS=0`) the same long polls do hold up a
get — which also shows that the polls below really fill the pool."""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qiji.feed.v1 import public_feed_service_pb2 as public_pb
from qiji.feed.v1 import public_feed_service_pb2_grpc as public_rpc
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as irpc

from tests.conftest import _admin_conninfo
from tests.e2e.conftest import ServiceProcess, eventually, free_port, start_service

pytestmark = pytest.mark.e2e

WIDE = 2
POLL_SECONDS = 20  # far longer than any answer below may take
ANSWER_SECONDS = 5.0
NO_RIDER = "7d0e2a43-0000-4000-8000-000000000000"


def long_polls(server: ServiceProcess, count: int) -> tuple[list[grpc.Future], grpc.Channel]:
    """`count` reads of the public feed from past its end, each waiting POLL_SECONDS for an
    event that never comes, on a channel of their own."""
    channel = grpc.insecure_channel(server.address)
    stub = public_rpc.PublicFeedServiceStub(channel)
    metadata = [("authorization", f"Bearer {server.tokens['service']}")]
    polls = [stub.ReadPublicEvents.future(
        public_pb.ReadPublicEventsRequest(from_position=1_000_000,
                                          max_wait=Duration(seconds=POLL_SECONDS)),
        metadata=metadata, timeout=POLL_SECONDS + 10) for _ in range(count)]
    return polls, channel


def liveness(server: ServiceProcess) -> int:
    with grpc.insecure_channel(server.address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="qiji.liveness"), timeout=ANSWER_SECONDS).status


def get_rider(server: ServiceProcess) -> grpc.StatusCode:
    with grpc.insecure_channel(server.address) as channel:
        try:
            irpc.IdentityServiceStub(channel).GetRider(
                ipb.GetRiderRequest(rider_id=NO_RIDER), timeout=ANSWER_SECONDS,
                metadata=[("authorization", f"Bearer {server.tokens['city_admin']}")])
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
def started(postgres_db: str, tmp_path: Path, request: pytest.FixtureRequest
            ) -> Iterator[ServiceProcess]:
    server = start_service("identity", postgres_db, tmp_path, extra_env={
        "QIJI_GRPC_WORKERS": str(WIDE), "QIJI_GRPC_QUICK_WORKERS": request.param,
        "IDENTITY_METRICS_PORT": str(free_port())})
    try:
        yield server
    finally:
        server.stop()


def queued(server: ServiceProcess, lane: str) -> dict[str, float]:
    """The service's `qiji_rpc_queue_seconds` buckets of `lane`: calls by `le`."""
    port = server.env["IDENTITY_METRICS_PORT"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {le: float(n) for le, n in re.findall(
        rf'^qiji_rpc_queue_seconds_bucket{{lane="{lane}",le="([^"]+)",service="identity"}} (\S+)$',
        text, re.MULTILINE)}


def waiting_polls(server: ServiceProcess) -> tuple[list[grpc.Future], grpc.Channel]:
    """More long polls than the wide pool has threads, all begun (none answered yet)."""
    polls, channel = long_polls(server, WIDE + 2)
    # A poll that began is one the server took: give them the time to be taken, then check
    # that none has returned (each waits POLL_SECONDS).
    threading.Event().wait(1.0)
    assert not any(p.done() for p in polls), [p.exception() for p in polls if p.done()]
    return polls, channel


@pytest.mark.parametrize("started", ["2"], indirect=True)
def test_long_polls_filling_the_wide_pool_hold_up_no_get_and_no_health_check(
        started: ServiceProcess) -> None:
    polls, channel = waiting_polls(started)
    try:
        # The caller is answered (the rider does not exist), well before the polls end.
        assert get_rider(started) == grpc.StatusCode.NOT_FOUND
        assert liveness(started) == health_pb2.HealthCheckResponse.SERVING
        assert not any(p.done() for p in polls)  # still waiting: they held the wide pool
    finally:
        for poll in polls:
            poll.cancel()
        channel.close()


@pytest.mark.parametrize("started", ["0"], indirect=True)
def test_with_one_pool_the_same_long_polls_hold_up_a_get(started: ServiceProcess) -> None:
    polls, channel = waiting_polls(started)
    try:
        assert get_rider(started) == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        for poll in polls:
            poll.cancel()
        channel.close()
    # Once the polls are gone, the pool serves gets again.
    eventually(lambda: get_rider(started) == grpc.StatusCode.NOT_FOUND, "a get is answered",
               timeout=POLL_SECONDS + 10)


@pytest.mark.parametrize("started", ["2"], indirect=True)
def test_gets_stuck_on_a_hanging_store_hold_up_no_liveness_probe(
        started: ServiceProcess) -> None:
    # The store hangs: an administrator holds every table of the service's schema locked, so
    # each get's look at the log waits (no error, no timeout) until the lock goes.
    admin = psycopg.connect(_admin_conninfo(started.db))
    try:
        tables = [row[0] for row in admin.execute(
            "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname = %s", (started.schema,))]
        assert tables
        admin.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        with grpc.insecure_channel(started.address) as channel:
            stub = irpc.IdentityServiceStub(channel)
            metadata = [("authorization", f"Bearer {started.tokens['city_admin']}")]
            stuck = [stub.GetRider.future(ipb.GetRiderRequest(rider_id=NO_RIDER),
                                          metadata=metadata, timeout=POLL_SECONDS)
                     for _ in range(4)]  # twice the quick lane
            threading.Event().wait(1.0)
            assert not any(g.done() for g in stuck)  # the quick lane is held
            assert liveness(started) == health_pb2.HealthCheckResponse.SERVING
            admin.rollback()  # the store answers again: so do the gets
            assert [g.exception().code() for g in stuck] == [grpc.StatusCode.NOT_FOUND] * 4
        # The operator sees it (QijiCallsQueueing): the two gets beyond the lane's threads
        # waited about a second for one; the health checks did not wait for theirs.
        quick, probe = queued(started, "quick"), queued(started, "probe")
        assert quick["+Inf"] - quick["0.5"] >= 2, quick
        assert probe["+Inf"] >= 1 and probe["0.25"] == probe["+Inf"], probe
    finally:
        admin.close()
