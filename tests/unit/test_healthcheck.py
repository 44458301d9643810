"""grpc.health.v1's Watch streams end when the server stops (shared/grpc/healthcheck.py), on a
real grpcio server in this process: an open one hears NOT_SERVING and ends, one opened after
the stop began hears its one answer and ends, and the stop no longer waits out its grace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.grpc.healthcheck import HealthServicer

GRACE = 5.0


@pytest.fixture
def served() -> Iterator[tuple[grpc.Server, HealthServicer, health_pb2_grpc.HealthStub]]:
    health = HealthServicer()
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield server, health, health_pb2_grpc.HealthStub(channel)
    server.stop(0)


def statuses(watch: grpc.Future) -> list[str]:
    heard = [health_pb2.HealthCheckResponse.ServingStatus.Name(a.status) for a in watch]
    return [*heard, watch.code().name]


def test_an_open_watch_hears_not_serving_then_ends_and_the_stop_takes_no_grace(served):
    server, health, stub = served
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    first = next(watch)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    started = time.monotonic()
    health.end_watches()
    server.stop(GRACE).wait()
    assert time.monotonic() - started < GRACE / 2
    assert statuses(watch) == ["NOT_SERVING", "OK"]


def test_a_watch_opened_once_the_stop_began_hears_one_answer_and_ends(served):
    _, health, stub = served
    health.end_watches()
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert statuses(watch) == ["NOT_SERVING", "OK"]
    # Later changes are not told: the library's graceful shutdown holds every name down.
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    check = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
